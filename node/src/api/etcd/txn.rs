//! etcd's transactions as petkv's `Command::Txn`, and their results as etcd's: compares of
//! every target on one key or over a range (`range_end`), put, delete-range, range and nested
//! transaction operations. Checked as petkv's own transactions are (key and value sizes, at
//! most [`MAX_TXN_OPS`] per list, a key written once per list, a nested transaction's writes
//! counting as its parent's) and nested at most [`MAX_DEPTH`] deep.

use tonic::Status;

use super::errors;
use super::kv::Shape;
use super::{kv_to_etcd, non_negative, to_i64};
use crate::api::to_pb;
use crate::api::txn::{check_writes_once, MAX_TXN_OPS};
use crate::api::validation::Limits;
use crate::pb::etcd::etcdserverpb::compare::{CompareResult, CompareTarget as EtcdTarget, TargetUnion};
use crate::pb::etcd::etcdserverpb::request_op::Request as EtcdOp;
use crate::pb::etcd::etcdserverpb::response_op::Response as EtcdOpResponse;
use crate::pb::etcd::etcdserverpb::{
    Compare as EtcdCompare, DeleteRangeResponse, PutResponse, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use crate::store::command::{Command, Compare, CompareOp, CompareTarget, KeyRange, Txn, TxnOp, TxnOpResult};

/// How deep transactions may nest (etcd bounds the whole request by its size only; a bound
/// here keeps the recursion of checking and applying one request small).
pub const MAX_DEPTH: usize = 8;

/// How to answer each operation of a transaction's two branches.
#[derive(Debug, Clone, Default)]
pub struct Shapes {
    success: Vec<OpShape>,
    failure: Vec<OpShape>,
}

impl Shapes {
    /// The shapes of the branch that ran.
    pub fn branch(&self, succeeded: bool) -> &[OpShape] {
        if succeeded {
            &self.success
        } else {
            &self.failure
        }
    }
}

/// How to answer one operation.
#[derive(Debug, Clone)]
pub enum OpShape {
    Write,
    Range(Shape),
    Txn(Shapes),
}

/// An etcd transaction as the command petkv proposes, and how to shape its answer.
pub fn to_command(limits: &Limits, txn: &TxnRequest) -> Result<(Command, Shapes), Status> {
    let (txn, shapes) = convert(limits, txn, 0)?;
    Ok((Command::Txn(txn), shapes))
}

fn convert(limits: &Limits, txn: &TxnRequest, depth: usize) -> Result<(Txn, Shapes), Status> {
    if depth > MAX_DEPTH {
        return Err(Status::invalid_argument(format!("etcdserver: transactions nest at most {MAX_DEPTH} deep")));
    }
    for n in [txn.compare.len(), txn.success.len(), txn.failure.len()] {
        if n > MAX_TXN_OPS {
            return Err(Status::invalid_argument(errors::TOO_MANY_OPS));
        }
    }
    let compares = txn.compare.iter().map(|c| compare(limits, c)).collect::<Result<Vec<_>, _>>()?;
    let (success, success_shapes) = ops(limits, "success", &txn.success, depth)?;
    let (failure, failure_shapes) = ops(limits, "failure", &txn.failure, depth)?;
    let shapes = Shapes { success: success_shapes, failure: failure_shapes };
    Ok((Txn { compares, success, failure, write_id: None }, shapes))
}

/// etcd's `key` and `range_end` as a key range (no end: the key alone; one zero byte: every
/// key from `key` on), checked as petkv's own transactions check theirs, with etcd's errors.
fn key_range(limits: &Limits, key: &[u8], range_end: &[u8]) -> Result<KeyRange, Status> {
    limits.key_range(key, range_end, false).map_err(errors::to_etcd)
}

fn compare(limits: &Limits, c: &EtcdCompare) -> Result<Compare, Status> {
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Err(_) => return Err(Status::invalid_argument(format!("etcdserver: unknown compare result {}", c.result))),
    };
    let number = |v: i64| non_negative("compare operand", v);
    // An unset operand is its zero value on etcd's wire (proto3 drops zeros).
    let target = match (EtcdTarget::try_from(c.target), &c.target_union) {
        (Ok(EtcdTarget::Version), Some(TargetUnion::Version(v))) => CompareTarget::Version(number(*v)?),
        (Ok(EtcdTarget::Create), Some(TargetUnion::CreateRevision(v))) => CompareTarget::CreateRevision(number(*v)?),
        (Ok(EtcdTarget::Mod), Some(TargetUnion::ModRevision(v))) => CompareTarget::ModRevision(number(*v)?),
        (Ok(EtcdTarget::Lease), Some(TargetUnion::Lease(v))) => CompareTarget::Lease(number(*v)?),
        (Ok(EtcdTarget::Value), Some(TargetUnion::Value(v))) => {
            limits.value(v)?;
            CompareTarget::Value(v.to_vec())
        }
        (Ok(EtcdTarget::Version), None) => CompareTarget::Version(0),
        (Ok(EtcdTarget::Create), None) => CompareTarget::CreateRevision(0),
        (Ok(EtcdTarget::Mod), None) => CompareTarget::ModRevision(0),
        (Ok(EtcdTarget::Lease), None) => CompareTarget::Lease(0),
        (Ok(EtcdTarget::Value), None) => CompareTarget::Value(Vec::new()),
        _ => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: compare target {} does not match its operand",
                c.target
            )))
        }
    };
    let target = match key_range(limits, &c.key, &c.range_end)? {
        KeyRange::Key(_) => target,
        KeyRange::Span { end, .. } => CompareTarget::InRange { end, target: Box::new(target) },
    };
    Ok(Compare { key: c.key.to_vec(), target, op })
}

fn ops(limits: &Limits, list: &str, ops: &[RequestOp], depth: usize) -> Result<(Vec<TxnOp>, Vec<OpShape>), Status> {
    let mut out = Vec::with_capacity(ops.len());
    let mut shapes = Vec::with_capacity(ops.len());
    for op in ops {
        let (op, shape) = match &op.request {
            Some(EtcdOp::RequestPut(p)) => {
                if p.ignore_value || p.ignore_lease {
                    return Err(Status::unimplemented(
                        "etcdserver: ignore_value and ignore_lease are not supported inside a transaction",
                    ));
                }
                limits.key(&p.key).map_err(errors::to_etcd)?;
                limits.value(&p.value)?;
                let lease = non_negative("lease", p.lease)?;
                (TxnOp::Put { key: p.key.to_vec(), value: p.value.to_vec(), lease, prev_kv: p.prev_kv }, OpShape::Write)
            }
            Some(EtcdOp::RequestDeleteRange(d)) => {
                let range = key_range(limits, &d.key, &d.range_end)?;
                (TxnOp::Delete { range, prev_kv: d.prev_kv }, OpShape::Write)
            }
            Some(EtcdOp::RequestRange(r)) => {
                if r.revision != 0 {
                    return Err(Status::unimplemented(
                        "etcdserver: a range inside a transaction reads the transaction's revision; revision is not \
                         supported there",
                    ));
                }
                let range = key_range(limits, &r.key, &r.range_end)?;
                // petkv's scan limit bounds the keys read; etcd's limit applies after sorting
                // and filtering, in the answer.
                let limit = limits.max_scan_limit as usize;
                (TxnOp::Range { range, limit }, OpShape::Range(Shape::of(r)?))
            }
            Some(EtcdOp::RequestTxn(inner)) => {
                let (inner, shapes) = convert(limits, inner, depth + 1)?;
                (TxnOp::Txn(Box::new(inner)), OpShape::Txn(shapes))
            }
            None => return Err(Status::invalid_argument("etcdserver: a transaction operation has no request")),
        };
        out.push(op);
        shapes.push(shape);
    }
    check_writes_once(list, &out).map_err(|_| Status::invalid_argument(errors::DUPLICATE_KEY))?;
    Ok((out, shapes))
}

/// A transaction's results as etcd's, each shaped as its operation asked.
pub fn responses(results: Vec<TxnOpResult>, shapes: &[OpShape], header: &ResponseHeader) -> Vec<ResponseOp> {
    results
        .into_iter()
        .zip(shapes)
        .map(|(result, shape)| ResponseOp { response: Some(response(result, shape, header)) })
        .collect()
}

fn response(result: TxnOpResult, shape: &OpShape, header: &ResponseHeader) -> EtcdOpResponse {
    let etcd = |kv| kv_to_etcd(to_pb(kv));
    let h = Some(*header);
    match (result, shape) {
        (TxnOpResult::Put { prev }, _) => {
            EtcdOpResponse::ResponsePut(PutResponse { header: h, prev_kv: prev.map(etcd) })
        }
        (TxnOpResult::Delete { deleted, prev }, _) => EtcdOpResponse::ResponseDeleteRange(DeleteRangeResponse {
            header: h,
            deleted: to_i64(deleted),
            prev_kvs: prev.into_iter().map(etcd).collect(),
        }),
        (TxnOpResult::Range { kvs, more }, shape) => {
            let shape = match shape {
                OpShape::Range(shape) => shape.clone(),
                _ => Shape::default(),
            };
            let count = kvs.len() as u64;
            let (kvs, more, count) = shape.answer(kvs, count, more);
            EtcdOpResponse::ResponseRange(RangeResponse { header: h, kvs, more, count })
        }
        (TxnOpResult::Txn { succeeded, results }, shape) => {
            let inner = match shape {
                OpShape::Txn(shapes) => shapes.branch(succeeded).to_vec(),
                _ => Vec::new(),
            };
            let responses = responses(results, &inner, header);
            EtcdOpResponse::ResponseTxn(TxnResponse { header: h, succeeded, responses })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(EtcdOp::RequestPut(crate::pb::etcd::etcdserverpb::PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            })),
        }
    }

    fn compare(key: &str, range_end: &[u8]) -> EtcdCompare {
        EtcdCompare {
            result: CompareResult::Greater as i32,
            target: EtcdTarget::Mod as i32,
            key: key.as_bytes().to_vec().into(),
            target_union: Some(TargetUnion::ModRevision(5)),
            range_end: range_end.to_vec().into(),
        }
    }

    #[test]
    fn compares_on_a_key_or_over_a_range_and_nested_transactions_map_onto_commands() {
        let nested = TxnRequest { compare: vec![compare("n", b"")], success: vec![put("x")], failure: vec![put("y")] };
        let txn = TxnRequest {
            compare: vec![compare("k", b""), compare("a", b"b"), compare("z", b"\0")],
            success: vec![put("k"), RequestOp { request: Some(EtcdOp::RequestTxn(nested)) }],
            failure: vec![],
        };
        let (Command::Txn(t), shapes) = to_command(&Limits::default(), &txn).expect("maps") else {
            panic!("a txn command")
        };
        assert_eq!(t.compares[0].target, CompareTarget::ModRevision(5));
        assert_eq!(
            t.compares[1].target,
            CompareTarget::InRange { end: Some(b"b".to_vec().into()), target: Box::new(CompareTarget::ModRevision(5)) }
        );
        assert!(matches!(&t.compares[2].target, CompareTarget::InRange { end: None, .. }), "\\0: to the end");
        assert!(matches!(&t.success[1], TxnOp::Txn(inner) if inner.success.len() == 1 && inner.failure.len() == 1));
        assert!(matches!(shapes.branch(true)[1], OpShape::Txn(_)));
    }

    #[test]
    fn a_key_written_by_a_nested_transaction_and_its_parent_is_refused() {
        let nested = TxnRequest { success: vec![put("k")], ..Default::default() };
        let txn = TxnRequest {
            success: vec![put("k"), RequestOp { request: Some(EtcdOp::RequestTxn(nested)) }],
            ..Default::default()
        };
        let refused = to_command(&Limits::default(), &txn).expect_err("duplicate");
        assert_eq!(refused.message(), errors::DUPLICATE_KEY);
        // The two branches of one nested transaction may write the same key: one runs.
        let both = TxnRequest { success: vec![put("k")], failure: vec![put("k")], ..Default::default() };
        let parent =
            TxnRequest { success: vec![RequestOp { request: Some(EtcdOp::RequestTxn(both)) }], ..Default::default() };
        assert!(to_command(&Limits::default(), &parent).is_ok());
        // Too deep.
        let mut deep = TxnRequest::default();
        for _ in 0..=MAX_DEPTH {
            deep = TxnRequest {
                success: vec![RequestOp { request: Some(EtcdOp::RequestTxn(deep)) }],
                ..Default::default()
            };
        }
        assert_eq!(to_command(&Limits::default(), &deep).expect_err("deep").code(), tonic::Code::InvalidArgument);
    }
}
