//! The Raft log and vote, stored in sled.
//!
//! Durability rule (openraft's contract, and what makes an acknowledged write survive a crash):
//! `append` calls its callback only after the entries are fsync'd (`sled::Db::flush_async`),
//! and `save_vote` returns only after the vote is fsync'd. Because sled flushes every tree at
//! once, several appends that arrive together share one fsync (group commit).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;

use super::{decode, encode, io_err};
use crate::metrics::{FsyncSite, Metrics};
use crate::raft::{Entry, LogId, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const OWNER: &[u8] = b"owner";

/// Which node incarnation this store belongs to. Written into the store before the identity
/// record is written to the volume, so an identity record whose store lacks it means the store
/// was wiped or replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreOwner {
    pub cluster_id: String,
    pub node_id: u64,
}

/// The Raft log store. Cheap to clone: clones share the same sled trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    metrics: Arc<Metrics>,
}

impl LogStore {
    pub(crate) fn open(db: &sled::Db, metrics: Arc<Metrics>) -> sled::Result<Self> {
        Ok(Self { db: db.clone(), log: db.open_tree("raft_log")?, meta: db.open_tree("raft_meta")?, metrics })
    }

    /// The persisted vote, if any.
    pub fn vote(&self) -> io::Result<Option<Vote>> {
        self.read_meta("vote", VOTE)
    }

    /// The node incarnation this store belongs to, if recorded.
    pub fn owner(&self) -> io::Result<Option<StoreOwner>> {
        self.read_meta("store owner", OWNER)
    }

    /// Records (durably) which node incarnation this store belongs to.
    pub async fn set_owner(&self, owner: &StoreOwner) -> io::Result<()> {
        self.meta.insert(OWNER, encode(owner)?).map_err(|e| io_err("save store owner", e))?;
        self.flush().await
    }

    /// Forgets an owner record that no identity record ever confirmed (a start-up that stopped
    /// between the two writes; the id never voted, so dropping it loses nothing).
    pub async fn clear_owner(&self) -> io::Result<()> {
        self.meta.remove(OWNER).map_err(|e| io_err("clear store owner", e))?;
        self.flush().await
    }

    /// Records, durably, a vote for `me` one term past `last`'s leader: what a node holding a
    /// restored state at `last` needs so its first election runs in a term later than every
    /// entry it holds.
    pub async fn seed_vote_after(&self, last: &LogId, me: u64) -> io::Result<()> {
        let vote = Vote::new(crate::raft::log_id_term(last) + 1, me);
        self.meta.insert(VOTE, encode(&vote)?).map_err(|e| io_err("save vote", e))?;
        self.flush().await
    }

    /// True when the log holds a vote, entries or a purge point: Raft state worth keeping.
    pub fn has_raft_state(&self) -> io::Result<bool> {
        Ok(self.vote()?.is_some()
            || !self.log.is_empty()
            || self.meta.contains_key(LAST_PURGED).map_err(|e| io_err("read", e))?)
    }

    /// Index of the last entry in the log, or of the last purged one.
    pub fn last_index(&self) -> io::Result<u64> {
        let last = self.last_log_id()?.or(self.read_meta::<LogId>("last_purged", LAST_PURGED)?);
        Ok(last.map(|l| l.index).unwrap_or(0))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(|e| io_err(what, e))? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        match self.log.last().map_err(|e| io_err("read last log entry", e))? {
            Some((_, bytes)) => {
                let entry: Entry = decode("log entry", &bytes)?;
                Ok(Some(entry.log_id()))
            }
            None => Ok(None),
        }
    }

    async fn flush(&self) -> io::Result<()> {
        let start = Instant::now();
        let result = self.db.flush_async().await;
        self.metrics.record_fsync(FsyncSite::Log, start.elapsed());
        result.map(|_| ()).map_err(|e| io_err("fsync raft log", e))
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn to_key_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |b: Bound<&u64>| match b {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mut entries = Vec::new();
        for item in self.log.range(to_key_range(&range)) {
            let (_, bytes) = item.map_err(|e| io_err("read raft log", e))?;
            entries.push(decode("log entry", &bytes)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.vote()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta("last_purged", LAST_PURGED)?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta.insert(VOTE, encode(vote)?).map_err(|e| io_err("save vote", e))?;
        self.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed on purpose: a lost `committed` only means re-deriving it from a quorum.
        match committed {
            Some(c) => self.meta.insert(COMMITTED, encode(&c)?).map(|_| ()),
            None => self.meta.remove(COMMITTED).map(|_| ()),
        }
        .map_err(|e| io_err("save committed", e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read_meta("committed", COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.index()), encode(&entry)?);
        }
        self.log.apply_batch(batch).map_err(|e| io_err("append to raft log", e))?;
        // The callback is the durability acknowledgement: only after the fsync.
        let result = self.flush().await;
        let reported = result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(reported);
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(from)..) {
            let (key, _) = item.map_err(|e| io_err("truncate raft log", e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| io_err("truncate raft log", e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are never read again, so a
        // crash between the two steps leaves only garbage, never a hole.
        self.meta.insert(LAST_PURGED, encode(&log_id)?).map_err(|e| io_err("save last purged", e))?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| io_err("purge raft log", e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| io_err("purge raft log", e))
    }
}
