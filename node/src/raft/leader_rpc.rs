//! What a follower hands to its leader over the peer connection it already has, instead of
//! re-sending a client's request to the leader's client port:
//!
//! - a **proposal**: a client command the follower validated and checked (credentials, limits,
//!   its own volume), which the leader proposes as if a client had sent it; the answer is the
//!   command's result, and the follower builds the client's response from it;
//! - a **read index**: the log index a linearizable read must see. The leader confirms its
//!   leadership with a quorum round and answers with it; the follower waits until it has applied
//!   that far and serves the read from its own state machine. Concurrent reads on one follower
//!   share a round ([`ReadIndexBatch`]): every read of a round arrived before the round was
//!   asked, so the index covers every write acknowledged before each of them.
//!
//! Both travel as [`RaftMessage`]s, so the leader checks the sender as it checks a Raft message
//! (cluster id, addressee, start epoch: a fenced process proposes nothing). A leader too old to
//! know these RPCs answers UNIMPLEMENTED, and the caller falls back to forwarding the client's
//! request (a rolling upgrade passes through such a mix).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use petkv_client::outcome::{is_not_applied, not_applied};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tonic::{Code, Status};

use super::codec;
use super::network::Speaker;
use super::types::{NodeId, PeerNode};
use crate::node::Node;
use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::RaftMessage;
use crate::store::command::{Command, CommandResult};

/// A status as it crosses the peer transport (postcard cannot carry a `tonic::Status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireStatus {
    pub code: i32,
    pub message: String,
    /// The status carried the "not applied" mark.
    pub not_applied: bool,
}

impl From<&Status> for WireStatus {
    fn from(s: &Status) -> Self {
        Self { code: s.code() as i32, message: s.message().to_string(), not_applied: is_not_applied(s) }
    }
}

impl From<WireStatus> for Status {
    fn from(w: WireStatus) -> Self {
        let status = Status::new(Code::from_i32(w.code), w.message);
        if w.not_applied {
            not_applied(status)
        } else {
            status
        }
    }
}

/// The leader's answer to a proposal.
pub type ProposalAnswer = Result<CommandResult, WireStatus>;
/// The leader's answer to a read-index request: the log index to apply through.
pub type ReadIndexAnswer = Result<u64, WireStatus>;

/// The follower's side of one call to the leader: the envelope, the call within `timeout`, the
/// reply's checks.
async fn call<Req, Resp, F, Fut>(
    node: &Node,
    (leader_id, leader): (NodeId, &PeerNode),
    what: &'static str,
    req: &Req,
    f: F,
) -> Result<Resp, Status>
where
    Req: Serialize,
    Resp: serde::de::DeserializeOwned,
    F: FnOnce(RaftClient<tonic::transport::Channel>, tonic::Request<RaftMessage>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<RaftMessage>, Status>>,
{
    let identity = node.identity().ok_or_else(|| not_applied(Status::unavailable("node is starting")))?;
    let speaker =
        Speaker { cluster_id: identity.cluster_id.clone(), node_id: identity.node_id, fence: node.fence.clone() };
    let msg = codec::pack(what, speaker.envelope(leader_id), req).map_err(Status::from)?;
    let channel = node.channels.peer(&leader.peer_addr).map_err(|e| not_applied(Status::internal(e.to_string())))?;
    let mut request = tonic::Request::new(msg);
    request.set_timeout(node.config.request_timeout);
    let client = RaftClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    let reply = tokio::time::timeout(node.config.request_timeout, f(client, request))
        .await
        .map_err(|_| Status::deadline_exceeded(format!("the leader did not answer the {what} in time")))?
        .inspect_err(|s| node.fence.check_refusal(s))?;
    speaker.check_reply(leader_id, reply.get_ref()).map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(codec::unpack(what, reply.get_ref())?)
}

/// The largest answer a follower takes: a transaction's range results can be large.
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Has `leader` propose `cmd`. A failure before the leader could have proposed it is marked
/// "not applied"; any other is "outcome unknown" (the client retries with the same write id).
pub async fn propose(node: &Node, leader: (NodeId, &PeerNode), cmd: &Command) -> Result<CommandResult, Status> {
    let answer: ProposalAnswer = call(node, leader, "proposal", cmd, |mut c, r| async move { c.propose(r).await })
        .await
        .map_err(|s| match s.code() {
            Code::Unimplemented => s,
            _ if is_not_applied(&s) => s,
            _ => Status::unavailable(format!("outcome unknown: the proposal to the leader failed: {}", s.message())),
        })?;
    answer.map_err(Status::from)
}

/// Asks `leader` for a read index.
async fn ask_read_index(node: &Node, leader: (NodeId, &PeerNode)) -> Result<u64, Status> {
    let answer: ReadIndexAnswer =
        call(node, leader, "read index", &(), |mut c, r| async move { c.read_index(r).await }).await?;
    answer.map_err(Status::from)
}

/// Read-index requests of one follower waiting for their round; see the module docs.
#[derive(Default)]
pub struct ReadIndexBatch {
    state: Mutex<Rounds>,
}

#[derive(Default)]
struct Rounds {
    /// A task is asking the leader (and will ask again for the waiters below).
    asking: bool,
    /// Reads that arrived after the round in flight was asked: they go in the next one.
    waiting: Vec<oneshot::Sender<Result<u64, Status>>>,
}

/// The read index for a linearizable read that arrives now, from `leader`, in a round shared
/// with the reads around it.
pub async fn read_index(node: &Arc<Node>, leader: (NodeId, PeerNode)) -> Result<u64, Status> {
    let (tx, rx) = oneshot::channel();
    let start = {
        let mut rounds = crate::support::sync::lock(&node.read_index.state);
        rounds.waiting.push(tx);
        !std::mem::replace(&mut rounds.asking, true)
    };
    if start {
        tokio::spawn(ask_in_rounds(node.clone(), leader));
    }
    rx.await.map_err(|_| Status::unavailable("the read-index round was dropped; retry"))?
}

/// Asks the leader once per round until no read waits.
async fn ask_in_rounds(node: Arc<Node>, mut leader: (NodeId, PeerNode)) {
    loop {
        let round = {
            let mut rounds = crate::support::sync::lock(&node.read_index.state);
            if rounds.waiting.is_empty() {
                rounds.asking = false;
                return;
            }
            std::mem::take(&mut rounds.waiting)
        };
        if let Some(now) = node.leader().filter(|(id, _)| Some(*id) != node.node_id()) {
            leader = now;
        }
        let answer = ask_read_index(&node, (leader.0, &leader.1)).await;
        for waiter in round {
            let _ = waiter.send(answer.clone());
        }
    }
}

/// Waits until this node has applied through `index`, within `timeout`.
pub async fn wait_applied(node: &Node, index: u64, timeout: Duration) -> Result<(), Status> {
    if node.sm.applied_index() >= index {
        return Ok(());
    }
    let raft = node.raft()?;
    raft.wait(Some(timeout))
        .applied_index_at_least(Some(index), "a follower's linearizable read")
        .await
        .map(|_| ())
        .map_err(|e| {
            Status::deadline_exceeded(format!("this member did not apply the read index {index} in time: {e}"))
        })
}
