//! Durable storage of one node, on the node's volume: the Raft log in `<data-dir>/raft-log`
//! (raft-log segment files), the state machine in one sled database at `<data-dir>/sled`.
//!
//! - [`log_store`]: the Raft log, vote and store owner (openraft `RaftLogStorage`), in
//!   raft-log. An append or a vote is reported durable only after its fsync. Kept out of sled
//!   because a sled flush writes every tree: each append waited on the state machine's pages.
//! - [`state_machine`]: the replicated key-value state (openraft `RaftStateMachine`), the
//!   per-client dedup table and the node-id allocator.
//! - [`write_back`]: applied writes held in memory until they reach sled in big batches.
//! - [`snapshot`]: the snapshot file format (checksummed), built from and installed into the
//!   state machine.
//! - [`command`]: the commands the log carries and what applying them returns.
//!
//! Layout inside `<data-dir>/sled`:
//!
//! | tree | keys |
//! |---|---|
//! | `sm_pointer` | `active` (generation of the live state-machine tree), `snapshot` |
//! | `sm.<generation>` | `d<key>` values; `mapplied`, `mmembership`, `mkeys`, `mreplicas`; `s<client>` dedup sessions; `i<ordinal>` node-id incarnations |
//!
//! (Trees `raft_log` and `raft_meta` held the log before it moved to raft-log; the first open
//! migrates them and drops them.)
//!
//! Installing a snapshot writes a new `sm.<generation>` tree and flips `active` only once it
//! is complete and flushed, so a crash halfway through an install leaves the old state intact.

pub mod command;
pub mod log_store;
pub mod snapshot;
pub mod state_machine;
mod write_back;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use log_store::{LogStore, StoreOwner};
pub use state_machine::StateMachine;

use crate::metrics::Metrics;

/// Errors opening a node's storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the sled database at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("storage at {path} is corrupt or unreadable: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("storage I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Storage tuning that has a user-visible effect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Where fsync times and snapshot sizes are recorded (a private registry if `None`).
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { cache_bytes: 64 * 1024 * 1024, metrics: None }
    }
}

/// Opens (or creates) the node's storage under `data_dir`.
pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<(LogStore, StateMachine), StoreError> {
    let path = data_dir.join("sled");
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(options.cache_bytes)
        .open()
        .map_err(|source| StoreError::Open { path: path.clone(), source })?;
    let metrics = options.metrics.clone().unwrap_or_default();
    let log = LogStore::open(data_dir, &db, metrics.clone())?;
    let sm = StateMachine::open(db, data_dir.join("snapshots"), metrics)?;
    Ok((log, sm))
}

/// True when `data_dir` holds a sled database (i.e. the volume has state). The Raft log beside
/// it is not enough: a volume written before the log moved out of sled has none, and a log
/// without its state machine is a wiped store.
pub fn exists(data_dir: &Path) -> bool {
    data_dir.join("sled").join("conf").exists() || data_dir.join("sled").join("db").exists()
}

/// Converts any displayable error into the `io::Error` openraft's storage traits use.
pub(crate) fn io_err(context: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{context}: {e}"))
}

/// postcard-encodes a value for storage.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| io_err("encode", e))
}

/// Decodes a stored postcard value.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io_err(&format!("decode {what}"), e))
}

#[cfg(test)]
mod conformance {
    //! openraft's own storage conformance suite, run against the log store (raft-log) and the state machine (sled).

    use openraft::error::ErrorSource;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    use super::*;
    use crate::raft::TypeConfig;

    struct StoreBuilderImpl;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for StoreBuilderImpl {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
            let (log, sm) = open(dir.path(), &StoreOptions::default())
                .map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite_passes_on_the_store() -> Result<(), StorageError<TypeConfig>> {
        Suite::test_all(StoreBuilderImpl).await
    }
}

#[cfg(test)]
mod crash_recovery {
    //! Reopening the store after a crash at awkward moments.

    use super::*;

    #[test]
    fn an_install_interrupted_before_the_pointer_flip_leaves_the_old_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            assert_eq!(sm.key_count().expect("count"), 0);
        }
        // What an install leaves behind when it dies halfway: a partly filled next-generation
        // tree (the pointer still names generation 0) and a half-received snapshot file.
        {
            let db = sled::Config::new().path(dir.path().join("sled")).open().expect("reopen raw");
            let partial = db.open_tree("sm.1").expect("tree");
            partial.insert(b"dhalf-installed", b"garbage".to_vec()).expect("insert");
            let active = db.open_tree("sm.0").expect("tree");
            active.insert(b"mkeys", postcard::to_allocvec(&7u64).expect("encode")).expect("insert");
            db.flush().expect("flush");
            std::fs::write(dir.path().join("snapshots").join("incoming-1-0.tmp"), b"partial").expect("write");
        }
        let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open after crash");
        assert_eq!(sm.key_count().expect("count"), 7, "the old generation stays live");
        assert!(sm.get(b"half-installed").expect("get").is_none(), "nothing of the partial install is visible");
        assert_eq!(std::fs::read_dir(dir.path().join("snapshots")).expect("dir").count(), 0, "leftover file removed");
    }
}
