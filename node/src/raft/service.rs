//! The server side of the peer transport (the peer port).
//!
//! Raft RPCs are decoded and handed to openraft. Besides them, the peer port answers the
//! start-up protocol: `ClusterInfo` (does a cluster answer here?), `AllocateNodeId` (a new
//! volume gets a never-used id) and `Join` (become a learner; the membership reconciler
//! promotes and replaces).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

use futures::StreamExt;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tonic::{Request, Response, Status, Streaming};

use super::codec::{self, Envelope};
use super::fence::{self, Fence, Observed};
use super::types::{SnapshotMeta, TypeConfig, Vote};
use crate::node::Node;
use crate::pb::raft::raft_server::Raft as RaftRpc;
use crate::pb::raft::{
    snapshot_chunk, AllocateNodeIdRequest, AllocateNodeIdResponse, AnnounceEpochRequest, AnnounceEpochResponse,
    ClusterInfoRequest, ClusterInfoResponse, JoinRequest, JoinResponse, RaftMessage, SnapshotChunk, SnapshotHeader,
};
use crate::store::command::{Command, CommandResult};
use crate::store::snapshot::{self, SnapshotFile};
use openraft::ReadPolicy;
use petkv_client::outcome::not_applied;

/// Bound on a membership change made on behalf of a joining node.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer gRPC service.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Who a request says it is from and for.
struct Addressed<'a> {
    target: u64,
    target_epoch: u64,
    cluster_id: &'a str,
    sender: u64,
    sender_epoch: u64,
}

impl<'a> From<&'a RaftMessage> for Addressed<'a> {
    fn from(m: &'a RaftMessage) -> Self {
        Self {
            target: m.target,
            target_epoch: m.target_epoch,
            cluster_id: &m.cluster_id,
            sender: m.sender,
            sender_epoch: m.sender_epoch,
        }
    }
}

impl<'a> From<&'a SnapshotHeader> for Addressed<'a> {
    fn from(h: &'a SnapshotHeader) -> Self {
        Self {
            target: h.target,
            target_epoch: h.target_epoch,
            cluster_id: &h.cluster_id,
            sender: h.sender,
            sender_epoch: h.sender_epoch,
        }
    }
}

/// Refuses a request addressed to another node id (e.g. this pod's previous incarnation), sent
/// by a member of another cluster (two clusters can share pod names and node ids), or sent by a
/// replaced process (an older start epoch of its node: see [`super::fence`]). A request for a
/// newer start epoch of this node stops this process: it has been replaced.
fn check_addressee(node: &Node, m: Addressed<'_>) -> Result<(), Status> {
    let (target, cluster_id) = (m.target, m.cluster_id);
    let Some(identity) = node.identity() else {
        return Err(Status::unavailable(format!("message for node {target} reached a node without identity")));
    };
    if identity.node_id != target {
        return Err(Status::unavailable(format!(
            "message for node {target} reached node {}: not its recipient",
            identity.node_id
        )));
    }
    if cluster_id != identity.cluster_id {
        node.saw_foreign_cluster(cluster_id);
        let refusal = foreign_cluster(cluster_id, &identity.cluster_id);
        warn_foreign_cluster(&refusal);
        return Err(Status::failed_precondition(refusal));
    }
    node.fence.check_addressed(m.target_epoch);
    if let Observed::Stale { newest } = fence::observe_and_persist(&node.fence, m.sender, m.sender_epoch) {
        tracing::warn!(
            sender = m.sender,
            epoch = m.sender_epoch,
            newest,
            "refused a Raft message of a replaced process (an older start epoch of a peer)"
        );
        return Err(Fence::refusal(m.sender, m.sender_epoch, newest));
    }
    Ok(())
}

/// Refuses to answer a sender that became stale while its request was being handled (its
/// replacement announced itself meanwhile): the answer (a vote, an append acknowledgement)
/// must not reach the replaced process. Cheap: one map lookup.
fn still_current(node: &Node, sender: u64, sender_epoch: u64) -> Result<(), Status> {
    match node.fence.stale(sender, sender_epoch) {
        Some(newest) => Err(Fence::refusal(sender, sender_epoch, newest)),
        None => Ok(()),
    }
}

/// Wraps a reply, naming this node and its start epoch.
fn reply<T: serde::Serialize>(node: &Node, what: &'static str, value: &T) -> Result<RaftMessage, Status> {
    let sender = node.identity().map(|i| i.node_id).unwrap_or(0);
    Ok(codec::pack(what, Envelope { sender, sender_epoch: node.fence.epoch(), ..Envelope::default() }, value)?)
}

/// Refuses a vote (or pre-vote) that this restarted node must not grant ([`VoteFloor`]).
fn check_vote_floor(node: &Node, rpc: &VoteRequest<TypeConfig>) -> Result<(), Status> {
    let Some(floor) = node.fence.floor() else { return Ok(()) };
    match floor.refuses(super::vote_term(&rpc.vote), rpc.last_log_id.as_ref()) {
        Some(why) => Err(Status::aborted(format!("vote refused: {why}"))),
        None => Ok(()),
    }
}

fn foreign_cluster(theirs: &str, ours: &str) -> String {
    let theirs = if theirs.is_empty() { "(none)" } else { theirs };
    format!("refused a Raft message of cluster {theirs}: this node belongs to cluster {ours}")
}

/// Logs a refused foreign-cluster message at most once a minute (a foreign leader retries
/// every heartbeat).
fn warn_foreign_cluster(refusal: &str) {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = crate::support::sync::lock(&LAST);
    if last.is_none_or(|t| t.elapsed() >= FOREIGN_WARNING_EVERY) {
        *last = Some(Instant::now());
        tracing::warn!("{refusal} (another cluster claims this pod's peers: see docs/architecture.md)");
    }
}

/// How often a refused foreign-cluster message is logged.
const FOREIGN_WARNING_EVERY: Duration = Duration::from_secs(60);

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

fn not_leader(node: &Node) -> Status {
    match node.leader() {
        Some((id, n)) => Status::failed_precondition(format!("not the leader; the leader is {id} at {}", n.peer_addr)),
        None => Status::unavailable("not the leader and no leader is known"),
    }
}

fn write_error(node: &Node, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => not_leader(node),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl RaftRpc for PeerService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_addressee(&self.node, req.get_ref().into())?;
        let rpc: AppendEntriesRequest<TypeConfig> = codec::unpack("append entries", req.get_ref())?;
        let resp = self.node.raft()?.append_entries(rpc).await.map_err(fatal)?;
        still_current(&self.node, req.get_ref().sender, req.get_ref().sender_epoch)?;
        if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.node.note_leader_contact();
        }
        Ok(Response::new(reply(&self.node, "append entries response", &resp)?))
    }

    type StreamAppendStream = futures::stream::BoxStream<'static, Result<RaftMessage, Status>>;

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let raft = self.node.raft()?.clone();
        let node = self.node.clone();
        // The first bad message (wrong recipient, undecodable) ends the input; its error is
        // the last item of the output, after the answers to the requests before it.
        let (bad_tx, bad_rx) = tokio::sync::oneshot::channel::<Status>();
        let mut bad_tx = Some(bad_tx);
        // The sender of the stream (its leader), for the check before each answer.
        let sender = Arc::new(Mutex::new((0u64, 0u64)));
        let sender_seen = sender.clone();
        let requests = req.into_inner().scan((), move |_, msg| {
            let decoded = msg.map_err(|s| Status::cancelled(format!("append stream: {s}"))).and_then(|msg| {
                check_addressee(&node, (&msg).into())?;
                *crate::support::sync::lock(&sender_seen) = (msg.sender, msg.sender_epoch);
                Ok(codec::unpack::<AppendEntriesRequest<TypeConfig>>("append entries", &msg)?)
            });
            let next = match decoded {
                Ok(rpc) => Some(rpc),
                Err(status) => {
                    if let Some(tx) = bad_tx.take() {
                        let _ = tx.send(status);
                    }
                    None
                }
            };
            futures::future::ready(next)
        });
        let node = self.node.clone();
        let answers = raft.stream_append(requests).map(move |item| match item {
            Ok(result) => {
                let (from, epoch) = *crate::support::sync::lock(&sender);
                still_current(&node, from, epoch)?;
                if !matches!(result, Err(openraft::raft::StreamAppendError::HigherVote(_))) {
                    node.note_leader_contact();
                }
                reply(&node, "append entries result", &result)
            }
            Err(fatal_error) => Err(fatal(fatal_error)),
        });
        let trailer = futures::stream::once(bad_rx).filter_map(|bad| futures::future::ready(bad.ok().map(Err)));
        Ok(Response::new(answers.chain(trailer).boxed()))
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_addressee(&self.node, req.get_ref().into())?;
        let cmd: Command = codec::unpack("proposal", req.get_ref())?;
        let answer: super::leader_rpc::ProposalAnswer = crate::api::Api { node: self.node.clone() }
            .propose_for_follower(cmd)
            .await
            .map_err(|s| super::leader_rpc::WireStatus::from(&s));
        Ok(Response::new(reply(&self.node, "proposal answer", &answer)?))
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_addressee(&self.node, req.get_ref().into())?;
        let () = codec::unpack("read index", req.get_ref())?;
        let raft = self.node.raft()?;
        let answer: super::leader_rpc::ReadIndexAnswer = match tokio::time::timeout(
            self.node.config.request_timeout,
            raft.get_read_linearizer(ReadPolicy::ReadIndex),
        )
        .await
        {
            Ok(Ok(linearizer)) => Ok(linearizer.read_log_id().index()),
            Ok(Err(e)) => Err(super::leader_rpc::WireStatus::from(&not_applied(Status::unavailable(format!(
                "no read index: {e}"
            ))))),
            Err(_) => Err(super::leader_rpc::WireStatus::from(&Status::deadline_exceeded(
                "the read-index round timed out (no quorum?)",
            ))),
        };
        Ok(Response::new(reply(&self.node, "read index answer", &answer)?))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_addressee(&self.node, req.get_ref().into())?;
        let rpc: VoteRequest<TypeConfig> = codec::unpack("vote", req.get_ref())?;
        check_vote_floor(&self.node, &rpc)?;
        let resp = self.node.raft()?.vote(rpc).await.map_err(fatal)?;
        still_current(&self.node, req.get_ref().sender, req.get_ref().sender_epoch)?;
        Ok(Response::new(reply(&self.node, "vote response", &resp)?))
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_addressee(&self.node, req.get_ref().into())?;
        let rpc: VoteRequest<TypeConfig> = codec::unpack("pre-vote", req.get_ref())?;
        check_vote_floor(&self.node, &rpc)?;
        let resp = self.node.raft()?.pre_vote(rpc).await.map_err(fatal)?;
        still_current(&self.node, req.get_ref().sender, req.get_ref().sender_epoch)?;
        Ok(Response::new(reply(&self.node, "pre-vote response", &resp)?))
    }

    async fn transfer_leader(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        check_addressee(&self.node, req.get_ref().into())?;
        let rpc: TransferLeaderRequest<TypeConfig> = codec::unpack("transfer leader", req.get_ref())?;
        let resp = self.node.raft()?.handle_transfer_leader(rpc).await.map_err(fatal)?;
        Ok(Response::new(reply(&self.node, "transfer leader response", &resp)?))
    }

    async fn install_snapshot(&self, req: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftMessage>, Status> {
        let raft = self.node.raft()?.clone();
        let path = self.node.sm.incoming_snapshot_path();
        let received = receive_snapshot(&self.node, req.into_inner(), &path).await;
        let (vote, meta) = match received {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        let file = SnapshotFile::at(path.clone()).map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(bytes = file.len, last = ?meta.last_log_id, "installing a snapshot from the leader");
        let snap = openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> { meta, snapshot: file };
        let resp = raft.install_full_snapshot(vote, snap).await.map_err(fatal);
        if resp.is_ok() {
            self.node.note_leader_contact();
        }
        // On success the state machine moved the file into place; on failure it is garbage.
        let _ = tokio::fs::remove_file(&path).await;
        Ok(Response::new(reply(&self.node, "snapshot response", &resp?)?))
    }

    async fn cluster_info(&self, _req: Request<ClusterInfoRequest>) -> Result<Response<ClusterInfoResponse>, Status> {
        let node = &self.node;
        let (Some(identity), Some(metrics)) = (node.identity(), node.metrics()) else {
            return Ok(Response::new(ClusterInfoResponse::default()));
        };
        // A node that has an identity but has never seen a membership is not a cluster yet.
        let membership = metrics.membership_config.membership();
        let initialized = membership.nodes().next().is_some();
        let member_ids = membership.nodes().map(|(id, _)| *id).collect();
        let leader = node.leader();
        Ok(Response::new(ClusterInfoResponse {
            initialized,
            cluster_id: identity.cluster_id.clone(),
            node_id: identity.node_id,
            leader_id: leader.as_ref().map(|(id, _)| *id).unwrap_or(0),
            leader_peer_addr: leader.map(|(_, n)| n.peer_addr).unwrap_or_default(),
            term: metrics.current_term,
            declared_replicas: node.sm.declared_replicas().ok().flatten().unwrap_or(0),
            member_ids,
            volume_free_bytes: node.space.free_bytes(),
            volume_low: node.space.is_low(),
            volume_reserve_bytes: node.space.reserve_bytes(),
        }))
    }

    async fn allocate_node_id(
        &self,
        req: Request<AllocateNodeIdRequest>,
    ) -> Result<Response<AllocateNodeIdResponse>, Status> {
        let node = &self.node;
        let raft = node.raft()?;
        let identity = node.identity().ok_or_else(|| Status::unavailable("node has no identity yet"))?;
        let ordinal = req.get_ref().ordinal;
        let resp = tokio::time::timeout(JOIN_TIMEOUT, raft.client_write(Command::AllocateNodeId { ordinal }))
            .await
            .map_err(|_| Status::deadline_exceeded("allocating a node id timed out (no quorum?)"))?
            .map_err(|e| write_error(node, e))?;
        match resp.data {
            CommandResult::NodeId { node_id, .. } => {
                tracing::info!(ordinal, node_id, "allocated a node id for a new volume");
                Ok(Response::new(AllocateNodeIdResponse { node_id, cluster_id: identity.cluster_id.clone() }))
            }
            other => Err(Status::internal(format!("unexpected allocation result {other:?}"))),
        }
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let node = &self.node;
        let raft = node.raft()?;
        let identity = node.identity().ok_or_else(|| Status::unavailable("node has no identity yet"))?;
        let req = req.into_inner();
        if req.cluster_id != identity.cluster_id {
            return Err(Status::failed_precondition(format!(
                "node {} belongs to cluster {:?}, this is cluster {:?}",
                req.node_id, req.cluster_id, identity.cluster_id
            )));
        }
        if crate::raft::ordinal_of(req.node_id) != req.ordinal {
            return Err(Status::invalid_argument(format!("node id {} is not of ordinal {}", req.node_id, req.ordinal)));
        }
        if !raft.is_leader() {
            return Err(not_leader(node));
        }
        let member =
            crate::raft::PeerNode { ordinal: req.ordinal, client_addr: req.client_addr, peer_addr: req.peer_addr };
        if node.member(req.node_id).as_ref() == Some(&member) {
            return Ok(Response::new(JoinResponse { member: true }));
        }
        tracing::info!(node_id = req.node_id, %member, "adding a learner");
        tokio::time::timeout(JOIN_TIMEOUT, raft.add_learner(req.node_id, member, false))
            .await
            .map_err(|_| Status::deadline_exceeded("adding the learner timed out (no quorum?)"))?
            .map_err(|e| write_error(node, e))?;
        Ok(Response::new(JoinResponse { member: true }))
    }

    async fn announce_epoch(
        &self,
        req: Request<AnnounceEpochRequest>,
    ) -> Result<Response<AnnounceEpochResponse>, Status> {
        let node = &self.node;
        let req = req.into_inner();
        let absent = AnnounceEpochResponse { absent: true, ..Default::default() };
        // A pod still deciding with an empty volume, or one of a later incarnation: the voter
        // the announcement is for no longer runs here.
        let Some(identity) = node.identity() else { return Ok(Response::new(absent)) };
        if req.cluster_id != identity.cluster_id {
            return Err(Status::failed_precondition(foreign_cluster(&req.cluster_id, &identity.cluster_id)));
        }
        if identity.node_id != req.target {
            return Ok(Response::new(absent));
        }
        if let Observed::Stale { newest } = node.fence.observe(req.node_id, req.epoch) {
            return Err(Fence::refusal(req.node_id, req.epoch, newest));
        }
        // Recorded before the answer: the announcing node relies on it from then on.
        node.fence.persist().await.map_err(|e| Status::unavailable(format!("cannot record the start epoch: {e}")))?;
        tracing::info!(node = req.node_id, epoch = req.epoch, "a peer restarted: its older process is fenced");
        // Read after the epoch is recorded: whatever the older process did before is in here
        // (and anything still in flight gets a refusal, `still_current`).
        let (term, last) = node.term_and_last_log_id().map_err(|e| Status::unavailable(e.to_string()))?;
        let last_log_id = codec::encode("last log id", &last)?.into();
        Ok(Response::new(AnnounceEpochResponse { absent: false, term, last_log_id }))
    }
}

/// Receives a chunked snapshot into `path`, checking framing, size and checksum, then the file
/// format itself. Returns the leader's vote and the snapshot metadata.
async fn receive_snapshot(
    node: &Node,
    mut stream: Streaming<SnapshotChunk>,
    path: &std::path::Path,
) -> Result<(Vote, SnapshotMeta), Status> {
    let bad = |m: String| Status::invalid_argument(format!("snapshot stream: {m}"));
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot {}: {e}", path.display()));
    let first = stream.next().await.ok_or_else(|| bad("empty stream".into()))??;
    let Some(snapshot_chunk::Part::Header(header)) = first.part else {
        return Err(bad("first message is not a header".into()));
    };
    codec::check_version(header.version)?;
    check_addressee(node, (&header).into())?;
    let vote: Vote = codec::decode("vote", &header.vote)?;
    let meta: SnapshotMeta = codec::decode("snapshot meta", &header.meta)?;
    // tokio's file runs each write on the blocking pool: a snapshot of any size never holds a
    // runtime worker thread on disk I/O.
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(io)?);
    let mut crc = crc32fast::Hasher::new();
    let mut received = 0u64;
    let mut trailer = None;
    while let Some(chunk) = stream.next().await {
        match chunk?.part {
            Some(snapshot_chunk::Part::Data(data)) if trailer.is_none() => {
                received += data.len() as u64;
                if received > header.total_bytes {
                    return Err(bad(format!("more than the announced {} bytes", header.total_bytes)));
                }
                crc.update(&data);
                file.write_all(&data).await.map_err(io)?;
            }
            Some(snapshot_chunk::Part::Trailer(t)) if trailer.is_none() => trailer = Some(t),
            _ => return Err(bad("unexpected message".into())),
        }
    }
    let trailer = trailer.ok_or_else(|| bad("stream ended without a trailer (truncated)".into()))?;
    if received != header.total_bytes {
        return Err(bad(format!("received {received} of {} bytes", header.total_bytes)));
    }
    if crc.finalize() != trailer.crc32 {
        return Err(bad("checksum mismatch".into()));
    }
    file.flush().await.map_err(io)?;
    file.into_inner().sync_all().await.map_err(io)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || snapshot::verify(&path))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| bad(e.to_string()))?;
    Ok((vote, meta))
}
