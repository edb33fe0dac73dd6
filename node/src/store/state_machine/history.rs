//! Revisions and the retained history of changes.
//!
//! The store has one revision, a counter that every entry changing at least one key moves on
//! by one; all the changes of that entry share it (told apart by a sub-index), so an entry
//! is one atomic change at one revision. Each key records the revision that created it, the
//! one that last changed it, and its version (writes since creation). Entries that change no
//! key (a failed compare, a delete of an absent key, a compaction, membership) take none.
//!
//! Every change is kept as an [`Event`] under `h<revision><sub>` with the key's value after
//! and before it, in the same tree as the keys, so the history survives restarts and travels
//! in snapshots. A read at a past revision `R` is the current state with, for every key
//! changed after `R`, the value before its first change after `R`; a watch replays events
//! from its start revision. A compaction to `C` drops the events before `C`: reads at `C` and
//! later, and watches from `C` on, still work; older ones are refused with
//! [`RevisionError::Compacted`], naming `C`.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::apply::Pending;
use super::records::{history_key, history_revision, Records, COMPACTED, HISTORY, REVISION};
use crate::store::command::{CommandResult, KeyValue, RevisionError, StoredValue};
use crate::store::write_back::{Live, Merged};
use crate::store::{decode, encode};

/// One change of one key, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The key after the change; `None`: deleted.
    pub after: Option<StoredValue>,
    /// The key before the change; `None`: it did not exist.
    pub before: Option<StoredValue>,
}

impl Event {
    /// The key after the change, if it was not a delete.
    pub fn kv(&self) -> Option<KeyValue> {
        self.after.clone().map(|stored| KeyValue { key: self.key.clone(), stored })
    }

    /// The key before the change, if it existed.
    pub fn prev_kv(&self) -> Option<KeyValue> {
        self.before.clone().map(|stored| KeyValue { key: self.key.clone(), stored })
    }
}

/// An event with the revision it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionedEvent {
    pub revision: u64,
    pub event: Event,
}

/// Applied runs a slow subscriber may fall behind by before it misses some (and reads them
/// from the history instead).
pub const APPLIED_BACKLOG: usize = 1024;

/// What an applied run (or an installed snapshot) changed: the store is at `revision` now.
/// `events` are the changes of the run, in order; empty after a snapshot install, whose
/// changes a watcher reads from the history.
#[derive(Debug, Clone)]
pub struct Applied {
    pub revision: u64,
    pub events: std::sync::Arc<[RevisionedEvent]>,
}

/// The revision of the entry being applied, once it changed a key.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryRevision {
    pub revision: u64,
    next_sub: u32,
}

impl Pending<'_> {
    /// The store's revision as this run sees it.
    pub(super) fn revision(&self) -> io::Result<u64> {
        revision(self)
    }

    /// The revision a change of the entry being applied takes: the entry's own once it changed
    /// a key, the next one otherwise.
    pub(super) fn change_revision(&self) -> io::Result<u64> {
        match self.entry_revision {
            Some(r) => Ok(r.revision),
            None => Ok(self.revision()? + 1),
        }
    }

    /// Starts applying a new entry: its first change moves the revision on.
    pub(super) fn start_entry(&mut self) {
        self.entry_revision = None;
    }

    /// Records one change of the entry being applied in the history (at
    /// [`Self::change_revision`]) and moves the store's revision to it.
    pub(super) fn record_change(&mut self, event: &Event) -> io::Result<u64> {
        let mut at = match self.entry_revision {
            Some(r) => r,
            None => {
                let revision = self.revision()? + 1;
                self.insert(REVISION, encode(&revision)?);
                EntryRevision { revision, next_sub: 0 }
            }
        };
        self.insert(&history_key(at.revision, at.next_sub), encode(event)?);
        if self.keep_events {
            self.events.push(RevisionedEvent { revision: at.revision, event: event.clone() });
        }
        at.next_sub += 1;
        self.entry_revision = Some(at);
        Ok(at.revision)
    }

    /// The revision before which the history is dropped (0: nothing dropped), as this run
    /// sees it.
    pub(super) fn compacted(&self) -> io::Result<u64> {
        compacted(self)
    }

    /// Drops the history before `revision`.
    pub(super) fn compact(&mut self, index: u64, revision: u64) -> io::Result<CommandResult> {
        let (current, compacted) = (self.revision()?, self.compacted()?);
        if revision > current {
            return Ok(CommandResult::CompactRefused(RevisionError::Future { requested: revision, current }));
        }
        if revision <= compacted {
            return Ok(CommandResult::CompactRefused(RevisionError::Compacted { requested: revision, compacted }));
        }
        let lower = Bound::Included(vec![HISTORY]);
        let upper = Bound::Excluded(history_key(revision, 0));
        for (key, _) in self.records_in(lower, upper)? {
            self.remove(&key);
        }
        self.insert(COMPACTED, encode(&revision)?);
        self.compacted_to = Some(revision);
        Ok(CommandResult::Compacted { index, revision: current, compacted: revision })
    }
}

/// The store's revision.
pub(super) fn revision(records: &impl Records) -> io::Result<u64> {
    Ok(records.read::<u64>("revision", REVISION)?.unwrap_or(0))
}

/// The revision before which the history is dropped (0: nothing dropped).
pub(super) fn compacted(records: &impl Records) -> io::Result<u64> {
    Ok(records.read::<u64>("compacted revision", COMPACTED)?.unwrap_or(0))
}

/// Checks that `requested` can be read: not compacted away, not in the future.
pub(super) fn check_readable(live: &Live, requested: u64) -> io::Result<Result<(), RevisionError>> {
    let (current, compacted) = (revision(live)?, compacted(live)?);
    if requested > current {
        return Ok(Err(RevisionError::Future { requested, current }));
    }
    if requested < compacted {
        return Ok(Err(RevisionError::Compacted { requested, compacted }));
    }
    Ok(Ok(()))
}

/// The events from revision `from` on, in order: whole revisions, stopping after the first
/// revision that brings their encoded size to `max_bytes` or more.
pub(super) fn events_from(live: &Live, from: u64, max_bytes: usize) -> io::Result<Vec<RevisionedEvent>> {
    let lower = Bound::Included(history_key(from, 0));
    let upper = Bound::Excluded(vec![HISTORY + 1]);
    let mut events: Vec<RevisionedEvent> = Vec::new();
    let mut bytes = 0usize;
    for item in Merged::new(live.layers(&lower, &upper)) {
        let (key, value) = item?;
        let revision = history_revision(&key)?;
        if bytes >= max_bytes && events.last().is_some_and(|e| e.revision != revision) {
            break;
        }
        bytes = bytes.saturating_add(value.len());
        events.push(RevisionedEvent { revision, event: decode("history event", &value)? });
    }
    Ok(events)
}

/// For every key in `[lower, upper)` changed after revision `at`, its value at `at` (`None`:
/// absent then): the value before its first change after `at`.
pub(super) fn values_at(
    live: &Live,
    at: u64,
    in_range: impl Fn(&[u8]) -> bool,
) -> io::Result<BTreeMap<Vec<u8>, Option<StoredValue>>> {
    let mut values = BTreeMap::new();
    for event in events_from(live, at + 1, usize::MAX)? {
        if in_range(&event.event.key) && !values.contains_key(&event.event.key) {
            values.insert(event.event.key, event.event.before);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::*;
    use crate::raft;
    use crate::store::command::{Command, CommandResult};
    use crate::store::state_machine::test_support::{entry, put};
    use crate::store::state_machine::StateMachine;
    use crate::store::{open, StoreOptions};

    fn delete(key: &str) -> Command {
        Command::Delete { key: key.into(), if_mod_revision: None, write_id: None }
    }

    fn store() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
        (dir, sm)
    }

    /// Applies `cmds` as entries from index 1 on, one run.
    fn apply_all(sm: &StateMachine, cmds: &[Command]) -> Vec<CommandResult> {
        let entries: Vec<raft::Entry> = cmds.iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c.clone())).collect();
        sm.apply_run(&entries).expect("apply")
    }

    fn value_at(sm: &StateMachine, key: &str, at: u64) -> Option<String> {
        let read = sm.get_at(key.as_bytes(), Some(at)).expect("read").expect("readable");
        read.value.map(|kv| String::from_utf8(kv.stored.value).expect("utf-8"))
    }

    #[test]
    fn only_entries_that_change_a_key_take_a_revision() {
        let (_d, sm) = store();
        let results = apply_all(
            &sm,
            &[
                put("a", "1", None, None),
                delete("absent"),
                put("a", "2", Some(7), None),
                put("b", "1", None, None),
                delete("a"),
            ],
        );
        let revisions: Vec<u64> = results
            .iter()
            .map(|r| match r {
                CommandResult::Put { revision, .. } | CommandResult::Delete { revision, .. } => *revision,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(revisions, [1, 1, 1, 2, 3], "a delete of nothing and a failed compare take none");
        assert_eq!(sm.revision().expect("revision"), 3);
        let events = sm.events_from(1, usize::MAX).expect("read").expect("kept");
        let summary: Vec<(u64, &[u8], bool, bool)> = events
            .iter()
            .map(|e| (e.revision, e.event.key.as_slice(), e.event.before.is_some(), e.event.after.is_some()))
            .collect();
        assert_eq!(summary, [(1, &b"a"[..], false, true), (2, b"b", false, true), (3, b"a", true, false)]);
    }

    #[test]
    fn past_revisions_read_as_they_were_until_compacted() {
        let (_d, sm) = store();
        apply_all(
            &sm,
            &[put("k", "v1", None, None), put("k", "v2", None, None), delete("k"), put("k", "v4", None, None)],
        );
        let expected = [(1, Some("v1")), (2, Some("v2")), (3, None), (4, Some("v4"))];
        for (at, value) in expected {
            assert_eq!(value_at(&sm, "k", at).as_deref(), value, "at {at}");
        }
        let past = sm.get_at(b"k", Some(2)).expect("read").expect("readable");
        assert_eq!(past.revision, 2);
        assert_eq!(
            past.value.map(|kv| (kv.stored.create_revision, kv.stored.mod_revision, kv.stored.version)),
            Some((1, 2, 2))
        );
        assert_eq!(sm.get_at(b"k", Some(5)).expect("read"), Err(RevisionError::Future { requested: 5, current: 4 }));

        let compacted = sm.apply_run(&[entry(10, Command::Compact { revision: 3 })]).expect("compact");
        assert_eq!(compacted, [CommandResult::Compacted { index: 10, revision: 4, compacted: 3 }]);
        assert_eq!(
            sm.get_at(b"k", Some(2)).expect("read"),
            Err(RevisionError::Compacted { requested: 2, compacted: 3 })
        );
        assert_eq!(value_at(&sm, "k", 3), None, "the compaction revision itself stays readable");
        assert_eq!(value_at(&sm, "k", 4).as_deref(), Some("v4"));
        assert_eq!(sm.events_from(2, 10).expect("read"), Err(RevisionError::Compacted { requested: 2, compacted: 3 }));
        assert_eq!(sm.events_from(3, usize::MAX).expect("read").expect("kept").len(), 2, "revisions 3 and 4");
        let first = sm.events_from(3, 1).expect("read").expect("kept");
        assert_eq!(first.iter().map(|e| e.revision).collect::<Vec<_>>(), [3], "a byte budget ends at a whole revision");
        let again = sm.apply_run(&[entry(11, Command::Compact { revision: 2 })]).expect("compact");
        assert_eq!(again, [CommandResult::CompactRefused(RevisionError::Compacted { requested: 2, compacted: 3 })]);
        let future = sm.apply_run(&[entry(12, Command::Compact { revision: 9 })]).expect("compact");
        assert_eq!(future, [CommandResult::CompactRefused(RevisionError::Future { requested: 9, current: 4 })]);
        let page = sm.scan_at(Bound::Unbounded, Bound::Unbounded, 10, None).expect("scan").expect("now");
        assert_eq!(page.revision, 4);
    }
}

#[cfg(test)]
mod properties {
    //! Reads at every retained revision against a model that keeps a copy of the whole state
    //! after every revision (proptest).

    use std::collections::BTreeMap;
    use std::ops::Bound;

    use proptest::prelude::*;

    use crate::raft;
    use crate::store::command::Command;
    use crate::store::state_machine::test_support::{entry, put_bytes};
    use crate::store::{open, StoreOptions};

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8),
        Delete(u8),
        Compact(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..5).prop_map(Op::Put),
            2 => (0u8..5).prop_map(Op::Delete),
            1 => (0u64..30).prop_map(Op::Compact),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_retained_revision_reads_as_the_model_and_events_replay_it(
            ops in prop::collection::vec(op(), 1..40),
            run in 1usize..6,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
            // states[r]: the whole keyspace at revision r.
            let mut states: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = vec![BTreeMap::new()];
            let mut compacted = 0u64;
            let cmds: Vec<Command> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| match op {
                    Op::Put(k) => put_bytes(vec![b'k', *k], &format!("v{i}"), None, None),
                    Op::Delete(k) => Command::Delete { key: vec![b'k', *k], if_mod_revision: None, write_id: None },
                    Op::Compact(r) => Command::Compact { revision: *r },
                })
                .collect();
            let entries: Vec<raft::Entry> = cmds.iter().enumerate().map(|(i, c)| entry(i as u64 + 1, c.clone())).collect();
            for chunk in entries.chunks(run) {
                sm.apply_run(chunk).expect("apply");
            }
            for cmd in &cmds {
                let mut next = states.last().cloned().unwrap_or_default();
                match cmd {
                    Command::Put { key, value, .. } => {
                        next.insert(key.clone(), value.clone());
                        states.push(next);
                    }
                    Command::Delete { key, .. } if next.remove(key).is_some() => states.push(next),
                    Command::Compact { revision } if *revision < states.len() as u64 && *revision > compacted => {
                        compacted = *revision;
                    }
                    _ => {}
                }
            }
            let head = states.len() as u64 - 1;
            prop_assert_eq!(sm.revision().expect("revision"), head);
            prop_assert_eq!(sm.compacted(), compacted);
            for at in 0..=head + 1 {
                let read = sm.scan_at(Bound::Unbounded, Bound::Unbounded, 100, Some(at)).expect("scan");
                if at > head || (at < compacted) {
                    prop_assert!(read.is_err(), "revision {} of {}..={} must be refused", at, compacted, head);
                    continue;
                }
                let page = read.expect("readable");
                let got: BTreeMap<Vec<u8>, Vec<u8>> =
                    page.value.kvs.into_iter().map(|kv| (kv.key, kv.stored.value)).collect();
                prop_assert_eq!(&got, &states[at as usize], "at revision {}", at);
            }
            // Replaying the kept events over the state at the compaction revision gives now.
            {
                let from = compacted.max(1);
                let events = sm.events_from(from, usize::MAX).expect("read").expect("kept");
                let mut state = states[(from - 1) as usize].clone();
                let mut last = 0;
                for e in events {
                    prop_assert!(e.revision >= last, "in order");
                    last = e.revision;
                    let before = states[e.revision as usize - 1].get(&e.event.key);
                    prop_assert_eq!(e.event.before.as_ref().map(|b| &b.value), before, "the value before {}", e.revision);
                    match e.event.after {
                        Some(after) => { state.insert(e.event.key, after.value); }
                        None => { state.remove(&e.event.key); }
                    }
                    prop_assert_eq!(&state, &states[e.revision as usize], "after revision {}", e.revision);
                }
            }
        }
    }
}
