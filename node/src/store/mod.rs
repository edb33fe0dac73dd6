//! Durable storage of one node, on the node's volume: the Raft log in `<data-dir>/raft-log`
//! (raft-log segment files), the state machine in one sled database at `<data-dir>/sled`.
//!
//! - [`log_store`]: the Raft log, vote and store owner (openraft `RaftLogStorage`), in
//!   raft-log. An append or a vote is reported durable only after its fsync. Kept out of sled
//!   because a sled flush writes every tree: each append waited on the state machine's pages.
//! - [`state_machine`]: the replicated key-value state (openraft `RaftStateMachine`), the
//!   per-client dedup table and the node-id allocator.
//! - `write_back`: applied writes held in memory until they reach sled in big batches.
//! - [`snapshot`]: the snapshot file format (checksummed), built from and installed into the
//!   state machine.
//! - [`command`]: the commands the log carries and what applying them returns.
//! - [`faults`]: what failed disk operations said about the volume (full or not), by error kind.
//! - [`seal`]: the clean-shutdown seal, checked before anything is opened, so damage found
//!   after a clean shutdown refuses the start instead of being "recovered" by either engine.
//!
//! Layout inside `<data-dir>/sled`:
//!
//! | tree | keys |
//! |---|---|
//! | `sm_pointer` | `active` (generation of the live state-machine tree), `snapshot` |
//! | `sm.<generation>` | `d<key>` values; `mapplied`, `mmembership`, `mkeys`, `mreplicas`; `s<client>` dedup sessions; `i<ordinal>` node-id incarnations |
//!
//! Installing a snapshot writes a new `sm.<generation>` tree and flips `active` only once it
//! is complete and flushed, so a crash halfway through an install leaves the old state intact.

pub mod command;
pub mod faults;
pub mod log_store;
pub mod seal;
mod sled_sync;
pub mod snapshot;
pub mod state_machine;
mod write_back;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use log_store::{LogStore, StoreOwner};
pub use state_machine::StateMachine;

use crate::edge::metrics::Metrics;

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

/// Opens (or creates) the node's storage under `data_dir`. A store sealed by a clean shutdown
/// is checked file by file first ([`seal`]); a damaged one is refused before anything opens.
pub fn open(data_dir: &Path, options: &StoreOptions) -> Result<(LogStore, StateMachine), StoreError> {
    let sealed = seal::check_and_break(data_dir)?;
    let path = data_dir.join("sled");
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(options.cache_bytes)
        .open()
        .map_err(|source| StoreError::Open { path: path.clone(), source })?;
    // sled writes its `conf` file at every open without an fsync.
    sled_sync::sync_files(&path).map_err(|source| StoreError::Io { path: path.clone(), source })?;
    let metrics = options.metrics.clone().unwrap_or_default();
    let faults = Arc::new(faults::VolumeFaults::default());
    let log = LogStore::open(data_dir, metrics.clone(), faults.clone(), sealed)?;
    let sm = StateMachine::open(db, data_dir.join("snapshots"), metrics, faults)?;
    Ok((log, sm))
}

/// The voters (with their addresses) of every membership the volume holds that may be in
/// effect: the last two membership entries of the log (openraft's own start-up rule) and the
/// state machine's. The applied state alone can lag the log after a crash.
pub async fn voters_on_volume(
    log: &LogStore,
    sm: &StateMachine,
) -> std::io::Result<std::collections::BTreeMap<crate::raft::NodeId, crate::raft::PeerNode>> {
    let (mut log, mut sm) = (log.clone(), sm.clone());
    let state = openraft::StorageHelper::new(&mut log, &mut sm)
        .get_membership()
        .await
        .map_err(|e| io_err("reading the membership", e))?;
    let mut voters = std::collections::BTreeMap::new();
    for stored in [state.committed(), state.effective()] {
        let membership = stored.membership();
        for id in membership.voter_ids() {
            if let Some(node) = membership.get_node(&id) {
                voters.insert(id, node.clone());
            }
        }
    }
    Ok(voters)
}

/// True when `data_dir` holds a sled database (i.e. the volume has state). The Raft log beside
/// it is not enough: a log without its state machine is a wiped store.
pub fn exists(data_dir: &Path) -> bool {
    data_dir.join("sled").join("conf").exists() || data_dir.join("sled").join("db").exists()
}

/// Converts any displayable error into the `io::Error` openraft's storage traits use.
pub(crate) fn io_err(context: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{context}: {e}"))
}

/// Reads exactly `len` bytes, growing the buffer only as bytes arrive, so a damaged length field
/// costs what the input holds, not what it claims (found by the fuzz targets `log_records` and
/// `snapshot_file`: 15 bytes made the log decoder allocate 256 MiB). Too few bytes is
/// `UnexpectedEof`, as `read_exact` says it (raft-log's torn-tail check relies on that kind).
pub(crate) fn read_len(r: &mut impl std::io::Read, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    const FIRST_CHUNK: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(len.min(FIRST_CHUNK));
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("a value of {len} bytes ends after {} bytes", buf.len()),
        ));
    }
    Ok(buf)
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
/// Opens the sled database at `path` again once its previous user let go: sled's
/// background threads may hold the file lock for a moment after the drop.
fn reopen_sled(path: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new().path(path).open() {
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
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
            let db = reopen_sled(&dir.path().join("sled")).expect("reopen raw");
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

#[cfg(test)]
mod damage {
    //! Damage to a store's files: refused at open, naming the file, with every file left as it
    //! was; after a crash (no seal) only a torn Raft-log tail is accepted.

    use std::collections::BTreeMap;

    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};

    use super::*;
    use crate::raft::{Entry, TypeConfig, Vote};
    use crate::store::command::Command;

    /// A store with a vote, an owner, applied entries and a snapshot, closed cleanly and sealed.
    async fn sealed_store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, mut sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            log.set_owner(&StoreOwner { cluster_id: "c1".into(), node_id: 1 }).await.expect("owner");
            log.save_vote(&Vote::new(1, 1)).await.expect("vote");
            let entries: Vec<Entry> = (1..=40)
                .map(|i| {
                    let cmd = Command::Put {
                        key: format!("k{i:02}").into_bytes(),
                        value: vec![i as u8; 100],
                        if_mod_revision: None,
                        write_id: None,
                        lease: 0,
                    };
                    Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, i), cmd)
                })
                .collect();
            let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
            log.append(entries.clone(), openraft::storage::IOFlushed::signal(tx)).await.expect("append");
            rx.await.expect("callback").expect("flushed");
            sm.apply_run(&entries).expect("apply");
            sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
            sm.flush().await.expect("flush");
        }
        assert!(seal::seal(dir.path(), std::time::Duration::from_secs(10)).expect("seal") >= 3);
        dir
    }

    /// Every file of the data dir and its bytes.
    fn all_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).expect("read"));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, &mut out);
        out
    }

    fn only_file(dir: &Path, ext: &str) -> PathBuf {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).expect("meta").len()));
        files.remove(0)
    }

    fn flip(path: &Path) {
        let mut bytes = std::fs::read(path).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(path, bytes).expect("write");
    }

    fn cut(path: &Path, by: u64) {
        let len = std::fs::metadata(path).expect("meta").len();
        std::fs::OpenOptions::new().write(true).open(path).expect("open").set_len(len - by).expect("cut");
    }

    /// Why the seal exists: sled (0.34) takes a message whose checksum fails for the end of its
    /// log. Reopened, it reports no error and serves the state from before the damage, having
    /// rewritten its file. (If this ever fails, sled started refusing damage itself.)
    #[test]
    fn sled_alone_rolls_back_past_a_damaged_byte_without_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sled");
        {
            let db = sled::Config::new().path(&path).open().expect("open");
            for i in 0..100u32 {
                db.insert(i.to_be_bytes(), vec![7u8; 50]).expect("insert");
            }
            db.flush().expect("flush");
        }
        flip(&path.join("db"));
        let db = reopen_sled(&path).expect("sled opens a damaged db without an error");
        let kept = db.iter().collect::<Result<Vec<_>, _>>().expect("and reads it without an error").len();
        assert!(kept < 100, "sled kept all {kept} records past the damage");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sealed_store_reopens_whole_and_its_seal_is_used_up() {
        let dir = sealed_store().await;
        let (log, sm) = open(dir.path(), &StoreOptions::default()).expect("a clean store opens");
        assert!(!dir.path().join(seal::SEAL_FILE).exists(), "the seal no longer describes an open store");
        assert_eq!((log.last_index().expect("last"), sm.key_count().expect("count")), (40, 40));
        assert!(
            matches!(seal::seal(dir.path(), std::time::Duration::from_millis(50)), Err(seal::SealError::InUse(_))),
            "an open store is never sealed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_after_a_clean_shutdown_is_refused_naming_the_file_and_changing_nothing() {
        type Damage = fn(&Path) -> PathBuf;
        let cases: [(&str, Damage); 9] = [
            ("flipped byte in the raft log", |d| {
                let p = only_file(&d.join(log_store::DIR), "wal");
                flip(&p);
                p
            }),
            ("raft log cut short by 3 bytes", |d| {
                let p = only_file(&d.join(log_store::DIR), "wal");
                cut(&p, 3);
                p
            }),
            ("raft log chunk deleted", |d| {
                let p = only_file(&d.join(log_store::DIR), "wal");
                std::fs::remove_file(&p).expect("remove");
                p
            }),
            ("a chunk appended to the raft log", |d| {
                let p = d.join(log_store::DIR).join("r-99_999_999_999_999_999_999.wal");
                std::fs::write(&p, b"").expect("write");
                p
            }),
            ("flipped byte in sled's db", |d| {
                let p = d.join("sled").join("db");
                flip(&p);
                p
            }),
            ("sled's db cut short", |d| {
                let p = d.join("sled").join("db");
                cut(&p, 100);
                p
            }),
            ("flipped byte in the snapshot", |d| {
                let p = only_file(&d.join("snapshots"), "snap");
                flip(&p);
                p
            }),
            ("snapshot cut short", |d| {
                let p = only_file(&d.join("snapshots"), "snap");
                cut(&p, 10);
                p
            }),
            ("damaged seal", |d| {
                let p = d.join(seal::SEAL_FILE);
                flip(&p);
                p
            }),
        ];
        for (name, damage) in cases {
            let dir = sealed_store().await;
            let damaged = damage(dir.path());
            let before = all_bytes(dir.path());
            match open(dir.path(), &StoreOptions::default()) {
                Err(StoreError::Corrupt { path, detail }) => {
                    assert_eq!(path, damaged, "{name}: {detail}");
                    assert!(!detail.is_empty());
                }
                Err(other) => panic!("{name}: expected Corrupt, got {other}"),
                Ok(_) => panic!("{name}: a damaged store opened"),
            }
            assert_eq!(all_bytes(dir.path()), before, "{name}: refusing must not change a byte");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_snapshot_is_refused_even_without_a_seal() {
        let dir = sealed_store().await;
        std::fs::remove_file(dir.path().join(seal::SEAL_FILE)).expect("as after a crash");
        let snap = only_file(&dir.path().join("snapshots"), "snap");
        flip(&snap);
        let before = all_bytes(dir.path());
        match open(dir.path(), &StoreOptions::default()) {
            Err(StoreError::Corrupt { path, detail }) => {
                assert_eq!(path, snap);
                assert!(detail.contains("does not check out"), "{detail}");
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a damaged snapshot was accepted"),
        }
        // sled is opened before the snapshot is checked (the record lives in sled); only the
        // snapshot must be as it was.
        assert_eq!(std::fs::read(&snap).expect("read"), before[&snap]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_crash_a_record_cut_short_at_the_end_is_dropped_as_a_torn_write() {
        let dir = sealed_store().await;
        std::fs::remove_file(dir.path().join(seal::SEAL_FILE)).expect("as after a crash");
        cut(&only_file(&dir.path().join(log_store::DIR), "wal"), 3);
        let (log, sm) = open(dir.path(), &StoreOptions::default()).expect("crash recovery");
        assert!(log.last_index().expect("last") < 40, "the torn record is gone");
        assert_eq!(sm.key_count().expect("count"), 40, "the state machine keeps what it applied");
    }
}
