//! Transport security: TLS on the client port, mutual TLS on the peer port, from PEM files
//! that may be replaced while the node runs (a Kubernetes Secret mount renewed by
//! cert-manager).
//!
//! - [`material`]: the files (certificate chain, key, CA bundle) and what is read from them.
//! - [`reload`]: [`Reloading`]: the current material, read again when the files change.
//! - [`peer_name`]: which certificate names count as a pod of the set on the peer port.
//! - [`verify`]: certificate verifiers that always use the current material.
//! - [`config`]: the rustls server and client configurations built on them.
//! - [`incoming`]: accepted TCP connections turned into TLS streams for tonic.
//! - [`dial`]: outgoing gRPC channels, plaintext or over TLS.
//! - [`node`]: [`NodeTls`]: what a node's ports serve with and its connections dial with.
//! - [`certs`]: `petkv certs`: a development CA and per-pod certificates (rcgen).
//!
//! The HTTP port (`/metrics`, `/healthz`, `/readyz`) stays plaintext: it serves no keys or
//! values, and the kubelet's probes and Prometheus reach it without certificates.

pub mod certs;
pub mod config;
pub mod dial;
pub mod incoming;
pub mod material;
pub mod node;
pub mod peer_name;
pub mod reload;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config::{ClientTls, ServerTls};
pub use material::{IdentityFiles, TlsFiles};
pub use node::{Dialers, NodeTls};
pub use peer_name::PeerNameRule;
pub use reload::Reloading;

/// The cryptography used everywhere: ring (no C toolchain or cmake needed, unlike aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// Whether the client port asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCerts {
    /// Not asked for (TLS without client authentication).
    #[default]
    NotAsked,
    /// Asked for: a client may present one (it must then chain to the CA bundle, or the
    /// handshake fails) or none (it authenticates with a bearer token instead).
    Optional,
    /// Only clients presenting a certificate that chains to the CA bundle get through.
    Required,
}

/// TLS of a node's two gRPC ports, as configured (none: plaintext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The client port: the node's certificate, and the CA bundle it trusts when it forwards a
    /// request to another node's client port (client certificates must chain to it).
    pub client: Option<TlsFiles>,
    /// Whether the client port asks for client certificates.
    pub client_certs: ClientCerts,
    /// The peer port (mutual TLS) and every connection to another node's peer port.
    pub peer: Option<TlsFiles>,
    /// How often the files are checked for changes.
    pub reload_every: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            client: None,
            client_certs: ClientCerts::NotAsked,
            peer: None,
            reload_every: reload::DEFAULT_RELOAD_EVERY,
        }
    }
}

/// What can go wrong with TLS files and configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the {what} {path} is not valid PEM: {detail}")]
    Pem { what: &'static str, path: PathBuf, detail: String },
    #[error("the {what} {path} holds no {item}")]
    Empty { what: &'static str, path: PathBuf, item: &'static str },
    #[error("the key {key} does not belong to the certificate {cert} (or cannot be used): {detail}")]
    KeyMismatch { cert: PathBuf, key: PathBuf, detail: String },
    #[error("the CA bundle {path} cannot be used: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("{what} needs a certificate and its key (--*-cert and --*-key)")]
    NoIdentity { what: &'static str },
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}
