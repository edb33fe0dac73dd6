//! A lock on petkv, etcd's recipe (`concurrency.Mutex`): each contender puts a key
//! `<name>/<lease>` under a lease it keeps alive; the contender whose key has the lowest create
//! revision holds the lock, and every other waits for the deletion of the key just before its
//! own. A holder that dies loses its lease, so its key (and with it the lock) goes by itself
//! within the lease's TTL; a release revokes the lease. Waiting contenders are served in the
//! order they arrived.
//!
//! An election is the same recipe with a value: the holder is the leader and its key's value
//! its proposal ([`Lock::acquire_with_value`]); [`leader`] and [`next_leader_change`] let anyone
//! observe who leads.

use std::sync::Arc;

use crate::pb::v1::event::EventType;
use crate::pb::v1::txn_op::Op;
use crate::pb::v1::txn_op_result::Result as OpResult;
use crate::pb::v1::{TxnOp, TxnRange, TxnRequest, WatchRequest};
use crate::{Client, ClientError, LeaseKeeper, Watcher};

/// A held lock; [`Lock::release`] gives it up (dropping it only stops the keep-alives, and the
/// lock then goes when the lease expires).
pub struct Lock {
    client: Arc<Client>,
    /// The contender's key, `<name>/<lease in hex>`.
    pub key: Vec<u8>,
    pub lease: u64,
    /// The revision the key was created at: the lock's fencing token (it only grows).
    pub revision: u64,
    /// Keeps the lease alive; stops when dropped (a lock dropped, or an acquisition given up
    /// half-way: the lease then expires by itself).
    _keeper: LeaseKeeper,
}

impl Lock {
    /// Waits for lock `name` and takes it, under a lease of `ttl_seconds` kept alive from now
    /// until the lock is released or dropped.
    pub async fn acquire(client: Arc<Client>, name: &str, ttl_seconds: u64) -> Result<Self, ClientError> {
        Self::acquire_with_value(client, name, ttl_seconds, b"").await
    }

    /// [`Lock::acquire`], the contender's key holding `value` (an election's proposal).
    pub async fn acquire_with_value(
        client: Arc<Client>,
        name: &str,
        ttl_seconds: u64,
        value: &[u8],
    ) -> Result<Self, ClientError> {
        let lease = client.lease_grant(0, ttl_seconds).await?;
        let keeper = LeaseKeeper::for_ttl(client.clone(), lease.id, lease.ttl_seconds);
        let prefix = format!("{name}/");
        let key = format!("{prefix}{:016x}", lease.id).into_bytes();
        let held = async {
            let mine = client.put_with_lease(&key, value, lease.id).await?;
            let revision = mine.kv.map_or(0, |kv| kv.create_revision);
            loop {
                let (before, at) = predecessor(&client, &prefix, revision).await?;
                let Some(before) = before else { return Ok(revision) };
                wait_deleted(&client, &before, at + 1).await?;
            }
        };
        match held.await {
            Ok(revision) => Ok(Self { client, key, lease: lease.id, revision, _keeper: keeper }),
            Err(e) => {
                drop(keeper);
                let _ = client.lease_revoke(lease.id).await;
                Err(e)
            }
        }
    }

    /// Gives the lock up: revokes the lease, which deletes the key.
    pub async fn release(self) -> Result<(), ClientError> {
        let Self { client, lease, _keeper, .. } = self;
        drop(_keeper);
        client.lease_revoke(lease).await.map(|_| ())
    }
}

/// The current holder (leader) of `name`: its key and value, and the revision the answer was
/// read at.
pub async fn leader(client: &Client, name: &str) -> Result<(Option<(Vec<u8>, Vec<u8>)>, u64), ClientError> {
    let (kvs, at) = contenders(client, &format!("{name}/")).await?;
    let first = kvs.into_iter().min_by_key(|kv| kv.create_revision).map(|kv| (kv.key.to_vec(), kv.value.to_vec()));
    Ok((first, at))
}

/// Waits for the next change among `name`'s contenders after revision `at` (the leader may
/// have changed: ask [`leader`] again).
pub async fn next_leader_change(client: &Client, name: &str, at: u64) -> Result<(), ClientError> {
    let request = WatchRequest {
        key: format!("{name}/").into_bytes().into(),
        prefix: true,
        start_revision: at + 1,
        ..Default::default()
    };
    let mut watcher = Watcher::new(client, request);
    loop {
        if !watcher.next().await?.events.is_empty() {
            return Ok(());
        }
    }
}

/// Every contender under `prefix`, and the revision the answer was read at.
async fn contenders(client: &Client, prefix: &str) -> Result<(Vec<crate::pb::v1::KeyValue>, u64), ClientError> {
    let range = TxnOp {
        op: Some(Op::Range(TxnRange { key: prefix.as_bytes().to_vec().into(), prefix: true, ..Default::default() })),
    };
    let answer = client.txn(TxnRequest { success: vec![range], ..Default::default() }).await?;
    let at = answer.header.as_ref().map_or(0, |h| h.revision);
    match answer.results.into_iter().next().and_then(|r| r.result) {
        Some(OpResult::Range(range)) => Ok((range.kvs, at)),
        _ => Ok((Vec::new(), at)),
    }
}

/// The key of the contender just before `revision` under `prefix` (none: `revision` is the
/// first), and the store revision the answer was read at.
async fn predecessor(client: &Client, prefix: &str, revision: u64) -> Result<(Option<Vec<u8>>, u64), ClientError> {
    let (kvs, at) = contenders(client, prefix).await?;
    let before = kvs
        .into_iter()
        .filter(|kv| kv.create_revision < revision)
        .max_by_key(|kv| kv.create_revision)
        .map(|kv| kv.key.to_vec());
    Ok((before, at))
}

/// Waits until `key` is deleted, watching from revision `from`.
async fn wait_deleted(client: &Client, key: &[u8], from: u64) -> Result<(), ClientError> {
    let mut watcher =
        Watcher::new(client, WatchRequest { key: key.to_vec().into(), start_revision: from, ..Default::default() });
    loop {
        let response = watcher.next().await?;
        if response.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
            return Ok(());
        }
    }
}
