//! Transactions: every comparison against the keys as the entry finds them, then the
//! `success` or the `failure` operations, in order, each seeing the writes of the ones before
//! it. All the changes share the entry's revision, so watchers see them as one.
//!
//! Nested transactions (etcd's `request_txn`) are decided first, as etcd decides them: every
//! compare of every level is evaluated against the keys as the entry found them, which picks
//! one path through the tree ([`Path`]); then every put on that path is checked for its lease,
//! and the operations run in order. A compare over a range ([`CompareTarget::InRange`]) holds
//! when it holds for every key of the range (an empty range compares as an absent key).

use std::io;
use std::ops::Bound;

use super::apply::Pending;
use super::records::{data_key, DATA};
use crate::store::command::{
    CommandResult, Compare, CompareOp, CompareTarget, KeyRange, KeyValue, LeaseError, StoredValue, Txn, TxnOp,
    TxnOpResult,
};
use crate::store::decode;

impl Pending<'_> {
    /// Applies a transaction; returns its results.
    pub(super) fn txn(&mut self, index: u64, txn: &Txn) -> io::Result<CommandResult> {
        let path = self.decide(txn)?;
        if let Some(missing) = self.missing_lease(txn, &path)? {
            return Ok(CommandResult::LeaseRefused(LeaseError::NotFound(missing)));
        }
        let (succeeded, results) = self.run_path(txn, &path)?;
        let revision = self.revision()?;
        Ok(CommandResult::Txn { index, revision, succeeded, results })
    }

    /// Which branch every level of `txn` takes, against the keys as they are now.
    fn decide(&self, txn: &Txn) -> io::Result<Path> {
        let mut succeeded = true;
        for compare in &txn.compares {
            if !self.compare_holds(compare)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let nested = ops
            .iter()
            .map(|op| match op {
                TxnOp::Txn(inner) => self.decide(inner).map(Some),
                _ => Ok(None),
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Path { succeeded, nested })
    }

    fn compare_holds(&self, compare: &Compare) -> io::Result<bool> {
        let CompareTarget::InRange { end, target } = &compare.target else {
            return Ok(holds(compare, self.value(&compare.key)?.as_ref()));
        };
        let each = Compare { key: compare.key.clone(), target: (**target).clone(), op: compare.op };
        let (kvs, _) = self.keys_in(&KeyRange::Span { start: compare.key.clone(), end: end.clone() }, None)?;
        if kvs.is_empty() {
            // As etcd: an empty range compares as one absent key.
            return Ok(holds(&each, None));
        }
        Ok(kvs.iter().all(|kv| holds(&each, Some(&kv.stored))))
    }

    /// The first lease a put on `path` names that does not exist: the whole transaction is
    /// refused then, before anything is written.
    fn missing_lease(&self, txn: &Txn, path: &Path) -> io::Result<Option<u64>> {
        let ops = if path.succeeded { &txn.success } else { &txn.failure };
        for (op, nested) in ops.iter().zip(&path.nested) {
            let missing = match (op, nested) {
                (TxnOp::Put { lease, .. }, _) if *lease != 0 && !self.lease_exists(*lease)? => Some(*lease),
                (TxnOp::Txn(inner), Some(path)) => self.missing_lease(inner, path)?,
                _ => None,
            };
            if missing.is_some() {
                return Ok(missing);
            }
        }
        Ok(None)
    }

    /// Runs the operations on `path`, in order.
    fn run_path(&mut self, txn: &Txn, path: &Path) -> io::Result<(bool, Vec<TxnOpResult>)> {
        let ops = if path.succeeded { &txn.success } else { &txn.failure };
        let mut results = Vec::with_capacity(ops.len());
        for (op, nested) in ops.iter().zip(&path.nested) {
            results.push(match (op, nested) {
                (TxnOp::Txn(inner), Some(path)) => {
                    let (succeeded, results) = self.run_path(inner, path)?;
                    TxnOpResult::Txn { succeeded, results }
                }
                _ => self.txn_op(op)?,
            });
        }
        Ok((path.succeeded, results))
    }

    fn txn_op(&mut self, op: &TxnOp) -> io::Result<TxnOpResult> {
        Ok(match op {
            TxnOp::Put { key, value, lease, prev_kv } => {
                let current = self.value(key)?;
                let prev =
                    prev_kv.then(|| current.clone()).flatten().map(|stored| KeyValue { key: key.clone(), stored });
                self.put_key(key, value.clone(), *lease, current)?;
                TxnOpResult::Put { prev }
            }
            TxnOp::Delete { range, prev_kv } => {
                let (kvs, _) = self.keys_in(range, None)?;
                for kv in &kvs {
                    self.delete_key(&kv.key, kv.stored.clone())?;
                }
                let deleted = kvs.len() as u64;
                TxnOpResult::Delete { deleted, prev: if *prev_kv { kvs } else { Vec::new() } }
            }
            TxnOp::Range { range, limit } => {
                let (kvs, more) = self.keys_in(range, Some(*limit))?;
                TxnOpResult::Range { kvs, more }
            }
            // Decided with its parent; this runs it as the branch its compares pick now, which
            // `run_path` never asks for (it runs nested transactions on their decided path).
            TxnOp::Txn(inner) => {
                let path = self.decide(inner)?;
                let (succeeded, results) = self.run_path(inner, &path)?;
                TxnOpResult::Txn { succeeded, results }
            }
        })
    }

    /// The user keys in `range` as this run sees them, at most `limit` (and whether more
    /// remain).
    pub(super) fn keys_in(&self, range: &KeyRange, limit: Option<usize>) -> io::Result<(Vec<KeyValue>, bool)> {
        let (lower, upper) = match range {
            KeyRange::Key(key) => {
                let found: Vec<KeyValue> =
                    self.value(key)?.map(|stored| KeyValue { key: key.clone(), stored }).into_iter().collect();
                // A limit of 0 holds the key back, as it would a span's first key.
                return Ok(match limit {
                    Some(0) => (Vec::new(), !found.is_empty()),
                    _ => (found, false),
                });
            }
            KeyRange::Span { start, end } => (
                Bound::Included(data_key(start)),
                match end {
                    Some(end) => Bound::Excluded(data_key(end)),
                    None => Bound::Excluded(vec![DATA + 1]),
                },
            ),
        };
        let records = self.records_in(lower, upper)?;
        let limit = limit.unwrap_or(usize::MAX);
        let more = records.len() > limit;
        let kvs = records
            .into_iter()
            .take(limit)
            .map(|(k, v)| Ok(KeyValue { key: k[1..].to_vec(), stored: decode::<StoredValue>("value", &v)? }))
            .collect::<io::Result<Vec<_>>>()?;
        Ok((kvs, more))
    }
}

/// The branch each level of a transaction takes: `nested` has one entry per operation of the
/// branch, the path of a nested transaction or `None`.
struct Path {
    succeeded: bool,
    nested: Vec<Option<Path>>,
}

/// Whether `compare` holds for a key whose value is `current` (`None`: absent, with version,
/// revisions and lease 0 and no value).
fn holds(compare: &Compare, current: Option<&StoredValue>) -> bool {
    let number = |n: fn(&StoredValue) -> u64| current.map_or(0, n);
    let ordering = match &compare.target {
        CompareTarget::Version(v) => number(|c| c.version).cmp(v),
        CompareTarget::CreateRevision(r) => number(|c| c.create_revision).cmp(r),
        CompareTarget::ModRevision(r) => number(|c| c.mod_revision).cmp(r),
        CompareTarget::Lease(l) => number(|c| c.lease).cmp(l),
        CompareTarget::Value(v) => match current {
            Some(c) => c.value.as_slice().cmp(v.as_slice()),
            // An absent key's value is unequal to everything and neither greater nor less.
            None => return compare.op == CompareOp::NotEqual,
        },
        // Evaluated key by key by `Pending::compare_holds`; on one key it is its target.
        CompareTarget::InRange { target, .. } => {
            return holds(&Compare { key: compare.key.clone(), target: (**target).clone(), op: compare.op }, current)
        }
    };
    match compare.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Greater => ordering.is_gt(),
        CompareOp::Less => ordering.is_lt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::command::Command;
    use crate::store::state_machine::test_support::{entry, put};
    use crate::store::state_machine::StateMachine;
    use crate::store::{open, StoreOptions};

    fn store() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
        (dir, sm)
    }

    fn compare(key: &str, target: CompareTarget, op: CompareOp) -> Compare {
        Compare { key: key.into(), target, op }
    }

    fn tput(key: &str, value: &str) -> TxnOp {
        TxnOp::Put { key: key.into(), value: value.into(), lease: 0, prev_kv: true }
    }

    fn span(start: &str, end: Option<&str>) -> KeyRange {
        KeyRange::Span { start: start.into(), end: end.map(|e| serde_bytes::ByteBuf::from(e.as_bytes().to_vec())) }
    }

    fn run(sm: &StateMachine, index: u64, cmd: Command) -> CommandResult {
        let results: Vec<CommandResult> = sm.apply_run(&[entry(index, cmd)]).expect("apply");
        results.into_iter().next().expect("one result")
    }

    #[test]
    fn comparisons_follow_the_absent_key_rules() {
        let v = StoredValue { value: b"b".to_vec(), create_revision: 2, mod_revision: 5, version: 3, lease: 7 };
        let c = |target, op| holds(&compare("k", target, op), Some(&v));
        let absent = |target, op| holds(&compare("k", target, op), None);
        assert!(c(CompareTarget::Version(3), CompareOp::Equal));
        assert!(c(CompareTarget::ModRevision(4), CompareOp::Greater));
        assert!(c(CompareTarget::CreateRevision(3), CompareOp::Less));
        assert!(c(CompareTarget::Lease(7), CompareOp::Equal));
        assert!(c(CompareTarget::Value(b"a".to_vec()), CompareOp::Greater));
        assert!(c(CompareTarget::Value(b"b".to_vec()), CompareOp::Equal));
        assert!(absent(CompareTarget::Version(0), CompareOp::Equal), "absent: version 0");
        assert!(absent(CompareTarget::ModRevision(1), CompareOp::Less));
        assert!(absent(CompareTarget::Value(Vec::new()), CompareOp::NotEqual), "no value equals nothing");
        assert!(!absent(CompareTarget::Value(Vec::new()), CompareOp::Equal));
        assert!(!absent(CompareTarget::Value(b"a".to_vec()), CompareOp::Greater));
    }

    #[test]
    fn a_transaction_is_one_revision_and_its_operations_see_each_other() {
        let (_d, sm) = store();
        let setup = sm.apply_run(&[entry(1, put("a", "1", None, None)), entry(2, put("b", "1", None, None))]);
        assert_eq!(setup.expect("apply").len(), 2);
        let txn = Txn {
            compares: vec![compare("a", CompareTarget::Version(1), CompareOp::Equal)],
            success: vec![
                tput("a", "2"),
                TxnOp::Delete { range: span("b", None), prev_kv: true },
                tput("c", "3"),
                TxnOp::Range { range: span("", None), limit: 10 },
            ],
            failure: vec![TxnOp::Range { range: KeyRange::Key(b"a".to_vec()), limit: 1 }],
            write_id: None,
        };
        let CommandResult::Txn { revision, succeeded, results, .. } = run(&sm, 3, Command::Txn(txn.clone())) else {
            panic!("a txn result")
        };
        assert!(succeeded);
        assert_eq!(revision, 3, "one revision for the whole transaction");
        assert!(matches!(&results[0], TxnOpResult::Put { prev: Some(kv) } if kv.stored.value == b"1"));
        assert!(matches!(&results[1], TxnOpResult::Delete { deleted: 1, prev } if prev[0].key == b"b"));
        let TxnOpResult::Range { kvs, more: false } = &results[3] else { panic!("{:?}", results[3]) };
        let seen: Vec<(&[u8], &[u8], u64)> =
            kvs.iter().map(|kv| (kv.key.as_slice(), kv.stored.value.as_slice(), kv.stored.mod_revision)).collect();
        assert_eq!(seen, [(&b"a"[..], &b"2"[..], 3), (b"c", b"3", 3)], "the range sees the writes before it");
        let events = sm.events_from(3, usize::MAX).expect("read").expect("kept");
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), [3, 3, 3], "three changes, one revision");

        // The same compare fails now: the failure branch runs and changes nothing.
        let CommandResult::Txn { revision, succeeded, results, .. } = run(&sm, 4, Command::Txn(txn)) else {
            panic!("a txn result")
        };
        assert!(!succeeded);
        assert_eq!(revision, 3, "a transaction that changes nothing takes no revision");
        assert!(matches!(&results[0], TxnOpResult::Range { kvs, .. } if kvs[0].stored.value == b"2"));
        assert_eq!(sm.key_count().expect("count"), 2);
    }

    #[test]
    fn nested_transactions_decide_on_the_keys_as_found_and_range_compares_hold_for_every_key() {
        let (_d, sm) = store();
        sm.apply_run(&[entry(1, put("r/a", "1", None, None)), entry(2, put("r/b", "1", None, None))]).expect("apply");
        let in_range = |target| CompareTarget::InRange { end: Some(b"r0".to_vec().into()), target: Box::new(target) };
        // The parent writes r/a; the nested compare still sees version 1 (decided first, as
        // etcd decides), so the nested success branch runs.
        let nested = Txn {
            compares: vec![compare("r/a", CompareTarget::Version(1), CompareOp::Equal)],
            success: vec![tput("n", "inner")],
            failure: vec![tput("n", "outer-changed-it")],
            write_id: None,
        };
        let txn = Txn {
            compares: vec![
                Compare { key: b"r/".to_vec(), target: in_range(CompareTarget::Version(1)), op: CompareOp::Equal },
                Compare {
                    key: b"s/".to_vec(),
                    target: CompareTarget::InRange { end: None, target: Box::new(CompareTarget::Value(b"x".to_vec())) },
                    op: CompareOp::NotEqual,
                },
            ],
            success: vec![tput("r/a", "2"), TxnOp::Txn(Box::new(nested))],
            failure: vec![],
            write_id: None,
        };
        let CommandResult::Txn { revision, succeeded, results, .. } = run(&sm, 3, Command::Txn(txn)) else {
            panic!("a txn result")
        };
        assert!(succeeded, "every key of r/ has version 1; s/ and on holds no key (an absent key's value)");
        assert_eq!(revision, 3, "the nested writes share the revision");
        let TxnOpResult::Txn { succeeded: inner, results: inner_results } = &results[1] else { panic!("{results:?}") };
        assert!(*inner, "decided before r/a was written");
        assert!(matches!(&inner_results[0], TxnOpResult::Put { .. }));
        let n = sm.get(b"n").expect("read").expect("written");
        assert_eq!(n.stored.value, b"inner");

        // Now r/a has version 2: the range compare fails for one key of the range.
        let again = Txn {
            compares: vec![Compare {
                key: b"r/".to_vec(),
                target: in_range(CompareTarget::Version(1)),
                op: CompareOp::Equal,
            }],
            success: vec![tput("m", "1")],
            failure: vec![],
            write_id: None,
        };
        let CommandResult::Txn { succeeded, .. } = run(&sm, 4, Command::Txn(again)) else { panic!("a txn result") };
        assert!(!succeeded);
        assert!(sm.get(b"m").expect("read").is_none());
    }
}
