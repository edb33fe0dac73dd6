//! Transactions: every comparison against the keys as the entry finds them, then the
//! `success` or the `failure` operations, in order, each seeing the writes of the ones before
//! it. All the changes share the entry's revision, so watchers see them as one.

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
        let mut succeeded = true;
        for compare in &txn.compares {
            if !holds(compare, self.value(&compare.key)?.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &txn.success } else { &txn.failure };
        for op in ops {
            if let TxnOp::Put { lease, .. } = op {
                if *lease != 0 && !self.lease_exists(*lease)? {
                    return Ok(CommandResult::LeaseRefused(LeaseError::NotFound(*lease)));
                }
            }
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.txn_op(op)?);
        }
        let revision = self.revision()?;
        Ok(CommandResult::Txn { index, revision, succeeded, results })
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
}
