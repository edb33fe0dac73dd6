//! The replicated key-value state machine, stored in sled.
//!
//! Applying a run of entries openraft hands over together (up to [`MAX_APPLY_RUN`]) collects
//! its writes (the key changes, the clients' dedup records and the new `applied` log id) in a
//! [`Pending`] overlay, where each entry reads the writes of the ones before it, then hands
//! them to the write-back layers ([`super::write_back`]): they reach sled later, in big
//! batches that always carry `applied` with them, so sled holds a prefix of the applied entries
//! and a crash never leaves an entry half applied (re-applying would bump a key's version
//! twice). Nothing is fsync'd on apply: the Raft log is the durable record, kept until a
//! snapshot, and a snapshot is built only after every applied write reached sled; a restart
//! re-applies what sled did not have.
//!
//! Deduplication: a write may carry `(client_id, sequence)`. The tree remembers the last
//! sequence and result per client; a write with that sequence again (a retry after a timeout or
//! a leader change) returns the remembered result without applying anything. Sessions older
//! than [`SESSION_RETENTION`] entries are swept when the entry at every multiple of
//! [`SESSION_SWEEP_EVERY`] is applied: the same on every replica.
//!
//! Snapshots dump the whole tree into a checksummed file ([`super::snapshot`]). Installing one
//! fills a fresh `sm.<generation>` tree and flips the `active` pointer only once that tree is
//! complete and flushed.

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};

use futures::{FutureExt, Stream, StreamExt};
use openraft::alias::SnapshotOf;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use super::command::{Command, CommandResult, KeyValue, StoredValue, WriteId};
use super::sled_sync;
use super::snapshot::{self, SnapshotFile};
use super::write_back::{self, Live, Merged, Writes};
use super::{decode, encode, io_err, StoreError};
use crate::metrics::{FsyncSite, Metrics, SnapshotKind};
use crate::raft::{self, LogId, SnapshotMeta, StoredMembership, TypeConfig};

const DATA: u8 = b'd';
const SESSION: u8 = b's';
const INCARNATION: u8 = b'i';
/// A client's dedup record is kept at least this many log entries after its last write
/// (deterministic on every replica, unlike wall-clock time). At 50k writes/s that is 20 s,
/// longer than any client retries the same write.
pub const SESSION_RETENTION: u64 = 1_000_000;
/// Sessions are swept when the entry whose index is a multiple of this is applied, so a
/// session lives between [`SESSION_RETENTION`] and this many entries more.
pub const SESSION_SWEEP_EVERY: u64 = 65_536;
const APPLIED: &[u8] = b"mapplied";
const MEMBERSHIP: &[u8] = b"mmembership";
const KEY_COUNT: &[u8] = b"mkeys";
const DECLARED_REPLICAS: &[u8] = b"mreplicas";

const ACTIVE: &[u8] = b"active";
const CURRENT_SNAPSHOT: &[u8] = b"snapshot";

/// Most entries applied as one sled batch.
const MAX_APPLY_RUN: usize = 1024;

/// Records per sled batch while installing a snapshot.
const INSTALL_BATCH: usize = 10_000;

/// The last write of one client, for deduplication.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    sequence: u64,
    /// Log index of that write (drives expiry).
    index: u64,
    /// Its result; the value of a successful put is elided (the retry carries it).
    result: CommandResult,
    /// CRC-32 of the command's encoding: a retry must be that same command.
    command: u32,
}

impl Session {
    fn decode(bytes: &[u8]) -> io::Result<Session> {
        decode::<Session>("session", bytes)
    }
}

/// What identifies a command for its write id: the same id on another command is a client bug.
fn fingerprint(cmd: &Command) -> io::Result<u32> {
    Ok(crc32fast::hash(&encode(cmd)?))
}

/// Drops the value of a successful put before the result is remembered.
fn elide_put_value(result: &CommandResult) -> CommandResult {
    match result {
        CommandResult::Put { index, succeeded: true, current: Some(kv) } => {
            let mut kv = kv.clone();
            kv.stored.value = Vec::new();
            CommandResult::Put { index: *index, succeeded: true, current: Some(kv) }
        }
        other => other.clone(),
    }
}

/// Puts back the value of a successful put from the retried command.
fn restore_put_value(result: CommandResult, cmd: &Command) -> CommandResult {
    match (result, cmd) {
        (CommandResult::Put { index, succeeded: true, current: Some(mut kv) }, Command::Put { value, .. }) => {
            kv.stored.value = value.clone();
            CommandResult::Put { index, succeeded: true, current: Some(kv) }
        }
        (other, _) => other,
    }
}

/// The snapshot the state machine currently offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta,
    file_name: String,
}

/// A page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub kvs: Vec<KeyValue>,
    /// True when keys remain in the range after the last one returned.
    pub more: bool,
}

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
    /// Index of the last applied entry (response headers read it on every request).
    applied_index: AtomicU64,
    snapshot_dir: PathBuf,
    snapshot_seq: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Inner {
    fn live(&self) -> RwLockReadGuard<'_, Live> {
        crate::sync::read(&self.live)
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        crate::sync::write(&self.live)
    }

    /// Writes the frozen layer (if any) into the tree; the caller holds `write_lock`.
    fn write_frozen_locked(&self) -> io::Result<()> {
        let (tree, frozen) = {
            let live = self.live();
            (live.tree.clone(), live.frozen())
        };
        let Some(frozen) = frozen else { return Ok(()) };
        tree.apply_batch(write_back::to_batch(&frozen)).map_err(|e| io_err("write applied entries", e))?;
        self.live_mut().written(&frozen);
        Ok(())
    }

    /// The background writer's step: writes the frozen layer.
    fn write_frozen(&self) {
        let _guard = crate::sync::lock(&self.write_lock);
        if let Err(e) = self.write_frozen_locked() {
            tracing::error!(error = %e, "cannot write applied entries to the state machine");
            self.write_error.send_replace(Some(e.to_string()));
        }
    }

    /// Writes every applied record into the tree before returning.
    fn write_through(&self) -> io::Result<()> {
        let _guard = crate::sync::lock(&self.write_lock);
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

fn tree_name(generation: u64) -> String {
    format!("sm.{generation}")
}

/// True when a record of a snapshot or backup is a user key (not Raft or session bookkeeping).
pub fn is_user_key_record(record_key: &[u8]) -> bool {
    record_key.first() == Some(&DATA)
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

fn prefixed(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(id);
    k
}

/// A consistent cut of the live tree for a snapshot or backup ([`StateMachine::take_cut`]):
/// the tree stays at the cut while this holds the write lock.
struct Cut<'a> {
    writing: MutexGuard<'a, ()>,
    generation: u64,
    tree: sled::Tree,
    meta: SnapshotMeta,
}

impl StateMachine {
    pub(crate) fn open(db: sled::Db, snapshot_dir: PathBuf, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
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
                applied_index: AtomicU64::new(0),
                snapshot_dir,
                snapshot_seq: AtomicU64::new(0),
                metrics,
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

    /// Checks the current snapshot file end to end against its record: it was fsync'd before
    /// it was published, so a file that is missing, cut short, damaged or of another snapshot
    /// is corruption, whatever the shutdown was. Refused, never rebuilt.
    fn verify_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        let path = self.inner.snapshot_dir.join(&record.file_name);
        let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), detail };
        let (meta, _) = snapshot::verify(&path).map_err(|e| {
            corrupt(format!("the current snapshot does not check out ({e}); refusing to start, not rebuilding it"))
        })?;
        if meta != record.meta {
            return Err(corrupt(format!(
                "the current snapshot holds {:?}, but the state machine recorded {:?}; refusing to start",
                meta.last_log_id, record.meta.last_log_id
            )));
        }
        Ok(())
    }

    fn read<T: serde::de::DeserializeOwned>(tree: &sled::Tree, what: &str, key: &[u8]) -> io::Result<Option<T>> {
        match tree.get(key).map_err(|e| io_err(what, e))? {
            Some(v) => Ok(Some(decode(what, &v)?)),
            None => Ok(None),
        }
    }

    /// Reads one key from the local state machine.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<KeyValue>> {
        Ok(self
            .inner
            .live()
            .read::<StoredValue>("value", &data_key(key))?
            .map(|stored| KeyValue { key: key.to_vec(), stored }))
    }

    /// Reads up to `limit` keys in `[start, end)` order from the local state machine.
    pub fn scan(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, limit: usize) -> io::Result<ScanPage> {
        Self::scan_live(&self.inner.live(), start, end, limit)
    }

    fn scan_live(live: &Live, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, limit: usize) -> io::Result<ScanPage> {
        let lower = match start {
            Bound::Included(k) => Bound::Included(data_key(&k)),
            Bound::Excluded(k) => Bound::Excluded(data_key(&k)),
            Bound::Unbounded => Bound::Included(vec![DATA]),
        };
        let upper = match end {
            Bound::Included(k) => Bound::Included(data_key(&k)),
            Bound::Excluded(k) => Bound::Excluded(data_key(&k)),
            Bound::Unbounded => Bound::Excluded(vec![DATA + 1]),
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for item in Merged::new(live.layers(&lower, &upper)) {
            let (k, v) = item?;
            if kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(KeyValue { key: k[1..].to_vec(), stored: decode("value", &v)? });
        }
        Ok(ScanPage { kvs, more })
    }

    /// The log id of the last applied entry.
    pub fn applied(&self) -> io::Result<Option<LogId>> {
        Ok(self.inner.live().read::<Option<LogId>>("applied", APPLIED)?.flatten())
    }

    /// The index of the last applied entry (0 before the first), without a storage read.
    pub fn applied_index(&self) -> u64 {
        self.inner.applied_index.load(Ordering::Relaxed)
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

    /// Where the peer transport writes a snapshot while it is being received.
    pub fn incoming_snapshot_path(&self) -> PathBuf {
        let n = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        self.inner.snapshot_dir.join(format!("incoming-{}-{n}.tmp", std::process::id()))
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
            .map_err(|e| io_err(what, e))
    }

    fn current_snapshot_record(&self) -> io::Result<Option<SnapshotRecord>> {
        Self::read(&self.inner.pointer, "snapshot record", CURRENT_SNAPSHOT)
    }

    /// Removes files of the snapshot dir that `select` picks, except `keep`.
    fn remove_snapshot_files(&self, keep: Option<&str>, select: impl Fn(&str) -> bool) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.inner.snapshot_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if Some(name.as_str()) != keep && select(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Applies one entry into `pending` (not yet written to the tree).
    fn apply_entry(pending: &mut Pending<'_>, entry: &raft::Entry) -> io::Result<CommandResult> {
        let log_id = entry.log_id();
        if log_id.index.is_multiple_of(SESSION_SWEEP_EVERY) {
            sweep_sessions(pending, log_id.index)?;
        }
        let result = match entry.payload {
            EntryPayload::Blank => CommandResult::Nothing,
            EntryPayload::Membership(ref m) => {
                pending.insert(MEMBERSHIP, encode(&StoredMembership::new(Some(log_id), m.clone()))?);
                CommandResult::Nothing
            }
            EntryPayload::Normal(ref cmd) => apply_command(pending, log_id.index, cmd)?,
        };
        Ok(result)
    }

    /// Applies a run of entries into the write-back layers, the last one recorded as applied
    /// with them; freezes the active layer for the background writer when it is big enough.
    /// Returns each entry's result. What openraft's `apply` calls for each run it hands over
    /// (and the fuzz target `state_machine_apply`, directly).
    pub fn apply_run(&self, entries: &[raft::Entry]) -> io::Result<Vec<CommandResult>> {
        let _guard = crate::sync::lock(&self.inner.apply_lock);
        if let Some(e) = self.inner.write_error.borrow().clone() {
            return Err(io_err("state machine writer failed earlier", e));
        }
        let mut pending = Pending::new(&self.inner.live);
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            results.push(Self::apply_entry(&mut pending, entry)?);
        }
        let Some(last) = entries.last() else { return Ok(results) };
        pending.insert(APPLIED, encode(&Some(last.log_id()))?);
        let (freeze, over_limit) = {
            let mut live = self.inner.live_mut();
            let freeze = live.absorb(pending.writes);
            if freeze {
                live.freeze();
            }
            (freeze, live.over_limit())
        };
        self.inner.applied_index.store(last.log_id().index, Ordering::Relaxed);
        if over_limit {
            // The background writer fell behind: write here rather than grow without bound.
            self.inner.write_through()?;
        } else if freeze {
            // A full channel means a wake-up is already pending; the writer takes whatever is
            // frozen when it runs.
            let _ = self.inner.write_signal.try_send(());
        }
        Ok(results)
    }

    /// Writes the live tree to `path` as a snapshot file; the caller holds the apply lock, so
    /// the file is a consistent cut at the applied index it records.
    fn dump_locked(&self, path: &Path) -> io::Result<(SnapshotMeta, SnapshotFile, u64)> {
        let cut = self.take_cut()?;
        let (file, entries) = Self::dump_tree(&cut.tree, path, &cut.meta)?;
        Ok((cut.meta, file, entries))
    }

    /// Writes every applied record into the tree and keeps it there: the returned cut holds the
    /// write lock, so the background writer leaves the tree alone until the cut is dropped. The
    /// caller holds the apply lock, so the tree is the state at the applied index it records.
    fn take_cut(&self) -> io::Result<Cut<'_>> {
        let writing = crate::sync::lock(&self.inner.write_lock);
        self.inner.write_through_locked()?;
        let (generation, tree) = {
            let live = self.inner.live();
            (live.generation, live.tree.clone())
        };
        let last_log_id: Option<LogId> = Self::read::<Option<LogId>>(&tree, "applied", APPLIED)?.flatten();
        let last_membership: StoredMembership = Self::read(&tree, "membership", MEMBERSHIP)?.unwrap_or_default();
        Ok(Cut { writing, generation, tree, meta: SnapshotMeta { last_log_id, last_membership } })
    }

    /// Writes every record of `tree` to the snapshot file at `path`; nothing may write the tree
    /// meanwhile. Returns the file and how many records it holds.
    fn dump_tree(tree: &sled::Tree, path: &Path, meta: &SnapshotMeta) -> io::Result<(SnapshotFile, u64)> {
        let mut entries = 0u64;
        let records = tree.iter().map(|item| {
            entries += 1;
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| io_err("snapshot read", e))
        });
        let file = snapshot::write(path, meta, records)?;
        Ok((file, entries))
    }

    /// Builds a snapshot without stopping the apply path for the length of the dump. Under the
    /// apply lock every applied write is put into the tree and the write lock is taken; then the
    /// apply lock is let go. While the tree is dumped, entries go on being applied into the
    /// in-memory layers (reads see them there), and the background writer waits for the write
    /// lock, so the tree stays at the cut. Only past [`write_back::MAX_UNFLUSHED_RECORDS`]
    /// unwritten records does an apply wait for the dump (back-pressure, as on a slow disk).
    ///
    /// The write lock is released before the apply lock is taken again to publish the snapshot
    /// (an apply holding the apply lock may be waiting for the write lock). An install that got
    /// in between replaced the tree with a newer state: this older snapshot is then dropped and
    /// not published; openraft, which only takes the meta, ignores a snapshot older than the
    /// one it has.
    fn build_snapshot_blocking(&self) -> io::Result<SnapshotOf<TypeConfig, SnapshotFile>> {
        let n = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let cut = {
            let _applying = crate::sync::lock(&self.inner.apply_lock);
            self.take_cut()?
        };
        let applied = cut.meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let file_name = format!("snap-{applied:020}-{}-{n}.snap", std::process::id());
        let (file, entries) = Self::dump_tree(&cut.tree, &self.inner.snapshot_dir.join(&file_name), &cut.meta)?;
        // The write lock goes before the apply lock is taken again (an apply holding the apply
        // lock may be waiting for the write lock).
        let Cut { writing, generation, meta, .. } = cut;
        drop(writing);
        let _applying = crate::sync::lock(&self.inner.apply_lock);
        if self.inner.live().generation != generation {
            tracing::info!(applied, "a snapshot was installed while one was built: the older one is dropped");
            let _ = std::fs::remove_file(&file.path);
            return Ok(Snapshot { meta, snapshot: file });
        }
        self.publish_snapshot(&meta, &file_name, None)?;
        self.inner.metrics.record_snapshot(SnapshotKind::Built, file.len, entries);
        Ok(Snapshot { meta, snapshot: file })
    }

    /// Writes a consistent cut of the state machine (at its current applied index) to a new
    /// file in the snapshot dir, for a backup; the file is not offered to Raft and is removed
    /// when the returned handle drops (and at the next start, if the process dies first).
    pub async fn export(&self) -> io::Result<(SnapshotMeta, tempfile::TempPath)> {
        let sm = self.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = crate::sync::lock(&sm.inner.apply_lock);
            let n = sm.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let path = sm.inner.snapshot_dir.join(format!("backup-{}-{n}.snap", std::process::id()));
            let (meta, file, _) = sm.dump_locked(&path)?;
            Ok((meta, tempfile::TempPath::try_from_path(file.path)?))
        })
        .await
        .map_err(|e| io_err("backup task", e))?
    }

    /// Installs a backup taken from another cluster as this state machine's state at
    /// `meta.last_log_id`, with `meta.last_membership` replacing the membership the backup
    /// recorded (a restored cluster starts with its own members). The file is checked whole
    /// first; it becomes the current snapshot, relabelled with `meta`.
    pub async fn install_restored(&self, backup: &Path, meta: SnapshotMeta) -> io::Result<()> {
        let sm = self.clone();
        let backup = backup.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let n = sm.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let relabelled = sm.inner.snapshot_dir.join(format!("restore-{}-{n}.snap", std::process::id()));
            let file = snapshot::relabel(&backup, &relabelled, &meta)?;
            sm.install_snapshot_blocking(&meta, &file)
        })
        .await
        .map_err(|e| io_err("restore task", e))?
    }

    /// Makes `file_name` the current snapshot (optionally flipping the active tree at the
    /// same time), durably, and removes older snapshot files.
    fn publish_snapshot(&self, meta: &SnapshotMeta, file_name: &str, new_active: Option<u64>) -> io::Result<()> {
        // The state machine must be durable at least up to the snapshot before openraft may
        // purge the log behind it.
        self.flush_blocking("flush state machine")?;
        let record = SnapshotRecord { meta: meta.clone(), file_name: file_name.to_string() };
        let mut batch = sled::Batch::default();
        batch.insert(CURRENT_SNAPSHOT, encode(&record)?);
        if let Some(generation) = new_active {
            batch.insert(ACTIVE, &generation.to_be_bytes());
        }
        self.inner.pointer.apply_batch(batch).map_err(|e| io_err("record snapshot", e))?;
        self.flush_blocking("flush snapshot record")?;
        // Only finished snapshots: a snapshot being received (`incoming-*`) stays.
        self.remove_snapshot_files(Some(file_name), |name| name.starts_with("snap-") && name.ends_with(".snap"))
    }

    fn install_snapshot_blocking(&self, meta: &SnapshotMeta, file: &SnapshotFile) -> io::Result<()> {
        // Check the whole file before touching anything.
        let (file_meta, entries) = snapshot::verify(&file.path)?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot file is for {:?}, expected {:?}", file_meta.last_log_id, meta.last_log_id),
            ));
        }
        let _guard = crate::sync::lock(&self.inner.apply_lock);
        // No layer may reach the old tree while it is replaced; they are dropped with it.
        let _writing = crate::sync::lock(&self.inner.write_lock);
        let old_generation = self.inner.live().generation;
        let generation = old_generation + 1;
        let name = tree_name(generation);
        self.inner.db.drop_tree(name.as_bytes()).map_err(|e| io_err("drop stale tree", e))?;
        let tree = self.inner.db.open_tree(name.as_bytes()).map_err(|e| io_err("create tree", e))?;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        snapshot::read(&file.path, |k, v| {
            batch.insert(k, v);
            pending += 1;
            if pending == INSTALL_BATCH {
                tree.apply_batch(std::mem::take(&mut batch)).map_err(|e| io_err("install", e))?;
                pending = 0;
            }
            Ok(())
        })?;
        batch.insert(APPLIED, encode(&meta.last_log_id)?);
        batch.insert(MEMBERSHIP, encode(&meta.last_membership)?);
        tree.apply_batch(batch).map_err(|e| io_err("install", e))?;

        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let n = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let file_name = format!("snap-{index:020}-{}-{n}.snap", std::process::id());
        let dest = self.inner.snapshot_dir.join(&file_name);
        if file.path != dest {
            std::fs::rename(&file.path, &dest).or_else(|_| std::fs::copy(&file.path, &dest).map(|_| ()))?;
            crate::durable::sync_dir_of(&dest)?;
        }
        self.publish_snapshot(meta, &file_name, Some(generation))?;
        *self.inner.live_mut() = Live::new(generation, tree);
        self.inner.applied_index.store(index, Ordering::Relaxed);
        self.inner.db.drop_tree(tree_name(old_generation).as_bytes()).map_err(|e| io_err("drop old tree", e))?;
        self.inner.metrics.record_snapshot(SnapshotKind::Installed, file.len, entries);
        Ok(())
    }
}

/// The writes of a run of entries not yet in the tree: reads see them first, so each entry of
/// the run observes the ones before it, and the run reaches the tree as one atomic batch.
struct Pending<'a> {
    live: &'a RwLock<Live>,
    /// `None`: removed in this run.
    writes: Writes,
}

impl<'a> Pending<'a> {
    fn new(live: &'a RwLock<Live>) -> Self {
        Self { live, writes: Writes::new() }
    }

    fn live(&self) -> RwLockReadGuard<'a, Live> {
        crate::sync::read(self.live)
    }

    fn read<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> io::Result<Option<T>> {
        match self.writes.get(key) {
            Some(Some(v)) => Ok(Some(decode(what, v)?)),
            Some(None) => Ok(None),
            None => self.live().read(what, key),
        }
    }

    fn read_session(&self, key: &[u8]) -> io::Result<Option<Session>> {
        match self.writes.get(key) {
            Some(Some(v)) => Ok(Some(Session::decode(v)?)),
            Some(None) => Ok(None),
            None => self.live().read_with("session", key, Session::decode),
        }
    }

    /// The keys of records in `[prefix, prefix + 1)` as this run sees them, with their values.
    fn records_with_prefix(&self, prefix: u8) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let lower = Bound::Included(vec![prefix]);
        let upper = if prefix == u8::MAX { Bound::Unbounded } else { Bound::Excluded(vec![prefix + 1]) };
        let live = self.live();
        let mut layers = vec![write_back::writes_layer(&self.writes, &lower, &upper)];
        layers.extend(live.layers(&lower, &upper));
        Merged::new(layers).collect()
    }

    fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        self.writes.insert(key.to_vec(), Some(value));
    }

    fn remove(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
}

/// Applies one command into `pending`; returns what the client is told.
fn apply_command(pending: &mut Pending<'_>, index: u64, cmd: &Command) -> io::Result<CommandResult> {
    let Some(WriteId { client_id, sequence }) = cmd.write_id() else {
        return execute(pending, index, cmd);
    };
    let key = prefixed(SESSION, &client_id.to_be_bytes());
    let previous = pending.read_session(&key)?;
    let command = fingerprint(cmd)?;
    if let Some(session) = &previous {
        if sequence == session.sequence {
            // Found by the fuzz target `state_machine_apply`: the same write id on another
            // command was answered with the first command's result (a delete got a put's
            // answer; a put with another value got its own value back, not the stored one).
            if session.command != command {
                return Ok(CommandResult::WriteIdReused { sequence });
            }
            return Ok(restore_put_value(session.result.clone(), cmd));
        }
        if sequence < session.sequence {
            return Ok(CommandResult::StaleSequence { last_applied: session.sequence });
        }
    }
    let result = execute(pending, index, cmd)?;
    pending.insert(&key, encode(&Session { sequence, index, result: elide_put_value(&result), command })?);
    Ok(result)
}

/// Removes the sessions whose last write is more than [`SESSION_RETENTION`] entries before
/// `index`.
fn sweep_sessions(pending: &mut Pending<'_>, index: u64) -> io::Result<()> {
    let Some(horizon) = index.checked_sub(SESSION_RETENTION) else { return Ok(()) };
    for (key, value) in pending.records_with_prefix(SESSION)? {
        let session = Session::decode(&value)?;
        if session.index < horizon {
            pending.remove(&key);
        }
    }
    Ok(())
}

fn execute(pending: &mut Pending<'_>, index: u64, cmd: &Command) -> io::Result<CommandResult> {
    let key_count = |p: &Pending<'_>| -> io::Result<u64> { Ok(p.read::<u64>("key count", KEY_COUNT)?.unwrap_or(0)) };
    match cmd {
        Command::Put { key, value, if_mod_index, .. } => {
            let current: Option<StoredValue> = pending.read("value", &data_key(key))?;
            if let Some(expected) = if_mod_index {
                if current.as_ref().map(|c| c.mod_index).unwrap_or(0) != *expected {
                    let current = current.map(|stored| KeyValue { key: key.clone(), stored });
                    return Ok(CommandResult::Put { index, succeeded: false, current });
                }
            }
            let stored = StoredValue {
                value: value.clone(),
                create_index: current.as_ref().map(|c| c.create_index).unwrap_or(index),
                mod_index: index,
                version: current.as_ref().map(|c| c.version + 1).unwrap_or(1),
            };
            if current.is_none() {
                let count = key_count(pending)? + 1;
                pending.insert(KEY_COUNT, encode(&count)?);
            }
            pending.insert(&data_key(key), encode(&stored)?);
            Ok(CommandResult::Put { index, succeeded: true, current: Some(KeyValue { key: key.clone(), stored }) })
        }
        Command::Delete { key, if_mod_index, .. } => {
            let current: Option<StoredValue> = pending.read("value", &data_key(key))?;
            let previous = current.clone().map(|stored| KeyValue { key: key.clone(), stored });
            if let Some(expected) = if_mod_index {
                if current.as_ref().map(|c| c.mod_index).unwrap_or(0) != *expected {
                    return Ok(CommandResult::Delete { index, succeeded: false, deleted: false, previous });
                }
            }
            if current.is_some() {
                let count = key_count(pending)?.saturating_sub(1);
                pending.remove(&data_key(key));
                pending.insert(KEY_COUNT, encode(&count)?);
            }
            Ok(CommandResult::Delete { index, succeeded: true, deleted: current.is_some(), previous })
        }
        Command::AllocateNodeId { ordinal } => {
            let key = prefixed(INCARNATION, &ordinal.to_be_bytes());
            let stored: u32 = pending.read("incarnation", &key)?.unwrap_or(0);
            // Ids in the membership count too: the bootstrap node took incarnation 1 without
            // an allocation.
            let membership: StoredMembership = pending.read("membership", MEMBERSHIP)?.unwrap_or_default();
            let in_membership = membership
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| raft::ordinal_of(*id) == *ordinal)
                .map(raft::incarnation_of)
                .max()
                .unwrap_or(0);
            let next = stored.max(in_membership) + 1;
            pending.insert(&key, encode(&next)?);
            Ok(CommandResult::NodeId { index, node_id: raft::node_id(*ordinal, next) })
        }
        Command::SetReplicas { replicas } => {
            pending.insert(DECLARED_REPLICAS, encode(replicas)?);
            Ok(CommandResult::Replicas { index, replicas: *replicas })
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let sm = self.clone();
        tokio::task::spawn_blocking(move || sm.build_snapshot_blocking())
            .await
            .map_err(|e| io_err("snapshot task", e))?
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
            let results = self.apply_run(&run)?;
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
        tokio::task::spawn_blocking(move || sm.install_snapshot_blocking(&meta, &snapshot))
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

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use std::time::Instant;

    use super::*;
    use crate::store::{open, StoreOptions};

    fn live() -> (tempfile::TempDir, RwLock<Live>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().temporary(true).path(dir.path()).open().expect("sled");
        let tree = db.open_tree("sm.0").expect("tree");
        (dir, RwLock::new(Live::new(0, tree)))
    }

    fn put(key: &str, value: &str, if_mod_index: Option<u64>, id: Option<(u64, u64)>) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            if_mod_index,
            write_id: id.map(|(client_id, sequence)| WriteId { client_id, sequence }),
        }
    }

    fn entry(index: u64, cmd: Command) -> raft::Entry {
        raft::Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), cmd)
    }

    /// Applies one entry as a run of its own and hands its writes to the layers.
    fn apply(live: &RwLock<Live>, index: u64, cmd: &Command) -> CommandResult {
        let mut pending = Pending::new(live);
        let result = StateMachine::apply_entry(&mut pending, &entry(index, cmd.clone())).expect("apply");
        let writes = pending.writes;
        live.write().expect("lock").absorb(writes);
        result
    }

    fn session_exists(live: &RwLock<Live>, client: u64) -> bool {
        live.read()
            .expect("lock")
            .read::<Session>("session", &prefixed(SESSION, &client.to_be_bytes()))
            .expect("read")
            .is_some()
    }

    fn version(r: &CommandResult) -> u64 {
        match r {
            CommandResult::Put { current: Some(kv), .. } => kv.stored.version,
            other => panic!("not a put with a value: {other:?}"),
        }
    }

    #[test]
    fn versions_count_writes_and_compare_uses_mod_index() {
        let (_d, t) = live();
        assert_eq!(version(&apply(&t, 5, &put("k", "a", None, None))), 1);
        assert_eq!(version(&apply(&t, 6, &put("k", "b", None, None))), 2);
        let failed = apply(&t, 7, &put("k", "c", Some(5), None));
        assert!(matches!(failed, CommandResult::Put { succeeded: false, .. }));
        let ok = apply(&t, 8, &put("k", "c", Some(6), None));
        assert!(
            matches!(&ok, CommandResult::Put { succeeded: true, current: Some(kv), .. } if kv.stored.create_index == 5 && kv.stored.mod_index == 8)
        );
    }

    #[test]
    fn a_retried_write_returns_its_original_answer_and_applies_nothing() {
        let (_d, t) = live();
        let cmd = put("k", "value", None, Some((9, 1)));
        let first = apply(&t, 10, &cmd);
        let retry = apply(&t, 11, &cmd);
        assert_eq!(first, retry, "same answer, value included");
        assert_eq!(version(&retry), 1, "applied once");
        let stale = apply(&t, 12, &put("k", "old", None, Some((9, 0))));
        assert_eq!(stale, CommandResult::StaleSequence { last_applied: 1 });
        assert_eq!(version(&apply(&t, 13, &put("k", "next", None, Some((9, 2))))), 2);
    }

    #[test]
    fn a_write_id_reused_for_another_command_is_refused_and_applies_nothing() {
        // fuzz/artifacts/state_machine_apply/crash-360a7684…: a put, then a delete with the
        // same write id, got the put's answer (with the value elided).
        let (_d, t) = live();
        let first = apply(&t, 1, &put("k", "v1", None, Some((9, 1))));
        let delete = Command::Delete {
            key: b"k".to_vec(),
            if_mod_index: None,
            write_id: Some(WriteId { client_id: 9, sequence: 1 }),
        };
        assert_eq!(apply(&t, 2, &delete), CommandResult::WriteIdReused { sequence: 1 });
        assert_eq!(apply(&t, 3, &put("k", "v2", None, Some((9, 1)))), CommandResult::WriteIdReused { sequence: 1 });
        assert_eq!(apply(&t, 4, &put("other", "v1", None, Some((9, 1)))), CommandResult::WriteIdReused { sequence: 1 });
        let kv = t.read().expect("lock").read::<StoredValue>("value", &data_key(b"k")).expect("read").expect("kept");
        assert_eq!((kv.value.as_slice(), kv.version), (b"v1".as_slice(), 1), "nothing was applied");
        assert_eq!(apply(&t, 5, &put("k", "v1", None, Some((9, 1)))), first, "the true retry still gets its answer");
    }

    /// The first sweep that sees a write at index 1 as older than the retention window.
    const FIRST_EXPIRING_SWEEP: u64 = SESSION_RETENTION.div_ceil(SESSION_SWEEP_EVERY) * SESSION_SWEEP_EVERY;

    #[test]
    fn sessions_expire_at_the_first_sweep_after_the_retention_window() {
        let (_d, t) = live();
        let old = put("a", "1", None, Some((1, 1)));
        apply(&t, 1, &old);
        apply(&t, FIRST_EXPIRING_SWEEP - SESSION_SWEEP_EVERY, &put("b", "1", None, Some((2, 1))));
        assert!(session_exists(&t, 1), "the sweep before the window ends keeps client 1");
        apply(&t, FIRST_EXPIRING_SWEEP, &put("c", "1", None, Some((3, 1))));
        assert!(!session_exists(&t, 1), "client 1 expired");
        assert!(session_exists(&t, 2) && session_exists(&t, 3), "later clients kept");
        // After expiry the same write id is a new write (the retention window bounds retries).
        assert_eq!(version(&apply(&t, FIRST_EXPIRING_SWEEP + 1, &old)), 2);
    }

    #[test]
    fn a_sweep_keeps_a_session_renewed_inside_the_window() {
        let (_d, t) = live();
        apply(&t, 1, &put("a", "1", None, Some((1, 1))));
        apply(&t, FIRST_EXPIRING_SWEEP - 1, &put("a", "2", None, Some((1, 2))));
        apply(&t, FIRST_EXPIRING_SWEEP, &put("b", "1", None, Some((2, 1))));
        assert!(session_exists(&t, 1), "client 1 renewed, kept");
    }

    #[test]
    fn a_run_of_entries_sees_its_own_writes() {
        let (_d, t) = live();
        let mut pending = Pending::new(&t);
        let first = apply_command(&mut pending, 1, &put("k", "a", None, Some((7, 1)))).expect("apply");
        let second = apply_command(&mut pending, 2, &put("k", "b", None, Some((7, 2)))).expect("apply");
        let cas = apply_command(&mut pending, 3, &put("k", "c", Some(2), None)).expect("apply");
        let retry = apply_command(&mut pending, 4, &put("k", "b", None, Some((7, 2)))).expect("apply");
        let writes = pending.writes;
        t.write().expect("lock").absorb(writes);
        assert_eq!((version(&first), version(&second), version(&cas)), (1, 2, 3));
        assert_eq!(retry, second, "the retry inside the run is answered from the run's session");
        assert_eq!(t.read().expect("lock").read::<u64>("count", KEY_COUNT).expect("read"), Some(1));
    }

    #[test]
    fn node_ids_are_never_reused_for_an_ordinal() {
        let (_d, t) = live();
        let alloc = |i| match apply(&t, i, &Command::AllocateNodeId { ordinal: 3 }) {
            CommandResult::NodeId { node_id, .. } => node_id,
            other => panic!("{other:?}"),
        };
        let (a, b) = (alloc(1), alloc(2));
        assert_eq!(raft::ordinal_of(a), 3);
        assert!(raft::incarnation_of(b) > raft::incarnation_of(a));
    }

    fn puts(from: u64, count: u64) -> Vec<raft::Entry> {
        (from..from + count).map(|i| entry(i, put(&format!("key-{i}"), "value", None, Some((i % 7, i))))).collect()
    }

    /// Counts the user keys and reads `applied` straight from sled (what a crash leaves).
    fn in_sled(dir: &Path) -> (u64, Option<LogId>) {
        // The background writer may still hold the database for a moment after the drop.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(dir.join("sled")).open() {
                Ok(db) => break db,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "sled still open");
                    std::thread::yield_now();
                }
                Err(e) => panic!("reopen raw: {e}"),
            }
        };
        let tree = db.open_tree(tree_name(0)).expect("tree");
        let keys = tree.scan_prefix([DATA]).count() as u64;
        let applied = StateMachine::read::<Option<LogId>>(&tree, "applied", APPLIED).expect("read").flatten();
        (keys, applied)
    }

    #[test]
    fn sled_holds_a_prefix_of_the_applied_entries_with_its_applied_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Enough puts (about one record each) to freeze the active layer twice, plus some that
        // stay in memory.
        let total = 3 * write_back::FLUSH_RECORDS as u64 + 100;
        {
            let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            for run in puts(1, total).chunks(MAX_APPLY_RUN) {
                sm.apply_run(run).expect("apply");
            }
            assert_eq!(sm.applied_index(), total);
            assert_eq!(sm.key_count().expect("count"), total, "reads see every applied write");
            let page = sm.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).expect("scan");
            assert_eq!(page.kvs.len() as u64, total);
            sm.inner.db.flush().expect("flush what the writer wrote");
            // Dropped without `flush`: what is not in sled is lost, as in a crash.
        }
        let (keys, applied) = in_sled(dir.path());
        let applied = applied.map_or(0, |l| l.index);
        assert!(applied < total, "some applied entries are still only in memory: {applied}");
        assert_eq!(keys, applied, "sled holds exactly the entries up to its applied index");
    }

    #[tokio::test]
    async fn flush_writes_every_applied_record_to_sled() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            sm.apply_run(&puts(1, 10)).expect("apply");
            assert!(sm.unwritten_records() > 0);
            sm.flush().await.expect("flush");
            assert_eq!(sm.unwritten_records(), 0);
        }
        let (keys, applied) = in_sled(dir.path());
        assert_eq!((keys, applied.map(|l| l.index)), (10, Some(10)));
        let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(sm.applied_index(), 10, "the applied index is read at open");
    }

    /// Entries go on being applied while a snapshot is dumped, and the snapshot is still an
    /// exact cut: it holds the keys of the entries up to the index it records, and no later one.
    #[test]
    fn applying_goes_on_while_a_snapshot_is_dumped_and_the_cut_stays_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
        let preloaded = 50_000u64;
        for first in (1..=preloaded).step_by(1000) {
            sm.apply_run(&puts(first, 1000)).expect("preload");
        }
        let building = std::sync::atomic::AtomicBool::new(true);
        let mut next = preloaded + 1;
        let mut runs_during_build = 0;
        let snapshot = std::thread::scope(|scope| {
            let builder = scope.spawn(|| {
                let snapshot = sm.build_snapshot_blocking();
                building.store(false, Ordering::SeqCst);
                snapshot
            });
            // Runs of 10 entries until the build is done; with a dump that stopped the apply
            // path, at most the one run that waited for it would get in.
            while building.load(Ordering::SeqCst) {
                sm.apply_run(&puts(next, 10)).expect("apply during the build");
                next += 10;
                runs_during_build += 1;
            }
            builder.join().expect("builder thread").expect("build")
        });
        let cut = snapshot.meta.last_log_id.expect("cut").index;
        assert!(cut >= preloaded, "the cut holds every entry applied before the build: {cut}");
        // Runs applied after the cut was taken: while the 50,000 records were dumped. A build
        // holding the apply path for the dump lets in only the run that waited for it (and
        // whatever slips in before the builder thread says it is done).
        let runs_after_cut = (next - 1 - cut) / 10;
        assert!(
            runs_after_cut >= 20,
            "entries were applied during the dump: {runs_after_cut} of {runs_during_build} runs"
        );
        let mut keys = std::collections::BTreeSet::new();
        snapshot::read(&snapshot.snapshot.path, |k, _| {
            if is_user_key_record(&k) {
                keys.insert(k);
            }
            Ok(())
        })
        .expect("read the snapshot");
        let expected: std::collections::BTreeSet<Vec<u8>> =
            (1..=cut).map(|i| data_key(format!("key-{i}").as_bytes())).collect();
        assert_eq!(keys, expected, "the snapshot is the state at index {cut}");
        assert_eq!(sm.applied_index(), next - 1);
        for i in [1, cut, cut + 1, next - 1] {
            assert!(sm.get(format!("key-{i}").as_bytes()).expect("get").is_some(), "key-{i} reads back");
        }
    }
}

#[cfg(test)]
mod properties {
    //! Properties checked on random inputs (proptest): the key encoding, scans with paging
    //! against an ordered-map model, and the dedup table under interleaved retries.

    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;
    use crate::validation::Limits;
    use petkv_client::pb::v1::ScanRequest;

    fn live() -> (tempfile::TempDir, RwLock<Live>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().temporary(true).path(dir.path().join("db")).open().expect("sled");
        let tree = db.open_tree("sm.0").expect("tree");
        (dir, RwLock::new(Live::new(0, tree)))
    }

    /// Applies `cmds` from index `first` on, in runs of `run` entries. After every third run
    /// the layers are frozen and written to the tree, so records live in every layer: the
    /// active one, the tree, and (between the two writes) the frozen one.
    fn apply_in_runs(live: &RwLock<Live>, first: u64, cmds: &[Command], run: usize) -> Vec<CommandResult> {
        let mut results = Vec::new();
        for (n, chunk) in cmds.chunks(run.max(1)).enumerate() {
            let mut pending = Pending::new(live);
            for (i, cmd) in chunk.iter().enumerate() {
                let index = first + (n * run.max(1) + i) as u64;
                results.push(apply_command(&mut pending, index, cmd).expect("apply"));
            }
            let writes = pending.writes;
            let mut live = live.write().expect("lock");
            live.absorb(writes);
            if n % 3 == 1 {
                live.freeze();
            } else if n % 3 == 2 {
                if let Some(frozen) = live.frozen() {
                    live.tree.apply_batch(write_back::to_batch(&frozen)).expect("batch");
                    live.written(&frozen);
                }
            }
        }
        results
    }

    fn put(key: Vec<u8>, id: Option<(u64, u64)>) -> Command {
        Command::Put {
            key,
            value: b"v".to_vec(),
            if_mod_index: None,
            write_id: id.map(|(client_id, sequence)| WriteId { client_id, sequence }),
        }
    }

    /// Short keys over a small alphabet (with 0x00 and 0xff, the edges of prefix arithmetic),
    /// so random sets and bounds overlap.
    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0x00u8, b'a', b'b', b'c', 0xff]), 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn data_keys_round_trip_and_keep_the_order_of_user_keys(a in prop::collection::vec(any::<u8>(), 0..8), b in prop::collection::vec(any::<u8>(), 0..8)) {
            let (ka, kb) = (data_key(&a), data_key(&b));
            prop_assert_eq!(&ka[1..], a.as_slice());
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert!(is_user_key_record(&ka));
            for meta in [APPLIED, MEMBERSHIP, KEY_COUNT, DECLARED_REPLICAS] {
                prop_assert!(!is_user_key_record(meta), "bookkeeping never reads as a user key");
            }
            prop_assert!(!is_user_key_record(&prefixed(SESSION, &a)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn paged_scans_return_exactly_the_model_range_once(
            keys in prop::collection::btree_set(small_key().prop_filter("non-empty", |k| !k.is_empty()), 0..24),
            prefix in small_key(),
            start in small_key(),
            end in small_key(),
            use_prefix: bool,
            limit in 0u32..6,
        ) {
            let (_dir, t) = live();
            let cmds: Vec<Command> = keys.iter().map(|k| put(k.clone(), None)).collect();
            apply_in_runs(&t, 1, &cmds, 7);
            let mut req = if use_prefix {
                ScanRequest { prefix: prefix.clone().into(), limit, ..Default::default() }
            } else {
                ScanRequest { start_key: start.clone().into(), end_key: end.clone().into(), limit, ..Default::default() }
            };
            let limits = Limits { max_scan_limit: 5, ..Limits::default() };
            let in_range = |k: &Vec<u8>| {
                if use_prefix {
                    k.starts_with(&prefix)
                } else {
                    *k >= start && (end.is_empty() || *k < end)
                }
            };
            let Ok(first) = limits.scan(&req) else {
                // Refused only for what validation refuses: an empty or inverted range.
                prop_assert!(limit > 5 || (!use_prefix && !end.is_empty() && start >= end));
                return Ok(());
            };
            let mut seen = Vec::new();
            let mut plan = first;
            for _ in 0..=keys.len() {
                let page = StateMachine::scan_live(&t.read().expect("lock"), plan.start.clone(), plan.end.clone(), plan.limit).expect("scan");
                prop_assert!(page.kvs.len() <= plan.limit);
                seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
                match (page.more, page.kvs.last()) {
                    (true, Some(last)) => {
                        req.page_token = last.key.clone().into();
                        plan = limits.scan(&req).expect("a returned token continues the same scan");
                    }
                    _ => break,
                }
            }
            let model: Vec<Vec<u8>> = keys.iter().filter(|k| in_range(k)).cloned().collect();
            prop_assert_eq!(seen, model);
        }

        #[test]
        fn each_client_write_applies_once_and_older_sequences_are_refused(
            ops in prop::collection::vec((0u64..3, 0u64..6, 0u8..3), 1..40),
            run in 1usize..8,
        ) {
            let (_dir, t) = live();
            let cmds: Vec<Command> = ops.iter().map(|(c, s, k)| put(vec![b'k', *k], Some((*c, *s)))).collect();
            let results = apply_in_runs(&t, 1, &cmds, run);
            let mut last: HashMap<u64, u64> = HashMap::new();
            // (client, sequence) -> (key, answer) of the write that used it first.
            let mut first_answer: HashMap<(u64, u64), (u8, CommandResult)> = HashMap::new();
            let mut applied_per_key: BTreeMap<u8, u64> = BTreeMap::new();
            for ((client, seq, key), result) in ops.iter().zip(&results) {
                match last.get(client) {
                    Some(l) if seq < l => {
                        prop_assert_eq!(result, &CommandResult::StaleSequence { last_applied: *l });
                    }
                    Some(l) if seq == l => {
                        let (first_key, answer) = &first_answer[&(*client, *seq)];
                        if first_key == key {
                            prop_assert_eq!(result, answer, "a retry gets the original answer");
                        } else {
                            prop_assert_eq!(result, &CommandResult::WriteIdReused { sequence: *seq }, "another command on a used id");
                        }
                    }
                    _ => {
                        let version = applied_per_key.entry(*key).or_default();
                        *version += 1;
                        let got = match result {
                            CommandResult::Put { succeeded: true, current: Some(kv), .. } => kv.stored.version,
                            other => return Err(TestCaseError::fail(format!("a new write was not applied: {other:?}"))),
                        };
                        prop_assert_eq!(got, *version, "each new (client, sequence) is one more version");
                        last.insert(*client, *seq);
                        first_answer.insert((*client, *seq), (*key, result.clone()));
                    }
                }
            }
            for (key, versions) in applied_per_key {
                let stored = t.read().expect("lock").read::<StoredValue>("value", &data_key(&[b'k', key])).expect("read");
                prop_assert_eq!(stored.map(|s| s.version), Some(versions));
            }
        }
    }
}
