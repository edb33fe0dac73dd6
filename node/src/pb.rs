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

/// etcd's v3 API (`proto/etcd/`), served on `--etcd-listen` ([`crate::etcd`]). Only the server
/// side is generated; the module names are etcd's packages, as its generated code refers to
/// them (`super::mvccpb`).
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }

    /// Encoded descriptors of etcd's API, for gRPC server reflection on the etcd port.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("etcd_descriptor");
}
