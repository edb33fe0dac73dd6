//! The client side of TLS, and what both sides read from PEM files.
//!
//! - [`material`]: the files (certificate chain, key, CA bundle) and what is read from them.
//! - [`ClientTls`]: the rustls configuration of outgoing connections.
//! - [`dial`]: outgoing gRPC channels, plaintext or over TLS.
//!
//! The node builds its ports' TLS on the same material and the same [`provider`], and gives
//! [`ClientTls`] verifiers that follow certificate rotation (`petkv::tls`); a client reads its
//! files once ([`ClientTls::from_files`]).

pub mod dial;
pub mod material;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::ResolvesClientCert;
use rustls::sign::SingleCertAndKey;
use rustls::ClientConfig;

pub use material::{IdentityFiles, Material, TlsFiles};

/// The protocol both sides speak over TLS (ALPN): HTTP/2 only, as gRPC does.
pub const ALPN_H2: &[u8] = b"h2";

/// The cryptography used everywhere: ring (no C toolchain or cmake needed, unlike aws-lc-rs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
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
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS configuration of outgoing connections: verifies the server's certificate, presents
/// a certificate if it has one.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Outgoing TLS that checks servers with `verifier` and, with `certificate`, presents the
    /// certificate it resolves (the node passes both on its reloaded material).
    pub fn new(
        verifier: Arc<dyn ServerCertVerifier>,
        certificate: Option<Arc<dyn ResolvesClientCert>>,
    ) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match certificate {
            Some(resolver) => builder.with_client_cert_resolver(resolver),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// Outgoing TLS from files read once (a command-line call, a client program): trusts the
    /// CA bundle, presents the certificate if `files` has an identity.
    pub fn from_files(files: TlsFiles) -> Result<Self, TlsError> {
        let material = Material::load(&files)?;
        let certificate =
            material.identity.map(|key| Arc::new(SingleCertAndKey::from(key)) as Arc<dyn ResolvesClientCert>);
        Self::new(material.server_verifier, certificate)
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_bundle_is_named() {
        let dir = std::env::temp_dir().join(format!("petkv-client-no-such-dir-{}", std::process::id()));
        let files = TlsFiles { ca: dir.join("ca.pem"), identity: None };
        let err = ClientTls::from_files(files).expect_err("no CA bundle");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}
