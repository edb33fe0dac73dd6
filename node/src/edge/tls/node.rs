//! [`NodeTls`]: a running node's TLS, built once at start from its [`TlsSettings`]: what the
//! client and peer ports serve with, and what its outgoing connections dial with ([`Dialers`]).
//!
//! Each port's files are loaded once and shared by both directions: the peer certificate is
//! the server certificate of the peer port and the client certificate this node presents to
//! other peer ports (as etcd's `--peer-cert-file`); the client-port certificate is also what
//! this node presents when it forwards a request to the leader's client port. Files are
//! checked for changes every `reload_every` ([`super::reload`]).

use petkv_client::tls::ClientTls;

use super::config::dialer;
use super::{NodeTlsError, PeerNameRule, Reloading, ServerTls, TlsSettings};

/// How outgoing connections are made: to peer ports and to client ports (forwarding).
#[derive(Debug, Clone, Default)]
pub struct Dialers {
    pub peer: Option<ClientTls>,
    pub client: Option<ClientTls>,
}

/// The TLS of a running node.
#[derive(Debug, Clone, Default)]
pub struct NodeTls {
    pub client_port: Option<ServerTls>,
    pub peer_port: Option<ServerTls>,
    pub dial: Dialers,
}

impl NodeTls {
    /// Loads the files (failing on any that does not load) and starts watching them. Needs a
    /// Tokio runtime. `names` is the peer port's rule for client certificates.
    pub fn start(settings: &TlsSettings, names: PeerNameRule) -> Result<Self, NodeTlsError> {
        let mut tls = NodeTls::default();
        if let Some(files) = &settings.client {
            let material = Reloading::load("client port", files.clone())?;
            material.watch(settings.reload_every);
            tls.client_port = Some(ServerTls::client_port(material.clone(), settings.client_certs)?);
            tls.dial.client = Some(dialer(material)?);
        }
        if let Some(files) = &settings.peer {
            let material = Reloading::load("peer port", files.clone())?;
            material.watch(settings.reload_every);
            tls.peer_port = Some(ServerTls::peer_port(material.clone(), names)?);
            tls.dial.peer = Some(dialer(material)?);
        }
        Ok(tls)
    }
}
