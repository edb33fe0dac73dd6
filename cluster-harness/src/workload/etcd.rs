//! The workload's operations through etcd's v3 API (the pods' etcd ports), with the
//! `etcd-client` crate: what an etcd user's program would send.

use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, ResponseHeader, Txn, TxnOp, TxnOpResponse};

use super::{Answer, Failure, TxnKind};
use crate::checker::{Input, Output, Served};

/// A KV client over `endpoints` (`host:port` of etcd ports), balanced over all of them.
pub async fn connect(endpoints: &[String], timeout: Duration) -> anyhow::Result<KvClient> {
    let options = ConnectOptions::new().with_connect_timeout(timeout).with_timeout(timeout);
    let client = Client::connect(endpoints, Some(options))
        .await
        .with_context(|| format!("connect to the etcd ports {}", endpoints.join(",")))?;
    Ok(client.kv_client())
}

/// Where an answer came from: etcd's header has the member and the revision, no Raft index.
fn served(h: Option<&ResponseHeader>) -> Option<Served> {
    h.map(|h| Served { node: h.member_id(), raft_index: 0, term: h.raft_term(), revision: h.revision() as u64 })
}

/// etcd's errors do not say whether a write reached the log: a failed write is unknown.
fn failure(write: bool) -> Failure {
    if write {
        Failure::Unknown
    } else {
        Failure::NoEffect
    }
}

pub async fn one(kv: &KvClient, key: &[u8], input: &Input) -> Result<Answer, Failure> {
    let mut kv = kv.clone();
    match input {
        Input::Put(v) => {
            let r = kv.put(key, v.clone(), None).await.map_err(|_| failure(true))?;
            Ok((vec![Output::Ok], served(r.header())))
        }
        Input::Delete => {
            let r = kv.delete(key, None).await.map_err(|_| failure(true))?;
            Ok((vec![Output::Ok], served(r.header())))
        }
        Input::Get => {
            let r = kv.get(key, Some(GetOptions::new())).await.map_err(|_| failure(false))?;
            let value = r.kvs().first().map(|kv| kv.value().to_vec());
            Ok((vec![Output::Value(value)], served(r.header())))
        }
        Input::CompareAndPut { .. } => unreachable!("the workload issues no compare-and-put"),
    }
}

pub async fn txn(kv: &KvClient, keys: &[Vec<u8>; 2], kind: &TxnKind) -> Result<Answer, Failure> {
    let ops: Vec<TxnOp> = keys
        .iter()
        .map(|key| match kind {
            TxnKind::PutBoth(v) => TxnOp::put(key.clone(), v.clone(), None),
            TxnKind::GetBoth => TxnOp::get(key.clone(), None),
        })
        .collect();
    let write = matches!(kind, TxnKind::PutBoth(_));
    let r = kv.clone().txn(Txn::new().and_then(ops)).await.map_err(|_| failure(write))?;
    let outputs = r
        .op_responses()
        .into_iter()
        .map(|op| match op {
            TxnOpResponse::Get(get) => Output::Value(get.kvs().first().map(|kv| kv.value().to_vec())),
            _ => Output::Ok,
        })
        .collect();
    Ok((outputs, served(r.header())))
}
