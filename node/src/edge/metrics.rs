//! The node's Prometheus metrics: owns the registry and every metric family (all named
//! `petkv_*`), the tower layer that counts and times gRPC requests on the client port, and
//! the OpenMetrics text encoding that `GET /metrics` serves ([`crate::edge::http`]).
//!
//! One [`Metrics`] exists per node, shared as an `Arc` by the node (`Node::prometheus`),
//! the storage (through [`crate::store::StoreOptions`]) and the client port's layer. Recording
//! is lock-free on the hot path (atomic counters and histograms; a family takes a short read
//! lock to find its child, never held across an await). Raft-derived gauges are not polled:
//! [`Metrics::encode`] refreshes them from openraft's metrics at scrape time.
//!
//! Nothing here ever carries a key or a value, only counts, sizes and times.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tonic::codegen::http;

use crate::node::Node;
use crate::raft::ServerState;

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The roles `petkv_raft_state` reports, one series each.
pub const RAFT_STATES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

/// Method label of requests to a path the server does not serve (see [`GrpcMetricsService`]).
pub const UNKNOWN_METHOD: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
    method: &'static str,
}

/// Why the client port refused a request ([`crate::edge::auth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefusal {
    /// No credentials, or credentials no one holds.
    Unauthenticated,
    /// A known client whose role does not allow the method.
    PermissionDenied,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SnapshotLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    stage: &'static str,
}

/// A point where openraft coalesces log entries ([`crate::raft::batch_metrics`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftBatchStage {
    /// Client writes the leader merged into one log append.
    ClientWrites,
    /// Entries written to the log in one append call (leader and followers).
    Append,
    /// Entries handed to the state machine in one apply call.
    Apply,
}

impl RaftBatchStage {
    fn label(self) -> &'static str {
        match self {
            Self::ClientWrites => "client_writes",
            Self::Append => "append",
            Self::Apply => "apply",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpaceRefusalLabels {
    reason: &'static str,
}

/// Why the free-space guard refused a write ([`crate::edge::space`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceRefusal {
    /// This node's volume is below its reserve.
    OwnVolume,
    /// (On the leader) another member's volume is below its reserve.
    MemberVolume,
}

/// Which flush an fsync latency belongs to (sled flushes the whole database either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncSite {
    /// The Raft log (raft-log): from a flush request to its fsync's completion, for appends,
    /// votes, truncation and the owner record.
    Log,
    /// The state machine: snapshot publication and the final flush at shutdown.
    StateMachine,
}

/// Whether a snapshot was built here or received from the leader and installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    Built,
    Installed,
}

impl SpaceRefusal {
    fn label(self) -> &'static str {
        match self {
            SpaceRefusal::OwnVolume => "own_volume",
            SpaceRefusal::MemberVolume => "member_volume",
        }
    }
}

impl SnapshotKind {
    fn label(self) -> SnapshotLabels {
        SnapshotLabels {
            kind: match self {
                SnapshotKind::Built => "built",
                SnapshotKind::Installed => "installed",
            },
        }
    }
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    // 1 .. 4096 entries.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

fn fsync_histogram() -> Histogram {
    // 50 µs .. ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The registry and every metric family of one node.
pub struct Metrics {
    registry: Registry,
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_state: Family<StateLabels, Gauge>,
    raft_last_log_index: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    raft_members: Family<RoleLabels, Gauge>,
    declared_replicas: Gauge,
    ready: Gauge,
    grpc_requests: Family<RequestLabels, Counter>,
    grpc_latency: HistogramFamily<MethodLabels>,
    auth_refusals: Family<RefusalLabels, Counter>,
    fsync: HistogramFamily<StoreLabels>,
    raft_batch: HistogramFamily<BatchLabels>,
    sm_write: Histogram,
    sm_write_through: Counter,
    snapshot_bytes: Family<SnapshotLabels, Gauge>,
    snapshot_entries: Family<SnapshotLabels, Gauge>,
    snapshots: Family<SnapshotLabels, Counter>,
    forwarded: Counter,
    volume_free: Gauge,
    volume_reserve: Gauge,
    volume_low: Gauge,
    space_refusals: Family<SpaceRefusalLabels, Counter>,
    open_connections: Family<PortLabels, Gauge>,
    refused_connections: Family<PortLabels, Counter>,
    peer_unreachable: Family<PeerLabels, Counter>,
    inflight_requests: Gauge,
    shed_requests: Counter,
    oversized_requests: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered under the `petkv_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("petkv");
        let m = Self {
            raft_term: Gauge::default(),
            raft_leader: Gauge::default(),
            raft_state: Family::default(),
            raft_last_log_index: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_members: Family::default(),
            declared_replicas: Gauge::default(),
            ready: Gauge::default(),
            grpc_requests: Family::default(),
            grpc_latency: Family::new_with_constructor(latency_histogram),
            auth_refusals: Family::default(),
            fsync: Family::new_with_constructor(fsync_histogram),
            raft_batch: Family::new_with_constructor(batch_histogram),
            sm_write: fsync_histogram(),
            sm_write_through: Counter::default(),
            snapshot_bytes: Family::default(),
            snapshot_entries: Family::default(),
            snapshots: Family::default(),
            forwarded: Counter::default(),
            volume_free: Gauge::default(),
            volume_reserve: Gauge::default(),
            volume_low: Gauge::default(),
            space_refusals: Family::default(),
            open_connections: Family::default(),
            refused_connections: Family::default(),
            peer_unreachable: Family::default(),
            inflight_requests: Gauge::default(),
            shed_requests: Counter::default(),
            oversized_requests: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("raft_term", "Current Raft term", m.raft_term.clone());
        r.register("raft_leader_id", "Node id of the leader this node knows (0 when unknown)", m.raft_leader.clone());
        r.register("raft_state", "This node's Raft role (1 for the current one)", m.raft_state.clone());
        r.register("raft_last_log_index", "Index of the last entry in the local log", m.raft_last_log_index.clone());
        r.register("raft_commit_index", "Highest log index known committed", m.raft_commit_index.clone());
        r.register(
            "raft_applied_index",
            "Highest log index applied to the state machine",
            m.raft_applied_index.clone(),
        );
        r.register("raft_members", "Members of the cluster by role (voter, learner)", m.raft_members.clone());
        r.register("declared_replicas", "The set's declared replica count (0 if none)", m.declared_replicas.clone());
        r.register("ready", "1 when the node is ready (member, live leader, caught up)", m.ready.clone());
        r.register("grpc_requests", "Client-port gRPC requests by method and status code", m.grpc_requests.clone());
        r.register_with_unit(
            "grpc_request_duration",
            "Client-port gRPC request latency by method, until the response headers",
            Unit::Seconds,
            m.grpc_latency.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Time of an fsync (sled flush) of the log or the state machine",
            Unit::Seconds,
            m.fsync.clone(),
        );
        r.register(
            "raft_batch_entries",
            "Log entries per batch where openraft coalesces them (stage: client_writes merged into one \
             append on the leader, append to the log, apply to the state machine)",
            m.raft_batch.clone(),
        );
        r.register_with_unit(
            "state_machine_write_duration",
            "Time to write one layer of applied records into sled (the background writer's batch, or the apply \
             path's own when the writer fell behind)",
            Unit::Seconds,
            m.sm_write.clone(),
        );
        r.register(
            "state_machine_write_through",
            "Applied runs that wrote sled themselves because the background writer fell behind (back-pressure)",
            m.sm_write_through.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the last snapshot built or installed",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        r.register("snapshot_entries", "Records in the last snapshot built or installed", m.snapshot_entries.clone());
        r.register("snapshots", "Snapshots built or installed", m.snapshots.clone());
        r.register(
            "auth_refusals",
            "Client-port requests refused by authentication (reason: unauthenticated, permission_denied)",
            m.auth_refusals.clone(),
        );
        r.register("forwarded_requests", "Requests forwarded to the leader", m.forwarded.clone());
        r.register_with_unit(
            "volume_free",
            "Free space of the node's volume (its data dir's filesystem), as last measured",
            Unit::Bytes,
            m.volume_free.clone(),
        );
        r.register_with_unit(
            "volume_reserve",
            "Free space below which the node refuses writes (--min-free-bytes)",
            Unit::Bytes,
            m.volume_reserve.clone(),
        );
        r.register(
            "volume_low",
            "1 while the node's volume is below its reserve (writes refused)",
            m.volume_low.clone(),
        );
        r.register(
            "space_refused_writes",
            "Writes refused with RESOURCE_EXHAUSTED for lack of space (reason: own_volume, member_volume)",
            m.space_refusals.clone(),
        );
        r.register("open_connections", "Open connections by port (client, http)", m.open_connections.clone());
        r.register(
            "connections_refused",
            "Connections closed right after accept because the port's connection cap was reached",
            m.refused_connections.clone(),
        );
        r.register(
            "peer_unreachable_attempts",
            "Failed attempts to reach a peer's Raft port (connection refused or lost), by peer address",
            m.peer_unreachable.clone(),
        );
        r.register("inflight_requests", "Client-port requests being served now", m.inflight_requests.clone());
        r.register(
            "requests_shed",
            "Client-port requests answered RESOURCE_EXHAUSTED because --max-inflight-requests were in flight",
            m.shed_requests.clone(),
        );
        r.register(
            "oversized_requests",
            "Client-port requests refused because their message was over the decoding limit",
            m.oversized_requests.clone(),
        );
        for role in ["voter", "learner"] {
            m.raft_members.get_or_create(&RoleLabels { role }).set(0);
        }
        for reason in [SpaceRefusal::OwnVolume, SpaceRefusal::MemberVolume] {
            let _ = m.space_refusals.get_or_create(&SpaceRefusalLabels { reason: reason.label() });
        }
        for port in ["client", "http"] {
            m.open_connections.get_or_create(&PortLabels { port }).set(0);
            let _ = m.refused_connections.get_or_create(&PortLabels { port });
        }
        for kind in [SnapshotKind::Built, SnapshotKind::Installed] {
            let _ = m.snapshots.get_or_create(&kind.label());
        }
        Self { registry, ..m }
    }

    /// Counts one finished client-port request.
    pub fn record_request(&self, method: &str, code: &'static str, elapsed: Duration) {
        self.grpc_requests.get_or_create(&RequestLabels { method: method.to_string(), code }).inc();
        self.grpc_latency.get_or_create(&MethodLabels { method: method.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// Records how long one fsync took.
    pub fn record_fsync(&self, site: FsyncSite, elapsed: Duration) {
        let store = match site {
            FsyncSite::Log => "log",
            FsyncSite::StateMachine => "state_machine",
        };
        self.fsync.get_or_create(&StoreLabels { store }).observe(elapsed.as_secs_f64());
    }

    /// Records a snapshot built or installed: its file size and record count.
    pub fn record_snapshot(&self, kind: SnapshotKind, bytes: u64, entries: u64) {
        let label = kind.label();
        self.snapshot_bytes.get_or_create(&label).set(saturating_i64(bytes));
        self.snapshot_entries.get_or_create(&label).set(saturating_i64(entries));
        self.snapshots.get_or_create(&label).inc();
    }

    /// Counts a request the client port refused; `method` is a known method path or
    /// [`UNKNOWN_METHOD`] (never a client-chosen string).
    pub fn record_auth_refusal(&self, reason: AuthRefusal, method: &'static str) {
        let reason = match reason {
            AuthRefusal::Unauthenticated => "unauthenticated",
            AuthRefusal::PermissionDenied => "permission_denied",
        };
        self.auth_refusals.get_or_create(&RefusalLabels { reason, method }).inc();
    }

    /// Records a measurement of the volume: free bytes, the reserve, and whether it is low.
    pub fn record_volume(&self, free: u64, reserve: u64, low: bool) {
        self.volume_free.set(saturating_i64(free));
        self.volume_reserve.set(saturating_i64(reserve));
        self.volume_low.set(i64::from(low));
    }

    /// Counts a write refused for lack of space.
    pub fn record_space_refusal(&self, reason: SpaceRefusal) {
        self.space_refusals.get_or_create(&SpaceRefusalLabels { reason: reason.label() }).inc();
    }

    /// Records one write of applied records into sled.
    pub fn record_sm_write(&self, elapsed: Duration) {
        self.sm_write.observe(elapsed.as_secs_f64());
    }

    /// Counts an applied run that wrote sled itself (the background writer fell behind).
    pub fn record_sm_write_through(&self) {
        self.sm_write_through.inc();
    }

    /// Records the size of one batch openraft coalesced at `stage`.
    pub fn record_raft_batch(&self, stage: RaftBatchStage, entries: u64) {
        self.raft_batch.get_or_create(&BatchLabels { stage: stage.label() }).observe(entries as f64);
    }

    /// Counts a request forwarded to the leader.
    pub fn record_forwarded(&self) {
        self.forwarded.inc();
    }

    /// Counts a connection `port` accepted and kept.
    pub fn connection_opened(&self, port: &'static str) {
        self.open_connections.get_or_create(&PortLabels { port }).inc();
    }

    /// Counts a kept connection of `port` that closed.
    pub fn connection_closed(&self, port: &'static str) {
        self.open_connections.get_or_create(&PortLabels { port }).dec();
    }

    /// Counts a connection `port` closed right after accept (its cap was reached).
    pub fn record_connection_refused(&self, port: &'static str) {
        self.refused_connections.get_or_create(&PortLabels { port }).inc();
    }

    /// Counts a failed attempt to reach the Raft port of the peer at `addr`.
    pub fn record_peer_unreachable(&self, addr: &str) {
        self.peer_unreachable.get_or_create(&PeerLabels { peer: addr.to_string() }).inc();
    }

    /// Counts a client-port request that started being served.
    pub fn request_started(&self) {
        self.inflight_requests.inc();
    }

    /// Counts a client-port request that finished (answered or dropped).
    pub fn request_finished(&self) {
        self.inflight_requests.dec();
    }

    /// Counts a request answered RESOURCE_EXHAUSTED by the in-flight cap.
    pub fn record_shed(&self) {
        self.shed_requests.inc();
    }

    /// Counts a request refused as over the decoding limit.
    pub fn record_oversized(&self) {
        self.oversized_requests.inc();
    }

    /// Refreshes the gauges that mirror the node's Raft state (openraft's metrics).
    pub fn refresh(&self, node: &Node) {
        let raft = node.metrics();
        let state = raft.as_ref().map(|m| {
            let is_voter = m.membership_config.membership().voter_ids().any(|v| v == m.id);
            match m.state {
                ServerState::Leader => "leader",
                ServerState::Candidate => "candidate",
                ServerState::Shutdown => "shutdown",
                ServerState::Follower if is_voter => "follower",
                _ => "learner",
            }
        });
        for s in RAFT_STATES {
            self.raft_state.get_or_create(&StateLabels { state: s }).set(i64::from(state == Some(s)));
        }
        let index = |l: Option<u64>| saturating_i64(l.unwrap_or(0));
        self.raft_term.set(index(raft.as_ref().map(|m| m.current_term)));
        self.raft_leader.set(index(raft.as_ref().and_then(|m| m.current_leader)));
        self.raft_last_log_index.set(index(raft.as_ref().and_then(|m| m.last_log_index)));
        self.raft_commit_index.set(index(raft.as_ref().and_then(|m| m.local_committed.map(|c| c.index))));
        self.raft_applied_index.set(index(raft.as_ref().and_then(|m| m.last_applied.map(|c| c.index))));
        let (voters, learners) = raft
            .as_ref()
            .map(|m| {
                let membership = m.membership_config.membership();
                (membership.voter_ids().count(), membership.learner_ids().count())
            })
            .unwrap_or((0, 0));
        self.raft_members.get_or_create(&RoleLabels { role: "voter" }).set(saturating_i64(voters as u64));
        self.raft_members.get_or_create(&RoleLabels { role: "learner" }).set(saturating_i64(learners as u64));
        self.declared_replicas.set(i64::from(node.sm.declared_replicas().ok().flatten().unwrap_or(0)));
        self.ready.set(i64::from(node.is_ready()));
    }

    /// The whole registry in OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The tower layer that records every request of a tonic server.
    pub fn grpc_layer(self: &Arc<Self>) -> GrpcMetricsLayer {
        GrpcMetricsLayer { metrics: self.clone() }
    }

    /// Runs `flush` and records its time under `site`.
    pub(crate) fn time_fsync<T>(&self, site: FsyncSite, flush: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let result = flush();
        self.record_fsync(site, start.elapsed());
        result
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The name of a gRPC status code as the `code` label shows it, from the `grpc-status` value.
pub fn code_name(grpc_status: &[u8]) -> &'static str {
    match grpc_status {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Tower layer for `tonic::transport::Server::builder().layer(...)`: counts and times each
/// request. See [`GrpcMetricsService`] for what it can and cannot see.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the server's routes.
///
/// - `method` is the request's URI path (`/petkv.v1.KV/Put`) when it names a method the
///   client port serves ([`crate::edge::auth::role::known_method`]); any other path, whatever the
///   answer (UNIMPLEMENTED, or UNAUTHENTICATED before routing), is recorded under
///   [`UNKNOWN_METHOD`]: the path comes from the client, and the label set stays bounded.
/// - `code` comes from the `grpc-status` header of the response. tonic puts it there for
///   "trailers-only" responses, which is what a unary handler that returns `Err(Status)`
///   produces, so unary errors are counted by code. A status sent in the trailers after a
///   (streaming) body has started is not seen here, and such a request counts as `OK`.
/// - The latency runs until the response headers are ready, not until a streamed body ends.
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = crate::edge::auth::role::known_method(req.uri().path()).unwrap_or(UNKNOWN_METHOD);
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(resp) => resp.headers().get("grpc-status").map(|v| code_name(v.as_bytes())).unwrap_or("OK"),
                Err(_) => "TRANSPORT_ERROR",
            };
            metrics.record_request(method, code, start.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;

    #[test]
    fn a_recorded_request_appears_with_its_method_and_code() {
        let m = Metrics::new();
        m.record_request("/petkv.v1.KV/Put", "OK", Duration::from_millis(3));
        m.record_request("/petkv.v1.KV/Put", "OK", Duration::from_millis(4));
        m.record_request("/petkv.v1.KV/Get", "UNAVAILABLE", Duration::from_millis(1));
        let text = m.encode().expect("encode");
        assert!(text.contains(r#"petkv_grpc_requests_total{method="/petkv.v1.KV/Put",code="OK"} 2"#), "{text}");
        assert!(text.contains(r#"petkv_grpc_requests_total{method="/petkv.v1.KV/Get",code="UNAVAILABLE"} 1"#));
        assert!(text.contains(r#"petkv_grpc_request_duration_seconds_count{method="/petkv.v1.KV/Put"} 2"#));
        assert!(text.contains("# TYPE petkv_grpc_request_duration_seconds histogram"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn storage_and_snapshot_families_are_encoded() {
        let m = Metrics::new();
        m.record_fsync(FsyncSite::Log, Duration::from_micros(200));
        m.record_snapshot(SnapshotKind::Installed, 4096, 12);
        m.record_forwarded();
        m.record_auth_refusal(AuthRefusal::PermissionDenied, "/petkv.v1.KV/Put");
        let text = m.encode().expect("encode");
        let refused = r#"petkv_auth_refusals_total{reason="permission_denied",method="/petkv.v1.KV/Put"} 1"#;
        assert!(text.contains(refused), "{text}");
        assert!(text.contains(r#"petkv_fsync_duration_seconds_count{store="log"} 1"#), "{text}");
        assert!(text.contains(r#"petkv_snapshot_size_bytes{kind="installed"} 4096"#), "{text}");
        assert!(text.contains(r#"petkv_snapshot_entries{kind="installed"} 12"#), "{text}");
        assert!(text.contains(r#"petkv_snapshots_total{kind="installed"} 1"#), "{text}");
        assert!(text.contains(r#"petkv_snapshots_total{kind="built"} 0"#), "{text}");
        assert!(text.contains("petkv_forwarded_requests_total 1"), "{text}");
        assert!(text.contains(r#"petkv_raft_members{role="voter"} 0"#), "{text}");
    }

    #[test]
    fn grpc_status_codes_have_their_names() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"14"), "UNAVAILABLE");
        assert_eq!(code_name(b"garbage"), "UNKNOWN");
    }

    /// Answers like tonic's routes: OK, a trailers-only NOT_FOUND, or UNIMPLEMENTED.
    struct Answer;

    impl Service<http::Request<()>> for Answer {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<()>) -> Self::Future {
            let mut resp = http::Response::new(());
            let status = match req.uri().path() {
                "/petkv.v1.KV/Put" => None,
                "/petkv.v1.KV/Get" => Some("5"),
                // Refused before routing (the auth layer): the path was never looked up.
                p if p.starts_with("/flood") => Some("16"),
                _ => Some("12"),
            };
            if let Some(status) = status {
                resp.headers_mut().insert("grpc-status", http::HeaderValue::from_static(status));
            }
            std::future::ready(Ok(resp))
        }
    }

    #[tokio::test]
    async fn the_layer_records_method_and_code_from_the_response_headers() {
        let metrics = Arc::new(Metrics::new());
        let mut svc = metrics.grpc_layer().layer(Answer);
        for path in ["/petkv.v1.KV/Put", "/petkv.v1.KV/Get", "/made.up/Path", "/flood/a", "/flood/b"] {
            let req = http::Request::builder().uri(path).body(()).expect("request");
            svc.call(req).await.expect("call");
        }
        let text = metrics.encode().expect("encode");
        assert!(text.contains(r#"petkv_grpc_requests_total{method="/petkv.v1.KV/Put",code="OK"} 1"#), "{text}");
        assert!(text.contains(r#"petkv_grpc_requests_total{method="/petkv.v1.KV/Get",code="NOT_FOUND"} 1"#));
        assert!(text.contains(r#"petkv_grpc_requests_total{method="unknown",code="UNIMPLEMENTED"} 1"#), "{text}");
        assert!(text.contains(r#"petkv_grpc_requests_total{method="unknown",code="UNAUTHENTICATED"} 2"#), "{text}");
        assert!(!text.contains("made.up") && !text.contains("flood"), "client-chosen paths never become labels");
    }
}
