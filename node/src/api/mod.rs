//! The public gRPC API (the client port): `petkv.v1.KV` and `petkv.v1.Cluster`.
//!
//! - [`kv`]: puts, gets, deletes, scans and compaction. Writes go through Raft; linearizable
//!   reads use read-index; stale reads are served locally.
//! - [`lease`]: leases and the leader's clock that expires them.
//! - [`txn`]: transactions checked into commands, and their results.
//! - [`watch`]: streams of changes, served by any member from its own state machine.
//! - [`cluster`]: status of this node and of every member.
//! - [`leader`]: requests that need the leader: propose, read index, serve here or forward.
//! - [`forward`]: sending a request that needs the leader to the leader, over a cached channel.
//! - [`validation`]: request checks at the edge of the data path: a request becomes a command
//!   or a read plan, or is refused with a clear error.

pub mod cluster;
pub mod etcd;
pub mod forward;
pub mod kv;
pub mod leader;
pub mod lease;
pub mod txn;
pub mod validation;
pub mod watch;

use std::sync::Arc;

use petkv_client::pb::v1::{KeyValue as PbKeyValue, ResponseHeader};
use tonic::Status;

use crate::node::Node;
use crate::store::command::{KeyValue, RevisionError};

/// Builds the reply header for something that reflects `raft_index` and store `revision`.
pub(crate) fn header(node: &Node, raft_index: u64, revision: u64) -> ResponseHeader {
    ResponseHeader { raft_index, term: node.current_term(), served_by: node.node_id().unwrap_or(0), revision }
}

/// The header of a reply that reflects this node's state as applied now.
pub(crate) fn applied_header(node: &Node) -> ResponseHeader {
    // The revision is read first: the applied index read after it covers it.
    let revision = node.sm.current_revision();
    header(node, node.sm.applied_index(), revision)
}

/// A revision a request cannot use, as a status: a compacted one is FAILED_PRECONDITION (the
/// message names the oldest revision kept), a future one OUT_OF_RANGE.
pub(crate) fn revision_status(e: RevisionError) -> Status {
    match e {
        RevisionError::Compacted { .. } => Status::failed_precondition(e.to_string()),
        RevisionError::Future { .. } => Status::out_of_range(e.to_string()),
    }
}

/// Converts a stored key-value into its wire form.
pub(crate) fn to_pb(kv: KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.into(),
        value: kv.stored.value.into(),
        create_revision: kv.stored.create_revision,
        mod_revision: kv.stored.mod_revision,
        version: kv.stored.version,
        lease: kv.stored.lease,
    }
}

/// Both public services, sharing one node.
#[derive(Clone)]
pub struct Api {
    pub node: Arc<Node>,
}
