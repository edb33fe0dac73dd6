//! `petkv serve`: one pod's whole life, from start-up checks to exit.
//!
//! 1. Load the tokens file and the TLS files, if any ([`crate::edge::auth`], [`crate::edge::tls`]; both
//!    watched for changes); check the volume's identity against the hostname (refuse a
//!    foreign volume untouched).
//! 2. Raise the open-file limit, open storage and bind the three ports (fail fast on a port in
//!    use).
//! 3. Serve the peer port (Raft, start-up probes; mutual TLS), the client port (API, health,
//!    reflection; TLS; tokens checked by [`crate::edge::auth::AuthLayer`]; bounded by
//!    [`crate::edge::limits`]: connections, streams, requests in flight, message size, deadline) and
//!    the HTTP port (metrics, health; always plaintext; its own connection and request caps)
//!    right away: a node that is still deciding answers "not initialized".
//! 4. Decide and carry out the start-up action ([`crate::pod::boot`]); the `startup` health
//!    service turns SERVING once it succeeded.
//! 5. Run the membership reconciler and the readiness reporter until SIGTERM/SIGINT (and, with
//!    `--kube-statefulset`, follow the StatefulSet's `spec.replicas`: `pod::k8s`).
//!    Measure the volume and, on the leader, the members' ([`crate::edge::space`]) all along.
//! 6. Shut down gracefully ([`crate::pod::shutdown`]), bounded by the grace period. If Raft stops
//!    on its own instead, or the state machine cannot be written (a full volume:
//!    [`crate::pod::storage_failure`]), exit non-zero at once, unsealed, so the pod is restarted
//!    and recovers from its volume.
//! 7. After a clean stop, once the runtime is gone and the store closed, seal the store
//!    ([`crate::store::seal`]) so the next start can tell damage from a crash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use petkv_client::pb::v1::cluster_server::ClusterServer;
use petkv_client::pb::v1::kv_server::KvServer;
use petkv_client::pb::v1::lease_server::LeaseServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::api::etcd::EtcdApi;
use crate::api::Api;
use crate::config::NodeConfig;
use crate::edge::auth::{AuthLayer, Tokens, TokensFile};
use crate::edge::limits::connections::{ConnectionGate, GatedListener};
use crate::edge::limits::inflight::InflightLimitLayer;
use crate::edge::limits::message::{max_message_bytes, oversized_layer};
use crate::edge::metrics::Metrics;
use crate::edge::reload::Reloaded;
use crate::edge::tls::{ClientCerts, NodeTls, PeerNameRule, TlsSettings};
use crate::node::Node;
use crate::pb::etcd::etcdserverpb::auth_server::AuthServer as EtcdAuthServer;
use crate::pb::etcd::etcdserverpb::cluster_server::ClusterServer as EtcdClusterServer;
use crate::pb::etcd::etcdserverpb::kv_server::KvServer as EtcdKvServer;
use crate::pb::etcd::etcdserverpb::lease_server::LeaseServer as EtcdLeaseServer;
use crate::pb::etcd::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcd::etcdserverpb::watch_server::WatchServer;
use crate::pb::raft::raft_server::RaftServer;
use crate::pod::discovery::PeerDirectory;
use crate::pod::{boot, membership, shutdown, storage_failure, volume};
use crate::raft::fence::Fence;
use crate::raft::network::PeerChannels;
use crate::raft::service::PeerService;
use crate::store;

/// gRPC health service name that reports start-up (resumed, joined or bootstrapped; Raft runs).
pub const STARTUP_SERVICE: &str = "startup";
/// gRPC health service name that reports liveness (the process answers).
pub const LIVENESS_SERVICE: &str = "liveness";
/// gRPC health service name that reports readiness (member, knows the leader, caught up).
pub const READINESS_SERVICE: &str = "readiness";
/// gRPC health service name of the KV API (follows readiness).
pub const KV_SERVICE: &str = "petkv.v1.KV";
/// How often readiness is re-evaluated.
const READINESS_INTERVAL: Duration = Duration::from_millis(250);
/// Largest gRPC message on the peer port (Raft append batches and snapshot chunks).
const MAX_PEER_MESSAGE: usize = 256 * 1024 * 1024;

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on the {what} address {addr} (port in use?)"))
}

/// How long the runtime may take to wind down its blocking tasks after the node stopped.
const RUNTIME_CLOSE: Duration = Duration::from_secs(5);
/// How long the closed store's engines may take to release their locks before sealing.
const SEAL_WAIT: Duration = Duration::from_secs(3);

/// `petkv serve` from start to exit: runs the node on its own runtime, drops the runtime (every
/// task, so every handle on the store), then seals the closed store if the node stopped
/// cleanly. A seal that cannot be written is logged, not fatal: the next start then applies
/// crash recovery.
pub fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let data_dir = config.data_dir.clone();
    let pod = config.pod.to_string();
    let result = runtime.block_on(run(config));
    runtime.shutdown_timeout(RUNTIME_CLOSE);
    if result.is_ok() {
        match store::seal::seal(&data_dir, SEAL_WAIT) {
            Ok(files) => tracing::info!(%pod, files, "store sealed after a clean shutdown"),
            Err(e) => tracing::warn!(%pod, error = %e, "store not sealed; the next start applies crash recovery"),
        }
    }
    result
}

/// Runs a node until it is told to stop. Everything it logs carries a `node` span with the
/// pod's name.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let span = tracing::info_span!("node", pod = %config.pod);
    run_node(config).instrument(span).await
}

async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    let span = tracing::Span::current();
    // TLS files first: a node with broken TLS stops before it touches its volume.
    let peer_domain = match &config.peers {
        PeerDirectory::Dns { domain, .. } => Some(domain.as_str()),
        PeerDirectory::Static(_) => None,
    };
    match crate::edge::limits::nofile::raise_to_hard() {
        Ok(limit) => tracing::info!(before = limit.before, now = limit.now, "open-file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit; it stays as it was"),
    }
    let tokens = match &config.auth_tokens {
        Some(path) => {
            let file = TokensFile { path: path.clone(), client_tls: config.tls.client.is_some() };
            let tokens = Reloaded::load("auth", file).context("loading the tokens file (--auth-tokens)")?;
            tokens.watch(config.tls.reload_every);
            let loaded = tokens.peek();
            tracing::info!(
                tokens = loaded.len(),
                certificates = loaded.certificates(),
                file = %path.display(),
                "client authentication on"
            );
            Some(tokens)
        }
        None => None,
    };
    let tls_settings = TlsSettings {
        client_certs: client_certs(config.tls.client_certs, tokens.as_ref().map(|t| t.current()).as_deref()),
        ..config.tls.clone()
    };
    let pods = PeerNameRule::new(&config.pod.set, peer_domain);
    let tls = NodeTls::start(&tls_settings, pods.clone()).context("loading the TLS files")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create or open the data dir {}", config.data_dir.display()))?;
    let identity = volume::check_identity(&config.data_dir, &config.pod)?;
    let metrics = Arc::new(Metrics::new());
    let store_options = store::StoreOptions { metrics: Some(metrics.clone()), ..config.store.clone() };
    let (log, sm) = store::open(&config.data_dir, &store_options)?;
    let identity = match volume::check_store(&config.data_dir, identity, &log, &sm).await? {
        volume::VolumeState::Owned(record) => Some(record),
        volume::VolumeState::Empty => None,
    };
    let client_listener = bind(config.client_listen, "client").await?;
    let peer_listener = bind(config.peer_listen, "peer").await?;
    let http_listener = bind(config.http_listen, "http").await?;
    let etcd_listener = match config.etcd_listen {
        Some(addr) => Some(bind(addr, "etcd").await?),
        None => None,
    };
    tracing::info!(
        pod = %config.pod,
        client = %client_listener.local_addr()?,
        peer = %peer_listener.local_addr()?,
        http = %http_listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        "petkv node starting"
    );
    let grace = config.shutdown_grace;
    warn_if_plaintext("client", client_listener.local_addr()?, tls.client_port.is_some());
    warn_if_plaintext("peer", peer_listener.local_addr()?, tls.peer_port.is_some());
    let channels = PeerChannels::new(tls.dial.clone());
    let data_dir = config.data_dir.clone();
    let fence =
        tokio::task::spawn_blocking(move || Fence::start(&data_dir)).await.context("opening the start epoch")??;
    let node = Arc::new(Node::new(config, log, sm, metrics.clone(), channels, Arc::new(fence)));
    // The volume is measured before any port serves: a node that starts on a full volume
    // refuses writes from its first request.
    crate::edge::space::watch::measure_own(&node).await;

    let (stop_client_tx, stop_client_rx) = watch::channel(false);
    let (stop_peer_tx, stop_peer_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status(LIVENESS_SERVICE, ServingStatus::Serving).await;
    health.set_service_status(STARTUP_SERVICE, ServingStatus::NotServing).await;
    health.set_service_status(READINESS_SERVICE, ServingStatus::NotServing).await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(petkv_client::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let api = Api { node: node.clone() };
    let limits = node.config.client_port;
    let max_message = max_message_bytes(&node.config.limits);
    // The client port's layers, which the etcd port shares: metrics, the in-flight cap, the
    // message size limit, authentication.
    let client_stack = || {
        limits
            .server(node.config.request_timeout)
            .layer(metrics.grpc_layer())
            .layer(InflightLimitLayer::new(limits.max_inflight_requests, metrics.clone()))
            .layer(oversized_layer(metrics.clone()))
            .layer(AuthLayer::new(tokens.clone(), pods.clone(), metrics.clone()))
    };
    let client_router = client_stack()
        .add_service(KvServer::new(api.clone()).max_decoding_message_size(max_message))
        .add_service(LeaseServer::new(api.clone()))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(max_message))
        .add_service(health_service)
        .add_service(reflection);
    let client_listener =
        GatedListener::new(client_listener, ConnectionGate::new("client", limits.max_connections, metrics.clone()));
    let client_server =
        serve_port!(client_router, client_listener, &tls.client_port, "client", wait_for(stop_client_rx.clone()));
    let etcd_task = match etcd_listener {
        Some(listener) => {
            tracing::info!(etcd = %listener.local_addr()?, "serving etcd's v3 API");
            warn_if_plaintext("etcd", listener.local_addr()?, tls.client_port.is_some());
            let etcd = EtcdApi::new(api.clone(), tokens.clone());
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::etcd::FILE_DESCRIPTOR_SET)
                .build_v1()
                .context("building the etcd port's reflection service")?;
            let router = client_stack()
                .add_service(EtcdKvServer::new(etcd.clone()).max_decoding_message_size(max_message))
                .add_service(WatchServer::new(etcd.clone()))
                .add_service(EtcdLeaseServer::new(etcd.clone()))
                .add_service(EtcdClusterServer::new(etcd.clone()))
                .add_service(MaintenanceServer::new(etcd.clone()))
                .add_service(EtcdAuthServer::new(etcd))
                .add_service(reflection);
            let listener =
                GatedListener::new(listener, ConnectionGate::new("etcd", limits.max_connections, metrics.clone()));
            let server = serve_port!(router, listener, &tls.client_port, "etcd", wait_for(stop_client_rx.clone()));
            Some(tokio::spawn(server.instrument(span.clone())))
        }
        None => None,
    };
    let peer_router = Server::builder().add_service(
        RaftServer::new(PeerService::new(node.clone()))
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE),
    );
    // Only pods reach the peer port (mutual TLS when TLS is on): counted, not capped.
    let peer_listener = GatedListener::new(peer_listener, ConnectionGate::new("peer", usize::MAX, metrics.clone()));
    let peer_server = serve_port!(peer_router, peer_listener, &tls.peer_port, "peer", wait_for(stop_peer_rx.clone()));
    let client_task = tokio::spawn(client_server.instrument(span.clone()));
    let peer_task = tokio::spawn(peer_server.instrument(span.clone()));
    let http_listener =
        GatedListener::new(http_listener, ConnectionGate::new("http", limits.max_http_connections, metrics.clone()));
    let http_task = tokio::spawn(
        crate::edge::http::serve(http_listener, node.clone(), wait_for(stop_client_rx.clone()))
            .instrument(span.clone()),
    );

    let signal = shutdown::signal();
    tokio::pin!(signal);
    tokio::spawn(crate::edge::space::watch::run(node.clone(), stop_peer_rx.clone()).instrument(span.clone()));
    let started = tokio::select! {
        result = boot::establish(&node, identity) => {
            result?;
            health.set_service_status(STARTUP_SERVICE, ServingStatus::Serving).await;
            true
        }
        sig = &mut signal => { tracing::info!(signal = sig?, "stopping before start-up finished"); false }
    };
    if started {
        tokio::spawn(boot::ensure_member(node.clone(), stop_peer_rx.clone()).instrument(span.clone()));
        tokio::spawn(membership::run(node.clone(), stop_peer_rx.clone()).instrument(span.clone()));
        tokio::spawn(crate::api::lease::clock::run_expiry(node.clone()).instrument(span.clone()));
        tokio::spawn(crate::raft::compactor::run(node.clone(), stop_peer_rx.clone()).instrument(span.clone()));
        tokio::spawn(crate::raft::snapshot_trigger::run(node.clone(), stop_peer_rx.clone()).instrument(span.clone()));
        tokio::spawn(report_readiness(node.clone(), health.clone(), stop_client_rx.clone()).instrument(span.clone()));
        #[cfg(feature = "kube")]
        if let Some(kube) = node.config.kube.clone() {
            tokio::spawn(
                crate::pod::k8s::follow_replicas(node.clone(), kube, stop_peer_rx.clone()).instrument(span.clone()),
            );
        }
        tokio::select! {
            sig = signal => tracing::info!(signal = sig?, grace = ?grace, "shutting down"),
            failure = storage_failure::wait(&node) => {
                // No graceful steps: the store cannot be written, and it is not sealed (the failed
                // write may have left a record cut short, which the next start's crash recovery
                // drops).
                node.set_stopping();
                tracing::error!(volume_full = failure.volume_full, "{failure}");
                return Err(failure.into());
            }
        }
    }

    let graceful = async {
        node.set_stopping();
        health.set_service_status(READINESS_SERVICE, ServingStatus::NotServing).await;
        health.set_service_status(KV_SERVICE, ServingStatus::NotServing).await;
        shutdown::hand_off_leadership(&node).await;
        if shutdown::is_scaled_away(&node).await {
            shutdown::wait_until_removed(&node).await;
        }
        let _ = stop_client_tx.send(true);
        let _ = client_task.await;
        if let Some(etcd_task) = etcd_task {
            let _ = etcd_task.await;
        }
        if let Ok(Err(e)) = http_task.await {
            tracing::warn!(error = %e, "the HTTP port stopped with an error");
        }
        tracing::info!("client and HTTP ports closed; stopping raft");
        shutdown::stop_raft_and_flush(&node).await;
        tracing::info!("raft stopped and storage flushed; closing the peer port");
        let _ = stop_peer_tx.send(true);
        // A leader may keep an idle replication stream (`StreamAppend`) open to this node, and
        // a graceful stop waits for every open stream; Raft is stopped and storage flushed
        // already, so past a short drain the port is simply dropped.
        if tokio::time::timeout(PEER_PORT_DRAIN, peer_task).await.is_err() {
            tracing::info!(drain = ?PEER_PORT_DRAIN, "peer streams still open after the drain; closing them");
        }
    };
    if tokio::time::timeout(grace, graceful).await.is_err() {
        tracing::warn!(?grace, "grace period over; flushing and exiting");
        if let Err(e) = node.sm.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
    tracing::info!("petkv node stopped");
    Ok(())
}

/// Whether the client port asks clients for a certificate, given the flags (`configured`:
/// `--tls-client-auth` makes it required) and the tokens file as read at start. A file that
/// maps certificates asks for them: optional while it also holds tokens (token clients
/// present none), required when certificates are its only credential. Decided at start: a
/// reload that adds the first tokens to a certificates-only file needs a restart for
/// token-only clients to get through the handshake. With auth on but no `cert:` lines,
/// certificates are still asked for (optionally), so that lines added later take effect.
pub fn client_certs(configured: ClientCerts, tokens: Option<&Tokens>) -> ClientCerts {
    match (configured, tokens) {
        (ClientCerts::Required, _) => ClientCerts::Required,
        (_, Some(t)) if t.certificates() > 0 && t.is_empty() => ClientCerts::Required,
        (_, Some(_)) => ClientCerts::Optional,
        (other, None) => other,
    }
}

/// Serves a tonic router on a [`GatedListener`] until `$stop` completes: over TLS when the
/// port has a [`crate::edge::tls::ServerTls`], plaintext otherwise. (A macro: the two cases differ in the
/// connection type, and tonic's bounds on a generic router are long.)
macro_rules! serve_port {
    ($router:expr, $listener:expr, $tls:expr, $port:literal, $stop:expr) => {{
        use futures::FutureExt;
        match $tls {
            Some(tls) => $router
                .serve_with_incoming_shutdown(crate::edge::tls::incoming::accept($listener, tls, $port), $stop)
                .boxed(),
            None => $router.serve_with_incoming_shutdown($listener.into_stream(), $stop).boxed(),
        }
    }};
}
use serve_port;

/// Logs loudly at start when a gRPC port serves plaintext on an address that other hosts can
/// reach ([`plaintext_warning`]).
fn warn_if_plaintext(port: &'static str, addr: SocketAddr, tls: bool) {
    if let Some(warning) = plaintext_warning(port, addr, tls) {
        tracing::warn!(port, %addr, "{warning}");
    }
}

/// The warning for a port that serves plaintext on a non-loopback address (fine on loopback
/// for local use; anywhere else, anyone who reaches the port can read and write the data or,
/// on the peer port, vote and append Raft entries). `0.0.0.0` counts: it is every interface.
fn plaintext_warning(port: &'static str, addr: SocketAddr, tls: bool) -> Option<String> {
    if tls || addr.ip().is_loopback() {
        return None;
    }
    let (flags, risk) = match port {
        "peer" => ("--peer-tls-cert/--peer-tls-key/--peer-tls-ca", "vote and append Raft entries"),
        _ => ("--tls-cert/--tls-key/--tls-ca", "read and write every key"),
    };
    Some(format!(
        "PLAINTEXT: the {port} port serves without TLS on a non-loopback address: anyone who can reach {addr} \
         can {risk}. Set {flags} (`petkv certs` makes development certificates)"
    ))
}

/// How long the peer port may take to close its open streams once Raft has stopped.
const PEER_PORT_DRAIN: Duration = Duration::from_millis(500);

async fn wait_for(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn report_readiness(
    node: Arc<Node>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let ready = node.is_ready();
        if last != Some(ready) {
            let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set_service_status(READINESS_SERVICE, status).await;
            health.set_service_status(KV_SERVICE, status).await;
            tracing::info!(ready, "readiness changed");
            last = Some(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_are_required_only_when_they_are_the_only_credential() {
        let file = |text: &str| Tokens::parse(text, std::path::Path::new("t")).unwrap();
        let tokens_only = file("reader-0123456789abcdef read\n");
        let mixed = file("reader-0123456789abcdef read\ncert:alice write\n");
        let certs_only = file("cert:alice write\n");
        assert_eq!(client_certs(ClientCerts::NotAsked, None), ClientCerts::NotAsked, "auth off");
        assert_eq!(client_certs(ClientCerts::Required, None), ClientCerts::Required, "--tls-client-auth");
        assert_eq!(client_certs(ClientCerts::NotAsked, Some(&tokens_only)), ClientCerts::Optional);
        assert_eq!(client_certs(ClientCerts::NotAsked, Some(&mixed)), ClientCerts::Optional);
        assert_eq!(client_certs(ClientCerts::NotAsked, Some(&certs_only)), ClientCerts::Required);
        assert_eq!(client_certs(ClientCerts::Required, Some(&mixed)), ClientCerts::Required);
    }

    #[test]
    fn plaintext_beyond_loopback_is_warned_about() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for open in ["0.0.0.0:7379", "10.1.2.3:7379", "[::]:7380"] {
            let warning = plaintext_warning("client", addr(open), false).unwrap();
            assert!(warning.starts_with("PLAINTEXT") && warning.contains("--tls-cert"), "{warning}");
        }
        assert!(plaintext_warning("peer", addr("0.0.0.0:7380"), false).unwrap().contains("--peer-tls-cert"));
        assert!(plaintext_warning("client", addr("127.0.0.1:7379"), false).is_none(), "loopback is local use");
        assert!(plaintext_warning("client", addr("[::1]:7379"), false).is_none());
        assert!(plaintext_warning("client", addr("0.0.0.0:7379"), true).is_none(), "TLS");
    }
}
