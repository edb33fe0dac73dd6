//! Flags of `petkv serve` and `petkv wait-primary`, and their translation into a
//! [`NodeConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use petkv_client::tls::{ClientTls, IdentityFiles, TlsFiles};

use super::{LogFormat, DEFAULT_CLIENT_PORT, DEFAULT_HTTP_PORT, DEFAULT_PEER_PORT};
use crate::api::validation::{Limits, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_SCAN_LIMIT, DEFAULT_MAX_VALUE_BYTES};
use crate::api::watch::FeedLimits;
use crate::config::{NodeConfig, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, DEFAULT_VOTERS};
use crate::edge::limits::{self, ClientPortLimits};
use crate::edge::space::Reserve;
use crate::edge::tls::reload::DEFAULT_RELOAD_EVERY;
use crate::edge::tls::{ClientCerts, TlsSettings};
use crate::pod::discovery::{PeerDirectory, DEFAULT_PROBE_ORDINALS};
use crate::pod::identity::{self, PodName};
use crate::pod::marker::BootstrapMarker;
use crate::raft::settings::{RaftSettings, DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_SNAPSHOT_EVERY};
use crate::store::StoreOptions;

/// Who the node is and where its peers are (shared by `serve` and `wait-primary`).
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// Override the hostname (on a laptop). The rule stays: it must look like `<set>-<ordinal>`.
    #[arg(long, env = "PETKV_HOSTNAME")]
    pub hostname: Option<String>,
    /// The node's volume.
    #[arg(long, env = "PETKV_DATA_DIR", default_value = "/var/lib/petkv")]
    pub data_dir: PathBuf,
    /// Static peer map for a laptop or the harness: ordinal=host:port of each peer port,
    /// comma separated. Without it, peers are <set>-<ordinal>.<peer-domain>.
    #[arg(long, env = "PETKV_PEERS", conflicts_with = "peer_domain")]
    pub peers: Option<String>,
    /// The headless service domain, e.g. petkv.default.svc.cluster.local.
    #[arg(long, env = "PETKV_PEER_DOMAIN")]
    pub peer_domain: Option<String>,
    /// Peer port of the other pods in DNS mode.
    #[arg(long, env = "PETKV_PEER_PORT", default_value_t = DEFAULT_PEER_PORT)]
    pub peer_port: u16,
    /// How many ordinals to probe for a running cluster in DNS mode.
    #[arg(long, env = "PETKV_PROBE_ORDINALS", default_value_t = DEFAULT_PROBE_ORDINALS)]
    pub probe_ordinals: u32,
}

impl IdentityArgs {
    /// The hostname to use: the flag, or the machine's.
    pub fn hostname(&self) -> String {
        super::hostname_or_machines(self.hostname.as_deref())
    }

    pub fn pod(&self) -> anyhow::Result<PodName> {
        Ok(identity::parse_hostname(&self.hostname())?)
    }

    pub fn peers(&self) -> anyhow::Result<PeerDirectory> {
        match (&self.peers, &self.peer_domain) {
            (Some(spec), _) => Ok(PeerDirectory::parse_static(spec)?),
            (None, Some(domain)) => Ok(PeerDirectory::Dns {
                domain: domain.clone(),
                port: self.peer_port,
                probe_ordinals: self.probe_ordinals,
            }),
            (None, None) => bail!("say where the peers are: --peers (static map) or --peer-domain (headless service)"),
        }
    }
}

/// Mutual TLS on the peer port (as etcd's `--peer-cert-file`, `--peer-key-file`,
/// `--peer-trusted-ca-file`; shared by `serve` and `wait-primary`). The certificate serves the
/// peer port and authenticates this node to the others; other nodes must present one from the
/// same CA that names a pod of the set (`<set>-<ordinal>.<peer-domain>`).
#[derive(Debug, Clone, Args)]
pub struct PeerTlsArgs {
    /// The node's peer certificate (PEM, leaf first). Needs --peer-tls-key and --peer-tls-ca.
    #[arg(long, env = "PETKV_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,
    /// The peer certificate's private key (PEM).
    #[arg(long, env = "PETKV_PEER_TLS_KEY", requires_all = ["peer_tls_cert", "peer_tls_ca"])]
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA bundle (PEM): peers' certificates must chain to it.
    #[arg(long, env = "PETKV_PEER_TLS_CA", requires_all = ["peer_tls_cert", "peer_tls_key"])]
    pub peer_tls_ca: Option<PathBuf>,
}

impl PeerTlsArgs {
    /// The peer TLS files, if peer TLS is on.
    pub fn files(&self) -> Option<TlsFiles> {
        tls_files(&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca)
    }

    /// How `wait-primary` dials the peers (the files read once).
    pub fn dialer(&self) -> anyhow::Result<Option<ClientTls>> {
        self.files().map(ClientTls::from_files).transpose().context("loading the peer TLS files")
    }
}

/// TLS on the client port (as etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`,
/// `--client-cert-auth`).
#[derive(Debug, Clone, Args)]
pub struct ClientTlsArgs {
    /// The client port's certificate (PEM, leaf first). Needs --tls-key and --tls-ca.
    #[arg(long, env = "PETKV_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "PETKV_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) for the client port: trusted when this node forwards a request to the
    /// leader, and what client certificates must chain to (required with --tls-client-auth;
    /// asked for, optionally, with --auth-tokens, whose `cert:` lines give them roles).
    #[arg(long, env = "PETKV_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Refuse clients that do not present a certificate chaining to --tls-ca.
    #[arg(long, env = "PETKV_TLS_CLIENT_AUTH", requires = "tls_cert")]
    pub tls_client_auth: bool,
}

fn tls_files(cert: &Option<PathBuf>, key: &Option<PathBuf>, ca: &Option<PathBuf>) -> Option<TlsFiles> {
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(TlsFiles { ca: ca.clone(), identity: Some(IdentityFiles { cert: cert.clone(), key: key.clone() }) })
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Args)]
pub struct WaitPrimaryArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub peer_tls: PeerTlsArgs,
    /// Give up after this many seconds (default: wait forever, like an init container).
    #[arg(long, env = "PETKV_WAIT_TIMEOUT_SECS")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub client_tls: ClientTlsArgs,
    #[command(flatten)]
    pub peer_tls: PeerTlsArgs,
    /// How often the TLS files and the tokens file are checked for changes (a rotated
    /// certificate is used for new connections, a changed tokens file for new requests,
    /// without a restart), in milliseconds.
    #[arg(long, env = "PETKV_TLS_RELOAD_MS", default_value_t = DEFAULT_RELOAD_EVERY.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_ms: u64,
    /// Turn authentication on for the client port: clients must send `authorization: Bearer
    /// <token>` with a token from this file, or present a client certificate (chaining to
    /// --tls-ca) whose Common Name the file maps; the role (read, write, admin) must allow the
    /// call. Lines `TOKEN ROLE [NAME]` and `cert:SUBJECT ROLE [NAME]`; `#` starts a comment
    /// line. Read again when it changes (every --tls-reload-ms).
    #[arg(long, env = "PETKV_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// Address the client API listens on.
    #[arg(long, env = "PETKV_CLIENT_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_CLIENT_PORT)))]
    pub client_listen: SocketAddr,
    /// Address the peer (Raft) port listens on.
    #[arg(long, env = "PETKV_PEER_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PEER_PORT)))]
    pub peer_listen: SocketAddr,
    /// Address the HTTP port (/metrics, /healthz, /readyz) listens on.
    #[arg(long, env = "PETKV_HTTP_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)))]
    pub http_listen: SocketAddr,
    /// Also serve etcd's v3 gRPC API on this address (etcdctl and etcd client libraries work
    /// against it; 2379 by convention), with the client port's TLS, authentication and limits.
    /// Off unless set.
    #[arg(long, env = "PETKV_ETCD_LISTEN")]
    pub etcd_listen: Option<SocketAddr>,
    /// host:port etcd clients use for this node's etcd port, as `MemberList` reports it
    /// (default: the listen address if it is specific, else <hostname>.<peer-domain>:<port>).
    #[arg(long, env = "PETKV_ETCD_ADVERTISE", requires = "etcd_listen")]
    pub etcd_advertise: Option<String>,
    /// host:port clients and other nodes use for this node's client API (default: the listen
    /// address if it is specific, else <hostname>.<peer-domain>:<port>).
    #[arg(long, env = "PETKV_CLIENT_ADVERTISE")]
    pub client_advertise: Option<String>,
    /// host:port other nodes use for this node's peer port (default: this ordinal's entry in
    /// --peers, else <hostname>.<peer-domain>:<port>).
    #[arg(long, env = "PETKV_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// Ordinals below this vote; the others are read replicas (Raft learners).
    #[arg(long, env = "PETKV_VOTERS", default_value_t = DEFAULT_VOTERS)]
    pub voters: u32,
    #[arg(long, env = "PETKV_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Minimum election timeout; the maximum is twice this.
    #[arg(long, env = "PETKV_ELECTION_TIMEOUT_MS", default_value_t = DEFAULT_ELECTION_TIMEOUT_MS)]
    pub election_timeout_ms: u64,
    /// Most log entries between snapshots (the log is purged behind them); a small state is
    /// snapshotted sooner, after a quarter of its key count in entries (at least 20,000).
    #[arg(long, env = "PETKV_SNAPSHOT_EVERY", default_value_t = DEFAULT_SNAPSHOT_EVERY)]
    pub snapshot_every: u64,
    /// Largest key. With --max-value-bytes and 64 KiB of headroom it also sets the largest
    /// message the client port decodes (a larger one: RESOURCE_EXHAUSTED before it is read).
    #[arg(long, env = "PETKV_MAX_KEY_BYTES", default_value_t = DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,
    /// Largest value (see --max-key-bytes for the message limit it sets).
    #[arg(long, env = "PETKV_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    #[arg(long, env = "PETKV_MAX_SCAN_LIMIT", default_value_t = DEFAULT_MAX_SCAN_LIMIT)]
    pub max_scan_limit: u32,
    /// Time a client request may take on the server before DEADLINE_EXCEEDED (a client's
    /// shorter grpc-timeout is honoured; the server drops any request still running 1 s later).
    #[arg(long, env = "PETKV_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_millis() as u64)]
    pub request_timeout_ms: u64,
    /// How long a watch waits for its client to take the next update (its buffer full)
    /// before it ends the stream with RESOURCE_EXHAUSTED; the client resumes from its last
    /// revision. A watcher that reads never waits.
    #[arg(long, env = "PETKV_WATCH_SLOW_MS", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub watch_slow_ms: u64,
    /// Revisions of history kept for reads at past revisions and watches from the past: the
    /// leader compacts older ones, in steps of a tenth of this (0: keep every revision;
    /// compaction is then only explicit, `petkv compact`).
    #[arg(long, env = "PETKV_HISTORY_RETENTION", default_value_t = 100_000)]
    pub history_retention: u64,
    /// Most client-port connections open at once; beyond it a new connection is closed right
    /// after accept (counted in petkv_connections_refused_total, logged at most every 10 s).
    #[arg(long, env = "PETKV_MAX_CLIENT_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 24))]
    pub max_client_connections: usize,
    /// Most concurrent requests (HTTP/2 streams) on one client connection; a client queues
    /// the rest itself.
    #[arg(long, env = "PETKV_MAX_CONCURRENT_STREAMS", default_value_t = limits::DEFAULT_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Most client-port requests in flight across all connections; beyond it a request is
    /// answered RESOURCE_EXHAUSTED at once ("too many requests", counted in
    /// petkv_requests_shed_total) rather than queued.
    #[arg(long, env = "PETKV_MAX_INFLIGHT_REQUESTS", default_value_t = limits::DEFAULT_MAX_INFLIGHT_REQUESTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 24))]
    pub max_inflight_requests: usize,
    /// Interval of HTTP/2 keepalive pings on client connections; a connection that does not
    /// answer one within --keepalive-timeout-ms is closed.
    #[arg(long, env = "PETKV_KEEPALIVE_INTERVAL_MS", default_value_t = limits::DEFAULT_KEEPALIVE_INTERVAL.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_interval_ms: u64,
    #[arg(long, env = "PETKV_KEEPALIVE_TIMEOUT_MS", default_value_t = limits::DEFAULT_KEEPALIVE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_timeout_ms: u64,
    /// Most HTTP-port (/metrics, /healthz, /readyz) connections open at once.
    #[arg(long, env = "PETKV_MAX_HTTP_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_HTTP_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 16))]
    pub max_http_connections: usize,
    /// Time between SIGTERM and exit.
    #[arg(long, env = "PETKV_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE.as_millis() as u64)]
    pub shutdown_grace_ms: u64,
    /// The "set was bootstrapped" marker file (outside the volume). When it exists, an empty
    /// ordinal 0 never bootstraps a second cluster.
    #[arg(long, env = "PETKV_BOOTSTRAP_MARKER", conflicts_with = "bootstrap_configmap")]
    pub bootstrap_marker: Option<PathBuf>,
    /// Kubernetes (feature `kube`): the "set was bootstrapped" marker is this ConfigMap, owned
    /// by the StatefulSet (--kube-statefulset), holding `clusterId: <id>`.
    #[arg(long, env = "PETKV_BOOTSTRAP_CONFIGMAP", requires = "kube_statefulset")]
    pub bootstrap_configmap: Option<String>,
    /// Kubernetes (feature `kube`): this pod's StatefulSet; its spec.replicas is the declared
    /// replica count the leader's reconciler follows.
    #[arg(long, env = "PETKV_KUBE_STATEFULSET")]
    pub kube_statefulset: Option<String>,
    /// Kubernetes (feature `kube`): the namespace of the StatefulSet and the ConfigMap
    /// (default: the pod's, from its service account).
    #[arg(long, env = "PETKV_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// Free space (bytes) the volume must keep: below it the node refuses writes with
    /// RESOURCE_EXHAUSTED (reads go on) until it has a quarter more again; the leader also
    /// refuses while another member's volume is below its reserve. `auto`: 64 MiB, or a tenth
    /// of a volume smaller than 640 MiB. 0 turns the guard off.
    #[arg(long, env = "PETKV_MIN_FREE_BYTES", default_value_t = Reserve::Auto)]
    pub min_free_bytes: Reserve,
    /// sled page cache, in MiB.
    #[arg(long, env = "PETKV_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    #[arg(long, value_enum, env = "PETKV_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn is_specific(addr: &SocketAddr) -> bool {
    !addr.ip().is_unspecified()
}

impl ServeArgs {
    /// The marker and the Kubernetes API, when built with the `kube` feature. Builds the
    /// in-cluster client (inside the Tokio runtime) only when a Kubernetes flag is given.
    #[cfg(feature = "kube")]
    fn kube_settings(&self) -> anyhow::Result<(BootstrapMarker, Option<crate::pod::k8s::KubeContext>)> {
        let Some(set) = &self.kube_statefulset else {
            return Ok((BootstrapMarker::from_file(self.bootstrap_marker.clone()), None));
        };
        let kube = crate::pod::k8s::KubeContext::in_cluster(self.kube_namespace.clone(), set.clone())
            .context("--kube-statefulset needs the Kubernetes API")?;
        let marker = match &self.bootstrap_configmap {
            Some(name) => BootstrapMarker::ConfigMap(crate::pod::k8s::ConfigMapMarker::new(kube.clone(), name)),
            None => BootstrapMarker::from_file(self.bootstrap_marker.clone()),
        };
        Ok((marker, Some(kube)))
    }

    /// Without the `kube` feature, a Kubernetes flag is an error rather than silently ignored
    /// (the node would not follow spec.replicas, nor guard against a second bootstrap).
    #[cfg(not(feature = "kube"))]
    fn marker_without_kube(&self) -> anyhow::Result<BootstrapMarker> {
        if self.kube_statefulset.is_some() || self.bootstrap_configmap.is_some() || self.kube_namespace.is_some() {
            bail!(
                "--kube-statefulset, --bootstrap-configmap and --kube-namespace (PETKV_KUBE_*, \
                 PETKV_BOOTSTRAP_CONFIGMAP) need a petkv built with the `kube` feature"
            );
        }
        Ok(BootstrapMarker::from_file(self.bootstrap_marker.clone()))
    }

    /// Checks the flags and builds the node configuration.
    pub fn to_config(&self) -> anyhow::Result<NodeConfig> {
        let hostname = self.identity.hostname();
        let pod = self.identity.pod()?;
        let peers = self.identity.peers()?;
        if self.voters == 0 {
            bail!("--voters must be at least 1");
        }
        let dns_name = |port: u16| self.identity.peer_domain.as_ref().map(|domain| format!("{pod}.{domain}:{port}"));
        let peer_advertise = match &self.peer_advertise {
            Some(a) => a.clone(),
            None => peers
                .peer_addr(&pod)
                .or_else(|| is_specific(&self.peer_listen).then(|| self.peer_listen.to_string()))
                .context(
                    "cannot tell the peer address to advertise: add this ordinal to --peers or set --peer-advertise",
                )?,
        };
        let client_advertise = match &self.client_advertise {
            Some(a) => a.clone(),
            None => is_specific(&self.client_listen)
                .then(|| self.client_listen.to_string())
                .or_else(|| dns_name(self.client_listen.port()))
                .context("cannot tell the client address to advertise: set --client-advertise")?,
        };
        let etcd_advertise = match (&self.etcd_advertise, self.etcd_listen) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(listen)) => Some(
                is_specific(&listen)
                    .then(|| listen.to_string())
                    .or_else(|| dns_name(listen.port()))
                    .context("cannot tell the etcd address to advertise: set --etcd-advertise")?,
            ),
            (None, None) => None,
        };
        #[cfg(feature = "kube")]
        let (bootstrap_marker, kube) = self.kube_settings()?;
        #[cfg(not(feature = "kube"))]
        let bootstrap_marker = self.marker_without_kube()?;
        Ok(NodeConfig {
            hostname,
            pod,
            data_dir: self.identity.data_dir.clone(),
            client_listen: self.client_listen,
            peer_listen: self.peer_listen,
            http_listen: self.http_listen,
            client_advertise,
            peer_advertise,
            etcd_listen: self.etcd_listen,
            etcd_advertise,
            peers,
            voters: self.voters,
            raft: RaftSettings {
                heartbeat_ms: self.heartbeat_ms,
                election_timeout_ms: self.election_timeout_ms,
                snapshot_every: self.snapshot_every,
            },
            limits: Limits {
                max_key_bytes: self.max_key_bytes,
                max_value_bytes: self.max_value_bytes,
                max_scan_limit: self.max_scan_limit,
            },
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            watch: FeedLimits { slow_grace: Duration::from_millis(self.watch_slow_ms) },
            history_retention: self.history_retention,
            client_port: ClientPortLimits {
                max_connections: self.max_client_connections,
                max_concurrent_streams: self.max_concurrent_streams,
                max_inflight_requests: self.max_inflight_requests,
                keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
                keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
                max_http_connections: self.max_http_connections,
            },
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            bootstrap_marker,
            #[cfg(feature = "kube")]
            kube,
            store: StoreOptions { cache_bytes: self.cache_mb * 1024 * 1024, metrics: None },
            min_free: self.min_free_bytes,
            tls: TlsSettings {
                client: tls_files(&self.client_tls.tls_cert, &self.client_tls.tls_key, &self.client_tls.tls_ca),
                client_certs: if self.client_tls.tls_client_auth {
                    ClientCerts::Required
                } else {
                    ClientCerts::NotAsked
                },
                peer: self.peer_tls.files(),
                reload_every: Duration::from_millis(self.tls_reload_ms),
            },
            auth_tokens: self.auth_tokens.clone(),
        })
    }
}
