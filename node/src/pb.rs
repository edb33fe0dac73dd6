//! Generated protobuf and gRPC code for the internal Raft transport (`petkv.raft.v1`,
//! `proto/petkv/raft/v1/raft.proto`). The public API (`petkv.v1`) is `petkv_client::pb::v1`.

#![allow(clippy::all, missing_docs)]

/// The internal transport served on the peer port.
pub mod raft {
    tonic::include_proto!("petkv.raft.v1");
}

/// Encoded descriptors of `petkv.raft.v1`, for gRPC server reflection (registered beside
/// `petkv_client::pb::FILE_DESCRIPTOR_SET`).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("petkv_raft_descriptor");
