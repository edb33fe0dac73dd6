//! [`Reloading`]: one port's TLS material, read again when its files change, so a rotated
//! certificate (cert-manager renewing a Secret) is used without a restart.
//!
//! How changes are noticed: every `every` (default 2 s) the files are read and their bytes
//! compared with what was last loaded. A periodic content check rather than file-system
//! notifications (inotify, the `notify` crate): a Kubernetes Secret volume is updated by
//! swapping a `..data` symlink in the mount's directory, which a watch on the files themselves
//! does not see, and a content check also notices a file rewritten in place within the same
//! second (same mtime). The files are a few KiB; reading them every couple of seconds costs
//! nothing measurable.
//!
//! A change that does not load (a half-written file, a certificate whose key has not been
//! written yet, bad PEM) keeps the old material and is logged as an error once per distinct
//! content; the next change is tried again. New handshakes use the new material; established
//! connections keep the one they were made with.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::material::{Contents, Material, TlsFiles};
use super::TlsError;

/// Default time between two checks of the files.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The current TLS material of one port, and the files it comes from.
pub struct Reloading {
    /// What the material is for, in log lines ("client port", "peer port").
    what: &'static str,
    files: TlsFiles,
    current: ArcSwap<Material>,
    /// The bytes last tried (loaded or refused), so a refused content is reported once.
    last_seen: Mutex<Contents>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("what", &self.what).field("files", &self.files).finish_non_exhaustive()
    }
}

impl Reloading {
    /// Reads the files; fails if they do not load (a node does not start with broken TLS).
    pub fn load(what: &'static str, files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = Contents::read(&files)?;
        let material = Material::from_contents(&files, &contents)?;
        Ok(Arc::new(Self { what, files, current: ArcSwap::from_pointee(material), last_seen: Mutex::new(contents) }))
    }

    /// Checks the files every `every` from now on, for as long as this material is in use
    /// (the task ends when the last `Arc` is dropped). Needs a Tokio runtime.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.check();
            }
        });
    }

    /// The material in use now.
    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    /// The files this material is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files once and swaps in their material if they changed and load. Returns
    /// whether new material is in use.
    pub fn check(&self) -> bool {
        let contents = match Contents::read(&self.files) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(tls = self.what, error = %e, "cannot read the TLS files; keeping the loaded certificate");
                return false;
            }
        };
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if *last == contents {
            return false;
        }
        let loaded = Material::from_contents(&self.files, &contents);
        *last = contents;
        match loaded {
            Ok(material) => {
                self.current.store(Arc::new(material));
                tracing::info!(tls = self.what, files = ?self.files.paths(), "TLS files changed: new certificates in use for new connections");
                true
            }
            Err(e) => {
                tracing::error!(tls = self.what, error = %e, "TLS files changed but do not load; keeping the loaded certificate");
                false
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().identity.clone()
    }
}

impl ResolvesClientCert for Reloading {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current.load().identity.clone()
    }

    fn has_certs(&self) -> bool {
        self.files.identity.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{Authority, LeafSpec};
    use crate::tls::material::IdentityFiles;

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
