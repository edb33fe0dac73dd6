//! Applying committed entries: a run of entries at a time, into the write-back layers.
//!
//! A run (up to [`MAX_APPLY_RUN`] entries openraft hands over together) collects its writes
//! (the key changes, the clients' dedup sessions and the new `applied` log id) in a [`Pending`]
//! overlay, where each entry reads the writes of the ones before it, then hands them to the
//! write-back layers ([`crate::store::write_back`]) as one atomic change. They reach sled later,
//! in batches that always carry `applied` with them, so sled holds a prefix of the applied
//! entries and a crash never leaves an entry half applied.

use std::io;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{RwLock, RwLockReadGuard};

use openraft::entry::RaftEntry;
use openraft::EntryPayload;

use super::history::{Applied, EntryRevision, Event, RevisionedEvent};
use super::records::{data_key, prefixed, APPLIED, DECLARED_REPLICAS, INCARNATION, KEY_COUNT, MEMBERSHIP};
use super::sessions::{apply_command, sweep_sessions, Session, SESSION_SWEEP_EVERY};
use super::StateMachine;
use crate::raft::{self, StoredMembership};
use crate::store::command::{Command, CommandResult, KeyValue, LeaseError, StoredValue};
use crate::store::write_back::{self, Live, Merged, Writes};
use crate::store::{decode, encode, io_err};

/// Most entries applied as one change.
pub(super) const MAX_APPLY_RUN: usize = 1024;

impl StateMachine {
    /// Applies one entry into `pending` (not yet written to the tree).
    pub(super) fn apply_entry(pending: &mut Pending<'_>, entry: &raft::Entry) -> io::Result<CommandResult> {
        let log_id = entry.log_id();
        pending.start_entry();
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
        let _guard = crate::support::sync::lock(&self.inner.apply_lock);
        if let Some(e) = self.inner.write_error.borrow().clone() {
            return Err(io_err("state machine writer failed earlier", e));
        }
        // The changes are kept for watchers only while some subscriber listens.
        let mut pending = Pending::new(&self.inner.live);
        pending.keep_events = self.inner.applied.receiver_count() > 0;
        let revision_before = self.inner.revision.load(Ordering::Relaxed);
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            results.push(Self::apply_entry(&mut pending, entry)?);
        }
        let Some(last) = entries.last() else { return Ok(results) };
        pending.insert(APPLIED, encode(&Some(last.log_id()))?);
        let changed = std::mem::take(&mut pending.events);
        let revision = pending.revision()?;
        let (freeze, over_limit) = {
            let mut live = self.inner.live_mut();
            let freeze = live.absorb(pending.writes);
            if freeze {
                live.freeze();
            }
            (freeze, live.over_limit())
        };
        self.inner.applied_index.store(last.log_id().index, Ordering::Relaxed);
        self.inner.revision.store(revision, Ordering::Relaxed);
        if let Some(compacted) = pending.compacted_to {
            self.inner.compacted.store(compacted, Ordering::Relaxed);
        }
        if revision > revision_before && (!changed.is_empty() || self.inner.applied.receiver_count() > 0) {
            // No subscriber is fine: nobody watches. A run whose changes were not kept (nobody
            // listened when it began) goes out without them: a feed that subscribed meanwhile
            // sees a run it cannot follow and reads those changes from the history.
            let _ = self.inner.applied.send(Applied { revision, events: changed.into() });
        }
        if over_limit {
            // The background writer fell behind: write here rather than grow without bound.
            self.inner.metrics.record_sm_write_through();
            self.inner.write_through()?;
        } else if freeze {
            // A full channel means a wake-up is already pending; the writer takes whatever is
            // frozen when it runs.
            let _ = self.inner.write_signal.try_send(());
        }
        Ok(results)
    }
}

/// The writes of a run of entries not yet in the tree: reads see them first, so each entry of
/// the run observes the ones before it, and the run reaches the tree as one atomic batch.
pub(super) struct Pending<'a> {
    live: &'a RwLock<Live>,
    /// `None`: removed in this run.
    pub(super) writes: Writes,
    /// The revision of the entry being applied, once it changed a key.
    pub(super) entry_revision: Option<EntryRevision>,
    /// The changes of this run, in order, for watchers.
    pub(super) events: Vec<RevisionedEvent>,
    /// Whether to keep the changes in `events` (some watcher listens).
    pub(super) keep_events: bool,
    /// The revision this run compacted the history to, if it did.
    pub(super) compacted_to: Option<u64>,
}

impl<'a> Pending<'a> {
    pub(super) fn new(live: &'a RwLock<Live>) -> Self {
        Self {
            live,
            writes: Writes::new(),
            entry_revision: None,
            events: Vec::new(),
            keep_events: true,
            compacted_to: None,
        }
    }

    pub(super) fn live(&self) -> RwLockReadGuard<'a, Live> {
        crate::support::sync::read(self.live)
    }

    pub(super) fn read<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> io::Result<Option<T>> {
        match self.writes.get(key) {
            Some(Some(v)) => Ok(Some(decode(what, v)?)),
            Some(None) => Ok(None),
            None => self.live().read(what, key),
        }
    }

    pub(super) fn read_session(&self, key: &[u8]) -> io::Result<Option<Session>> {
        match self.writes.get(key) {
            Some(Some(v)) => Ok(Some(Session::decode(v)?)),
            Some(None) => Ok(None),
            None => self.live().read_with("session", key, Session::decode),
        }
    }

    /// The keys of records in `[prefix, prefix + 1)` as this run sees them, with their values.
    pub(super) fn records_with_prefix(&self, prefix: u8) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let lower = Bound::Included(vec![prefix]);
        let upper = if prefix == u8::MAX { Bound::Unbounded } else { Bound::Excluded(vec![prefix + 1]) };
        self.records_in(lower, upper)
    }

    /// The records in `(lower, upper)` as this run sees them, with their values.
    pub(super) fn records_in(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let live = self.live();
        let mut layers = vec![write_back::writes_layer(&self.writes, &lower, &upper)];
        layers.extend(live.layers(&lower, &upper));
        Merged::new(layers).collect()
    }

    /// The current value of user key `key` as this run sees it.
    pub(super) fn value(&self, key: &[u8]) -> io::Result<Option<StoredValue>> {
        self.read("value", &data_key(key))
    }

    /// Writes user key `key` (whose value is `current`) at the entry's revision, recording the
    /// change; returns the revision and the stored value.
    pub(super) fn put_key(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: u64,
        current: Option<StoredValue>,
    ) -> io::Result<(u64, StoredValue)> {
        let revision = self.change_revision()?;
        let stored = StoredValue {
            value,
            create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
            mod_revision: revision,
            version: current.as_ref().map_or(1, |c| c.version + 1),
            lease,
        };
        if current.is_none() {
            self.add_to_key_count(1)?;
        }
        self.attach(key, current.as_ref(), lease)?;
        self.insert(&data_key(key), encode(&stored)?);
        let event = Event { key: key.to_vec(), after: Some(stored.clone()), before: current };
        self.record_change(&event)?;
        Ok((revision, stored))
    }

    /// Deletes user key `key` (whose value is `current`) at the entry's revision, recording the
    /// change; returns the revision.
    pub(super) fn delete_key(&mut self, key: &[u8], current: StoredValue) -> io::Result<u64> {
        self.add_to_key_count(-1)?;
        self.attach(key, Some(&current), 0)?;
        self.remove(&data_key(key));
        self.record_change(&Event { key: key.to_vec(), after: None, before: Some(current) })
    }

    fn add_to_key_count(&mut self, delta: i64) -> io::Result<()> {
        let count = self.read::<u64>("key count", KEY_COUNT)?.unwrap_or(0).saturating_add_signed(delta);
        self.insert(KEY_COUNT, encode(&count)?);
        Ok(())
    }

    pub(super) fn insert(&mut self, key: &[u8], value: Vec<u8>) {
        self.writes.insert(key.to_vec(), Some(value));
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
}

/// The mod revision a compare sees: 0 for an absent key.
fn mod_revision(current: &Option<StoredValue>) -> u64 {
    current.as_ref().map_or(0, |c| c.mod_revision)
}

/// Executes one command against `pending` (its session was checked); returns what the client
/// is told.
pub(super) fn execute(pending: &mut Pending<'_>, index: u64, cmd: &Command) -> io::Result<CommandResult> {
    match cmd {
        Command::Put { key, value, if_mod_revision, lease, .. } => {
            if *lease != 0 && !pending.lease_exists(*lease)? {
                return Ok(CommandResult::LeaseRefused(LeaseError::NotFound(*lease)));
            }
            let current = pending.value(key)?;
            if if_mod_revision.is_some_and(|expected| mod_revision(&current) != expected) {
                let current = current.map(|stored| KeyValue { key: key.clone(), stored });
                return Ok(CommandResult::Put { index, revision: pending.revision()?, succeeded: false, current });
            }
            let (revision, stored) = pending.put_key(key, value.clone(), *lease, current)?;
            Ok(CommandResult::Put {
                index,
                revision,
                succeeded: true,
                current: Some(KeyValue { key: key.clone(), stored }),
            })
        }
        Command::Delete { key, if_mod_revision, .. } => {
            let current = pending.value(key)?;
            let previous = current.clone().map(|stored| KeyValue { key: key.clone(), stored });
            if if_mod_revision.is_some_and(|expected| mod_revision(&current) != expected) {
                let revision = pending.revision()?;
                return Ok(CommandResult::Delete { index, revision, succeeded: false, deleted: false, previous });
            }
            let deleted = current.is_some();
            if let Some(current) = current {
                pending.delete_key(key, current)?;
            }
            Ok(CommandResult::Delete { index, revision: pending.revision()?, succeeded: true, deleted, previous })
        }
        Command::Compact { revision } => pending.compact(index, *revision),
        Command::Txn(txn) => pending.txn(index, txn),
        Command::LeaseGrant { id, ttl_seconds } => pending.lease_grant(index, *id, *ttl_seconds),
        Command::LeaseRevoke { id } => pending.lease_revoke(index, *id),
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

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::super::test_support::{apply, in_sled, live, put, puts, version};
    use super::*;
    use crate::store::{open, StoreOptions};

    #[test]
    fn versions_count_writes_and_compare_uses_the_mod_revision() {
        let (_d, t) = live();
        assert_eq!(version(&apply(&t, 5, &put("k", "a", None, None))), 1);
        assert_eq!(version(&apply(&t, 6, &put("k", "b", None, None))), 2);
        let failed = apply(&t, 7, &put("k", "c", Some(1), None));
        assert!(matches!(failed, CommandResult::Put { succeeded: false, revision: 2, .. }), "{failed:?}");
        let ok = apply(&t, 8, &put("k", "c", Some(2), None));
        assert!(
            matches!(&ok, CommandResult::Put { succeeded: true, revision: 3, current: Some(kv), .. } if kv.stored.create_revision == 1 && kv.stored.mod_revision == 3),
            "{ok:?}"
        );
    }

    #[test]
    fn a_run_of_entries_sees_its_own_writes() {
        let (_d, t) = live();
        let mut pending = Pending::new(&t);
        pending.start_entry();
        let first = apply_command(&mut pending, 1, &put("k", "a", None, Some((7, 1)))).expect("apply");
        pending.start_entry();
        let second = apply_command(&mut pending, 2, &put("k", "b", None, Some((7, 2)))).expect("apply");
        pending.start_entry();
        let cas = apply_command(&mut pending, 3, &put("k", "c", Some(2), None)).expect("apply");
        pending.start_entry();
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
}
