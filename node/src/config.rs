//! The settings of one node, independent of how they were given (flags, environment, tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::validation::Limits;
use crate::api::watch::FeedLimits;
use crate::edge::limits::ClientPortLimits;
use crate::edge::space::Reserve;
use crate::edge::tls::TlsSettings;
use crate::pod::discovery::PeerDirectory;
use crate::pod::identity::PodName;
use crate::pod::marker::BootstrapMarker;
use crate::raft::settings::RaftSettings;
use crate::store::StoreOptions;

/// Default number of voters: ordinals below it vote, the rest are read replicas.
pub const DEFAULT_VOTERS: u32 = 3;
/// Default time a client request may take before the server answers DEADLINE_EXCEEDED.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time between SIGTERM and exit (Kubernetes' default grace period is 30 s).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub hostname: String,
    pub pod: PodName,
    pub data_dir: PathBuf,
    pub client_listen: SocketAddr,
    pub peer_listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_listen: SocketAddr,
    /// `host:port` other nodes and clients use to reach the client port.
    pub client_advertise: String,
    /// `host:port` other nodes use to reach the peer port.
    pub peer_advertise: String,
    /// Where etcd's v3 API is served ([`crate::api::etcd`]); none: not served.
    pub etcd_listen: Option<SocketAddr>,
    /// `host:port` etcd clients use for this node's etcd port (its `MemberList` client URL).
    pub etcd_advertise: Option<String>,
    pub peers: PeerDirectory,
    pub voters: u32,
    pub raft: RaftSettings,
    pub limits: Limits,
    pub request_timeout: Duration,
    /// Bounds on every watch ([`crate::api::watch`]).
    pub watch: FeedLimits,
    /// Revisions of history the leader keeps by compacting older ones (0: all).
    pub history_retention: u64,
    /// Bounds on client-port connections, streams and requests in flight ([`crate::edge::limits`]).
    pub client_port: ClientPortLimits,
    pub shutdown_grace: Duration,
    /// Where the "set was bootstrapped" marker lives (outside the volume), if anywhere.
    pub bootstrap_marker: BootstrapMarker,
    /// The Kubernetes API and this pod's StatefulSet (`--kube-statefulset`): its
    /// `spec.replicas` is the declared replica count.
    #[cfg(feature = "kube")]
    pub kube: Option<crate::pod::k8s::KubeContext>,
    pub store: StoreOptions,
    /// Free space the volume keeps: below it the node refuses writes ([`crate::edge::space`]).
    pub min_free: Reserve,
    /// TLS on the client and peer ports (default: plaintext).
    pub tls: TlsSettings,
    /// The tokens file that turns authentication on for the client port ([`crate::edge::auth`]);
    /// none: every client may do everything.
    pub auth_tokens: Option<std::path::PathBuf>,
}
