//! [`KvTarget`] for etcd through the `etcd-client` crate: one client (one balanced channel over
//! every member) per connection. Linearizable get is etcd's default; get-stale is a
//! serializable get; cas compares the key's `mod_revision` in a transaction.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, LeaseClient, Txn, TxnOp, WatchClient,
    WatchOptions, WatchStream,
};

use super::workload::{stamp_of, EventStream, KvTarget};

/// One etcd connection.
pub struct EtcdTarget {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
}

impl EtcdTarget {
    /// `connections` clients, each over `endpoints` (`host:port`).
    pub async fn connect(endpoints: &[String], connections: usize) -> anyhow::Result<Vec<Arc<Self>>> {
        let mut out = Vec::new();
        for _ in 0..connections.max(1) {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(10));
            let client = Client::connect(endpoints, Some(options))
                .await
                .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
            out.push(Arc::new(Self {
                kv: client.kv_client(),
                watch: client.watch_client(),
                lease: client.lease_client(),
            }));
        }
        Ok(out)
    }
}

/// An etcd watch stream (one watch on its own gRPC stream).
pub struct EtcdEvents(WatchStream);

impl EventStream for EtcdEvents {
    async fn next_batch(&mut self) -> Result<Option<Vec<u64>>, String> {
        let response = self.0.message().await.map_err(|e| e.to_string())?;
        Ok(response.map(|r| r.events().iter().map(|e| e.kv().map_or(0, |kv| stamp_of(kv.value()))).collect()))
    }
}

impl KvTarget for EtcdTarget {
    type Events = EtcdEvents;

    async fn put(&self, key: String, value: Arc<Vec<u8>>) -> Result<(), String> {
        self.kv.clone().put(key, value.to_vec(), None).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn get(&self, key: String) -> Result<(), String> {
        self.kv.clone().get(key, None).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn get_stale(&self, key: String) -> Result<(), String> {
        let options = GetOptions::new().with_serializable();
        self.kv.clone().get(key, Some(options)).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn cas(&self, key: String, value: Arc<Vec<u8>>) -> Result<bool, String> {
        let mut kv = self.kv.clone();
        let got = kv.get(key.clone(), None).await.map_err(|e| e.to_string())?;
        // mod_revision 0 compares as "absent", as petkv's mod revision 0 does.
        let revision = got.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        kv.txn(txn).await.map(|r| r.succeeded()).map_err(|e| e.to_string())
    }

    async fn txn(&self, keys: [String; 2], value: Arc<Vec<u8>>) -> Result<(), String> {
        let [a, b] = keys;
        let txn = Txn::new().and_then([TxnOp::put(a, value.to_vec(), None), TxnOp::put(b, value.to_vec(), None)]);
        self.kv.clone().txn(txn).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn watch_prefix(&self, prefix: String) -> Result<EtcdEvents, String> {
        let options = WatchOptions::new().with_prefix();
        let mut stream = self.watch.clone().watch(prefix, Some(options)).await.map_err(|e| e.to_string())?;
        match stream.message().await.map_err(|e| e.to_string())? {
            Some(first) if first.created() => Ok(EtcdEvents(stream)),
            Some(other) => Err(format!("the watch's first response was not `created`: {other:?}")),
            None => Err("the watch stream ended before it was established".into()),
        }
    }

    async fn lease_grant(&self, ttl_seconds: u64) -> Result<(), String> {
        let ttl = i64::try_from(ttl_seconds).map_err(|_| format!("ttl {ttl_seconds} s is too long"))?;
        self.lease.clone().grant(ttl, None).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
