//! `petkv.v1.KV`: the data path.
//!
//! - Put/Delete: validated, checked against the free-space guard ([`crate::edge::space`]: refused
//!   with RESOURCE_EXHAUSTED, never proposed, while this node's volume or, on the leader, any
//!   member's is below its reserve), turned into a [`crate::store::command::Command`], proposed with `client_write`. The reply
//!   comes after a majority has the entry fsync'd and this leader applied it. On a follower the
//!   request is forwarded to the leader. A write that does not finish within the request
//!   timeout is reported as DEADLINE_EXCEEDED with "outcome unknown", never as failed.
//! - Get/Scan: `linearizable` confirms leadership with a read-index round (no log write) and
//!   waits until the state machine applied up to it; `stale` reads the local state machine.

use petkv_client::pb::v1::kv_server::Kv;
use petkv_client::pb::v1::{
    CompactRequest, CompactResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse, KeyValue as PbKeyValue,
    PutRequest, PutResponse, ResponseHeader, ScanRequest, ScanResponse, TxnRequest, TxnResponse, WatchRequest,
};
use tonic::{Request, Response, Status};

use super::forward::{kv_client, Origin};
use super::leader::ReadAt;
use super::{header, revision_status, to_pb, Api};
use crate::api::validation::ReadConsistency;
use crate::store::command::{CommandResult, TxnOpResult};

#[tonic::async_trait]
impl Kv for Api {
    type WatchStream = super::watch::WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.watch_here(req)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.put(&msg)?;
        let (key, lease) = (msg.key.clone(), msg.lease);
        let answer = |result| match result {
            CommandResult::Put { index, revision, succeeded, current } => Ok(PutResponse {
                header: Some(header(&self.node, index, revision)),
                succeeded,
                // The client has the value it wrote: a successful put answers with the key's
                // revisions and version only (a failed compare with the value it found).
                kv: current.map(|mut kv| {
                    if succeeded {
                        kv.stored.value = Vec::new();
                    }
                    to_pb(kv)
                }),
                prev_kv: None,
            }),
            CommandResult::Txn { index, revision, succeeded, results } => {
                Ok(put_answer_with_previous(header(&self.node, index, revision), succeeded, results, (key, lease)))
            }
            other => Err(other),
        };
        self.write_or_forward(&origin, msg, cmd, answer, |ch, req| async move { kv_client(ch).put(req).await }).await
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.delete(&msg)?;
        let answer = |result| match result {
            CommandResult::Delete { index, revision, succeeded, deleted, previous } => Ok(DeleteResponse {
                header: Some(header(&self.node, index, revision)),
                succeeded,
                deleted,
                previous: previous.map(to_pb),
            }),
            other => Err(other),
        };
        self.write_or_forward(&origin, msg, cmd, answer, |ch, req| async move { kv_client(ch).delete(req).await }).await
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let origin = Origin::of(&req);
        let mut msg = req.into_inner();
        let plan = self.node.config.limits.get(&msg)?;
        if plan.consistency == ReadConsistency::Linearizable {
            match self.read_or_forward(&origin, msg, |ch, req| async move { kv_client(ch).get(req).await }).await? {
                ReadAt::Here(m) => msg = m,
                ReadAt::Leader(answer) => return Ok(answer),
            }
        } else {
            self.node.serving_raft()?;
        }
        let index = self.node.sm.applied_index();
        let sm = self.node.sm.clone();
        let key = msg.key.to_vec();
        let read = blocking(move || sm.get_at(&key, plan.revision)).await?.map_err(revision_status)?;
        Ok(Response::new(GetResponse {
            header: Some(header(&self.node, index, read.revision)),
            kv: read.value.map(to_pb),
        }))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let plan = self.node.config.limits.scan(&msg)?;
        if plan.consistency == ReadConsistency::Linearizable {
            let forward = |ch, req| async move { kv_client(ch).scan(req).await };
            if let ReadAt::Leader(answer) = self.read_or_forward(&origin, msg, forward).await? {
                return Ok(answer);
            }
        } else {
            self.node.serving_raft()?;
        }
        let index = self.node.sm.applied_index();
        let sm = self.node.sm.clone();
        let read = blocking(move || sm.scan_at(plan.start, plan.end, plan.limit, plan.revision))
            .await?
            .map_err(revision_status)?;
        let page = read.value;
        let next_page_token = match (page.more, page.kvs.last()) {
            (true, Some(last)) => last.key.clone().into(),
            _ => Default::default(),
        };
        Ok(Response::new(ScanResponse {
            header: Some(header(&self.node, index, read.revision)),
            kvs: page.kvs.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.txn(&msg)?;
        let answer = |result| match result {
            CommandResult::Txn { index, revision, succeeded, results } => Ok(TxnResponse {
                header: Some(header(&self.node, index, revision)),
                succeeded,
                results: super::txn::results_to_pb(results),
            }),
            other => Err(other),
        };
        self.write_or_forward(&origin, msg, cmd, answer, |ch, req| async move { kv_client(ch).txn(req).await }).await
    }

    async fn compact(&self, req: Request<CompactRequest>) -> Result<Response<CompactResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = self.node.config.limits.compact(&msg)?;
        let answer = |result| match result {
            CommandResult::Compacted { index, revision, compacted } => {
                Ok(CompactResponse { header: Some(header(&self.node, index, revision)), compacted })
            }
            other => Err(other),
        };
        self.write_or_forward(&origin, msg, cmd, answer, |ch, req| async move { kv_client(ch).compact(req).await })
            .await
    }
}

/// Runs a local read that may touch the disk off the async workers.
async fn blocking<T: Send + 'static>(read: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| Status::internal(format!("read task: {e}")))?
        .map_err(Api::storage_error)
}

/// The answer to a put that asked for the key before it (proposed as a one-put transaction,
/// see [`crate::api::validation`]): as a plain put's, plus `prev_kv`. The key after the write
/// follows from the one before it, since the put was the transaction's only change.
fn put_answer_with_previous(
    header: ResponseHeader,
    succeeded: bool,
    results: Vec<TxnOpResult>,
    (key, lease): (prost::bytes::Bytes, u64),
) -> PutResponse {
    let revision = header.revision;
    match results.into_iter().next() {
        Some(TxnOpResult::Put { prev }) if succeeded => {
            let kv = PbKeyValue {
                key,
                value: Default::default(),
                create_revision: prev.as_ref().map_or(revision, |p| p.stored.create_revision),
                mod_revision: revision,
                version: prev.as_ref().map_or(1, |p| p.stored.version + 1),
                lease,
            };
            PutResponse { header: Some(header), succeeded, kv: Some(kv), prev_kv: prev.map(to_pb) }
        }
        Some(TxnOpResult::Range { kvs, .. }) => {
            PutResponse { header: Some(header), succeeded, kv: kvs.into_iter().next().map(to_pb), prev_kv: None }
        }
        _ => PutResponse { header: Some(header), succeeded, kv: None, prev_kv: None },
    }
}
