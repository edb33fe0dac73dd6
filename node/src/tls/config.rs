//! The rustls configurations: [`ServerTls`] for the client and peer ports, [`ClientTls`] for
//! every outgoing connection (peer RPCs, forwarding to the leader, the CLI and the harness).
//! Both resolve the certificate and verify the other side through [`Reloading`], so they pick
//! up rotated files without being rebuilt. Both speak HTTP/2 only (ALPN `h2`), as gRPC does.

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use super::verify::{ClientCertCheck, CurrentServerVerifier};
use super::{ClientCerts, PeerNameRule, Reloading, TlsError, TlsFiles};

const ALPN_H2: &[u8] = b"h2";

/// A server port's TLS configuration.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    fn build(material: Arc<Reloading>, clients: Option<ClientCertCheck>, what: &'static str) -> Result<Self, TlsError> {
        if material.files().identity.is_none() {
            return Err(TlsError::NoIdentity { what });
        }
        let builder = ServerConfig::builder_with_provider(super::provider()).with_safe_default_protocol_versions()?;
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
    pub fn client_port(material: Arc<Reloading>, client_certs: ClientCerts) -> Result<Self, TlsError> {
        let check = match client_certs {
            ClientCerts::NotAsked => None,
            ClientCerts::Optional => Some(ClientCertCheck::new(material.clone(), None, false)),
            ClientCerts::Required => Some(ClientCertCheck::new(material.clone(), None, true)),
        };
        Self::build(material, check, "TLS on the client port")
    }

    /// The peer port: mutual TLS; a client must present a certificate that chains to the
    /// cluster CA and names a pod of the set.
    pub fn peer_port(material: Arc<Reloading>, names: PeerNameRule) -> Result<Self, TlsError> {
        let check = ClientCertCheck::new(material.clone(), Some(names), true);
        Self::build(material, Some(check), "TLS on the peer port")
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

/// The TLS configuration of outgoing connections: trusts the CA bundle, presents the
/// certificate if the material has one.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Outgoing TLS on `material` (reloaded or not, as the caller set it up).
    pub fn new(material: Arc<Reloading>) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(material.clone())));
        let presents_a_certificate = material.files().identity.is_some();
        let mut config = if presents_a_certificate {
            builder.with_client_cert_resolver(material)
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// Outgoing TLS from files read once (a command-line call).
    pub fn from_files(files: TlsFiles) -> Result<Self, TlsError> {
        Self::new(Reloading::load("client", files)?)
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}
