//! [`KvTarget`] for petkv: one [`petkv_client::Client`] per connection.

use std::sync::Arc;
use std::time::Duration;

use petkv_client::pb::v1::Consistency;
use petkv_client::Client;

use super::workload::KvTarget;

/// One petkv connection (a client over every endpoint, the leader first).
pub struct PetkvTarget {
    client: Client,
}

impl PetkvTarget {
    /// `connections` clients, each over `endpoints`.
    pub fn connect(endpoints: &[String], connections: usize) -> anyhow::Result<Vec<Arc<Self>>> {
        (0..connections.max(1))
            .map(|_| Ok(Arc::new(Self { client: Client::new(endpoints, Duration::from_secs(10))? })))
            .collect()
    }
}

impl KvTarget for PetkvTarget {
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
}
