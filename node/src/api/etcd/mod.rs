//! etcd's v3 gRPC API on `--etcd-listen`: etcdctl and etcd's client libraries work against
//! petkv unchanged. Every etcd RPC is served by petkv's own handlers and machinery (the same
//! validation, forwarding to the leader, authentication and limits as the client port), with
//! etcd's messages, field types and error strings on the outside:
//!
//! - [`kv`]: Range (count, sort, filters, keys/count only, serializable), Put (prev_kv, lease,
//!   ignore_value/ignore_lease), DeleteRange, Txn, Compact.
//! - [`txn`]: etcd's transactions (compares over ranges, nested transactions) as petkv's
//!   command, and their results.
//! - [`watch`]: the watch stream: many watches per stream by watch id, start revisions,
//!   prev_kv, filters, progress.
//! - [`lease`]: Grant, Revoke, KeepAlive, TimeToLive, Leases.
//! - [`maintenance`]: Cluster (MemberList; membership follows the StatefulSet) and Maintenance
//!   (Status, Alarm, Snapshot in petkv's backup format).
//! - [`auth`]: Authenticate and AuthStatus on petkv's tokens file (a user's password is its
//!   token); users and roles are the file's lines.
//! - [`errors`]: petkv's statuses as etcd's codes and messages, which client libraries match on.
//!
//! What petkv does not serve answers UNIMPLEMENTED (or FAILED_PRECONDITION for membership)
//! with the reason; the README's compatibility table lists every RPC.

pub mod auth;
pub mod errors;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod txn;
pub mod watch;

use std::future::Future;

use petkv_client::pb::v1::{KeyValue as PbKeyValue, ResponseHeader as PbResponseHeader};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::forward::Origin;
use super::Api;
use crate::edge::auth::CurrentTokens;
use crate::node::Node;
use crate::pb::etcd::etcdserverpb::ResponseHeader;
use crate::pb::etcd::mvccpb;

/// The etcd services, over one node's [`Api`].
#[derive(Clone)]
pub struct EtcdApi {
    api: Api,
    /// The tokens file in use (Authenticate checks names and passwords against it).
    tokens: Option<CurrentTokens>,
}

impl EtcdApi {
    pub fn new(api: Api, tokens: Option<CurrentTokens>) -> Self {
        Self { api, tokens }
    }

    fn node(&self) -> &Node {
        &self.api.node
    }

    /// Confirms a linearizable read may be served here (a read-index round, on a follower with
    /// the leader), as petkv's own reads do.
    async fn confirm_linearizable(&self, origin: &Origin) -> Result<(), Status> {
        self.api.read_or_forward(origin, (), not_forwarded::<(), ()>).await.map(|_| ())
    }

    /// The header etcd clients expect, at store revision `revision`.
    fn header(&self, revision: u64) -> ResponseHeader {
        header(self.node(), revision)
    }

    /// The header of a petkv answer, as etcd's.
    fn header_of(&self, h: Option<PbResponseHeader>) -> ResponseHeader {
        let h = h.unwrap_or_default();
        ResponseHeader {
            cluster_id: cluster_id(self.node()),
            member_id: if h.served_by != 0 { h.served_by } else { self.node().node_id().unwrap_or(0) },
            revision: to_i64(h.revision),
            raft_term: h.term,
        }
    }
}

/// The header etcd clients expect: cluster and member id, store revision, Raft term.
pub(crate) fn header(node: &Node, revision: u64) -> ResponseHeader {
    ResponseHeader {
        cluster_id: cluster_id(node),
        member_id: node.node_id().unwrap_or(0),
        revision: to_i64(revision),
        raft_term: node.current_term(),
    }
}

/// etcd's numeric cluster id for petkv's cluster id (a UUID string): the first 8 bytes of its
/// SHA-256, the same on every member.
pub(crate) fn cluster_id(node: &Node) -> u64 {
    let id = node.identity().map(|i| i.cluster_id.clone()).unwrap_or_default();
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A revision, count or id on etcd's signed wire (petkv's never reach 2^63).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A signed etcd field that must not be negative.
pub(crate) fn non_negative(field: &str, v: i64) -> Result<u64, Status> {
    u64::try_from(v).map_err(|_| Status::invalid_argument(format!("etcdserver: {field} must not be negative, got {v}")))
}

/// A petkv key-value as etcd's.
pub(crate) fn kv_to_etcd(kv: PbKeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: to_i64(kv.create_revision),
        mod_revision: to_i64(kv.mod_revision),
        version: to_i64(kv.version),
        value: kv.value,
        lease: to_i64(kv.lease),
    }
}

/// A petkv request carrying the credentials and identity of the etcd request it serves.
pub(crate) fn native<T, U>(req: &Request<T>, msg: U) -> Request<U> {
    let mut out = Request::new(msg);
    *out.metadata_mut() = req.metadata().clone();
    if let Some(who) = req.extensions().get::<crate::edge::auth::Authenticated>() {
        out.extensions_mut().insert(who.clone());
    }
    out
}

/// The forward that petkv's handlers use for a leader too old for proposals and read indexes
/// over the peer port (or a leadership that moved mid-request): an etcd request has no
/// petkv form to send there, so the client is told to retry, as etcd tells it when its
/// leader changes.
pub(crate) fn not_forwarded<M, R>(_: Channel, _: Request<M>) -> impl Future<Output = Result<Response<R>, Status>> {
    std::future::ready(Err(errors::leader_changed()))
}
