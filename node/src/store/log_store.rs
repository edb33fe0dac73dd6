//! The Raft log and vote, in raft-log segment files under `<data-dir>/raft-log`.
//!
//! Why not sled, which holds the state machine: a sled flush writes every tree's dirty pages,
//! so an append that waited for it would wait for the state machine's writes too.
//! [`raft_log::RaftLog`] (by openraft's author) appends records to a chunk file and fsyncs them
//! on its own flush thread, calling back once they are durable, so `append` returns at once and
//! the callback is openraft's `IOFlushed`.
//!
//! What the files hold: each appended entry (`Append(log id, postcard(payload))`), the vote, the
//! committed log id, truncations, purges, and checkpoints of the whole log state. The store owner
//! ([`StoreOwner`]) is raft-log's "user data", carried in a checkpoint record. Chunk files
//! (`r-<offset>.wal`) rotate every [`CHUNK_MAX_RECORDS`] records or [`CHUNK_MAX_BYTES`]; a chunk
//! whose entries are all purged is deleted after the purge record is fsync'd.
//!
//! Durability rule (openraft's contract, and what makes an acknowledged write survive a crash):
//! - `append` hands the entries to the flush thread and returns; its callback
//!   ([`IOFlushed::io_completed`]) fires only after the entries are fsync'd. Appends that queue
//!   up while an fsync runs share the next one (group commit).
//! - `save_vote`, `truncate_after`, [`LogStore::set_owner`], [`LogStore::clear_owner`] and
//!   [`LogStore::seed_vote`] return only after their record is fsync'd.
//! - `purge` and `save_committed` do not wait: their records go out with the next fsync. A lost
//!   purge leaves entries openraft purges again; a lost committed id is re-derived from a quorum
//!   (and the state machine's applied id).
//! - The in-memory state (what reads and [`LogStore::vote`] see) is updated when a record is
//!   written, before it is durable; openraft never acts on an append before its callback.
//!
//! Corruption: every record carries a checksum, and every stored value a length guarded by its
//! complement, so a damaged byte reads as `InvalidData`. Opening a log with such a record fails
//! with [`StoreError::Corrupt`]; nothing is repaired. The one thing raft-log's recovery
//! (`truncate_incomplete_record`) drops is a record cut short at the very end of the last chunk
//! (or a zero-filled tail): what a crash in the middle of a write leaves. Such a record was
//! never acknowledged, since an acknowledgement waits for its fsync. The length guard is what
//! keeps a damaged length in an acknowledged record from looking like a cut-short one. From the
//! bytes alone a file cut short by damage looks the same, so the drop is allowed only after a
//! crash: a store sealed by a clean shutdown ([`super::seal`]) is opened with it off, after the
//! seal has checked every file's length and CRC.
//!
//! Creation: a new log is made in `raft-log.tmp`, fsync'd, renamed to `raft-log` and the data
//! directory fsync'd, so a crash never leaves a half-made `raft-log`.

use std::fmt::Debug;
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::{codeq, RaftLog};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::faults::{with_context, VolumeFaults};
use super::{decode, encode, io_err, StoreError};
use crate::edge::metrics::{FsyncSite, Metrics};
use crate::raft::{Entry, LogId, TypeConfig, Vote};

/// The log's directory, beside `sled/` in the data directory.
pub(crate) const DIR: &str = "raft-log";
/// Where a new log is made before it is renamed to [`DIR`].
const CREATION_DIR: &str = "raft-log.tmp";

/// A chunk file is closed after this many records...
pub const CHUNK_MAX_RECORDS: usize = 8 * 1024;
/// ...or this many bytes. raft-log keeps every entry of the open chunk in memory, so this also
/// bounds the log's memory use under a steady write load: 64k records and 32 MiB gave a 6 MiB
/// higher peak RSS in the 64-client put benchmark than 8k and 8 MiB, at the same CPU per put.
pub const CHUNK_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Payload cache: entries kept in memory for followers' replication reads (beyond the open
/// chunk's, which are always kept). Older entries are read back from the chunk files.
const CACHE_MAX_ITEMS: usize = 10_000;
const CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;
/// The buffer that replays one chunk at open (raft-log's default is 64 MiB).
const READ_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// How long the flush thread keeps collecting writes before an fsync, once the previous fsync
/// carried more than one awaited write (the patched chunked-wal in `third_party/`: writes
/// already queued are always taken without waiting, and a lone writer is not made to wait).
/// 200 µs gave a 1-client put p50 of 1.74 ms when every write waited; with the window only
/// under concurrency the 1-client p50 went 0.80 → 0.67 ms at the same 64-client throughput.
const FLUSH_BATCH_WAIT: Duration = Duration::from_micros(20);
/// Bigger stored values than this are corruption (a command is bounded far below it).
const MAX_VALUE_BYTES: u32 = 1 << 30;

/// Which node incarnation this store belongs to. Written into the store before the identity
/// record is written to the volume, so an identity record whose store lacks it means the store
/// was wiped or replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreOwner {
    pub cluster_id: String,
    pub node_id: u64,
}

/// raft-log's user data: node-level records kept with the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct UserData {
    owner: Option<StoreOwner>,
}

/// A value stored in the log files: its postcard bytes behind a big-endian `u32` length and the
/// length's complement. The complement makes a damaged length read as corruption
/// (`InvalidData`) instead of as a record cut short (`UnexpectedEof`), which raft-log would
/// truncate away when it is the last one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stored<T>(pub T);

impl<T: Serialize> codeq::Encode for Stored<T> {
    fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
        write_framed(w, &encode(&self.0)?)
    }
}

impl<T: DeserializeOwned> codeq::Decode for Stored<T> {
    fn decode<R: Read>(r: R) -> io::Result<Self> {
        let bytes = read_framed(r)?;
        postcard::from_bytes(&bytes)
            .map(Stored)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decode stored value: {e}")))
    }
}

/// An entry's payload as stored: postcard bytes, decoded when read. Shared, because raft-log
/// clones a payload on every cached read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload(Arc<[u8]>);

impl codeq::Encode for Payload {
    fn encode<W: Write>(&self, w: W) -> io::Result<usize> {
        write_framed(w, &self.0)
    }
}

impl codeq::Decode for Payload {
    fn decode<R: Read>(r: R) -> io::Result<Self> {
        Ok(Payload(read_framed(r)?.into()))
    }
}

fn write_framed<W: Write>(mut w: W, bytes: &[u8]) -> io::Result<usize> {
    let len = u32::try_from(bytes.len()).ok().filter(|l| *l <= MAX_VALUE_BYTES).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("value of {} bytes is too big", bytes.len()))
    })?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&(!len).to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(8 + bytes.len())
}

fn read_framed<R: Read>(mut r: R) -> io::Result<Vec<u8>> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let guard = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if guard != !len || len > MAX_VALUE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("damaged value length {len:#x}/{guard:#x}")));
    }
    super::read_len(&mut r, len as usize)
}

/// Decodes the records of a chunk file's bytes the way opening the log reads them back, up to
/// the first that does not decode; returns how many decoded and that first error, if any. (The
/// fuzz target `log_records` feeds it arbitrary bytes: a damaged chunk must be an error, never
/// a panic or an unbounded allocation.)
pub fn decode_records(bytes: &[u8]) -> (usize, Option<io::Error>) {
    use codeq::Decode;
    let mut r = bytes;
    let mut decoded = 0;
    while !r.is_empty() {
        match raft_log::WALRecord::<raft_log::RaftWalTypes<LogTypes>>::decode(&mut r) {
            Ok(_) => decoded += 1,
            Err(e) => return (decoded, Some(e)),
        }
    }
    (decoded, None)
}

/// petkv's raft-log type configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogTypes;

impl raft_log::Types for LogTypes {
    type LogId = Stored<LogId>;
    type LogPayload = Payload;
    type Vote = Stored<Vote>;
    type Callback = Flushed;
    type UserData = Stored<UserData>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        // The bytes plus a rough per-entry overhead (cache node, log id, Arc header).
        payload.0.len() as u64 + 64
    }
}

/// Who hears that a flush is durable.
pub(crate) struct Flushed {
    to: Notify,
    requested: Instant,
    metrics: Option<Arc<Metrics>>,
    faults: Option<Arc<VolumeFaults>>,
}

enum Notify {
    /// An append: openraft's durability callback.
    Append(IOFlushed<TypeConfig>),
    /// An async caller awaiting its write.
    Wait(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// A blocking caller (the creation at open).
    Blocking(std::sync::mpsc::SyncSender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        if let Some(metrics) = &self.metrics {
            metrics.record_fsync(FsyncSite::Log, self.requested.elapsed());
        }
        let res = match (res, &self.faults) {
            (Err(e), Some(faults)) => Err(faults.note(with_context("fsync raft log", e))),
            (res, _) => res,
        };
        match self.to {
            Notify::Append(callback) => callback.io_completed(res),
            Notify::Wait(tx) => {
                let _ = tx.send(res);
            }
            // A receiver that went away no longer cares (raft-log's own impl for the sender).
            Notify::Blocking(tx) => raft_log::Callback::send(tx, res),
        }
    }
}

impl Flushed {
    /// `store`: whose fsync times and faults it records (none at open).
    fn new(to: Notify, store: Option<&Inner>) -> Self {
        let (metrics, faults) = match store {
            Some(inner) => (Some(inner.metrics.clone()), Some(inner.faults.clone())),
            None => (None, None),
        };
        Self { to, requested: Instant::now(), metrics, faults }
    }
}

/// The Raft log store. Cheap to clone: clones share one [`RaftLog`].
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Never held across an await.
    log: Mutex<RaftLog<LogTypes>>,
    metrics: Arc<Metrics>,
    faults: Arc<VolumeFaults>,
}

/// raft-log's settings; `strict` (the store was sealed by a clean shutdown) turns off dropping
/// a record cut short at the end of the last chunk: with no crash since, it is damage.
fn config(dir: &Path, strict: bool) -> raft_log::Config {
    let mut config = raft_log::Config::new(dir.to_string_lossy());
    config.log_cache_max_items = Some(CACHE_MAX_ITEMS);
    config.log_cache_capacity = Some(CACHE_MAX_BYTES);
    config.wal.read_buffer_size = Some(READ_BUFFER_BYTES);
    config.wal.chunk_max_records = Some(CHUNK_MAX_RECORDS);
    config.wal.chunk_max_size = Some(CHUNK_MAX_BYTES);
    // Only a record cut short at the end of the last chunk (a crash mid-write: never
    // acknowledged) or a zero-filled tail is truncated, and only after a crash; anything else
    // fails the open.
    config.wal.truncate_incomplete_record = Some(!strict);
    config.wal.flush_batch_wait = Some(FLUSH_BATCH_WAIT);
    config
}

/// Opens the raft-log at `dir`, mapping failures to the store's errors: a log that does not
/// read back (bad checksum, damaged record) is corrupt and refused, never repaired.
fn open_raft_log(dir: &Path, strict: bool) -> Result<RaftLog<LogTypes>, StoreError> {
    RaftLog::open(Arc::new(config(dir, strict))).map_err(|e| match e.kind() {
        // Locked by another process, or not ours to read: not a property of the data.
        io::ErrorKind::WouldBlock | io::ErrorKind::PermissionDenied => {
            StoreError::Io { path: dir.to_path_buf(), source: e }
        }
        _ => StoreError::Corrupt { path: dir.to_path_buf(), detail: format!("the Raft log does not read back: {e}") },
    })
}

fn sync_dir(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Flushes `log` and blocks until the flush is durable.
fn flush_blocking(log: &mut RaftLog<LogTypes>) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    log.flush(true, Some(Flushed::new(Notify::Blocking(tx), None)))?;
    rx.recv().map_err(|_| io_err("fsync raft log", "the flush thread stopped"))?
}

impl LogStore {
    /// Opens (or creates) the log under `data_dir`. `strict`: the store was sealed by a clean
    /// shutdown, so a record cut short is damage, not a torn write.
    pub(crate) fn open(
        data_dir: &Path,
        metrics: Arc<Metrics>,
        faults: Arc<VolumeFaults>,
        strict: bool,
    ) -> Result<Self, StoreError> {
        let dir = data_dir.join(DIR);
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| StoreError::Io { path, source }
        };
        if !dir.exists() {
            let tmp = data_dir.join(CREATION_DIR);
            if tmp.exists() {
                // A creation that stopped before its rename.
                std::fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
            }
            std::fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
            let mut log = RaftLog::<LogTypes>::open(Arc::new(config(&tmp, false))).map_err(io_at(&tmp))?;
            flush_blocking(&mut log).map_err(io_at(&tmp))?;
            drop(log);
            sync_dir(&tmp).map_err(io_at(&tmp))?;
            std::fs::rename(&tmp, &dir).map_err(io_at(&dir))?;
            sync_dir(data_dir).map_err(io_at(data_dir))?;
        }
        let log = open_raft_log(&dir, strict)?;
        Ok(Self { inner: Arc::new(Inner { log: Mutex::new(log), metrics, faults }) })
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, RaftLog<LogTypes>>> {
        self.inner.log.lock().map_err(|_| io_err("raft log", "a writer panicked"))
    }

    /// A failed disk operation, with context, noted in the volume's faults.
    fn fault(&self, what: &str, e: io::Error) -> io::Error {
        self.inner.faults.note(with_context(what, e))
    }

    /// Applies `write` and waits until it is fsync'd.
    async fn write_durably(
        &self,
        what: &str,
        write: impl FnOnce(&mut RaftLog<LogTypes>) -> io::Result<()>,
    ) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut log = self.lock()?;
            write(&mut log).map_err(|e| self.fault(what, e))?;
            let flushed = Flushed::new(Notify::Wait(tx), Some(&self.inner));
            log.flush(true, Some(flushed)).map_err(|e| self.fault(what, e))?;
        }
        // The flush thread noted its own failure (`Flushed`).
        rx.await.map_err(|_| io_err(what, "the flush thread stopped"))?.map_err(|e| with_context(what, e))
    }

    /// The persisted vote, if any.
    pub fn vote(&self) -> io::Result<Option<Vote>> {
        Ok(self.lock()?.log_state().vote().map(|v| v.0))
    }

    /// The node incarnation this store belongs to, if recorded.
    pub fn owner(&self) -> io::Result<Option<StoreOwner>> {
        Ok(self.lock()?.log_state().user_data.as_ref().and_then(|u| u.0.owner.clone()))
    }

    /// Records (durably) which node incarnation this store belongs to.
    pub async fn set_owner(&self, owner: &StoreOwner) -> io::Result<()> {
        let data = Stored(UserData { owner: Some(owner.clone()) });
        self.write_durably("save store owner", |log| log.save_user_data(Some(data)).map(|_| ())).await
    }

    /// Forgets an owner record that no identity record ever confirmed (a start-up that stopped
    /// between the two writes; the id never voted, so dropping it loses nothing).
    pub async fn clear_owner(&self) -> io::Result<()> {
        self.write_durably("clear store owner", |log| log.save_user_data(None).map(|_| ())).await
    }

    /// Records, durably, a vote for `me` one term past `last`'s leader: what a node holding a
    /// restored state at `last` needs so its first election runs in a term later than every
    /// entry it holds.
    pub async fn seed_vote_after(&self, last: &LogId, me: u64) -> io::Result<()> {
        self.seed_vote(crate::raft::log_id_term(last) + 1, me).await
    }

    /// Records, durably, an uncommitted vote for `voted_for` in `term`: this node's first
    /// election runs in a later term.
    pub async fn seed_vote(&self, term: u64, voted_for: u64) -> io::Result<()> {
        let vote = Vote::new(term, voted_for);
        self.write_durably("save vote", |log| log.save_vote(Stored(vote)).map(|_| ())).await
    }

    /// True when the log holds a vote, entries or a purge point: Raft state worth keeping.
    pub fn has_raft_state(&self) -> io::Result<bool> {
        let log = self.lock()?;
        let state = log.log_state();
        Ok(state.vote().is_some() || state.last().is_some() || state.purged().is_some())
    }

    /// Index of the last entry in the log, or of the last purged one.
    pub fn last_index(&self) -> io::Result<u64> {
        Ok(self.last_log_id()?.map(|l| l.index).unwrap_or(0))
    }

    /// Id of the last entry in the log, or of the last purged one.
    pub fn last_log_id(&self) -> io::Result<Option<LogId>> {
        let log = self.lock()?;
        let state = log.log_state();
        Ok(state.last().or(state.purged()).map(|l| l.0))
    }
}

/// `range` as raft-log's half-open `[from, to)`.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = index_range(&range);
        if from >= to {
            return Ok(Vec::new());
        }
        let stored = {
            let log = self.lock()?;
            log.read(from, to).collect::<io::Result<Vec<_>>>().map_err(|e| self.fault("read raft log", e))?
        };
        stored
            .into_iter()
            .map(|(log_id, payload)| Ok(Entry { log_id: log_id.0, payload: decode("log entry", &payload.0)? }))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.vote()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.lock()?;
        let state = log.log_state();
        let last_purged_log_id = state.purged().map(|l| l.0);
        let last_log_id = state.last().map(|l| l.0).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.write_durably("save vote", |log| log.save_vote(Stored(vote)).map(|_| ())).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on purpose: a lost `committed` only means re-deriving it from a quorum.
        // raft-log keeps it monotonic and within the log; a value it would refuse (none, older,
        // or past the last entry, as when a snapshot runs ahead of the log) is simply not kept.
        let Some(committed) = committed else { return Ok(()) };
        let committed = Stored(committed);
        let mut log = self.lock()?;
        let state = log.log_state();
        if state.committed() >= Some(&committed) || state.last() < Some(&committed) {
            return Ok(());
        }
        log.commit(committed).map(|_| ()).map_err(|e| self.fault("save committed", e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock()?.log_state().committed().map(|l| l.0))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        for entry in entries {
            batch.push((Stored(entry.log_id), Payload(encode(&entry.payload)?.into())));
        }
        let mut log = self.lock()?;
        log.append(batch).map_err(|e| self.fault("append to raft log", e))?;
        // The callback is the durability acknowledgement: the flush thread calls it after the
        // fsync. Nothing here waits for it.
        let flushed = Flushed::new(Notify::Append(callback), Some(&self.inner));
        log.flush(true, Some(flushed)).map_err(|e| self.fault("flush raft log", e))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_next = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        {
            let log = self.lock()?;
            let last_next = log.log_state().last().map(|l| l.0.index + 1).unwrap_or(0);
            if last_next <= keep_next {
                return Ok(());
            }
        }
        self.write_durably("truncate raft log", |log| log.truncate(keep_next).map(|_| ())).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Not awaited: the purge record goes out with the next fsync, and only then are chunk
        // files holding nothing but purged entries deleted.
        let mut log = self.lock()?;
        log.purge(Stored(log_id)).map_err(|e| self.fault("purge raft log", e))?;
        log.flush(false, None).map_err(|e| self.fault("purge raft log", e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use std::path::PathBuf;

    use super::*;
    use crate::store::{open, StoreOptions};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, node, index)
    }

    fn blank(term: u64, node: u64, index: u64) -> Entry {
        Entry::new_blank(log_id(term, node, index))
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry>) {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await.expect("append");
        rx.await.expect("callback").expect("flushed");
    }

    fn owner() -> StoreOwner {
        StoreOwner { cluster_id: "c1".into(), node_id: 7 }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_vote_and_owner_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            assert!(!log.has_raft_state().expect("state"));
            log.set_owner(&owner()).await.expect("owner");
            log.save_vote(&Vote::new(3, 7)).await.expect("vote");
            append(&mut log, (1..=20).map(|i| blank(3, 7, i)).collect()).await;
            log.save_committed(Some(log_id(3, 7, 15))).await.expect("committed");
        }
        let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert!(log.has_raft_state().expect("state"));
        assert_eq!(log.owner().expect("owner"), Some(owner()));
        assert_eq!(log.vote().expect("vote"), Some(Vote::new(3, 7)));
        assert_eq!(log.last_index().expect("last"), 20);
        let entries = log.try_get_log_entries(5..=6).await.expect("read");
        assert_eq!(entries.iter().map(|e| e.log_id()).collect::<Vec<_>>(), [log_id(3, 7, 5), log_id(3, 7, 6)]);
        let state = log.get_log_state().await.expect("state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, Some(log_id(3, 7, 20))));
        // `committed` is not fsync'd by itself (no append followed it here), so it may or may
        // not have reached the file; it is never ahead of what was saved.
        assert!(log.read_committed().await.expect("committed") <= Some(log_id(3, 7, 15)));

        log.clear_owner().await.expect("clear");
        drop((log, _sm));
        let (log, _sm) = open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(log.owner().expect("owner"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_and_truncate_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            append(&mut log, (1..=10).map(|i| blank(1, 1, i)).collect()).await;
            log.purge(log_id(1, 1, 4)).await.expect("purge");
            log.truncate_after(Some(log_id(1, 1, 8))).await.expect("truncate");
            append(&mut log, vec![blank(2, 2, 9)]).await;
            let state = log.get_log_state().await.expect("state");
            assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 1, 4)), Some(log_id(2, 2, 9))));
        }
        let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("reopen");
        let state = log.get_log_state().await.expect("state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 1, 4)), Some(log_id(2, 2, 9))));
        let ids: Vec<_> = log.try_get_log_entries(..).await.expect("read").iter().map(|e| e.log_id()).collect();
        assert_eq!(ids, [5, 6, 7, 8].map(|i| log_id(1, 1, i)).into_iter().chain([log_id(2, 2, 9)]).collect::<Vec<_>>());

        // Purging past the last entry empties the log; the purge point stays the last log id.
        log.purge(log_id(2, 2, 12)).await.expect("purge all");
        append(&mut log, vec![blank(2, 2, 13)]).await;
        drop((log, _sm));
        let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("reopen");
        let state = log.get_log_state().await.expect("state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(2, 2, 12)), Some(log_id(2, 2, 13))));
        assert_eq!(log.last_index().expect("last"), 13);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_read_back_from_files_when_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = (CACHE_MAX_ITEMS + CHUNK_MAX_RECORDS + 100) as u64;
        {
            let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            for start in (1..=n).step_by(1000) {
                append(&mut log, (start..(start + 1000).min(n + 1)).map(|i| blank(1, 1, i)).collect()).await;
            }
            let entries = log.try_get_log_entries(1..3).await.expect("read evicted");
            assert_eq!(entries.iter().map(|e| e.log_id()).collect::<Vec<_>>(), [log_id(1, 1, 1), log_id(1, 1, 2)]);
            let stat = log.lock().expect("lock").stat();
            assert!(stat.payload_cache_item_count < n, "the cache is bounded: {}", stat.payload_cache_item_count);
        }
        let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("reopen");
        let entries = log.try_get_log_entries(..).await.expect("read all");
        assert_eq!(entries.len() as u64, n);
        assert!(entries.iter().enumerate().all(|(i, e)| e.log_id() == log_id(1, 1, i as u64 + 1)));
    }

    /// The chunk files of a closed log, largest first.
    fn chunk_files(data: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(data.join(DIR))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).expect("meta").len()));
        files
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_record_is_refused_as_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            log.save_vote(&Vote::new(1, 1)).await.expect("vote");
            append(&mut log, (1..=50).map(|i| blank(1, 1, i)).collect()).await;
        }
        let chunk = chunk_files(dir.path()).remove(0);
        let mut bytes = std::fs::read(&chunk).expect("read");
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4] {
            *b ^= 0x5a;
        }
        std::fs::write(&chunk, &bytes).expect("write");
        match open(dir.path(), &StoreOptions::default()) {
            Err(StoreError::Corrupt { path, detail }) => {
                assert_eq!(path, dir.path().join(DIR));
                assert!(!detail.is_empty());
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("a damaged log opened"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_length_in_the_last_record_is_corrupt_not_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            append(&mut log, vec![blank(1, 1, 1), blank(1, 1, 2)]).await;
        }
        let chunk = chunk_files(dir.path()).remove(0);
        let mut bytes = std::fs::read(&chunk).expect("read");
        // The length of the last value in the file (a flipped high bit would push it past the
        // file's end): find its guard pattern.
        let at = (0..bytes.len() - 8)
            .rev()
            .find(|&i| {
                let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
                let guard = u32::from_be_bytes(bytes[i + 4..i + 8].try_into().unwrap());
                guard == !len && len < 64
            })
            .expect("a framed value");
        bytes[at] ^= 0x40;
        std::fs::write(&chunk, &bytes).expect("write");
        assert!(matches!(open(dir.path(), &StoreOptions::default()), Err(StoreError::Corrupt { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_cut_short_at_the_end_is_dropped() {
        // What a crash in the middle of a write leaves: the last record was never fsync'd, so
        // never acknowledged; everything before it is kept.
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            append(&mut log, (1..=5).map(|i| blank(1, 1, i)).collect()).await;
        }
        // The last chunk holds only the checkpoint written at close; the entries are in the
        // first. Cut the entries' chunk, which is then the tail once the later one is gone.
        let mut files = chunk_files(dir.path());
        files.sort();
        for later in &files[1..] {
            std::fs::remove_file(later).expect("remove");
        }
        let len = std::fs::metadata(&files[0]).expect("meta").len();
        std::fs::OpenOptions::new().write(true).open(&files[0]).expect("open").set_len(len - 3).expect("cut");
        let (mut log, _sm) = open(dir.path(), &StoreOptions::default()).expect("opens after a torn write");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 4)));
    }

    #[test]
    fn log_ids_and_votes_round_trip_exactly() {
        use codeq::{Decode, Encode};
        for id in [log_id(0, 0, 0), log_id(7, u64::MAX, 9), log_id(u64::MAX, 3, u64::MAX)] {
            let mut buf = Vec::new();
            Stored(id).encode(&mut buf).expect("encode");
            assert_eq!(Stored::<LogId>::decode(buf.as_slice()).expect("decode").0, id);
        }
        let mut committed = Vote::new(9, 2);
        committed.committed = true;
        for vote in [Vote::new(1, 1), committed] {
            let mut buf = Vec::new();
            Stored(vote).encode(&mut buf).expect("encode");
            assert_eq!(Stored::<Vote>::decode(buf.as_slice()).expect("decode").0, vote);
        }
    }
}
