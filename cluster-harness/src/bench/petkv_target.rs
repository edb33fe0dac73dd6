//! [`KvTarget`] for petkv: one [`petkv_client::Client`] per connection.

use std::sync::Arc;
use std::time::Duration;

use petkv_client::pb::v1::{Consistency, WatchRequest, WatchResponse};
use petkv_client::Client;

use super::workload::{stamp_of, EventStream, KvTarget};

/// One petkv connection: a client over every endpoint, which starts at the first and fails
/// over to the next.
pub struct PetkvTarget {
    client: Client,
}

impl PetkvTarget {
    /// `connections` clients, each over `endpoints` in the order given.
    pub fn connect(endpoints: &[String], connections: usize) -> anyhow::Result<Vec<Arc<Self>>> {
        (0..connections.max(1)).map(|_| Self::one(endpoints)).collect()
    }

    /// `connections` clients spread over `endpoints`: client `c` starts at endpoint
    /// `c mod len` and fails over to the ones after it.
    pub fn connect_spread(endpoints: &[String], connections: usize) -> anyhow::Result<Vec<Arc<Self>>> {
        (0..connections.max(1)).map(|c| Self::one(&crate::workload::endpoints_from(endpoints, c))).collect()
    }

    fn one(endpoints: &[String]) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self { client: Client::new(endpoints, Duration::from_secs(10))? }))
    }
}

/// A petkv watch stream.
pub struct PetkvEvents(tonic::Streaming<WatchResponse>);

impl EventStream for PetkvEvents {
    async fn next_batch(&mut self) -> Result<Option<Vec<u64>>, String> {
        let response = self.0.message().await.map_err(|e| e.to_string())?;
        Ok(response.map(|r| r.events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| stamp_of(&kv.value))).collect()))
    }
}

impl KvTarget for PetkvTarget {
    type Events = PetkvEvents;

    async fn put(&self, key: String, value: Arc<Vec<u8>>) -> Result<(), String> {
        self.client.put(key.as_bytes(), &value, None).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn get(&self, key: String) -> Result<(), String> {
        self.client.get(key.as_bytes(), Consistency::Linearizable).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn get_stale(&self, key: String) -> Result<(), String> {
        self.client.get(key.as_bytes(), Consistency::Stale).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn cas(&self, key: String, value: Arc<Vec<u8>>) -> Result<bool, String> {
        let got = self.client.get(key.as_bytes(), Consistency::Linearizable).await.map_err(|e| e.to_string())?;
        // Mod revision 0 means "absent": the put then succeeds only if the key still does not exist.
        let mod_revision = got.kv.map(|kv| kv.mod_revision).unwrap_or(0);
        let put = self.client.put(key.as_bytes(), &value, Some(mod_revision)).await.map_err(|e| e.to_string())?;
        Ok(put.succeeded)
    }

    async fn txn(&self, keys: [String; 2], value: Arc<Vec<u8>>) -> Result<(), String> {
        use petkv_client::pb::v1::txn_op::Op;
        use petkv_client::pb::v1::{TxnOp, TxnPut, TxnRequest};
        let success = keys
            .iter()
            .map(|k| TxnOp {
                op: Some(Op::Put(TxnPut {
                    key: k.as_bytes().to_vec().into(),
                    value: value.to_vec().into(),
                    ..Default::default()
                })),
            })
            .collect();
        self.client.txn(TxnRequest { success, ..Default::default() }).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn watch_prefix(&self, prefix: String) -> Result<PetkvEvents, String> {
        let request = WatchRequest { key: prefix.into_bytes().into(), prefix: true, ..Default::default() };
        let mut stream = self.client.watch_stream(request).await.map_err(|e| e.to_string())?;
        match stream.message().await.map_err(|e| e.to_string())? {
            Some(first) if first.created => Ok(PetkvEvents(stream)),
            Some(other) => Err(format!("the watch's first response was not `created`: {other:?}")),
            None => Err("the watch stream ended before it was established".into()),
        }
    }

    async fn lease_grant(&self, ttl_seconds: u64) -> Result<(), String> {
        self.client.lease_grant(0, ttl_seconds).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
