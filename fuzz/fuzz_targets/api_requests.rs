//! Every request message of the public API (`petkv.v1.KV`, `petkv.v1.Cluster`) decoded from
//! arbitrary bytes with prost, then checked by the very functions the gRPC handlers call
//! (`petkv::api::validation`, `Limits::txn`, `Limits::watch`). Nothing may panic; what
//! validation accepts must be within the limits, carry the request's own fields, and describe a
//! well-formed key range; a refusal is INVALID_ARGUMENT. For transactions, compactions and
//! watches the target also derives from the request, independently, whether it is valid and
//! what it must become, and checks both ways: a valid request is accepted as exactly that, an
//! invalid one refused.

#![no_main]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use petkv::api::txn::MAX_TXN_OPS;
use petkv::api::validation::{self, GetPlan, Limits, ReadConsistency, MAX_REPLICAS};
use petkv::api::watch::{WatchSpec, MIN_PROGRESS_INTERVAL};
use petkv::store::command::{Command, Compare, CompareOp, CompareTarget, KeyRange, Txn, TxnOp, WriteId};
use petkv_client::pb::v1::txn_op::Op as PbOp;
use petkv_client::pb::v1::{
    CompactRequest, Compare as PbCompare, DeleteRequest, GetRequest, PutRequest, ScaleRequest, ScanRequest,
    TxnOp as PbTxnOp, TxnRequest, WatchRequest, WriteId as PbWriteId,
};
use prost::Message;

/// Small limits, so the fuzzer reaches every one of them.
const LIMITS: Limits = Limits { max_key_bytes: 16, max_value_bytes: 64, max_scan_limit: 100 };

fn refused(status: tonic::Status) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(!status.message().is_empty());
}

/// A message that decoded must encode to bytes that decode to the same message.
fn round_trips<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) {
    let again = M::decode(msg.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(&again, msg);
}

fn key_ok(key: &[u8]) {
    assert!(!key.is_empty() && key.len() <= LIMITS.max_key_bytes, "accepted key of {} bytes", key.len());
}

fn is_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= LIMITS.max_key_bytes
}

fn is_value(value: &[u8]) -> bool {
    value.len() <= LIMITS.max_value_bytes
}

fn same_write_id(ours: Option<WriteId>, theirs: Option<PbWriteId>) {
    assert_eq!(ours.map(|w| (w.client_id, w.sequence)), theirs.map(|w| (w.client_id, w.sequence)));
}

fn consistency_of(raw: i32) -> Option<ReadConsistency> {
    match raw {
        0 | 1 => Some(ReadConsistency::Linearizable),
        2 => Some(ReadConsistency::Stale),
        _ => None,
    }
}

/// A requested revision: 0 is the latest.
fn revision_of(raw: u64) -> Option<u64> {
    (raw != 0).then_some(raw)
}

/// The first key after every key that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The range must be one an ordered map accepts (`BTreeMap::range` panics on an inverted range
/// or on an empty one with both ends excluded), and hold only keys with `prefix`.
fn range_is_usable(range: (Bound<Vec<u8>>, Bound<Vec<u8>>), probes: &[&[u8]], prefix: &[u8]) {
    let map: BTreeMap<Vec<u8>, ()> = probes.iter().map(|p| (p.to_vec(), ())).collect();
    for (k, ()) in map.range::<Vec<u8>, _>(range) {
        assert!(k.starts_with(prefix), "{k:?} is in the range of prefix {prefix:?}");
    }
}

fn check_scan(req: &ScanRequest) {
    match LIMITS.scan(req) {
        Ok(plan) => {
            assert!(plan.limit >= 1 && plan.limit <= LIMITS.max_scan_limit as usize, "limit {}", plan.limit);
            assert_eq!(Some(plan.consistency), consistency_of(req.consistency));
            assert_eq!(plan.revision, revision_of(req.revision));
            assert!(req.prefix.is_empty() || (req.start_key.is_empty() && req.end_key.is_empty()));
            for bound in [&plan.start, &plan.end] {
                if let Bound::Included(k) | Bound::Excluded(k) = bound {
                    assert!(k.len() <= LIMITS.max_key_bytes, "bound of {} bytes", k.len());
                }
            }
            range_is_usable((plan.start.clone(), plan.end.clone()), &[&req.page_token, &req.prefix], &req.prefix);
        }
        Err(status) => refused(status),
    }
}

/// What a compare must become, or `None` when it must be refused.
fn expected_compare(c: &PbCompare) -> Option<Compare> {
    if !is_key(&c.key) {
        return None;
    }
    let target = match c.target {
        0 => CompareTarget::Version(c.number),
        1 => CompareTarget::CreateRevision(c.number),
        2 => CompareTarget::ModRevision(c.number),
        3 if is_value(&c.value) => CompareTarget::Value(c.value.to_vec()),
        4 => CompareTarget::Lease(c.number),
        _ => return None,
    };
    let op = match c.op {
        0 => CompareOp::Equal,
        1 => CompareOp::NotEqual,
        2 => CompareOp::Greater,
        3 => CompareOp::Less,
        _ => return None,
    };
    Some(Compare { key: c.key.to_vec(), target, op })
}

/// The keys of a delete or range: one key, a prefix (the empty one: every key), or
/// `[key, range_end)` (an empty key: from the first).
fn expected_range(key: &[u8], range_end: &[u8], prefix: bool) -> Option<KeyRange> {
    if key.len() > LIMITS.max_key_bytes || range_end.len() > LIMITS.max_key_bytes {
        return None;
    }
    match (prefix, range_end.is_empty()) {
        (true, true) => Some(KeyRange::Span { start: key.to_vec(), end: prefix_end(key).map(Into::into) }),
        (true, false) => None,
        (false, true) => is_key(key).then(|| KeyRange::Key(key.to_vec())),
        // One zero byte: every key from `key` on (etcd's convention).
        (false, false) if range_end == [0] => Some(KeyRange::Span { start: key.to_vec(), end: None }),
        (false, false) => {
            (key < range_end).then(|| KeyRange::Span { start: key.to_vec(), end: Some(range_end.to_vec().into()) })
        }
    }
}

/// What an operation must become, or `None` when it must be refused.
fn expected_op(op: &PbTxnOp) -> Option<TxnOp> {
    match op.op.as_ref()? {
        PbOp::Put(p) => (is_key(&p.key) && is_value(&p.value)).then(|| TxnOp::Put {
            key: p.key.to_vec(),
            value: p.value.to_vec(),
            lease: p.lease,
            prev_kv: p.prev_kv,
        }),
        PbOp::Delete(d) => {
            Some(TxnOp::Delete { range: expected_range(&d.key, &d.range_end, d.prefix)?, prev_kv: d.prev_kv })
        }
        PbOp::Range(r) => {
            let limit = match r.limit {
                0 => LIMITS.max_scan_limit,
                n if n > LIMITS.max_scan_limit => return None,
                n => n,
            };
            Some(TxnOp::Range { range: expected_range(&r.key, &r.range_end, r.prefix)?, limit: limit as usize })
        }
    }
}

/// The lowest key of a non-empty range, and whether `k` is in it.
fn lowest(r: &KeyRange) -> &[u8] {
    match r {
        KeyRange::Key(k) => k,
        KeyRange::Span { start, .. } => start,
    }
}

fn contains(r: &KeyRange, k: &[u8]) -> bool {
    match r {
        KeyRange::Key(key) => key.as_slice() == k,
        KeyRange::Span { start, end } => start.as_slice() <= k && end.as_ref().is_none_or(|e| k < e.as_slice()),
    }
}

/// Whether two non-empty ranges share a key: if they do, the larger of their lowest keys is one.
fn share_a_key(a: &KeyRange, b: &KeyRange) -> bool {
    let m = lowest(a).max(lowest(b));
    contains(a, m) && contains(b, m)
}

/// What a list of operations must become, or `None` when it must be refused (too long, an
/// operation refused, or a key written twice).
fn expected_ops(ops: &[PbTxnOp]) -> Option<Vec<TxnOp>> {
    if ops.len() > MAX_TXN_OPS {
        return None;
    }
    let ops = ops.iter().map(expected_op).collect::<Option<Vec<_>>>()?;
    let writes: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Put { key, .. } => Some(KeyRange::Key(key.clone())),
            TxnOp::Delete { range, .. } => Some(range.clone()),
            TxnOp::Range { .. } => None,
            TxnOp::Txn(_) => unreachable!("petkv's own API has no nested transactions"),
        })
        .collect();
    for (i, a) in writes.iter().enumerate() {
        if writes[..i].iter().any(|b| share_a_key(a, b)) {
            return None;
        }
    }
    Some(ops)
}

fn check_txn(req: &TxnRequest) {
    let expected = (|| {
        if req.compare.len() > MAX_TXN_OPS {
            return None;
        }
        Some(Txn {
            compares: req.compare.iter().map(expected_compare).collect::<Option<Vec<_>>>()?,
            success: expected_ops(&req.success)?,
            failure: expected_ops(&req.failure)?,
            write_id: req.write_id.map(|w| WriteId { client_id: w.client_id, sequence: w.sequence }),
        })
    })();
    match (LIMITS.txn(req), expected) {
        (Ok(Command::Txn(txn)), Some(expected)) => {
            assert_eq!(txn, expected, "the command a transaction became");
            same_write_id(txn.write_id, req.write_id);
            for c in &txn.compares {
                key_ok(&c.key);
            }
            for op in txn.success.iter().chain(&txn.failure) {
                match op {
                    TxnOp::Put { key, value, .. } => {
                        key_ok(key);
                        assert!(value.len() <= LIMITS.max_value_bytes);
                    }
                    TxnOp::Range { limit, .. } => assert!((1..=LIMITS.max_scan_limit as usize).contains(limit)),
                    TxnOp::Delete { .. } => {}
                    TxnOp::Txn(_) => panic!("petkv's own API made a nested transaction"),
                }
                if let TxnOp::Delete { range: KeyRange::Span { start, end: Some(end) }, .. }
                | TxnOp::Range { range: KeyRange::Span { start, end: Some(end) }, .. } = op
                {
                    assert!(start.as_slice() < end.as_slice(), "an accepted span is not empty");
                }
            }
        }
        (Ok(other), Some(_)) => panic!("a txn became {other:?}"),
        (Ok(accepted), None) => panic!("accepted a transaction it must refuse: {req:?} became {accepted:?}"),
        (Err(status), Some(expected)) => panic!("refused a valid transaction {expected:?}: {status:?}"),
        (Err(status), None) => refused(status),
    }
}

fn check_compact(req: &CompactRequest) {
    match LIMITS.compact(req) {
        Ok(Command::Compact { revision }) => {
            assert_ne!(req.revision, 0, "compaction to revision 0 accepted");
            assert_eq!(revision, req.revision);
        }
        Ok(other) => panic!("a compaction became {other:?}"),
        Err(status) => {
            assert_eq!(req.revision, 0, "refused a compaction to {}: {status:?}", req.revision);
            refused(status);
        }
    }
}

/// What a watch must become, or `None` when it must be refused.
fn expected_watch(req: &WatchRequest) -> Option<WatchSpec> {
    if req.key.len() > LIMITS.max_key_bytes || req.range_end.len() > LIMITS.max_key_bytes {
        return None;
    }
    let key = req.key.to_vec();
    let range = match (req.prefix, req.range_end.is_empty()) {
        (true, true) => (Bound::Included(key.clone()), prefix_end(&key).map_or(Bound::Unbounded, Bound::Excluded)),
        (true, false) => return None,
        (false, true) if key.is_empty() => return None,
        (false, true) => (Bound::Included(key.clone()), Bound::Included(key)),
        (false, false) if req.range_end.as_ref() == [0] => (Bound::Included(key), Bound::Unbounded),
        (false, false) if req.key >= req.range_end => return None,
        (false, false) => (Bound::Included(key), Bound::Excluded(req.range_end.to_vec())),
    };
    let progress_every = match req.progress_interval_ms {
        0 => None,
        ms if u128::from(ms) < MIN_PROGRESS_INTERVAL.as_millis() => return None,
        ms => Some(Duration::from_millis(u64::from(ms))),
    };
    Some(WatchSpec { range, start: revision_of(req.start_revision), prev_kv: req.prev_kv, progress_every })
}

fn check_watch(req: &WatchRequest) {
    match (LIMITS.watch(req), expected_watch(req)) {
        (Ok(spec), Some(expected)) => {
            assert_eq!(spec.range, expected.range, "watched range");
            assert_eq!(
                (spec.start, spec.prev_kv, spec.progress_every),
                (expected.start, expected.prev_kv, expected.progress_every)
            );
            let prefix: &[u8] = if req.prefix { &req.key } else { &[] };
            range_is_usable(spec.range.clone(), &[&req.key, &req.range_end, b"", b"\xff\xff"], prefix);
        }
        (Ok(spec), None) => panic!("accepted a watch it must refuse: {req:?} became {spec:?}"),
        (Err(status), Some(expected)) => panic!("refused a valid watch {expected:?}: {status:?}"),
        (Err(status), None) => refused(status),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 8 {
        0 => {
            let Ok(req) = PutRequest::decode(bytes) else { return };
            round_trips(&req);
            match LIMITS.put(&req) {
                Ok(Command::Put { key, value, if_mod_revision, write_id, lease }) => {
                    key_ok(&key);
                    assert!(value.len() <= LIMITS.max_value_bytes);
                    assert_eq!((key.as_slice(), value.as_slice()), (req.key.as_ref(), req.value.as_ref()));
                    assert_eq!((if_mod_revision, lease), (req.if_mod_revision, req.lease));
                    same_write_id(write_id, req.write_id);
                }
                // A put that asks for the key before it: a one-put transaction with the same
                // compare, whose failure branch reads the key.
                Ok(Command::Txn(txn)) if req.prev_kv => {
                    let key = req.key.to_vec();
                    key_ok(&key);
                    assert!(req.value.len() <= LIMITS.max_value_bytes);
                    let compares: Vec<Compare> = req
                        .if_mod_revision
                        .map(|r| Compare { key: key.clone(), target: CompareTarget::ModRevision(r), op: CompareOp::Equal })
                        .into_iter()
                        .collect();
                    let put = TxnOp::Put { key: key.clone(), value: req.value.to_vec(), lease: req.lease, prev_kv: true };
                    assert_eq!(txn.compares, compares);
                    assert_eq!(txn.success, [put]);
                    assert_eq!(txn.failure, [TxnOp::Range { range: KeyRange::Key(key), limit: 1 }]);
                    same_write_id(txn.write_id, req.write_id);
                }
                Ok(other) => panic!("a put became {other:?}"),
                Err(status) => refused(status),
            }
        }
        1 => {
            let Ok(req) = DeleteRequest::decode(bytes) else { return };
            round_trips(&req);
            match LIMITS.delete(&req) {
                Ok(Command::Delete { key, if_mod_revision, write_id }) => {
                    key_ok(&key);
                    assert_eq!(key.as_slice(), req.key.as_ref());
                    assert_eq!(if_mod_revision, req.if_mod_revision);
                    same_write_id(write_id, req.write_id);
                }
                Ok(other) => panic!("a delete became {other:?}"),
                Err(status) => refused(status),
            }
        }
        2 => {
            let Ok(req) = GetRequest::decode(bytes) else { return };
            round_trips(&req);
            match LIMITS.get(&req) {
                Ok(GetPlan { consistency, revision }) => {
                    key_ok(&req.key);
                    assert_eq!(Some(consistency), consistency_of(req.consistency));
                    assert_eq!(revision, revision_of(req.revision));
                }
                Err(status) => refused(status),
            }
        }
        3 => {
            let Ok(req) = ScanRequest::decode(bytes) else { return };
            round_trips(&req);
            check_scan(&req);
        }
        4 => {
            let Ok(req) = ScaleRequest::decode(bytes) else { return };
            round_trips(&req);
            match validation::scale(&req) {
                Ok(Command::SetReplicas { replicas }) => {
                    assert!((1..=MAX_REPLICAS).contains(&replicas));
                    assert_eq!(replicas, req.replicas);
                }
                Ok(other) => panic!("a scale became {other:?}"),
                Err(status) => refused(status),
            }
        }
        5 => {
            let Ok(req) = TxnRequest::decode(bytes) else { return };
            round_trips(&req);
            check_txn(&req);
        }
        6 => {
            let Ok(req) = CompactRequest::decode(bytes) else { return };
            round_trips(&req);
            check_compact(&req);
        }
        _ => {
            let Ok(req) = WatchRequest::decode(bytes) else { return };
            round_trips(&req);
            check_watch(&req);
        }
    }
});
