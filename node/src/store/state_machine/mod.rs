//! The replicated key-value state machine, stored in sled.
//!
//! - `records`: which record lives under which key of the sled trees.
//! - `apply`: applying runs of committed entries into the write-back layers.
//! - [`history`]: the store's revision and the retained history of changes (reads at a past
//!   revision, compaction, the events watches replay).
//! - `reads`: reads of the local state, now or at a past revision.
//! - `leases`: leases, their TTLs and the keys attached to them.
//! - `sessions`: deduplication of retried writes, one session per client.
//! - `txn`: transactions: comparisons, then one list of operations, as one revision.
//! - `snapshots`: building, offering and installing snapshots.
//! - `export`: backups out, restores in.
//! - this module: the handle ([`StateMachine`]), opening it, reads, and the background writer
//!   that moves applied writes from the in-memory layers (`store::write_back`) into
//!   sled.
//!
//! Nothing is fsync'd on apply: the Raft log is the durable record, kept until a snapshot, and
//! a snapshot is built only after every applied write reached sled; a restart re-applies what
//! sled did not have. sled holds a prefix of the applied entries with its `applied` record, so
//! a crash never leaves an entry half applied (re-applying would bump a key's version twice).

mod apply;
mod export;
pub mod history;
mod leases;
mod reads;
mod records;
mod sessions;
mod snapshots;
#[cfg(test)]
mod test_support;
mod txn;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard, Weak};

use futures::{FutureExt, Stream, StreamExt};
use openraft::alias::SnapshotOf;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::OptionalSend;

pub use export::Export;
pub use leases::LeaseRecord;
pub use reads::ScanPage;
pub use records::{is_user_key_record, revision_of_record};
pub use sessions::{SESSION_RETENTION, SESSION_SWEEP_EVERY};

use self::apply::MAX_APPLY_RUN;
use self::records::{tree_name, ACTIVE, APPLIED, DECLARED_REPLICAS, KEY_COUNT, MEMBERSHIP};
use super::faults::{from_sled, with_context, VolumeFaults};
use super::sled_sync;
use super::snapshot::SnapshotFile;
use super::write_back::{self, Live};
use super::{decode, io_err, StoreError};
use crate::edge::metrics::{FsyncSite, Metrics};
use crate::raft::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// The state machine handle. Cheap to clone; the read path (gets, scans, status) holds one
/// clone and openraft another.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// sled's directory, fsync'd file by file when the tree must be durable ([`sled_sync`]).
    sled_dir: PathBuf,
    pointer: sled::Tree,
    /// The live tree and the applied writes not yet in it.
    live: RwLock<Live>,
    /// Serializes applying entries with building and installing snapshots, so a snapshot is a
    /// consistent cut of the tree.
    apply_lock: Mutex<()>,
    /// Held while a frozen layer is written to sled (one writer at a time, in order).
    write_lock: Mutex<()>,
    /// Wakes the background writer when a layer was frozen.
    write_signal: mpsc::SyncSender<()>,
    /// Why the background writer failed: reported by the next apply, and to whoever watches
    /// ([`StateMachine::write_failures`]: the node exits on it).
    write_error: tokio::sync::watch::Sender<Option<String>>,
    /// Tells watchers what each applied run changed ([`history::Applied`]).
    applied: tokio::sync::broadcast::Sender<history::Applied>,
    /// Index of the last applied entry (response headers read it on every request).
    applied_index: AtomicU64,
    /// The store's revision (response headers and watchers read it without a storage read).
    revision: AtomicU64,
    /// The revision before which the history is dropped, likewise.
    compacted: AtomicU64,
    snapshot_dir: PathBuf,
    snapshot_seq: AtomicU64,
    metrics: Arc<Metrics>,
    /// Why disk operations failed, shared with the log store.
    faults: Arc<VolumeFaults>,
}

impl Inner {
    fn live(&self) -> RwLockReadGuard<'_, Live> {
        crate::support::sync::read(&self.live)
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        crate::support::sync::write(&self.live)
    }

    /// Writes the frozen layer (if any) into the tree; the caller holds `write_lock`.
    fn write_frozen_locked(&self) -> io::Result<()> {
        let (tree, frozen) = {
            let live = self.live();
            (live.tree.clone(), live.frozen())
        };
        let Some(frozen) = frozen else { return Ok(()) };
        let started = std::time::Instant::now();
        tree.apply_batch(write_back::to_batch(&frozen))
            .map_err(|e| self.faults.note(from_sled("write applied entries", e)))?;
        self.metrics.record_sm_write(started.elapsed());
        self.live_mut().written(&frozen);
        Ok(())
    }

    /// The background writer's step: writes the frozen layer.
    fn write_frozen(&self) {
        let _guard = crate::support::sync::lock(&self.write_lock);
        if let Err(e) = self.write_frozen_locked() {
            tracing::error!(error = %e, "cannot write applied entries to the state machine");
            self.write_error.send_replace(Some(e.to_string()));
        }
    }

    /// Writes every applied record into the tree before returning.
    fn write_through(&self) -> io::Result<()> {
        let _guard = crate::support::sync::lock(&self.write_lock);
        self.write_through_locked()
    }

    /// [`Self::write_through`] for a caller that holds `write_lock`.
    fn write_through_locked(&self) -> io::Result<()> {
        self.write_frozen_locked()?;
        self.live_mut().freeze();
        self.write_frozen_locked()
    }
}

/// The background writer of frozen layers; ends when the state machine is dropped.
fn run_writer(inner: Weak<Inner>, signals: mpsc::Receiver<()>) {
    while signals.recv().is_ok() {
        let Some(inner) = inner.upgrade() else { return };
        inner.write_frozen();
    }
}

impl StateMachine {
    pub(crate) fn open(
        db: sled::Db,
        snapshot_dir: PathBuf,
        metrics: Arc<Metrics>,
        faults: Arc<VolumeFaults>,
    ) -> Result<Self, StoreError> {
        let sled_path = snapshot_dir.with_file_name("sled");
        let sled_err = |e: sled::Error| StoreError::Corrupt { path: sled_path.clone(), detail: e.to_string() };
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|source| StoreError::Io { path: snapshot_dir.clone(), source })?;
        let pointer = db.open_tree("sm_pointer").map_err(sled_err)?;
        let generation = match pointer.get(ACTIVE).map_err(sled_err)? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                path: sled_path.clone(),
                detail: "state machine pointer is not 8 bytes".into(),
            })?),
            None => 0,
        };
        let tree = db.open_tree(tree_name(generation)).map_err(sled_err)?;
        // Trees of other generations are leftovers of an install that crashed halfway.
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with("sm.") && name != tree_name(generation) {
                tracing::warn!(tree = %name, "dropping an incomplete state machine tree");
                db.drop_tree(name.as_bytes()).map_err(sled_err)?;
            }
        }
        let (write_signal, signals) = mpsc::sync_channel(1);
        let sm = Self {
            inner: Arc::new(Inner {
                db,
                sled_dir: sled_path.clone(),
                pointer,
                live: RwLock::new(Live::new(generation, tree)),
                apply_lock: Mutex::new(()),
                write_lock: Mutex::new(()),
                write_signal,
                write_error: tokio::sync::watch::Sender::new(None),
                applied: tokio::sync::broadcast::Sender::new(history::APPLIED_BACKLOG),
                applied_index: AtomicU64::new(0),
                revision: AtomicU64::new(0),
                compacted: AtomicU64::new(0),
                snapshot_dir,
                snapshot_seq: AtomicU64::new(0),
                metrics,
                faults,
            }),
        };
        let weak = Arc::downgrade(&sm.inner);
        std::thread::Builder::new()
            .name("sm-writer".into())
            .spawn(move || run_writer(weak, signals))
            .map_err(|source| StoreError::Io { path: sled_path.clone(), source })?;
        let applied =
            sm.applied().map_err(|e| StoreError::Corrupt { path: sled_path.clone(), detail: e.to_string() })?;
        sm.inner.applied_index.store(applied.map_or(0, |l| l.index), Ordering::Relaxed);
        let revision = history::revision(&*sm.inner.live())
            .map_err(|e| StoreError::Corrupt { path: sled_path.clone(), detail: e.to_string() })?;
        sm.inner.revision.store(revision, Ordering::Relaxed);
        let compacted = history::compacted(&*sm.inner.live())
            .map_err(|e| StoreError::Corrupt { path: sled_path.clone(), detail: e.to_string() })?;
        sm.inner.compacted.store(compacted, Ordering::Relaxed);
        let keep = sm
            .current_snapshot_record()
            .map_err(|e| StoreError::Corrupt { path: sled_path.clone(), detail: e.to_string() })?;
        if let Some(record) = &keep {
            sm.verify_snapshot(record)?;
        }
        // At start nothing is in flight: leftovers of interrupted builds and receives go too.
        sm.remove_snapshot_files(keep.as_ref().map(|r| r.file_name.as_str()), |_| true)
            .map_err(|source| StoreError::Io { path: sm.inner.snapshot_dir.clone(), source })?;
        Ok(sm)
    }

    fn read<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &str, key: &[u8]) -> io::Result<Option<T>> {
        match tree.get(key).map_err(|e| from_sled(what, e))? {
            Some(v) => Ok(Some(decode(what, &v)?)),
            None => Ok(None),
        }
    }

    /// The log id of the last applied entry.
    pub fn applied(&self) -> io::Result<Option<LogId>> {
        Ok(self.inner.live().read::<Option<LogId>>("applied", APPLIED)?.flatten())
    }

    /// The index of the last applied entry (0 before the first), without a storage read.
    pub fn applied_index(&self) -> u64 {
        self.inner.applied_index.load(Ordering::Relaxed)
    }

    /// The store's revision (0 before the first change), without a storage read.
    pub fn current_revision(&self) -> u64 {
        self.inner.revision.load(Ordering::Relaxed)
    }

    /// How many keys the state machine holds.
    pub fn key_count(&self) -> io::Result<u64> {
        Ok(self.inner.live().read::<u64>("key count", KEY_COUNT)?.unwrap_or(0))
    }

    /// The set's declared replica count, if one was declared.
    pub fn declared_replicas(&self) -> io::Result<Option<u32>> {
        self.inner.live().read::<u32>("declared replicas", DECLARED_REPLICAS)
    }

    /// The membership the state machine last applied.
    pub fn membership(&self) -> io::Result<StoredMembership> {
        Ok(self.inner.live().read("membership", MEMBERSHIP)?.unwrap_or_default())
    }

    /// Applied records that have not reached sled yet (tests check the write-back with it).
    #[cfg(test)]
    pub fn unwritten_records(&self) -> usize {
        self.inner.live().unwritten_records()
    }

    /// True when the state machine applied anything or holds a snapshot.
    pub fn has_state(&self) -> io::Result<bool> {
        Ok(self.applied()?.is_some() || self.current_snapshot_record()?.is_some())
    }

    /// Subscribes to what every applied run (or installed snapshot) changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<history::Applied> {
        self.inner.applied.subscribe()
    }

    /// What the volume's failed disk operations said (shared with the log store).
    pub fn volume_faults(&self) -> &VolumeFaults {
        &self.inner.faults
    }

    /// Why the background writer could not write applied entries into sled, once it failed
    /// (the state machine then refuses every further apply).
    pub fn write_failures(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.write_error.subscribe()
    }

    /// Writes every applied record to sled and flushes it to disk (used at shutdown).
    pub async fn flush(&self) -> io::Result<()> {
        let sm = self.clone();
        tokio::task::spawn_blocking(move || {
            sm.inner.write_through()?;
            sm.flush_blocking("flush")
        })
        .await
        .map_err(|e| io_err("state machine flush task", e))?
    }

    /// sled's flush and an fsync of its files ([`sled_sync`]), timed.
    fn flush_blocking(&self, what: &str) -> io::Result<()> {
        self.inner
            .metrics
            .time_fsync(FsyncSite::StateMachine, || sled_sync::flush_durably(&self.inner.db, &self.inner.sled_dir))
            .map_err(|e| with_context(what, e))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied()?, self.membership()?))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Entries already read from the log are applied together: one sled batch per run.
        let mut run = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            run.push(entry);
            responders.push(responder);
            while run.len() < MAX_APPLY_RUN {
                match entries.next().now_or_never() {
                    Some(Some(item)) => {
                        let (entry, responder) = item?;
                        run.push(entry);
                        responders.push(responder);
                    }
                    _ => break,
                }
            }
            let results = self.apply_run(&run).map_err(|e| self.inner.faults.note(e))?;
            run.clear();
            // Answered only once the whole run is in the tree, so a client never sees a write
            // acknowledged that a read of this node cannot see yet.
            for (responder, result) in responders.drain(..).zip(results) {
                if let Some(responder) = responder {
                    responder.send(result);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let sm = self.clone();
        let meta = meta.clone();
        let faults = self.inner.faults.clone();
        tokio::task::spawn_blocking(move || sm.install_snapshot_blocking(&meta, &snapshot).map_err(|e| faults.note(e)))
            .await
            .map_err(|e| io_err("install task", e))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        let Some(record) = self.current_snapshot_record()? else { return Ok(None) };
        let path = self.inner.snapshot_dir.join(&record.file_name);
        match SnapshotFile::at(path.clone()) {
            Ok(file) => Ok(Some(Snapshot { meta: record.meta, snapshot: file })),
            Err(e) => Err(io_err(&format!("current snapshot {} is missing", path.display()), e)),
        }
    }
}

/// Returns the snapshot directory of a data dir.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}
