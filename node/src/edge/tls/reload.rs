//! [`Reloading`]: one port's TLS material, read again when its files change, so a rotated
//! certificate (cert-manager renewing a Secret) is used without a restart.
//!
//! The files ([`TlsFiles`]) are a [`crate::edge::reload::Source`]: the generic [`Reloaded`] notices
//! changes (a 2 s content check; see [`crate::edge::reload`] for why not inotify) and swaps the
//! material in. A change that does not load (a half-written file, a certificate whose key has
//! not been written yet, bad PEM) keeps the old material and is logged as an error once per
//! distinct content. New handshakes use the new material; established connections keep the
//! one they were made with. Here: the source, and the rustls resolvers on the current
//! material.

use std::sync::Arc;

use petkv_client::tls::material::{Contents, Material, TlsFiles};
use petkv_client::tls::TlsError;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

pub use crate::edge::reload::DEFAULT_RELOAD_EVERY;
use crate::edge::reload::{Reloaded, Source};

/// The current TLS material of one port, and the files it comes from.
pub type Reloading = Reloaded<TlsFiles>;

impl Source for TlsFiles {
    type Contents = Contents;
    type Value = Material;
    type Error = TlsError;
    const KIND: &'static str = "TLS files";
    const TAKES_EFFECT: &'static str = "new certificates in use for new connections";

    fn read(&self) -> Result<Contents, TlsError> {
        Contents::read(self)
    }

    fn build(&self, contents: &Contents) -> Result<Material, TlsError> {
        Material::from_contents(self, contents)
    }
}

impl Reloaded<TlsFiles> {
    /// The files this material is read from.
    pub fn files(&self) -> &TlsFiles {
        self.source()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.peek().identity.clone()
    }
}

impl ResolvesClientCert for Reloading {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.peek().identity.clone()
    }

    fn has_certs(&self) -> bool {
        self.files().identity.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::tls::certs::{Authority, LeafSpec};
    use petkv_client::tls::IdentityFiles;

    fn leaf_der(r: &Reloading) -> Vec<u8> {
        r.current().identity.as_ref().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_rotated_pair_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA").unwrap();
        let names = ["petkv-0".to_string()];
        let first = ca.issue(&LeafSpec::server("petkv-0", &names)).unwrap();
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            identity: Some(IdentityFiles { cert: dir.path().join("c.pem"), key: dir.path().join("k.pem") }),
        };
        let id = files.identity.clone().unwrap();
        std::fs::write(&files.ca, ca.cert_pem()).unwrap();
        std::fs::write(&id.cert, &first.cert_pem).unwrap();
        std::fs::write(&id.key, &first.key_pem).unwrap();
        let r = Reloading::load("test", files).unwrap();
        let before = leaf_der(&r);
        assert!(!r.check(), "nothing changed");

        // Half of a rotation: the new certificate next to the old key. Refused, old one kept.
        let second = ca.issue(&LeafSpec::server("petkv-0", &names)).unwrap();
        std::fs::write(&id.cert, &second.cert_pem).unwrap();
        assert!(!r.check());
        assert_eq!(leaf_der(&r), before);

        // The key follows: the new pair is used.
        std::fs::write(&id.key, &second.key_pem).unwrap();
        assert!(r.check());
        assert_ne!(leaf_der(&r), before);
        assert_eq!(leaf_der(&r), second.cert_der);

        // Garbage keeps the working pair.
        std::fs::write(&id.cert, "-----BEGIN CERTIFICATE-----\nnot base64").unwrap();
        assert!(!r.check());
        assert_eq!(leaf_der(&r), second.cert_der);
    }
}
