//! `petkv.v1.KV`: the data path.
//!
//! - Put/Delete: validated, checked against the free-space guard ([`crate::edge::space`]: refused
//!   with RESOURCE_EXHAUSTED, never proposed, while this node's volume or, on the leader, any
//!   member's is below its reserve), turned into a [`Command`], proposed with `client_write`. The reply
//!   comes after a majority has the entry fsync'd and this leader applied it. On a follower the
//!   request is forwarded to the leader. A write that does not finish within the request
//!   timeout is reported as DEADLINE_EXCEEDED with "outcome unknown", never as failed.
//! - Get/Scan: `linearizable` confirms leadership with a read-index round (no log write) and
//!   waits until the state machine applied up to it; `stale` reads the local state machine.

use petkv_client::outcome::not_applied;
use petkv_client::pb::v1::kv_server::Kv;
use petkv_client::pb::v1::{
    CompactRequest, CompactResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest, PutResponse,
    ScanRequest, ScanResponse, TxnRequest, TxnResponse, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::forward::{kv_client, no_leader, relay, to_leader, Origin};
use super::{header, revision_status, to_pb, Api};
use crate::api::validation::ReadConsistency;
use crate::raft::{ClientWriteError, LinearizableReadError, PeerNode, RaftError, ReadPolicy};
use crate::store::command::{Command, CommandResult};

/// Why a request that needs the leader was not served here.
pub(super) enum NotServed {
    Forward(PeerNode),
    Failed(Status),
}

impl Api {
    /// Proposes a command on this node if it leads.
    pub(super) async fn propose(&self, cmd: Command, forwarded: bool) -> Result<CommandResult, NotServed> {
        let node = &self.node;
        let raft = node.serving_raft().map_err(|s| NotServed::Failed(not_applied(s)))?;
        node.space.check_write().map_err(NotServed::Failed)?;
        let outcome = tokio::time::timeout(node.config.request_timeout, raft.client_write(cmd)).await;
        match outcome {
            Err(_) => Err(NotServed::Failed(Status::deadline_exceeded(
                "outcome unknown: the write was proposed but not confirmed within the request timeout; \
                 it may or may not be applied (retry with the same write id to find out)",
            ))),
            Ok(Ok(resp)) => match resp.data {
                CommandResult::WriteIdReused { sequence } => {
                    Err(NotServed::Failed(Status::failed_precondition(format!(
                        "write id sequence {sequence} of this client id was already used for another command: \
                     a retry must send the same command; a new write needs a new sequence"
                    ))))
                }
                CommandResult::StaleSequence { last_applied } => {
                    Err(NotServed::Failed(Status::failed_precondition(format!(
                        "write id sequence is older than this client id's last applied sequence {last_applied}: \
                         a client id must not have two writes in flight"
                    ))))
                }
                result => Ok(result),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => match (f.leader_id, f.leader_node) {
                (Some(id), Some(n)) if !forwarded && Some(id) != node.node_id() => Err(NotServed::Forward(n)),
                _ => Err(NotServed::Failed(no_leader(node, forwarded))),
            },
            // Raft stopped or dropped the entry: it may or may not have reached the log, so this
            // is not marked "not applied"; a retry with the same write id is safe.
            Ok(Err(e)) => Err(NotServed::Failed(Status::unavailable(format!("outcome unknown: {e}")))),
        }
    }

    /// Confirms this node can serve a linearizable read right now.
    pub(super) async fn read_index(&self, forwarded: bool) -> Result<(), NotServed> {
        let node = &self.node;
        let raft = node.serving_raft().map_err(NotServed::Failed)?;
        let deadline = tokio::time::Instant::now() + node.config.request_timeout;
        let outcome = tokio::time::timeout_at(deadline, raft.ensure_linearizable(ReadPolicy::ReadIndex)).await;
        match outcome {
            Err(_) => Err(NotServed::Failed(Status::deadline_exceeded("read-index round timed out (no quorum?)"))),
            // A leader always reads in a term it won by election (a restarted node never resumes
            // its old term: raft/settings.rs), whose first entry follows every entry it held, so
            // the read index covers every write it acknowledged.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                match (f.leader_id, f.leader_node) {
                    (Some(id), Some(n)) if !forwarded && Some(id) != node.node_id() => Err(NotServed::Forward(n)),
                    _ => Err(NotServed::Failed(no_leader(node, forwarded))),
                }
            }
            Ok(Err(e)) => Err(NotServed::Failed(Status::unavailable(format!("linearizable read failed: {e}")))),
        }
    }

    fn applied_index(&self) -> u64 {
        self.node.sm.applied_index()
    }

    pub(super) fn storage_error(e: std::io::Error) -> Status {
        Status::internal(format!("storage error: {e}"))
    }
}

#[tonic::async_trait]
impl Kv for Api {
    type WatchStream = super::watch::WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.watch_here(req)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.put(&msg)?;
        match self.propose(cmd, origin.forwarded).await {
            Ok(CommandResult::LeaseRefused(e)) => Err(super::lease::lease_status(e)),
            Ok(CommandResult::Put { index, revision, succeeded, current }) => Ok(Response::new(PutResponse {
                header: Some(header(&self.node, index, revision)),
                succeeded,
                kv: current.map(to_pb),
            })),
            Ok(other) => Err(Status::internal(format!("unexpected result for a put: {other:?}"))),
            Err(NotServed::Forward(leader)) => {
                let (channel, req) = to_leader(&self.node, &leader, &origin, msg)?;
                kv_client(channel).put(req).await.map_err(relay)
            }
            Err(NotServed::Failed(s)) => Err(s),
        }
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.delete(&msg)?;
        match self.propose(cmd, origin.forwarded).await {
            Ok(CommandResult::Delete { index, revision, succeeded, deleted, previous }) => {
                Ok(Response::new(DeleteResponse {
                    header: Some(header(&self.node, index, revision)),
                    succeeded,
                    deleted,
                    previous: previous.map(to_pb),
                }))
            }
            Ok(other) => Err(Status::internal(format!("unexpected result for a delete: {other:?}"))),
            Err(NotServed::Forward(leader)) => {
                let (channel, req) = to_leader(&self.node, &leader, &origin, msg)?;
                kv_client(channel).delete(req).await.map_err(relay)
            }
            Err(NotServed::Failed(s)) => Err(s),
        }
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let plan = self.node.config.limits.get(&msg)?;
        if plan.consistency == ReadConsistency::Linearizable {
            match self.read_index(origin.forwarded).await {
                Ok(()) => {}
                Err(NotServed::Forward(leader)) => {
                    let (channel, req) = to_leader(&self.node, &leader, &origin, msg)?;
                    return kv_client(channel).get(req).await;
                }
                Err(NotServed::Failed(s)) => return Err(s),
            }
        } else {
            self.node.serving_raft()?;
        }
        let index = self.applied_index();
        let sm = self.node.sm.clone();
        let key = msg.key.to_vec();
        let read = blocking(move || sm.get_at(&key, plan.revision)).await?.map_err(revision_status)?;
        Ok(Response::new(GetResponse {
            header: Some(header(&self.node, index, read.revision)),
            kv: read.value.map(to_pb),
        }))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let plan = self.node.config.limits.scan(&msg)?;
        if plan.consistency == ReadConsistency::Linearizable {
            match self.read_index(origin.forwarded).await {
                Ok(()) => {}
                Err(NotServed::Forward(leader)) => {
                    let (channel, req) = to_leader(&self.node, &leader, &origin, msg)?;
                    return kv_client(channel).scan(req).await;
                }
                Err(NotServed::Failed(s)) => return Err(s),
            }
        } else {
            self.node.serving_raft()?;
        }
        let index = self.applied_index();
        let sm = self.node.sm.clone();
        let read = blocking(move || sm.scan_at(plan.start, plan.end, plan.limit, plan.revision))
            .await?
            .map_err(revision_status)?;
        let page = read.value;
        let next_page_token = match (page.more, page.kvs.last()) {
            (true, Some(last)) => last.key.clone().into(),
            _ => Default::default(),
        };
        Ok(Response::new(ScanResponse {
            header: Some(header(&self.node, index, read.revision)),
            kvs: page.kvs.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.txn(&msg)?;
        match self.propose(cmd, origin.forwarded).await {
            Ok(CommandResult::LeaseRefused(e)) => Err(super::lease::lease_status(e)),
            Ok(CommandResult::Txn { index, revision, succeeded, results }) => Ok(Response::new(TxnResponse {
                header: Some(header(&self.node, index, revision)),
                succeeded,
                results: super::txn::results_to_pb(results),
            })),
            Ok(other) => Err(Status::internal(format!("unexpected result for a transaction: {other:?}"))),
            Err(NotServed::Forward(leader)) => {
                let (channel, req) = to_leader(&self.node, &leader, &origin, msg)?;
                kv_client(channel).txn(req).await.map_err(relay)
            }
            Err(NotServed::Failed(s)) => Err(s),
        }
    }

    async fn compact(&self, req: Request<CompactRequest>) -> Result<Response<CompactResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.compact(&msg)?;
        match self.propose(cmd, origin.forwarded).await {
            Ok(CommandResult::Compacted { index, revision, compacted }) => {
                Ok(Response::new(CompactResponse { header: Some(header(&self.node, index, revision)), compacted }))
            }
            Ok(CommandResult::CompactRefused(e)) => Err(revision_status(e)),
            Ok(other) => Err(Status::internal(format!("unexpected result for a compaction: {other:?}"))),
            Err(NotServed::Forward(leader)) => {
                let (channel, req) = to_leader(&self.node, &leader, &origin, msg)?;
                kv_client(channel).compact(req).await.map_err(relay)
            }
            Err(NotServed::Failed(s)) => Err(s),
        }
    }
}

/// Runs a local read that may touch the disk off the async workers.
async fn blocking<T: Send + 'static>(read: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| Status::internal(format!("read task: {e}")))?
        .map_err(Api::storage_error)
}
