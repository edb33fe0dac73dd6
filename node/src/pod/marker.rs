//! The "set was bootstrapped" marker: where it lives and how it is read and recorded.
//!
//! A set is bootstrapped exactly once. The marker lives outside the pods' volumes, so a wiped
//! `petkv-0` whose peers are all down waits for the existing cluster instead of starting a
//! second one beside it ([`crate::pod::startup`]). It names the cluster id it was recorded for.
//!
//! - [`BootstrapMarker::None`]: no marker (a laptop, a test); ordinal 0 bootstraps whenever its
//!   volume is empty and nobody answers.
//! - [`BootstrapMarker::File`]: a file outside the volumes (`--bootstrap-marker`, the harness's
//!   state dir) holding the cluster id. A file that exists counts as the marker, whatever it
//!   holds.
//! - `BootstrapMarker::ConfigMap` (feature `kube`): the `clusterId` key of a ConfigMap owned by
//!   the StatefulSet (`pod::k8s::ConfigMapMarker`, feature `kube`).
//!
//! Reading can fail (the API server is unreachable, the file cannot be read). A failed read is
//! an error, never "absent": the caller waits and retries rather than bootstrapping a second
//! cluster because it could not look.

use std::path::{Path, PathBuf};

/// Why the marker could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("cannot read the bootstrap marker file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the bootstrap marker file {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "kube")]
    #[error(transparent)]
    Kube(#[from] crate::pod::k8s::KubeError),
}

/// Where the "set was bootstrapped" marker lives.
#[derive(Debug, Clone, Default)]
pub enum BootstrapMarker {
    /// No marker: nothing guards against a second bootstrap.
    #[default]
    None,
    /// A file outside the volumes holding the cluster id.
    File(PathBuf),
    /// A ConfigMap owned by the StatefulSet, holding the cluster id under `clusterId`.
    #[cfg(feature = "kube")]
    ConfigMap(crate::pod::k8s::ConfigMapMarker),
}

impl BootstrapMarker {
    /// The marker file, if one is given.
    pub fn from_file(path: Option<PathBuf>) -> Self {
        path.map_or(Self::None, Self::File)
    }

    /// True when a marker is configured at all.
    pub fn is_configured(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The cluster id the marker names: `Ok(None)` when the set was never bootstrapped (or no
    /// marker is configured), an error when it cannot tell.
    pub async fn read(&self) -> Result<Option<String>, MarkerError> {
        match self {
            Self::None => Ok(None),
            Self::File(path) => read_file(path),
            #[cfg(feature = "kube")]
            Self::ConfigMap(cm) => Ok(cm.read().await?),
        }
    }

    /// Records that the set was bootstrapped as `cluster_id` (creates the marker, or replaces
    /// a file). Returns the cluster id the marker names afterwards: another id when someone
    /// else recorded the marker first (the caller must then not initialize a cluster).
    pub async fn record(&self, cluster_id: &str) -> Result<String, MarkerError> {
        match self {
            Self::None => Ok(cluster_id.to_string()),
            Self::File(path) => write_file(path, cluster_id).map(|()| cluster_id.to_string()),
            #[cfg(feature = "kube")]
            Self::ConfigMap(cm) => Ok(cm.record(cluster_id).await?),
        }
    }
}

impl BootstrapMarker {
    /// Makes the marker name `cluster_id`, replacing another cluster's id: what a restore does,
    /// since it starts a new cluster for the set on purpose.
    pub async fn replace(&self, cluster_id: &str) -> Result<(), MarkerError> {
        match self {
            Self::None => Ok(()),
            Self::File(path) => write_file(path, cluster_id),
            #[cfg(feature = "kube")]
            Self::ConfigMap(cm) => Ok(cm.replace(cluster_id).await?),
        }
    }
}

impl std::fmt::Display for BootstrapMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("(none)"),
            Self::File(path) => write!(f, "file {}", path.display()),
            #[cfg(feature = "kube")]
            Self::ConfigMap(cm) => write!(f, "{cm}"),
        }
    }
}

fn read_file(path: &Path) -> Result<Option<String>, MarkerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MarkerError::ReadFile { path: path.to_path_buf(), source }),
    }
}

fn write_file(path: &Path, cluster_id: &str) -> Result<(), MarkerError> {
    crate::support::durable::write_atomically(path, format!("{cluster_id}\n").as_bytes())
        .map_err(|source| MarkerError::WriteFile { path: path.to_path_buf(), source })
}

/// An error and its sources on one line (`outer: inner: innermost`), for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_marker_is_never_bootstrapped_and_records_nothing() {
        let marker = BootstrapMarker::None;
        assert!(!marker.is_configured());
        assert_eq!(marker.read().await.expect("read"), None);
        assert_eq!(marker.record("abc").await.expect("record"), "abc");
        assert_eq!(marker.read().await.expect("read"), None);
    }

    #[tokio::test]
    async fn file_marker_is_absent_then_recorded_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("bootstrapped");
        let marker = BootstrapMarker::from_file(Some(path.clone()));
        assert!(marker.is_configured());
        assert_eq!(marker.read().await.expect("read"), None, "a missing file is an absent marker");
        assert_eq!(marker.record("00c0ffee").await.expect("record"), "00c0ffee");
        assert_eq!(std::fs::read_to_string(&path).expect("file"), "00c0ffee\n", "same file format as before");
        assert_eq!(marker.read().await.expect("read"), Some("00c0ffee".into()));
        marker.record("0000beef").await.expect("record replaces a file");
        assert_eq!(marker.read().await.expect("read"), Some("0000beef".into()));
    }

    #[tokio::test]
    async fn a_file_that_exists_counts_whatever_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bootstrapped");
        std::fs::write(&path, "").expect("write");
        assert_eq!(BootstrapMarker::File(path).read().await.expect("read"), Some(String::new()));
    }

    #[tokio::test]
    async fn an_unreadable_marker_is_an_error_not_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: reading fails with something other than
        // "not found".
        let marker = BootstrapMarker::File(dir.path().to_path_buf());
        let err = marker.read().await.expect_err("reading a directory must fail");
        assert!(matches!(err, MarkerError::ReadFile { .. }), "{err:?}");
        assert!(error_chain(&err).contains(&dir.path().display().to_string()), "{}", error_chain(&err));
    }

    #[tokio::test]
    async fn an_unwritable_marker_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").expect("write");
        let marker = BootstrapMarker::File(blocker.join("bootstrapped"));
        let err = marker.record("abc").await.expect_err("a file cannot be a directory");
        assert!(matches!(err, MarkerError::WriteFile { .. }), "{err:?}");
    }

    #[test]
    fn error_chain_joins_sources_once() {
        let err = MarkerError::ReadFile {
            path: "/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        };
        assert_eq!(error_chain(&err), "cannot read the bootstrap marker file /x: denied");
    }
}
