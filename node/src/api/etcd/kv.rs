//! etcd's `KV` service: Range, Put, DeleteRange, Txn and Compact on petkv's store.
//!
//! - Range reads the local state machine, after a read-index round unless `serializable`
//!   (etcd's word for petkv's stale reads), a page at a time at one revision: `count` is every
//!   key in the range at that revision, as etcd's; sorting and the mod/create revision filters
//!   see the whole range before `limit` applies, as etcd's do.
//! - Put, DeleteRange, Txn and Compact become petkv's own requests, served by its handlers; a
//!   range end of one zero byte (every key from `key` on) means the same in both APIs.
//! - `ignore_value`/`ignore_lease` keep the key's current value or lease by a compare-and-set
//!   on its mod revision, retried while other writers change it.

use std::io;
use std::ops::Bound;

use petkv_client::pb::v1::kv_server::Kv;
use petkv_client::pb::v1::{CompactRequest, Consistency, GetRequest, PutRequest as PbPutRequest};
use tonic::{Request, Response, Status};

use super::errors::{self, to_etcd};
use super::{kv_to_etcd, native, non_negative, not_forwarded, to_i64, EtcdApi};
use crate::api::forward::Origin;
use crate::api::revision_status;
use crate::api::txn::TO_THE_END;
use crate::pb::etcd::etcdserverpb::kv_server::Kv as EtcdKv;
use crate::pb::etcd::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcd::etcdserverpb::request_op::Request as EtcdOp;
use crate::pb::etcd::etcdserverpb::response_op::Response as EtcdOpResponse;
use crate::pb::etcd::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RangeStreamResponse, RequestOp, TxnRequest, TxnResponse,
};
use crate::pb::etcd::mvccpb;
use crate::store::command::{CommandResult, KeyValue, RevisionError};
use crate::store::StateMachine;

/// Keys read per page while a Range walks its range.
const PAGE: usize = 1_000;

/// How many times a put with `ignore_value`/`ignore_lease` retries when the key changed
/// between its read and its compare-and-set.
const IGNORE_RETRIES: usize = 32;

/// What a Range asks for beyond its keys: filters, order, limit and shape of the answer.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    limit: usize,
    sort: Option<(SortTarget, bool)>,
    min_mod: u64,
    max_mod: u64,
    min_create: u64,
    max_create: u64,
    keys_only: bool,
    count_only: bool,
}

impl Shape {
    pub fn of(r: &RangeRequest) -> Result<Self, Status> {
        let target = SortTarget::try_from(r.sort_target)
            .map_err(|_| Status::invalid_argument(format!("etcdserver: unknown sort target {}", r.sort_target)))?;
        let order = SortOrder::try_from(r.sort_order)
            .map_err(|_| Status::invalid_argument(format!("etcdserver: unknown sort order {}", r.sort_order)))?;
        // As etcd: keys come in key order, so only another target sorts by default.
        let sort = match (order, target) {
            (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => None,
            (SortOrder::None, t) | (SortOrder::Ascend, t) => Some((t, false)),
            (SortOrder::Descend, t) => Some((t, true)),
        };
        Ok(Self {
            limit: usize::try_from(non_negative("limit", r.limit)?).unwrap_or(usize::MAX),
            sort,
            min_mod: non_negative("min_mod_revision", r.min_mod_revision)?,
            max_mod: non_negative("max_mod_revision", r.max_mod_revision)?,
            min_create: non_negative("min_create_revision", r.min_create_revision)?,
            max_create: non_negative("max_create_revision", r.max_create_revision)?,
            keys_only: r.keys_only,
            count_only: r.count_only,
        })
    }

    fn filters(&self) -> bool {
        self.min_mod != 0 || self.max_mod != 0 || self.min_create != 0 || self.max_create != 0
    }

    /// Whether every key of the range must be held before the limit applies.
    fn needs_all(&self) -> bool {
        self.sort.is_some() || self.filters()
    }

    fn passes(&self, kv: &KeyValue) -> bool {
        let s = &kv.stored;
        (self.min_mod == 0 || s.mod_revision >= self.min_mod)
            && (self.max_mod == 0 || s.mod_revision <= self.max_mod)
            && (self.min_create == 0 || s.create_revision >= self.min_create)
            && (self.max_create == 0 || s.create_revision <= self.max_create)
    }

    /// The answer from the keys held (`held`, in key order) and the count of the whole range;
    /// `skipped`: keys of the range were not held (past the limit).
    pub fn answer(&self, held: Vec<KeyValue>, count: u64, skipped: bool) -> (Vec<mvccpb::KeyValue>, bool, i64) {
        let mut kvs: Vec<KeyValue> = held.into_iter().filter(|kv| self.passes(kv)).collect();
        if let Some((target, descending)) = self.sort {
            kvs.sort_by(|a, b| {
                let (a, b) = (&a.stored, &b.stored);
                match target {
                    SortTarget::Key => std::cmp::Ordering::Equal,
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                }
            });
            if descending {
                kvs.reverse();
            }
        }
        let mut more = skipped;
        if self.limit > 0 && kvs.len() > self.limit {
            kvs.truncate(self.limit);
            more = true;
        }
        if self.count_only {
            return (Vec::new(), more, to_i64(count));
        }
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                let mut kv = kv_to_etcd(crate::api::to_pb(kv));
                if self.keys_only {
                    kv.value = Default::default();
                }
                kv
            })
            .collect();
        (kvs, more, to_i64(count))
    }
}

/// etcd's `key` and `range_end` as bounds: no end is the key alone, one zero byte every key
/// from `key` on.
fn bounds(key: &[u8], range_end: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    match range_end {
        [] => (Bound::Included(key.to_vec()), Bound::Included(key.to_vec())),
        end if end == TO_THE_END => (Bound::Included(key.to_vec()), Bound::Unbounded),
        end => (Bound::Included(key.to_vec()), Bound::Excluded(end.to_vec())),
    }
}

/// What a Range read: the keys held (in key order), the count of every key in the range, and
/// whether some of them were not held.
struct RangeRead {
    held: Vec<KeyValue>,
    count: u64,
    skipped: bool,
}

/// Reads the range at one revision (`at`, or now).
fn read_range(
    sm: &StateMachine,
    range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    at: Option<u64>,
    shape: &Shape,
) -> io::Result<Result<RangeRead, RevisionError>> {
    let hold = if shape.needs_all() || shape.limit == 0 { usize::MAX } else { shape.limit };
    let keep = !shape.count_only || shape.filters();
    let (mut held, mut count) = (Vec::new(), 0u64);
    let read = for_each_at(sm, range, at, |kv| {
        count += 1;
        if keep && held.len() < hold {
            held.push(kv);
        }
    })?;
    if let Err(e) = read {
        return Ok(Err(e));
    }
    let skipped = (held.len() as u64) < count && !shape.count_only;
    Ok(Ok(RangeRead { held, count, skipped }))
}

/// Visits every key of a range as it was at one revision (`at`, or now), in key order, a page
/// at a time with every page read at the first one's revision; returns that revision.
pub(super) fn for_each_at(
    sm: &StateMachine,
    (mut start, end): (Bound<Vec<u8>>, Bound<Vec<u8>>),
    mut at: Option<u64>,
    mut visit: impl FnMut(KeyValue),
) -> io::Result<Result<u64, RevisionError>> {
    loop {
        let page = match sm.scan_at(start, end.clone(), PAGE, at)? {
            Ok(page) => page,
            Err(e) => return Ok(Err(e)),
        };
        at = Some(page.revision);
        let (more, last) = (page.value.more, page.value.kvs.last().map(|kv| kv.key.clone()));
        page.value.kvs.into_iter().for_each(&mut visit);
        match (more, last) {
            (true, Some(key)) => start = Bound::Excluded(key),
            _ => return Ok(Ok(page.revision)),
        }
    }
}

impl EtcdApi {
    /// A put through petkv's handler.
    async fn native_put(&self, req: &Request<PutRequest>, msg: PbPutRequest) -> Result<PutResponse, Status> {
        let answer = Kv::put(&self.api, native(req, msg)).await.map_err(to_etcd)?.into_inner();
        if !answer.succeeded {
            return Err(Status::aborted("etcdserver: the key changed while it was written"));
        }
        Ok(PutResponse { header: Some(self.header_of(answer.header)), prev_kv: answer.prev_kv.map(kv_to_etcd) })
    }

    /// A put that keeps the key's value or lease: read the key, write it back only if it has
    /// not changed since (its mod revision), again while other writers change it.
    async fn put_keeping(&self, req: &Request<PutRequest>) -> Result<PutResponse, Status> {
        let p = req.get_ref();
        for _ in 0..IGNORE_RETRIES {
            let get = GetRequest { key: p.key.clone(), consistency: Consistency::Linearizable as i32, revision: 0 };
            let current = Kv::get(&self.api, native(req, get)).await.map_err(to_etcd)?.into_inner().kv;
            let Some(current) = current else { return Err(Status::invalid_argument(errors::KEY_NOT_FOUND)) };
            let msg = PbPutRequest {
                key: p.key.clone(),
                value: if p.ignore_value { current.value.clone() } else { p.value.clone() },
                lease: if p.ignore_lease { current.lease } else { non_negative("lease", p.lease)? },
                if_mod_revision: Some(current.mod_revision),
                prev_kv: p.prev_kv,
                write_id: None,
            };
            let answer = Kv::put(&self.api, native(req, msg)).await.map_err(to_etcd)?.into_inner();
            if answer.succeeded {
                let prev_kv = answer.prev_kv.map(kv_to_etcd);
                return Ok(PutResponse { header: Some(self.header_of(answer.header)), prev_kv });
            }
        }
        Err(Status::aborted(format!(
            "etcdserver: the key changed under {IGNORE_RETRIES} attempts to keep its value or lease; retry"
        )))
    }

    /// A transaction: proposed as petkv's command (nested transactions and compares over a
    /// range included, [`super::txn`]) and answered as etcd's.
    async fn etcd_txn<T>(&self, req: &Request<T>, txn: &TxnRequest) -> Result<TxnResponse, Status> {
        let origin = Origin::of(req);
        let (cmd, shapes) = super::txn::to_command(&self.node().config.limits, txn)?;
        let answer = |result| match result {
            CommandResult::Txn { revision, succeeded, results, .. } => {
                let header = self.header(revision);
                let responses = super::txn::responses(results, shapes.branch(succeeded), &header);
                Ok(TxnResponse { header: Some(header), succeeded, responses })
            }
            other => Err(other),
        };
        self.api
            .write_or_forward(&origin, (), cmd, answer, not_forwarded)
            .await
            .map(Response::into_inner)
            .map_err(to_etcd)
    }
}

/// The answer stream of a RangeStream.
pub type RangeChunks = std::pin::Pin<Box<dyn futures::Stream<Item = Result<RangeStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EtcdKv for EtcdApi {
    type RangeStreamStream = RangeChunks;

    /// One chunk holding the whole answer of [`EtcdKv::range`] (etcd allows any split).
    async fn range_stream(&self, req: Request<RangeRequest>) -> Result<Response<RangeChunks>, Status> {
        let answer = self.range(req).await?.into_inner();
        let chunk = RangeStreamResponse { range_response: Some(answer) };
        Ok(Response::new(Box::pin(futures::stream::once(std::future::ready(Ok(chunk))))))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let origin = Origin::of(&req);
        let r = req.into_inner();
        if r.key.is_empty() {
            return Err(Status::invalid_argument(errors::EMPTY_KEY));
        }
        let shape = Shape::of(&r)?;
        let at = match non_negative("revision", r.revision)? {
            0 => None,
            at => Some(at),
        };
        if r.serializable {
            self.node().serving_raft().map_err(to_etcd)?;
        } else {
            self.confirm_linearizable(&origin).await.map_err(to_etcd)?;
        }
        let sm = self.node().sm.clone();
        let range = bounds(&r.key, &r.range_end);
        let read_shape = shape.clone();
        let read = tokio::task::spawn_blocking(move || read_range(&sm, range, at, &read_shape))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("etcdserver: storage error: {e}")))?
            .map_err(|e| to_etcd(revision_status(e)))?;
        let (kvs, more, count) = shape.answer(read.held, read.count, read.skipped);
        // As etcd's: the header has the store's revision, also for a read of a past one.
        let header = self.header(self.node().sm.current_revision());
        Ok(Response::new(RangeResponse { header: Some(header), kvs, more, count }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let p = req.get_ref();
        if p.ignore_value && !p.value.is_empty() {
            return Err(Status::invalid_argument(errors::VALUE_PROVIDED));
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(Status::invalid_argument(errors::LEASE_PROVIDED));
        }
        if p.ignore_value || p.ignore_lease {
            return self.put_keeping(&req).await.map(Response::new);
        }
        let msg = PbPutRequest {
            key: p.key.clone(),
            value: p.value.clone(),
            lease: non_negative("lease", p.lease)?,
            prev_kv: p.prev_kv,
            if_mod_revision: None,
            write_id: None,
        };
        self.native_put(&req, msg).await.map(Response::new)
    }

    async fn delete_range(&self, req: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        let d = req.get_ref();
        if d.key.is_empty() {
            return Err(Status::invalid_argument(errors::EMPTY_KEY));
        }
        let op = RequestOp { request: Some(EtcdOp::RequestDeleteRange(d.clone())) };
        let txn = TxnRequest { compare: vec![], success: vec![op], failure: vec![] };
        let answer = self.etcd_txn(&req, &txn).await?;
        let deleted = answer.responses.into_iter().next().and_then(|r| match r.response {
            Some(EtcdOpResponse::ResponseDeleteRange(d)) => Some(d),
            _ => None,
        });
        let deleted = deleted.unwrap_or_default();
        Ok(Response::new(DeleteRangeResponse { header: answer.header, ..deleted }))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let txn = req.get_ref().clone();
        self.etcd_txn(&req, &txn).await.map(Response::new)
    }

    async fn compact(&self, req: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        let revision = non_negative("revision", req.get_ref().revision)?;
        let answer =
            Kv::compact(&self.api, native(&req, CompactRequest { revision })).await.map_err(to_etcd)?.into_inner();
        Ok(Response::new(CompactionResponse { header: Some(self.header_of(answer.header)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::command::StoredValue;

    fn kv(key: &str, version: u64, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            stored: StoredValue {
                value: value.into(),
                create_revision: version,
                mod_revision: 10 - version,
                version,
                lease: 0,
            },
        }
    }

    #[test]
    fn a_range_sorts_and_filters_before_its_limit_and_counts_every_key() {
        let shape = Shape { limit: 2, sort: Some((SortTarget::Version, true)), min_create: 2, ..Default::default() };
        let held = vec![kv("a", 1, "x"), kv("b", 3, "y"), kv("c", 2, "z"), kv("d", 4, "w")];
        let (kvs, more, count) = shape.answer(held, 4, false);
        let keys: Vec<&[u8]> = kvs.iter().map(|k| k.key.as_ref()).collect();
        assert_eq!(keys, [&b"d"[..], b"b"], "versions 4 and 3, highest first; a (create 1) filtered out");
        assert!(more, "c is past the limit");
        assert_eq!(count, 4, "count is the whole range, as etcd's");

        let keys_only = Shape { keys_only: true, ..Default::default() };
        let (kvs, more, _) = keys_only.answer(vec![kv("a", 1, "x")], 1, false);
        assert!(kvs[0].value.is_empty() && !more);
        let count_only = Shape { count_only: true, ..Default::default() };
        assert_eq!(count_only.answer(vec![], 7, false), (vec![], false, 7));
    }

    #[test]
    fn etcd_ranges_map_onto_bounds() {
        assert_eq!(bounds(b"k", b""), (Bound::Included(b"k".to_vec()), Bound::Included(b"k".to_vec())));
        assert_eq!(bounds(b"k", b"\0"), (Bound::Included(b"k".to_vec()), Bound::Unbounded));
        assert_eq!(bounds(b"a", b"b"), (Bound::Included(b"a".to_vec()), Bound::Excluded(b"b".to_vec())));
    }
}
