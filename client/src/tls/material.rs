//! The TLS files of one port and what is read from them: the CA bundle that certificates must
//! chain to, and (for a server, or a client that authenticates) a certificate chain with its
//! private key. Reading checks everything a handshake would otherwise fail on later: the PEM
//! parses, the key belongs to the certificate, the CA bundle holds usable CA certificates.
//! (Tested in the node, `petkv::tls::certs`, with the certificates it issues.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// A certificate chain (leaf first) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of one side of TLS: the CA bundle to trust and, optionally, an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub identity: Option<IdentityFiles>,
}

impl TlsFiles {
    /// Every file, in the order they are read.
    pub fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.ca.as_path()];
        if let Some(id) = &self.identity {
            paths.push(&id.cert);
            paths.push(&id.key);
        }
        paths
    }
}

/// The raw bytes of the files, in [`TlsFiles::paths`] order: what a reload compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents(Vec<Vec<u8>>);

impl Contents {
    /// Reads every file.
    pub fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
        };
        let mut all = vec![read("CA bundle", &files.ca)?];
        if let Some(id) = &files.identity {
            all.push(read("certificate", &id.cert)?);
            all.push(read("private key", &id.key)?);
        }
        Ok(Self(all))
    }
}

/// What one port's TLS uses at a given moment.
pub struct Material {
    /// The certificate and key this side presents, if it has any.
    pub identity: Option<Arc<CertifiedKey>>,
    /// Checks a server's certificate against the CA bundle (and the name dialed).
    pub server_verifier: Arc<dyn ServerCertVerifier>,
    /// Checks a client's certificate against the CA bundle (a certificate is required).
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("has_identity", &self.identity.is_some()).finish_non_exhaustive()
    }
}

fn certificates(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_path_buf(), item: "CERTIFICATE block" });
    }
    Ok(certs)
}

impl Material {
    /// Builds the material from the files' contents (as read by [`Contents::read`]).
    pub fn from_contents(files: &TlsFiles, contents: &Contents) -> Result<Self, TlsError> {
        let provider = super::provider();
        let ca_pem = contents.0.first().map(Vec::as_slice).unwrap_or_default();
        let mut roots = RootCertStore::empty();
        for cert in certificates("CA bundle", &files.ca, ca_pem)? {
            roots.add(cert).map_err(|e| TlsError::BadCa { path: files.ca.clone(), detail: e.to_string() })?;
        }
        let roots = Arc::new(roots);
        let bad_ca = |e: &dyn std::fmt::Display| TlsError::BadCa { path: files.ca.clone(), detail: e.to_string() };
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| bad_ca(&e))?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build().map_err(|e| bad_ca(&e))?;
        let identity =
            match &files.identity {
                None => None,
                Some(id) => {
                    let cert_pem = contents.0.get(1).map(Vec::as_slice).unwrap_or_default();
                    let key_pem = contents.0.get(2).map(Vec::as_slice).unwrap_or_default();
                    let chain = certificates("certificate", &id.cert, cert_pem)?;
                    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
                        what: "private key",
                        path: id.key.clone(),
                        detail: e.to_string(),
                    })?;
                    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                        TlsError::KeyMismatch { cert: id.cert.clone(), key: id.key.clone(), detail: e.to_string() }
                    })?;
                    Some(Arc::new(certified))
                }
            };
        Ok(Self { identity, server_verifier, client_verifier })
    }

    /// Reads the files and builds the material.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::from_contents(files, &Contents::read(files)?)
    }
}
