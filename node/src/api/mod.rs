//! The public gRPC API (the client port): `petkv.v1.KV` and `petkv.v1.Cluster`.
//!
//! - [`kv`]: puts, gets, deletes and scans. Writes go through Raft; linearizable reads use
//!   read-index; stale reads are served locally.
//! - [`cluster`]: status of this node and of every member.
//! - [`forward`]: sending a request that needs the leader to the leader, over a cached channel.
//! - [`validation`]: request checks at the edge of the data path: a request becomes a command
//!   or a read plan, or is refused with a clear error.

pub mod cluster;
pub mod forward;
pub mod kv;
pub mod validation;

use std::sync::Arc;

use petkv_client::pb::v1::{KeyValue as PbKeyValue, ResponseHeader};

use crate::node::Node;
use crate::store::command::KeyValue;

/// Builds the reply header for something that reflects `raft_index`.
pub(crate) fn header(node: &Node, raft_index: u64) -> ResponseHeader {
    ResponseHeader { raft_index, term: node.current_term(), served_by: node.node_id().unwrap_or(0) }
}

/// Converts a stored key-value into its wire form.
pub(crate) fn to_pb(kv: KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.into(),
        value: kv.stored.value.into(),
        create_index: kv.stored.create_revision,
        mod_index: kv.stored.mod_revision,
        version: kv.stored.version,
    }
}

/// Both public services, sharing one node.
#[derive(Clone)]
pub struct Api {
    pub node: Arc<Node>,
}
