//! Generated protobuf and gRPC code for the public API, `proto/petkv/v1/kv.proto`: messages,
//! clients, and the server traits the node implements.

#![allow(clippy::all, missing_docs)]

/// The public API served on the client port (package `petkv.v1`).
pub mod v1 {
    tonic::include_proto!("petkv.v1");
}

/// Encoded descriptors of `petkv.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("petkv_v1_descriptor");
