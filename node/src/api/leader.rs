//! Requests that need the leader: proposing a command, confirming a linearizable read with a
//! read-index round, and the two shapes every handler takes on top of them.
//!
//! - A write: proposed here when this node leads; on a follower, the command (already
//!   validated and checked here) goes to the leader over the peer connection
//!   ([`crate::raft::leader_rpc::propose`]) and the response is built here from its result,
//!   once this member has applied it too (reads and watches here then see it).
//! - A linearizable read: on the leader, a read-index round; on a follower, the read index from
//!   the leader (one round for the reads that arrive together), then the read is served here
//!   once this member has applied that far.
//!
//! A leader too old for the peer RPCs, or a leadership that moved while a command was proposed
//! here, sends the client's request itself to the leader's client port ([`super::forward`]).

use std::future::Future;

use petkv_client::outcome::not_applied;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::forward::{no_leader, relay, to_leader, Origin};
use super::{revision_status, Api};
use crate::raft::leader_rpc;
use crate::raft::{ClientWriteError, LinearizableReadError, NodeId, PeerNode, RaftError, ReadPolicy};
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

    /// Proposes a command a follower hands over ([`crate::raft::leader_rpc`]): as a forwarded
    /// request, so a leader that just stepped down refuses it instead of passing it on.
    pub async fn propose_for_follower(&self, cmd: Command) -> Result<CommandResult, Status> {
        self.propose(cmd, true).await.map_err(|refusal| match refusal {
            NotServed::Failed(s) => s,
            NotServed::Forward(_) => no_leader(&self.node, true),
        })
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

    pub(super) fn storage_error(e: std::io::Error) -> Status {
        Status::internal(format!("storage error: {e}"))
    }
}

/// Where a linearizable read is answered.
pub(super) enum ReadAt<M, R> {
    /// This node may serve it: the request, back.
    Here(M),
    /// The leader's answer, relayed.
    Leader(Response<R>),
}

impl Api {
    /// Proposes `cmd` if this node leads, or on a follower has the leader propose it over the
    /// peer connection, and answers with `answer` of its result. Only a leader too old for that
    /// (or a leadership that moved while `cmd` was proposed here) gets `msg` itself, sent with
    /// `forward`. `answer` hands back a result it does not expect: a refused lease or
    /// compaction becomes its status, anything else INTERNAL.
    pub(super) async fn write_or_forward<M, R, Fut>(
        &self,
        origin: &Origin,
        msg: M,
        cmd: Command,
        answer: impl FnOnce(CommandResult) -> Result<R, CommandResult>,
        forward: impl FnOnce(Channel, Request<M>) -> Fut,
    ) -> Result<Response<R>, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        if let Some(leader) = self.other_leader(origin) {
            self.node.serving_raft().map_err(not_applied)?;
            self.node.space.check_write()?;
            let deadline = tokio::time::Instant::now() + self.node.config.request_timeout;
            match leader_rpc::propose(&self.node, (leader.0, &leader.1), &cmd).await {
                Ok(result) => {
                    // As etcd does: answer once this member has applied the write too, so a
                    // read or watch here afterwards sees it. It is committed either way, so a
                    // member too slow to apply it in time still answers with its result.
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Err(e) = leader_rpc::wait_applied(&self.node, result.index(), left).await {
                        tracing::debug!(error = %e, "answering a committed write before applying it here");
                    }
                    return answer(result).map(Response::new).map_err(refused);
                }
                // A leader that predates proposals over the peer port.
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    return self.send_to_leader(&leader.1, origin, msg, forward).await;
                }
                Err(s) => return Err(s),
            }
        }
        match self.propose(cmd, origin.forwarded).await {
            Ok(result) => answer(result).map(Response::new).map_err(refused),
            Err(NotServed::Forward(leader)) => self.send_to_leader(&leader, origin, msg, forward).await,
            Err(NotServed::Failed(s)) => Err(s),
        }
    }

    /// Confirms this node may serve a linearizable read of `msg` ([`ReadAt::Here`]): on the
    /// leader by a read-index round; on a follower by the leader's read index and waiting to
    /// apply through it. Only when that is not possible (a leader too old for the peer RPC)
    /// does the request go to the leader with `forward` ([`ReadAt::Leader`]).
    pub(super) async fn read_or_forward<M, R, Fut>(
        &self,
        origin: &Origin,
        msg: M,
        forward: impl FnOnce(Channel, Request<M>) -> Fut,
    ) -> Result<ReadAt<M, R>, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        if let Some(leader) = self.other_leader(origin) {
            self.node.serving_raft()?;
            let deadline = tokio::time::Instant::now() + self.node.config.request_timeout;
            match leader_rpc::read_index(&self.node, leader.clone()).await {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    leader_rpc::wait_applied(&self.node, index, left).await?;
                    return Ok(ReadAt::Here(msg));
                }
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    return self.send_to_leader(&leader.1, origin, msg, forward).await.map(ReadAt::Leader);
                }
                Err(s) => return Err(s),
            }
        }
        self.read_on_leader_or_forward(origin, msg, forward).await
    }

    /// [`Api::read_or_forward`] for a read only the leader can answer (it needs the leader's
    /// lease clock): a read-index round here when this node leads, else the request goes to
    /// the leader with `forward`.
    pub(super) async fn read_on_leader_or_forward<M, R, Fut>(
        &self,
        origin: &Origin,
        msg: M,
        forward: impl FnOnce(Channel, Request<M>) -> Fut,
    ) -> Result<ReadAt<M, R>, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        match self.read_index(origin.forwarded).await {
            Ok(()) => Ok(ReadAt::Here(msg)),
            Err(NotServed::Forward(leader)) => {
                self.send_to_leader(&leader, origin, msg, forward).await.map(ReadAt::Leader)
            }
            Err(NotServed::Failed(s)) => Err(s),
        }
    }

    /// Sends the client's request `msg` to the leader's client port with `forward` and relays
    /// the answer.
    async fn send_to_leader<M, R, Fut>(
        &self,
        leader: &PeerNode,
        origin: &Origin,
        msg: M,
        forward: impl FnOnce(Channel, Request<M>) -> Fut,
    ) -> Result<Response<R>, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let (channel, req) = to_leader(&self.node, leader, origin, msg)?;
        forward(channel, req).await.map_err(relay)
    }

    /// The leader, when another member leads and this request came from a client (a request
    /// forwarded by an older member is served here or refused, never sent on).
    fn other_leader(&self, origin: &Origin) -> Option<(NodeId, PeerNode)> {
        if origin.forwarded {
            return None;
        }
        self.node.leader().filter(|(id, _)| Some(*id) != self.node.node_id())
    }
}

/// The status of a command result the handler did not expect: a refusal's own status, or
/// INTERNAL.
fn refused(result: CommandResult) -> Status {
    match result {
        CommandResult::LeaseRefused(e) => super::lease::lease_status(e),
        CommandResult::CompactRefused(e) => revision_status(e),
        other => Status::internal(format!("unexpected command result: {other:?}")),
    }
}
