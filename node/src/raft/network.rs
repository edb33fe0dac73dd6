//! The client side of the peer transport: how this node sends Raft RPCs to another member.
//!
//! One gRPC channel per peer address (plaintext, or mutual TLS with `--peer-tls-*`) is created lazily and cached for the life of the process
//! ([`PeerChannels`]); tonic reconnects it after a failure. Every RPC carries the deadline
//! openraft gives it. Replication is pipelined: openraft's `stream_append` session becomes one
//! bidirectional gRPC stream (`StreamAppend`) whose answers come back in request order, so the
//! leader sends the next batch of entries while the follower still fsyncs the previous one;
//! a stream with requests outstanding and no answer for two deadlines counts as unreachable. Snapshots are streamed from the
//! snapshot file in 1 MiB chunks followed by a CRC32 trailer.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use petkv_client::tls::dial::{lazy_channel, BadAddress};
use petkv_client::tls::ClientTls;
use tonic::transport::Channel;

use super::codec::{self, Envelope};
use super::fence::{self, Fence, Observed};
use super::peer_health::{self, PeerHealth};
use super::types::{NodeId, PeerNode, TypeConfig, Vote};
use crate::edge::tls::Dialers;
use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::{snapshot_chunk, RaftMessage, SnapshotChunk, SnapshotHeader, SnapshotTrailer};
use crate::store::snapshot::SnapshotFile;

/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Shortest wait for an append answer before counting a check as stalled.
const MIN_ANSWER_WAIT: Duration = Duration::from_millis(250);
/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which port of another node a channel goes to: it decides the TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Port {
    Peer,
    Client,
}

/// Cached gRPC channels to other nodes, one per port and `host:port`, plaintext or over TLS
/// as [`Dialers`] say. Shared by the Raft network, the start-up probes, request forwarding
/// and the membership reconciler.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<(Port, String), Channel>>>,
    tls: Dialers,
}

impl PeerChannels {
    /// Channels dialed with `tls` (the default is plaintext).
    pub fn new(tls: Dialers) -> Self {
        Self { channels: Arc::default(), tls }
    }

    /// The cached channel to another node's peer port, created (without connecting) on first use.
    pub fn peer(&self, addr: &str) -> Result<Channel, BadAddress> {
        self.get(Port::Peer, addr)
    }

    /// The cached channel to another node's client port (forwarding, member status).
    pub fn client(&self, addr: &str) -> Result<Channel, BadAddress> {
        self.get(Port::Client, addr)
    }

    /// How client ports are dialed: for the client library when it talks to another node.
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.client.as_ref()
    }

    fn get(&self, port: Port, addr: &str) -> Result<Channel, BadAddress> {
        let mut channels = crate::support::sync::lock(&self.channels);
        let key = (port, addr.to_string());
        if let Some(ch) = channels.get(&key) {
            return Ok(ch.clone());
        }
        let tls = match port {
            Port::Peer => self.tls.peer.as_ref(),
            Port::Client => self.tls.client.as_ref(),
        };
        let ch = lazy_channel(addr, tls, |endpoint| {
            endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        })?;
        channels.insert(key, ch.clone());
        Ok(ch)
    }
}

/// Who this node is on the wire: what every request carries, and the checks every reply
/// passes before openraft sees it.
pub struct Speaker {
    /// This node's cluster id (peers of another cluster refuse its requests).
    pub cluster_id: String,
    pub node_id: NodeId,
    pub fence: Arc<Fence>,
}

impl Speaker {
    pub(crate) fn envelope(&self, target: NodeId) -> Envelope<'_> {
        Envelope {
            target,
            target_epoch: self.fence.newest_of(target),
            cluster_id: &self.cluster_id,
            sender: self.node_id,
            sender_epoch: self.fence.epoch(),
        }
    }

    /// Refuses a reply from a replaced process of `target` (it still answers on a connection
    /// opened before its replacement started): its acknowledgement must never count.
    pub(crate) fn check_reply(&self, target: NodeId, reply: &RaftMessage) -> Result<(), RPCError<TypeConfig>> {
        match fence::observe_and_persist(&self.fence, target, reply.sender_epoch) {
            Observed::Stale { newest } => Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "node {target} answered from start epoch {}, replaced by epoch {newest}: ignored",
                reply.sender_epoch
            )))),
            Observed::Current | Observed::Newer => Ok(()),
        }
    }

    /// Maps a gRPC failure, first stopping this process if the peer refused it as replaced.
    fn status_to_rpc(&self, status: tonic::Status) -> RPCError<TypeConfig> {
        self.fence.check_refusal(&status);
        status_to_rpc(status)
    }
}

/// Creates [`PeerConnection`]s for openraft.
#[derive(Clone)]
pub struct Network {
    channels: PeerChannels,
    health: PeerHealth,
    speaker: Arc<Speaker>,
}

impl Network {
    pub fn new(channels: PeerChannels, health: PeerHealth, speaker: Speaker) -> Self {
        Self { channels, health, speaker: Arc::new(speaker) }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            channels: self.channels.clone(),
            health: self.health.clone(),
            speaker: self.speaker.clone(),
        }
    }
}

/// The receiving end of an append stream, with what is needed to notice a silent peer.
struct AnswerWait {
    answers: tonic::Streaming<crate::pb::raft::RaftMessage>,
    received: u64,
    stalled_checks: u32,
}

/// openraft's handle for sending to one peer.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    channels: PeerChannels,
    health: PeerHealth,
    speaker: Arc<Speaker>,
}

/// Records the outcome of an attempt to reach `target` at `addr` and logs what it changed.
/// Only transport failures (the peer is unreachable) count as failures.
fn observe<T>(health: &PeerHealth, target: NodeId, addr: &str, result: &Result<T, RPCError<TypeConfig>>) {
    let now = std::time::Instant::now();
    match result {
        Ok(_) => peer_health::log(&health.succeeded(addr, now), target, addr, &""),
        Err(e @ RPCError::Unreachable(_)) => peer_health::log(&health.failed(addr, now), target, addr, e),
        Err(_) => {}
    }
}

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

/// Maps a gRPC failure: transport-level failures, and a peer that refuses this cluster's
/// messages (a member of another cluster), mean the peer is unreachable (back-off, one log
/// line); anything else is a network error.
fn status_to_rpc(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::FailedPrecondition => unreachable(&status),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn with_deadline<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl PeerConnection {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        let channel = self.channels.peer(&self.addr).map_err(|e| unreachable(&e))?;
        // Raft messages can be large (a batch of entries); the snapshot path is chunked.
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024))
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        what: &'static str,
        req: &Req,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<crate::pb::raft::RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<crate::pb::raft::RaftMessage>, tonic::Status>>,
    {
        let msg = codec::pack(what, self.speaker.envelope(self.target), req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = f(self.client()?, with_deadline(msg, option)).await.map_err(|s| self.speaker.status_to_rpc(s));
        observe(&self.health, self.target, &self.addr, &reply);
        let reply = reply?;
        self.speaker.check_reply(self.target, reply.get_ref())?;
        codec::unpack(what, reply.get_ref()).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net = |e: &dyn std::fmt::Display| StreamingError::Network(NetworkError::from_string(e.to_string()));
        let header = SnapshotHeader {
            version: codec::VERSION as i32,
            vote: codec::encode("vote", &vote).map_err(|e| net(&e))?.into(),
            meta: codec::encode("snapshot meta", &snapshot.meta).map_err(|e| net(&e))?.into(),
            total_bytes: snapshot.snapshot.len,
            target: self.target,
            cluster_id: self.speaker.cluster_id.clone(),
            sender: self.speaker.node_id,
            sender_epoch: self.speaker.fence.epoch(),
            target_epoch: self.speaker.fence.newest_of(self.target),
        };
        let path = snapshot.snapshot.path.clone();
        let mut file = std::fs::File::open(&path).map_err(|e| net(&format!("open {}: {e}", path.display())))?;
        // Read the file on a blocking thread and feed the gRPC stream through a small channel,
        // so at most a few chunks are in memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let part = |p| SnapshotChunk { part: Some(p) };
            if tx.blocking_send(part(snapshot_chunk::Part::Header(header))).is_err() {
                return Ok(());
            }
            let mut crc = crc32fast::Hasher::new();
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                if tx.blocking_send(part(snapshot_chunk::Part::Data(buf[..n].to_vec().into()))).is_err() {
                    return Ok(());
                }
            }
            let _ = tx.blocking_send(part(snapshot_chunk::Part::Trailer(SnapshotTrailer { crc32: crc.finalize() })));
            Ok(())
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut client = self.client().map_err(|e| net(&e))?;
        let reply = client.install_snapshot(stream).await.inspect_err(|s| self.speaker.fence.check_refusal(s));
        let reply = reply.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::FailedPrecondition => {
                StreamingError::Unreachable(Unreachable::new(&s))
            }
            _ => StreamingError::Network(NetworkError::new(&s)),
        })?;
        reader.await.map_err(|e| net(&e))?.map_err(|e| net(&format!("read {}: {e}", path.display())))?;
        self.speaker.check_reply(self.target, reply.get_ref()).map_err(|e| net(&e))?;
        codec::unpack::<SnapshotResponse<TypeConfig>>("snapshot response", reply.get_ref()).map_err(|e| net(&e))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("append entries", &rpc, &option, |mut c, r| async move { c.append_entries(r).await }).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let target = self.target;
        let speaker = self.speaker.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let sent_counter = sent.clone();
        // Requests are encoded as they are sent; one that cannot be encoded ends the stream
        // (openraft then starts a new session).
        let requests = input.scan((), move |_, rpc| {
            futures::future::ready(match codec::pack("append entries", speaker.envelope(target), &rpc) {
                Ok(msg) => {
                    sent_counter.fetch_add(1, Ordering::Relaxed);
                    Some(msg)
                }
                Err(e) => {
                    tracing::error!(target, error = %e, "cannot encode an append request");
                    None
                }
            })
        });
        // A session stays open between batches, so silence is normal while nothing is
        // outstanding. With requests outstanding, two checks in a row without an answer mean
        // the peer is gone; otherwise a silent peer holds the session until TCP keepalive.
        let tick = option.hard_ttl().max(MIN_ANSWER_WAIT);
        let (health, addr, speaker) = (self.health.clone(), self.addr.clone(), self.speaker.clone());
        Box::pin(async move {
            // openraft's own back-off is consumed only while a stream polls its requests, which
            // a refused connection never does: wait here after failures (peer_health).
            let delay = self.health.delay(&self.addr);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut client = self.client()?;
            let opened = client.stream_append(requests).await.map_err(|s| speaker.status_to_rpc(s));
            observe(&self.health, target, &self.addr, &opened);
            let answers = opened?.into_inner();
            let state = AnswerWait { answers, received: 0, stalled_checks: 0 };
            let answers = futures::stream::unfold(Some(state), move |state| {
                let sent = sent.clone();
                let (health, addr, speaker) = (health.clone(), addr.clone(), speaker.clone());
                async move {
                    let mut state = state?;
                    let item = loop {
                        match tokio::time::timeout(tick, state.answers.next()).await {
                            Err(_) if sent.load(Ordering::Relaxed) > state.received => {
                                state.stalled_checks += 1;
                                if state.stalled_checks >= 2 {
                                    break Err(RPCError::Unreachable(Unreachable::from_string(format!(
                                        "no append answer from node {target} within {:?}",
                                        tick * 2
                                    ))));
                                }
                            }
                            Err(_) => state.stalled_checks = 0,
                            Ok(None) => return None,
                            Ok(Some(Err(status))) => break Err(speaker.status_to_rpc(status)),
                            Ok(Some(Ok(msg))) => {
                                state.received += 1;
                                state.stalled_checks = 0;
                                if let Err(e) = speaker.check_reply(target, &msg) {
                                    break Err(e);
                                }
                                break codec::unpack::<StreamAppendResult<TypeConfig>>("append entries result", &msg)
                                    .map_err(|e| RPCError::Network(NetworkError::new(&e)));
                            }
                        }
                    };
                    if item.is_err() {
                        observe(&health, target, &addr, &item);
                    }
                    let go_on = item.is_ok();
                    Some((item, go_on.then_some(state)))
                }
            });
            Ok(answers.boxed())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("pre-vote", &rpc, &option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tracing::info!(target = self.target, bytes = snapshot.snapshot.len, "sending snapshot");
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(vote, snapshot) => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer leader", &req, &option, |mut c, r| async move { c.transfer_leader(r).await }).await
    }

    fn backoff(&self) -> Option<Backoff> {
        // Retry an unreachable peer every 100 ms up to 1 s apart: fast enough to notice a pod
        // that came back, slow enough not to spin on a dead one (openraft applies it to a
        // stream that failed after it opened; `stream_append` waits itself before opening).
        let delays = (1..).map(|i: u64| Duration::from_millis((100 * i).min(1000)));
        Some(Backoff::new(delays))
    }
}
