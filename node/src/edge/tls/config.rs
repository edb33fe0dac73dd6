//! The rustls configurations of a node: [`ServerTls`] for the client and peer ports,
//! [`dialer`] for its outgoing connections (peer RPCs, forwarding to the leader). Both resolve
//! the certificate and verify the other side through [`Reloading`], so they pick up rotated
//! files without being rebuilt. Both speak HTTP/2 only (ALPN `h2`), as gRPC does.

use std::sync::Arc;

use petkv_client::tls::{provider, ClientTls, TlsError, ALPN_H2};
use rustls::client::ResolvesClientCert;
use rustls::ServerConfig;

use super::verify::{ClientCertCheck, CurrentServerVerifier};
use super::{ClientCerts, NodeTlsError, PeerNameRule, Reloading};

/// A server port's TLS configuration.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    fn build(
        material: Arc<Reloading>,
        clients: Option<ClientCertCheck>,
        what: &'static str,
    ) -> Result<Self, NodeTlsError> {
        if material.files().identity.is_none() {
            return Err(NodeTlsError::NoIdentity { what });
        }
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?;
        let builder = match clients {
            Some(check) => builder.with_client_cert_verifier(Arc::new(check)),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(material);
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// The client port: TLS with the node's certificate; client certificates, when asked for,
    /// must chain to the CA bundle ([`ClientCerts`]).
    pub fn client_port(material: Arc<Reloading>, client_certs: ClientCerts) -> Result<Self, NodeTlsError> {
        let check = match client_certs {
            ClientCerts::NotAsked => None,
            ClientCerts::Optional => Some(ClientCertCheck::new(material.clone(), None, false)),
            ClientCerts::Required => Some(ClientCertCheck::new(material.clone(), None, true)),
        };
        Self::build(material, check, "TLS on the client port")
    }

    /// The peer port: mutual TLS; a client must present a certificate that chains to the
    /// cluster CA and names a pod of the set.
    pub fn peer_port(material: Arc<Reloading>, names: PeerNameRule) -> Result<Self, NodeTlsError> {
        let check = ClientCertCheck::new(material.clone(), Some(names), true);
        Self::build(material, Some(check), "TLS on the peer port")
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

/// The TLS configuration of a node's outgoing connections on `material`: trusts its current
/// CA bundle and presents its current certificate, if it has one, so a rotated certificate is
/// used from the next connection on.
pub fn dialer(material: Arc<Reloading>) -> Result<ClientTls, TlsError> {
    let certificate = material.files().identity.is_some().then(|| material.clone() as Arc<dyn ResolvesClientCert>);
    ClientTls::new(Arc::new(CurrentServerVerifier(material)), certificate)
}
