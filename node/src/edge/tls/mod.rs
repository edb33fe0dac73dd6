//! Transport security: TLS on the client port, mutual TLS on the peer port, from PEM files
//! that may be replaced while the node runs (a Kubernetes Secret mount renewed by
//! cert-manager).
//!
//! - [`reload`]: [`Reloading`]: the current material, read again when the files change.
//! - [`peer_name`]: which certificate names count as a pod of the set on the peer port.
//! - [`verify`]: certificate verifiers that always use the current material.
//! - [`config`]: the rustls server configurations built on them, and the client configuration
//!   a node dials with ([`config::dialer`]).
//! - [`incoming`]: accepted TCP connections turned into TLS streams for tonic.
//! - [`node`]: [`NodeTls`]: what a node's ports serve with and its connections dial with.
//! - [`certs`]: `petkv certs`: a development CA and per-pod certificates (rcgen).
//!
//! The files and what is read from them ([`TlsFiles`], [`Material`]), [`ClientTls`], the
//! crypto [`provider`] and the dialer of every outgoing channel ([`lazy_channel`]) are the
//! client side of TLS, which clients share: [`petkv_client::tls`].
//!
//! [`Material`]: petkv_client::tls::Material
//! [`ClientTls`]: petkv_client::tls::ClientTls
//! [`provider`]: petkv_client::tls::provider
//! [`lazy_channel`]: petkv_client::tls::dial::lazy_channel
//!
//! The HTTP port (`/metrics`, `/healthz`, `/readyz`) stays plaintext: it serves no keys or
//! values, and the kubelet's probes and Prometheus reach it without certificates.

pub mod certs;
pub mod config;
pub mod incoming;
pub mod node;
pub mod peer_name;
pub mod reload;
pub mod verify;

use std::time::Duration;

use petkv_client::tls::{TlsError, TlsFiles};

pub use config::ServerTls;
pub use node::{Dialers, NodeTls};
pub use peer_name::PeerNameRule;
pub use reload::Reloading;

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

/// What can go wrong setting up a node's TLS.
#[derive(Debug, thiserror::Error)]
pub enum NodeTlsError {
    /// A file does not load, or rustls refuses the configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{what} needs a certificate and its key (--*-cert and --*-key)")]
    NoIdentity { what: &'static str },
}
