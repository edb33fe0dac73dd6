//! `petkv.v1.KV/Txn`: the request checked and turned into a [`Txn`] command, and the
//! command's result turned into the reply.

use petkv_client::pb::v1::txn_op::Op;
use petkv_client::pb::v1::txn_op_result::Result as OpResult;
use petkv_client::pb::v1::{
    compare, Compare as PbCompare, TxnDeleteResult, TxnOp as PbTxnOp, TxnOpResult as PbTxnOpResult, TxnPutResult,
    TxnRangeResult, TxnRequest,
};
use tonic::Status;

use super::to_pb;
use super::validation::{prefix_end, write_id, Limits};
use crate::store::command::{Command, Compare, CompareOp, CompareTarget, KeyRange, Txn, TxnOp, TxnOpResult};

/// Most operations in one list of a transaction (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// A `range_end` of one zero byte: every key from `key` on, as etcd's API has it (no key sorts
/// before it, so it could not be an ordinary range end).
pub const TO_THE_END: &[u8] = &[0];

impl Limits {
    /// Checks a transaction and turns it into the command the handler proposes.
    pub fn txn(&self, req: &TxnRequest) -> Result<Command, Status> {
        for (name, n) in
            [("compare", req.compare.len()), ("success", req.success.len()), ("failure", req.failure.len())]
        {
            if n > MAX_TXN_OPS {
                return Err(Status::invalid_argument(format!(
                    "{name} has {n} entries, over the limit of {MAX_TXN_OPS} per list"
                )));
            }
        }
        let compares = req.compare.iter().map(|c| self.compare(c)).collect::<Result<Vec<_>, _>>()?;
        let success = self.txn_ops("success", &req.success)?;
        let failure = self.txn_ops("failure", &req.failure)?;
        Ok(Command::Txn(Txn { compares, success, failure, write_id: write_id(req.write_id) }))
    }

    fn compare(&self, c: &PbCompare) -> Result<Compare, Status> {
        self.key(&c.key)?;
        let target = match compare::Target::try_from(c.target) {
            Ok(compare::Target::Version) => CompareTarget::Version(c.number),
            Ok(compare::Target::CreateRevision) => CompareTarget::CreateRevision(c.number),
            Ok(compare::Target::ModRevision) => CompareTarget::ModRevision(c.number),
            Ok(compare::Target::Lease) => CompareTarget::Lease(c.number),
            Ok(compare::Target::Value) => {
                self.value(&c.value)?;
                CompareTarget::Value(c.value.to_vec())
            }
            Err(_) => return Err(Status::invalid_argument(format!("unknown compare target {}", c.target))),
        };
        let op = match compare::Op::try_from(c.op) {
            Ok(compare::Op::Equal) => CompareOp::Equal,
            Ok(compare::Op::NotEqual) => CompareOp::NotEqual,
            Ok(compare::Op::Greater) => CompareOp::Greater,
            Ok(compare::Op::Less) => CompareOp::Less,
            Err(_) => return Err(Status::invalid_argument(format!("unknown compare op {}", c.op))),
        };
        Ok(Compare { key: c.key.to_vec(), target, op })
    }

    fn txn_ops(&self, list: &str, ops: &[PbTxnOp]) -> Result<Vec<TxnOp>, Status> {
        let mut out = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let op = match &op.op {
                Some(Op::Put(put)) => {
                    self.key(&put.key)?;
                    self.value(&put.value)?;
                    TxnOp::Put {
                        key: put.key.to_vec(),
                        value: put.value.to_vec(),
                        lease: put.lease,
                        prev_kv: put.prev_kv,
                    }
                }
                Some(Op::Delete(del)) => {
                    TxnOp::Delete { range: self.key_range(&del.key, &del.range_end, del.prefix)?, prev_kv: del.prev_kv }
                }
                Some(Op::Range(range)) => {
                    let limit = match range.limit {
                        0 => self.max_scan_limit,
                        n if n > self.max_scan_limit => {
                            return Err(Status::invalid_argument(format!(
                                "range limit {n} is over the maximum of {} (--max-scan-limit)",
                                self.max_scan_limit
                            )))
                        }
                        n => n,
                    };
                    TxnOp::Range {
                        range: self.key_range(&range.key, &range.range_end, range.prefix)?,
                        limit: limit as usize,
                    }
                }
                None => return Err(Status::invalid_argument(format!("{list}[{i}] holds no operation"))),
            };
            out.push(op);
        }
        check_writes_once(list, &out)?;
        Ok(out)
    }

    /// One key, a prefix, `[key, range_end)`, or every key from `key` on ([`TO_THE_END`]).
    pub(crate) fn key_range(&self, key: &[u8], range_end: &[u8], prefix: bool) -> Result<KeyRange, Status> {
        for k in [key, range_end] {
            if k.len() > self.max_key_bytes {
                return Err(Status::invalid_argument(format!(
                    "key is {} bytes, over the limit of {} bytes (--max-key-bytes)",
                    k.len(),
                    self.max_key_bytes
                )));
            }
        }
        match (prefix, range_end.is_empty()) {
            (true, false) => Err(Status::invalid_argument("set either prefix or range_end, not both")),
            (true, true) => Ok(KeyRange::Span {
                start: key.to_vec(),
                end: match prefix_end(key) {
                    std::ops::Bound::Excluded(end) => Some(end.into()),
                    _ => None,
                },
            }),
            (false, true) => {
                self.key(key)?;
                Ok(KeyRange::Key(key.to_vec()))
            }
            (false, false) if range_end == TO_THE_END => Ok(KeyRange::Span { start: key.to_vec(), end: None }),
            (false, false) if key >= range_end => Err(Status::invalid_argument(format!(
                "empty or inverted range: key {:?} must sort before range_end {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(range_end)
            ))),
            (false, false) => Ok(KeyRange::Span { start: key.to_vec(), end: Some(range_end.to_vec().into()) }),
        }
    }
}

/// Refuses a list of operations that writes a key twice: it would take two changes at one
/// revision. A nested transaction's writes (either of its branches) count as its list's.
pub(crate) fn check_writes_once(list: &str, ops: &[TxnOp]) -> Result<(), Status> {
    let mut written: Vec<KeyRange> = Vec::new();
    for op in ops {
        // A nested transaction's two branches may write the same key: only one runs.
        let ranges = writes_of(op);
        if ranges.iter().any(|range| written.iter().any(|w| overlaps(w, range))) {
            return Err(Status::invalid_argument(format!(
                "{list} writes a key more than once (a key may be put or deleted once per transaction)"
            )));
        }
        written.extend(ranges);
    }
    Ok(())
}

/// The key ranges an operation may write.
fn writes_of(op: &TxnOp) -> Vec<KeyRange> {
    match op {
        TxnOp::Put { key, .. } => vec![KeyRange::Key(key.clone())],
        TxnOp::Delete { range, .. } => vec![range.clone()],
        TxnOp::Range { .. } => Vec::new(),
        TxnOp::Txn(inner) => inner.success.iter().chain(&inner.failure).flat_map(writes_of).collect(),
    }
}

/// Whether two key ranges share a key.
fn overlaps(a: &KeyRange, b: &KeyRange) -> bool {
    let (a_start, a_end) = bounds(a);
    let (b_start, b_end) = bounds(b);
    let before = |end: &Option<Vec<u8>>, start: &[u8]| end.as_ref().is_some_and(|e| e.as_slice() <= start);
    !(before(&a_end, &b_start) || before(&b_end, &a_start))
}

/// `[start, end)` of a range; a single key `k` is `[k, k\0)`.
fn bounds(r: &KeyRange) -> (Vec<u8>, Option<Vec<u8>>) {
    match r {
        KeyRange::Key(k) => {
            let mut end = k.clone();
            end.push(0);
            (k.clone(), Some(end))
        }
        KeyRange::Span { start, end } => (start.clone(), end.as_ref().map(|e| e.to_vec())),
    }
}

/// A transaction's results as the reply's.
pub fn results_to_pb(results: Vec<TxnOpResult>) -> Vec<PbTxnOpResult> {
    results.into_iter().map(|r| PbTxnOpResult { result: result_to_pb(r) }).collect()
}

fn result_to_pb(r: TxnOpResult) -> Option<OpResult> {
    Some(match r {
        TxnOpResult::Put { prev } => OpResult::Put(TxnPutResult { prev_kv: prev.map(to_pb) }),
        TxnOpResult::Delete { deleted, prev } => {
            OpResult::Delete(TxnDeleteResult { deleted, prev_kvs: prev.into_iter().map(to_pb).collect() })
        }
        TxnOpResult::Range { kvs, more } => {
            OpResult::Range(TxnRangeResult { kvs: kvs.into_iter().map(to_pb).collect(), more })
        }
        // Only etcd's API nests transactions; petkv's has no form for their result.
        TxnOpResult::Txn { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> KeyRange {
        KeyRange::Key(k.into())
    }

    fn span(s: &str, e: Option<&str>) -> KeyRange {
        KeyRange::Span { start: s.into(), end: e.map(|e| e.as_bytes().to_vec().into()) }
    }

    #[test]
    fn overlapping_writes_are_found() {
        assert!(overlaps(&key("a"), &key("a")));
        assert!(!overlaps(&key("a"), &key("b")));
        assert!(overlaps(&key("b"), &span("a", Some("c"))));
        assert!(!overlaps(&key("c"), &span("a", Some("c"))), "the end is exclusive");
        assert!(overlaps(&span("a", None), &key("zzz")));
        assert!(!overlaps(&span("a", Some("b")), &span("b", Some("c"))));
        assert!(overlaps(&key("a"), &span("a", Some("a\0"))));
    }
}
