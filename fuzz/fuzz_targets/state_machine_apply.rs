//! The state machine's apply of arbitrary command sequences, in arbitrary runs (openraft hands
//! entries over in runs, each applied as one sled batch with a `Pending` overlay), against a
//! fresh store in a temporary directory, checked against a model written from the spec:
//!
//! - every result equals the model's: versions count writes; create/mod revisions; the store
//!   revision moves on by one per entry that changes at least one key (a failed compare, a
//!   delete of an absent key, a compaction, node-id allocation and replica counts take none)
//!   and the results' `revision` is the store's after the command; compare on the mod
//!   revision; compactions to a revision past the store's or already compacted are refused;
//!   transactions (compares on version, create/mod revision, value, lease; then puts, deletes
//!   of a key or a span, ranges with a limit, each seeing the ones before it, all at one
//!   revision); node-id incarnations; the declared replica count;
//! - leases: a grant (id 0: the next id after the highest ever granted) of an id that exists is
//!   refused; a put or a transaction's chosen put naming a lease that does not exist is refused
//!   whole; a put moves its key to its lease (or none), a delete frees it; a revoke of a missing
//!   lease is refused, of one that exists deletes exactly the keys still on it, at one revision
//!   (none when it holds no key);
//! - a repeated `(client, sequence)` returns the original answer and applies nothing; the same
//!   write id on another command is refused (`WriteIdReused`); an older sequence is stale;
//! - afterwards the key count equals the number of keys, and a get of every key and a full
//!   scan equal the model; the applied index is the last entry's; the store's revision and
//!   compaction revision are the model's; a full scan at several revisions from the compaction
//!   revision to the current one equals the model's keys at that revision (and a get of every
//!   key at one of them); reads below the compaction revision are refused `Compacted`, above
//!   the current one `Future`; the kept history (`events_from`) replays to every revision's
//!   state and ends at the current one; the leases and each lease's keys are the model's.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use openraft::entry::RaftEntry;
use petkv::raft::{self, Entry, TypeConfig};
use petkv::store::command::{
    Command, CommandResult, Compare, CompareOp, CompareTarget, KeyRange, KeyValue, LeaseError, RevisionError,
    StoredValue, Txn, TxnOp, TxnOpResult, WriteId,
};
use petkv::store::{self, StoreOptions};

#[derive(Arbitrary, Debug)]
enum Op {
    Put {
        key: u8,
        value: u8,
        cas: Option<u8>,
        id: Option<(u8, u8)>,
        /// The lease ([`lease_id`]).
        lease: u8,
    },
    Delete {
        key: u8,
        cas: Option<u8>,
        id: Option<(u8, u8)>,
    },
    /// A compaction: to a valid revision, a future one, or one already compacted (see
    /// [`Model::compact_to`]).
    Compact(u8),
    Txn {
        compares: Vec<CompareSpec>,
        success: Vec<OpSpec>,
        failure: Vec<OpSpec>,
        id: Option<(u8, u8)>,
    },
    /// Sends the n-th earlier command again (a client retry).
    Retry(u8),
    AllocateNodeId(u8),
    SetReplicas(u16),
    /// A grant of lease [`lease_id`] (0: the next free id).
    LeaseGrant {
        id: u8,
        ttl: u8,
    },
    LeaseRevoke(u8),
    /// Ends the current run: the next entries go to the tree in a new batch.
    EndRun,
}

#[derive(Arbitrary, Debug)]
struct CompareSpec {
    key: u8,
    /// 0 version, 1 create revision, 2 mod revision, 3 value, 4 lease (mod 5).
    target: u8,
    /// Even: the key's real number (or value); odd: a made-up one.
    operand: u8,
    op: u8,
}

#[derive(Arbitrary, Debug)]
enum OpSpec {
    Put { key: u8, value: u8, prev_kv: bool, lease: u8 },
    Delete { range: RangeSpec, prev_kv: bool },
    Range { range: RangeSpec, limit: u8 },
}

#[derive(Arbitrary, Debug)]
enum RangeSpec {
    Key(u8),
    /// `[start, end)`; `None`: to the last key. Inverted and empty spans too (the API refuses
    /// them, the state machine must cover no key).
    Span(u8, Option<u8>),
}

fn key(k: u8) -> Vec<u8> {
    match k {
        // Keys the API would refuse still reach the state machine through the log unchanged.
        250 => Vec::new(),
        251 => vec![0xff; 3],
        252 => vec![0],
        _ => vec![b'k', b'0' + k % 8],
    }
}

/// Every key the target writes.
fn universe() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..8).chain([250, 251, 252]).map(key).collect();
    keys.sort();
    keys
}

fn in_range(range: &KeyRange, k: &[u8]) -> bool {
    match range {
        KeyRange::Key(key) => key.as_slice() == k,
        KeyRange::Span { start, end } => start.as_slice() <= k && end.as_ref().is_none_or(|e| k < e.as_slice()),
    }
}

fn key_range(spec: &RangeSpec) -> KeyRange {
    match spec {
        RangeSpec::Key(k) => KeyRange::Key(key(*k)),
        RangeSpec::Span(s, e) => KeyRange::Span { start: key(*s), end: e.map(|e| key(e).into()) },
    }
}

/// A lease id: 0 (none, or for a grant: the next free id) or one of a few, granted or not.
fn lease_id(l: u8) -> u64 {
    u64::from(l % 5)
}

fn write_id(id: Option<(u8, u8)>) -> Option<WriteId> {
    id.map(|(c, s)| WriteId { client_id: u64::from(c % 4), sequence: u64::from(s % 16) })
}

/// The spec of the state machine, independent of sled.
#[derive(Default)]
struct Model {
    kv: BTreeMap<Vec<u8>, StoredValue>,
    /// The store's revision: that of the last entry that changed a key.
    revision: u64,
    /// The revision before which reads are refused (0: none).
    compacted: u64,
    /// `states[r]`: the keys at revision `r` (`states[0]` is empty).
    states: Vec<BTreeMap<Vec<u8>, StoredValue>>,
    /// Whether the entry being applied changed a key (and so took `revision`).
    changed: bool,
    /// client -> (last sequence, its command, its result)
    sessions: HashMap<u64, (u64, Command, CommandResult)>,
    incarnations: HashMap<u32, u32>,
    replicas: Option<u32>,
    /// Lease id -> TTL.
    leases: BTreeMap<u64, u64>,
    /// The highest lease id ever granted.
    last_lease: u64,
}

impl Model {
    fn new() -> Self {
        Self { states: vec![BTreeMap::new()], ..Self::default() }
    }

    fn cas_of(&self, key: &[u8], cas: Option<u8>) -> Option<u64> {
        // Even bytes compare against the key's real mod revision (so compares succeed too).
        cas.map(|c| if c % 2 == 0 { self.kv.get(key).map(|s| s.mod_revision).unwrap_or(0) } else { u64::from(c / 2) })
    }

    /// A compaction revision: valid, in the future, already compacted, or anything small.
    fn compact_to(&self, c: u8) -> u64 {
        let n = u64::from(c / 4);
        match c % 4 {
            0 if self.revision > self.compacted => self.compacted + 1 + n % (self.revision - self.compacted),
            0 | 1 => self.revision + 1 + n % 3,
            2 => self.compacted.saturating_sub(n % 3),
            _ => n,
        }
    }

    fn compare(&self, c: &CompareSpec) -> Compare {
        let k = key(c.key);
        let current = self.kv.get(&k);
        let real = c.operand.is_multiple_of(2);
        let number = |n: fn(&StoredValue) -> u64| {
            if real {
                current.map_or(0, n)
            } else {
                u64::from(c.operand / 2) % 8
            }
        };
        let target = match c.target % 5 {
            0 => CompareTarget::Version(number(|s| s.version)),
            1 => CompareTarget::CreateRevision(number(|s| s.create_revision)),
            2 => CompareTarget::ModRevision(number(|s| s.mod_revision)),
            3 => CompareTarget::Value(match (real, current) {
                (true, Some(s)) => s.value.clone(),
                (true, None) => Vec::new(),
                // Empty, or one byte: values are one byte, so both sides of it occur.
                (false, _) if c.operand == 1 => Vec::new(),
                (false, _) => vec![c.operand / 2],
            }),
            _ => CompareTarget::Lease(number(|s| s.lease)),
        };
        let op = [CompareOp::Equal, CompareOp::NotEqual, CompareOp::Greater, CompareOp::Less][usize::from(c.op % 4)];
        Compare { key: k, target, op }
    }

    /// The operations of one list, without the writes that would write a key a write before
    /// them already wrote (the API refuses those).
    fn txn_ops(specs: &[OpSpec]) -> Vec<TxnOp> {
        let universe = universe();
        let mut written: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut ops = Vec::new();
        for spec in specs.iter().take(8) {
            let (op, writes) = match spec {
                OpSpec::Put { key: k, value, prev_kv, lease } => {
                    let k = key(*k);
                    (
                        TxnOp::Put { key: k.clone(), value: vec![*value], lease: lease_id(*lease), prev_kv: *prev_kv },
                        Some(KeyRange::Key(k)),
                    )
                }
                OpSpec::Delete { range, prev_kv } => {
                    let range = key_range(range);
                    (TxnOp::Delete { range: range.clone(), prev_kv: *prev_kv }, Some(range))
                }
                OpSpec::Range { range, limit } => {
                    // At least 1, as validation makes it (0 there means the maximum); the state
                    // machine ignores the limit of a single-key range.
                    (TxnOp::Range { range: key_range(range), limit: usize::from(limit % 4) + 1 }, None)
                }
            };
            if let Some(range) = writes {
                let covered: Vec<Vec<u8>> = universe.iter().filter(|k| in_range(&range, k)).cloned().collect();
                if covered.iter().any(|k| written.contains(k)) {
                    continue;
                }
                written.extend(covered);
            }
            ops.push(op);
        }
        ops
    }

    /// The revision a change of the entry being applied takes.
    fn change_revision(&mut self) -> u64 {
        if !self.changed {
            self.revision += 1;
            self.changed = true;
        }
        self.revision
    }

    fn put_key(&mut self, key: &[u8], value: &[u8], lease: u64) -> StoredValue {
        let revision = self.change_revision();
        let current = self.kv.get(key);
        let stored = StoredValue {
            value: value.to_vec(),
            create_revision: current.map_or(revision, |c| c.create_revision),
            mod_revision: revision,
            version: current.map_or(1, |c| c.version + 1),
            lease,
        };
        self.kv.insert(key.to_vec(), stored.clone());
        stored
    }

    fn delete_key(&mut self, key: &[u8]) {
        self.change_revision();
        self.kv.remove(key);
    }

    /// Applies one entry; records the state at its revision when it took one.
    fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        self.changed = false;
        let result = self.apply_command(index, cmd);
        if self.changed {
            assert_eq!(self.states.len() as u64, self.revision, "one state per revision");
            self.states.push(self.kv.clone());
        }
        result
    }

    fn apply_command(&mut self, index: u64, cmd: &Command) -> CommandResult {
        if let Some(WriteId { client_id, sequence }) = cmd.write_id() {
            if let Some((last, first, result)) = self.sessions.get(&client_id) {
                if sequence == *last {
                    if first != cmd {
                        // The same write id on another command: refused, nothing applied.
                        return CommandResult::WriteIdReused { sequence };
                    }
                    // The original answer; a successful put answers with the value it carries.
                    return match (result.clone(), cmd) {
                        (
                            CommandResult::Put { index, revision, succeeded: true, current: Some(mut kv) },
                            Command::Put { value, .. },
                        ) => {
                            kv.stored.value = value.clone();
                            CommandResult::Put { index, revision, succeeded: true, current: Some(kv) }
                        }
                        (other, _) => other,
                    };
                }
                if sequence < *last {
                    return CommandResult::StaleSequence { last_applied: *last };
                }
            }
            let result = self.execute(index, cmd);
            self.sessions.insert(client_id, (sequence, cmd.clone(), result.clone()));
            return result;
        }
        self.execute(index, cmd)
    }

    fn execute(&mut self, index: u64, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Put { key, value, if_mod_revision, lease, .. } => {
                if *lease != 0 && !self.leases.contains_key(lease) {
                    return CommandResult::LeaseRefused(LeaseError::NotFound(*lease));
                }
                let current = self.kv.get(key).cloned();
                if let Some(expected) = if_mod_revision {
                    if current.as_ref().map(|c| c.mod_revision).unwrap_or(0) != *expected {
                        let current = current.map(|stored| KeyValue { key: key.clone(), stored });
                        return CommandResult::Put { index, revision: self.revision, succeeded: false, current };
                    }
                }
                let stored = self.put_key(key, value, *lease);
                let current = Some(KeyValue { key: key.clone(), stored });
                CommandResult::Put { index, revision: self.revision, succeeded: true, current }
            }
            Command::Delete { key, if_mod_revision, .. } => {
                let current = self.kv.get(key).cloned();
                let previous = current.clone().map(|stored| KeyValue { key: key.clone(), stored });
                if let Some(expected) = if_mod_revision {
                    if current.as_ref().map(|c| c.mod_revision).unwrap_or(0) != *expected {
                        let revision = self.revision;
                        return CommandResult::Delete { index, revision, succeeded: false, deleted: false, previous };
                    }
                }
                if current.is_some() {
                    self.delete_key(key);
                }
                let deleted = current.is_some();
                CommandResult::Delete { index, revision: self.revision, succeeded: true, deleted, previous }
            }
            Command::Compact { revision } => {
                if *revision > self.revision {
                    let current = self.revision;
                    return CommandResult::CompactRefused(RevisionError::Future { requested: *revision, current });
                }
                if *revision <= self.compacted {
                    let compacted = self.compacted;
                    return CommandResult::CompactRefused(RevisionError::Compacted { requested: *revision, compacted });
                }
                self.compacted = *revision;
                CommandResult::Compacted { index, revision: self.revision, compacted: *revision }
            }
            Command::Txn(txn) => {
                let succeeded = txn.compares.iter().all(|c| holds(c, self.kv.get(&c.key)));
                let ops = if succeeded { &txn.success } else { &txn.failure };
                for op in ops {
                    if let TxnOp::Put { lease, .. } = op {
                        if *lease != 0 && !self.leases.contains_key(lease) {
                            return CommandResult::LeaseRefused(LeaseError::NotFound(*lease));
                        }
                    }
                }
                let results = ops.iter().map(|op| self.txn_op(op)).collect();
                CommandResult::Txn { index, revision: self.revision, succeeded, results }
            }
            Command::AllocateNodeId { ordinal } => {
                let next = self.incarnations.get(ordinal).copied().unwrap_or(0) + 1;
                self.incarnations.insert(*ordinal, next);
                CommandResult::NodeId { index, node_id: raft::node_id(*ordinal, next) }
            }
            Command::SetReplicas { replicas } => {
                self.replicas = Some(*replicas);
                CommandResult::Replicas { index, replicas: *replicas }
            }
            Command::LeaseGrant { id, ttl_seconds } => {
                let id = if *id == 0 { self.last_lease + 1 } else { *id };
                if self.leases.contains_key(&id) {
                    return CommandResult::LeaseRefused(LeaseError::Exists(id));
                }
                self.leases.insert(id, *ttl_seconds);
                self.last_lease = self.last_lease.max(id);
                CommandResult::LeaseGranted { index, id, ttl_seconds: *ttl_seconds }
            }
            Command::LeaseRevoke { id } => {
                if self.leases.remove(id).is_none() {
                    return CommandResult::LeaseRefused(LeaseError::NotFound(*id));
                }
                let held: Vec<Vec<u8>> =
                    self.kv.iter().filter(|(_, s)| s.lease == *id).map(|(k, _)| k.clone()).collect();
                for k in &held {
                    self.delete_key(k);
                }
                CommandResult::LeaseRevoked { index, revision: self.revision, deleted: held.len() as u64 }
            }
        }
    }

    fn keys_in(&self, range: &KeyRange) -> Vec<KeyValue> {
        self.kv
            .iter()
            .filter(|(k, _)| in_range(range, k))
            .map(|(k, stored)| KeyValue { key: k.clone(), stored: stored.clone() })
            .collect()
    }

    fn txn_op(&mut self, op: &TxnOp) -> TxnOpResult {
        match op {
            TxnOp::Put { key, value, prev_kv, lease } => {
                let prev = self
                    .kv
                    .get(key)
                    .filter(|_| *prev_kv)
                    .map(|stored| KeyValue { key: key.clone(), stored: stored.clone() });
                self.put_key(key, value, *lease);
                TxnOpResult::Put { prev }
            }
            TxnOp::Delete { range, prev_kv } => {
                let kvs = self.keys_in(range);
                for kv in &kvs {
                    self.delete_key(&kv.key);
                }
                TxnOpResult::Delete { deleted: kvs.len() as u64, prev: if *prev_kv { kvs } else { Vec::new() } }
            }
            TxnOp::Range { range, limit } => {
                let mut kvs = self.keys_in(range);
                let more = kvs.len() > *limit;
                kvs.truncate(*limit);
                TxnOpResult::Range { kvs, more }
            }
            TxnOp::Txn(_) => unreachable!("the generator makes no nested transactions"),
        }
    }
}

/// The spec of a comparison: an absent key has version, revisions and lease 0, and a value
/// that is unequal to every value and neither greater nor less than any.
fn holds(c: &Compare, current: Option<&StoredValue>) -> bool {
    let number = |n: fn(&StoredValue) -> u64| current.map_or(0, n);
    let ordering = match &c.target {
        CompareTarget::Version(v) => number(|s| s.version).cmp(v),
        CompareTarget::CreateRevision(r) => number(|s| s.create_revision).cmp(r),
        CompareTarget::ModRevision(r) => number(|s| s.mod_revision).cmp(r),
        CompareTarget::Lease(l) => number(|s| s.lease).cmp(l),
        CompareTarget::Value(v) => match current {
            Some(s) => s.value.cmp(v),
            None => return c.op == CompareOp::NotEqual,
        },
        CompareTarget::InRange { .. } => unreachable!("the generator makes no compares over a range"),
    };
    match c.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Greater => ordering.is_gt(),
        CompareOp::Less => ordering.is_lt(),
    }
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), cmd)
}

fn pairs(kvs: Vec<KeyValue>) -> Vec<(Vec<u8>, StoredValue)> {
    kvs.into_iter().map(|kv| (kv.key, kv.stored)).collect()
}

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 256 {
        return;
    }
    // A fresh store per input; on tmpfs its fsyncs cost nothing.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    let (_log, sm) = store::open(dir.path(), &StoreOptions { cache_bytes: 1 << 20, metrics: None }).expect("open");
    let mut model = Model::new();
    let mut sent: Vec<Command> = Vec::new();
    let mut run: Vec<Entry> = Vec::new();
    let mut expected: Vec<CommandResult> = Vec::new();
    let mut index = 0u64;
    let flush = |run: &mut Vec<Entry>, expected: &mut Vec<CommandResult>| {
        if run.is_empty() {
            return;
        }
        let results = sm.apply_run(run).expect("apply");
        assert_eq!(&results, expected, "commands {:?}", run.iter().map(|e| e.payload.clone()).collect::<Vec<_>>());
        run.clear();
        expected.clear();
    };
    for op in ops {
        let cmd = match op {
            Op::Put { key: k, value, cas, id, lease } => Command::Put {
                key: key(k),
                value: vec![value],
                if_mod_revision: model.cas_of(&key(k), cas),
                write_id: write_id(id),
                lease: lease_id(lease),
            },
            Op::Delete { key: k, cas, id } => {
                Command::Delete { key: key(k), if_mod_revision: model.cas_of(&key(k), cas), write_id: write_id(id) }
            }
            Op::Compact(c) => Command::Compact { revision: model.compact_to(c) },
            Op::Txn { compares, success, failure, id } => Command::Txn(Txn {
                compares: compares.iter().take(4).map(|c| model.compare(c)).collect(),
                success: Model::txn_ops(&success),
                failure: Model::txn_ops(&failure),
                write_id: write_id(id),
            }),
            Op::Retry(n) if !sent.is_empty() => sent[usize::from(n) % sent.len()].clone(),
            Op::Retry(_) => continue,
            Op::AllocateNodeId(o) => Command::AllocateNodeId { ordinal: u32::from(o % 4) },
            Op::SetReplicas(r) => Command::SetReplicas { replicas: u32::from(r) },
            Op::LeaseGrant { id, ttl } => Command::LeaseGrant { id: lease_id(id), ttl_seconds: u64::from(ttl) },
            Op::LeaseRevoke(id) => Command::LeaseRevoke { id: lease_id(id) },
            Op::EndRun => {
                flush(&mut run, &mut expected);
                continue;
            }
        };
        index += 1;
        expected.push(model.apply(index, &cmd));
        run.push(entry(index, cmd.clone()));
        sent.push(cmd);
    }
    flush(&mut run, &mut expected);

    // The state now.
    assert_eq!(sm.key_count().expect("count"), model.kv.len() as u64, "key count");
    for (k, stored) in &model.kv {
        assert_eq!(sm.get(k).expect("get").map(|kv| kv.stored), Some(stored.clone()), "key {k:?}");
    }
    let page = sm.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).expect("scan");
    let now: Vec<_> = model.kv.clone().into_iter().collect();
    assert_eq!(pairs(page.kvs), now, "full scan");
    assert_eq!(sm.declared_replicas().expect("replicas"), model.replicas);
    assert_eq!(sm.applied().expect("applied").map(|l| l.index), (index > 0).then_some(index));
    let leases: Vec<(u64, u64)> = sm.leases().expect("leases").into_iter().map(|(id, r)| (id, r.ttl_seconds)).collect();
    assert_eq!(leases, model.leases.clone().into_iter().collect::<Vec<_>>(), "leases");
    for id in 0..=model.last_lease.max(4) {
        let held: Vec<Vec<u8>> = model.kv.iter().filter(|(_, s)| id != 0 && s.lease == id).map(|(k, _)| k.clone()).collect();
        assert_eq!(sm.lease_keys(id).expect("lease keys"), held, "the keys of lease {id}");
    }

    // Revisions and the history.
    let (current, compacted) = (model.revision, model.compacted);
    assert_eq!(sm.revision().expect("revision"), current, "store revision");
    assert_eq!(sm.compacted(), compacted, "compaction revision");
    assert_eq!(model.states.len() as u64, current + 1);
    assert_eq!(model.states[current as usize], model.kv);
    // Every revision when there are few, else both ends and evenly spaced ones between.
    let span = current - compacted;
    let readable: BTreeSet<u64> = if span <= 16 {
        (compacted..=current).collect()
    } else {
        (0..=15).map(|i| compacted + span * i / 15).collect()
    };
    for &r in &readable {
        let read = sm.scan_at(Bound::Unbounded, Bound::Unbounded, usize::MAX, Some(r)).expect("scan_at");
        let read = read.unwrap_or_else(|e| panic!("revision {r} of {compacted}..={current} refused: {e}"));
        assert_eq!(read.revision, r, "the revision a read at {r} reflects");
        assert!(!read.value.more);
        let expected: Vec<_> = model.states[r as usize].clone().into_iter().collect();
        assert_eq!(pairs(read.value.kvs), expected, "full scan at revision {r} of {compacted}..={current}");
    }
    // A get of every key at one revision between the two.
    let middle = compacted + span / 2;
    for k in universe() {
        let read = sm.get_at(&k, Some(middle)).expect("get_at").expect("readable");
        assert_eq!(read.revision, middle);
        assert_eq!(read.value.map(|kv| kv.stored), model.states[middle as usize].get(&k).cloned(), "{k:?} at {middle}");
    }
    // Below the compaction revision: refused; past the current one: refused.
    for r in [0, compacted / 2, compacted.saturating_sub(1)] {
        if r < compacted {
            let read = sm.scan_at(Bound::Unbounded, Bound::Unbounded, usize::MAX, Some(r)).expect("scan_at");
            assert_eq!(read.err(), Some(RevisionError::Compacted { requested: r, compacted }), "scan at {r}");
            let read = sm.get_at(b"k0", Some(r)).expect("get_at");
            assert_eq!(read.err(), Some(RevisionError::Compacted { requested: r, compacted }), "get at {r}");
            let events = sm.events_from(r, usize::MAX).expect("events_from");
            assert_eq!(events.err(), Some(RevisionError::Compacted { requested: r, compacted }), "events from {r}");
        }
    }
    let future = sm.scan_at(Bound::Unbounded, Bound::Unbounded, usize::MAX, Some(current + 1)).expect("scan_at");
    assert_eq!(future.err(), Some(RevisionError::Future { requested: current + 1, current }));
    // The kept history replays, revision by revision, from the compaction revision to now.
    let from = compacted.max(1);
    let events = sm.events_from(from, usize::MAX).expect("events_from").expect("kept");
    let mut state = model.states[(from - 1) as usize].clone();
    let mut at = from - 1;
    for e in events {
        if e.revision != at {
            assert_eq!(state, model.states[at as usize], "replayed to revision {at}");
            assert_eq!(e.revision, at + 1, "the history skips no revision");
            at = e.revision;
        }
        assert_eq!(e.event.before.as_ref(), state.get(&e.event.key), "the key before the change at {at}");
        match e.event.after {
            Some(after) => {
                assert_eq!(after.mod_revision, at, "a change's mod revision is its revision");
                state.insert(e.event.key, after);
            }
            None => {
                state.remove(&e.event.key);
            }
        }
    }
    assert_eq!(at, current.max(from - 1), "the history ends at the current revision");
    assert_eq!(state, model.kv, "the replayed history ends at the current state");
});
