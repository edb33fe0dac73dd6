//! Generated protobuf and gRPC code for `proto/`: the public API (`petkv.v1`) and the internal
//! Raft transport (`petkv.raft.v1`).

#![allow(clippy::all, missing_docs)]

/// The public API served on the client port.
pub mod v1 {
    tonic::include_proto!("petkv.v1");
}

/// The internal transport served on the peer port.
pub mod raft {
    tonic::include_proto!("petkv.raft.v1");
}

/// Encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("petkv_descriptor");
