//! The running node's shared context: configuration, storage, and (once start-up has decided)
//! the identity and the Raft handle. Every gRPC service and background task holds an
//! `Arc<Node>`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use petkv_client::pb::v1::NodeStatus;
use tonic::Status;

use crate::config::NodeConfig;
use crate::edge::metrics::Metrics;
use crate::edge::space::SpaceGuard;
use crate::pod::identity::IdentityRecord;
use crate::raft::fence::Fence;
use crate::raft::network::PeerChannels;
use crate::raft::{NodeId, PeerNode, Raft, RaftInstant, RaftMetrics, ServerState, WatchReceiver};
use crate::store::{LogStore, StateMachine};

/// A node of the set.
pub struct Node {
    pub config: NodeConfig,
    pub sm: StateMachine,
    pub log: LogStore,
    pub channels: PeerChannels,
    /// The node's Prometheus metrics (shared with the storage and the client port's layer).
    pub prometheus: Arc<Metrics>,
    /// The free-space guard of the volume: may this node take a write now?
    pub space: SpaceGuard,
    /// This process's start epoch and the newest seen of every peer.
    pub fence: Arc<Fence>,
    /// Lease deadlines, kept while this node leads.
    pub lease_clock: crate::api::lease::LeaseClock,
    /// Linearizable reads on this follower waiting for the leader's read index.
    pub read_index: crate::raft::leader_rpc::ReadIndexBatch,
    identity: OnceLock<IdentityRecord>,
    raft: OnceLock<Raft>,
    stopping: AtomicBool,
    /// True from the start of shutdown: long-lived streams (watches) end on it, so a graceful
    /// stop does not wait for clients to close them.
    streams_end: tokio::sync::watch::Sender<bool>,
    /// When a leader last reached this node (an append or heartbeat it did not refuse).
    last_leader_contact: Mutex<Option<Instant>>,
    /// The last Raft request of another cluster's member, and when it came.
    foreign_cluster: Mutex<Option<(String, Instant)>>,
}

/// How long a node stays not ready after a Raft request of another cluster.
pub const FOREIGN_CLUSTER_HOLD: Duration = Duration::from_secs(30);

/// A node counts as caught up when it applied within this many entries of the commit index.
const READY_LAG: u64 = 1_000;

impl Node {
    /// A node whose connections to other nodes go through `channels`.
    pub fn new(
        config: NodeConfig,
        log: LogStore,
        sm: StateMachine,
        prometheus: Arc<Metrics>,
        channels: PeerChannels,
        fence: Arc<Fence>,
    ) -> Self {
        let space = SpaceGuard::new(config.pod.to_string(), config.min_free, prometheus.clone());
        Self {
            space,
            config,
            sm,
            log,
            channels,
            prometheus,
            fence,
            lease_clock: Default::default(),
            read_index: Default::default(),
            identity: OnceLock::new(),
            raft: OnceLock::new(),
            stopping: AtomicBool::new(false),
            streams_end: tokio::sync::watch::Sender::new(false),
            last_leader_contact: Mutex::new(None),
            foreign_cluster: Mutex::new(None),
        }
    }

    /// Marks the node as shutting down (it reports not ready from then on).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.streams_end.send_replace(true);
    }

    /// Completes once shutdown has begun (at once if it has).
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut end = self.streams_end.subscribe();
        async move {
            let _ = end.wait_for(|stopping| *stopping).await;
        }
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Notes that a leader just reached this node.
    pub fn note_leader_contact(&self) {
        *crate::support::sync::lock(&self.last_leader_contact) = Some(Instant::now());
    }

    /// How recently a leader must have been heard from: two maximum election timeouts.
    fn leader_contact_bound(&self) -> Duration {
        Duration::from_millis(self.config.raft.election_timeout_ms * 4)
    }

    /// True when this node knows a leader that is alive now, not just one it remembers: a
    /// leader whose quorum acknowledged it recently, or a follower a leader reached recently.
    /// (A restarted node remembers the leader of its persisted vote, which may be long gone.)
    fn knows_live_leader(&self, m: &RaftMetrics) -> bool {
        let bound = self.leader_contact_bound();
        if m.state == ServerState::Leader {
            let alone = m.membership_config.membership().voter_ids().all(|v| v == m.id);
            return alone || m.last_quorum_acked.as_ref().is_some_and(|t| t.elapsed() < bound);
        }
        let contact = *crate::support::sync::lock(&self.last_leader_contact);
        m.current_leader.is_some() && contact.is_some_and(|t| t.elapsed() < bound)
    }

    /// Readiness: not shutting down, a member, knows a live leader, applied close to the
    /// commit index. What the `readiness` health service and `Status.ready` report.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Readiness with the reason when not ready (one line, for `/readyz`).
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_stopping() {
            return Err("shutting down".into());
        }
        if let Some(refusal) = self.foreign_cluster_refusal() {
            return Err(refusal);
        }
        let Some(m) = self.metrics() else { return Err("starting: raft does not run yet".into()) };
        if m.membership_config.membership().get_node(&m.id).is_none() {
            return Err("not a member of the cluster (yet)".into());
        }
        if !self.knows_live_leader(&m) {
            return Err("no live leader known".into());
        }
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let committed = m.local_committed.map(|l| l.index).unwrap_or(0);
        if applied + READY_LAG < committed {
            return Err(format!("catching up: applied index {applied}, commit index {committed}"));
        }
        Ok(())
    }

    /// Records the identity decided at start-up (once).
    pub fn set_identity(&self, identity: IdentityRecord) {
        let _ = self.identity.set(identity);
    }

    /// The highest term this node has seen (Raft's when it runs, else the persisted vote's)
    /// and the highest log id it holds (the log's last, or the applied state's).
    pub fn term_and_last_log_id(&self) -> std::io::Result<(u64, Option<crate::raft::LogId>)> {
        let term = match self.metrics() {
            Some(m) => m.current_term,
            None => self.log.vote()?.map(|v| crate::raft::vote_term(&v)).unwrap_or(0),
        };
        Ok((term, self.log.last_log_id()?.max(self.sm.applied()?)))
    }

    /// Records the Raft handle once Raft runs (once).
    pub fn set_raft(&self, raft: Raft) {
        let _ = self.raft.set(raft);
    }

    pub fn identity(&self) -> Option<&IdentityRecord> {
        self.identity.get()
    }

    /// The Raft handle, or UNAVAILABLE while the node is still starting.
    pub fn raft(&self) -> Result<&Raft, Status> {
        self.raft.get().ok_or_else(|| Status::unavailable("node is starting: not a cluster member yet"))
    }

    /// Raft, for serving a client request: refused while a member of another cluster has been
    /// sending this node Raft messages ([`Node::saw_foreign_cluster`]).
    pub fn serving_raft(&self) -> Result<&Raft, Status> {
        if let Some(refusal) = self.foreign_cluster_refusal() {
            return Err(Status::unavailable(refusal));
        }
        self.raft()
    }

    /// Records that a member of cluster `other` sent this node a Raft request (refused). Two
    /// clusters claim this set's pods: one of them was started by mistake, and this node cannot
    /// tell which, so it stops serving clients and reports not ready until the messages stop
    /// for [`FOREIGN_CLUSTER_HOLD`].
    pub fn saw_foreign_cluster(&self, other: &str) {
        let mut seen = crate::support::sync::lock(&self.foreign_cluster);
        *seen = Some((other.to_string(), Instant::now()));
    }

    fn foreign_cluster_refusal(&self) -> Option<String> {
        let seen = crate::support::sync::lock(&self.foreign_cluster);
        let (other, at) = seen.as_ref().filter(|(_, at)| at.elapsed() < FOREIGN_CLUSTER_HOLD)?;
        let mine = self.identity().map(|i| i.cluster_id.as_str()).unwrap_or("(none yet)");
        Some(format!(
            "another cluster claims this set's pods: a member of cluster {other} sent this node (cluster {mine}) \
             Raft messages {:.0?} ago; not serving clients",
            at.elapsed()
        ))
    }

    /// The current Raft metrics, if Raft runs.
    pub fn metrics(&self) -> Option<RaftMetrics> {
        self.raft.get().map(|r| r.metrics().borrow_watched().clone())
    }

    /// The current term (0 before Raft runs), read without copying the metrics: every response
    /// header carries it.
    pub fn current_term(&self) -> u64 {
        self.raft.get().map(|r| r.metrics().borrow_watched().current_term).unwrap_or(0)
    }

    /// The node id, once known.
    pub fn node_id(&self) -> Option<NodeId> {
        self.identity().map(|i| i.node_id)
    }

    /// This node's address record for the membership.
    pub fn peer_node(&self) -> PeerNode {
        PeerNode {
            ordinal: self.config.pod.ordinal,
            client_addr: self.config.client_advertise.clone(),
            peer_addr: self.config.peer_advertise.clone(),
        }
    }

    /// The member record of `id` in the current membership.
    pub fn member(&self, id: NodeId) -> Option<PeerNode> {
        let m = self.metrics()?;
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// The current leader and its member record, if known.
    pub fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let m = self.metrics()?;
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// This node's status, as `petkv status` shows it.
    pub fn status(&self) -> NodeStatus {
        let identity = self.identity();
        let mut status = NodeStatus {
            hostname: self.config.hostname.clone(),
            set_name: self.config.pod.set.clone(),
            ordinal: self.config.pod.ordinal,
            node_id: identity.map(|i| i.node_id).unwrap_or(0),
            cluster_id: identity.map(|i| i.cluster_id.clone()).unwrap_or_default(),
            data_dir: self.config.data_dir.display().to_string(),
            role: "joining".into(),
            client_addr: self.config.client_advertise.clone(),
            peer_addr: self.config.peer_advertise.clone(),
            key_count: self.sm.key_count().unwrap_or(0),
            declared_replicas: self.sm.declared_replicas().ok().flatten().unwrap_or(0),
            volume_free_bytes: self.space.free_bytes(),
            volume_reserve_bytes: self.space.reserve_bytes(),
            writes_refused: self.space.refusal().map(|(_, why)| why).unwrap_or_default(),
            revision: self.sm.current_revision(),
            compacted_revision: self.sm.compacted(),
            etcd_addr: self.config.etcd_advertise.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(m) = self.metrics() {
            let is_voter = m.membership_config.membership().voter_ids().any(|v| v == m.id);
            let is_member = m.membership_config.membership().get_node(&m.id).is_some();
            status.role = match m.state {
                ServerState::Leader => "leader",
                ServerState::Candidate => "candidate",
                ServerState::Shutdown => "shutdown",
                _ if !is_member => "joining",
                _ if !is_voter => "learner",
                _ => "follower",
            }
            .into();
            status.leader_id = m.current_leader.unwrap_or(0);
            status.term = m.current_term;
            status.last_log_index = m.last_log_index.unwrap_or(0);
            status.committed_index = m.local_committed.map(|c| c.index).unwrap_or(0);
            status.applied_index = m.last_applied.map(|c| c.index).unwrap_or(0);
            status.snapshot_index = m.snapshot.map(|c| c.index).unwrap_or(0);
            status.purged_index = m.purged.map(|c| c.index).unwrap_or(0);
            status.ready = self.is_ready();
        } else {
            // Raft is not running yet (a restarted node's first moments): what the volume holds.
            // Everything applied was committed.
            status.applied_index = self.sm.applied_index();
            status.committed_index = status.applied_index;
            status.term = self.log.vote().ok().flatten().map(|v| crate::raft::vote_term(&v)).unwrap_or(0);
            status.last_log_index = self.log.last_index().unwrap_or(0);
        }
        status
    }
}
