//! Keeping leases alive over one stream: [`KeepAlive::renew`] sends a lease id and waits for
//! the leader's answer, the TTL granted from now (0: the lease no longer exists).

use tokio::sync::mpsc;
use tonic::Streaming;

use crate::pb::v1::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use crate::ClientError;

/// An open keep-alive stream ([`crate::Client::keep_alive`]). When it fails (the leader
/// changed, the member stopped), open a new one and renew again.
pub struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    pub(crate) fn new(
        requests: mpsc::Sender<LeaseKeepAliveRequest>,
        responses: Streaming<LeaseKeepAliveResponse>,
    ) -> Self {
        Self { requests, responses }
    }

    /// Renews lease `id`; the TTL in seconds the leader granted from now (0: no such lease).
    pub async fn renew(&mut self, id: u64) -> Result<u64, ClientError> {
        let closed =
            || ClientError::Unavailable { endpoints: String::new(), last: "the keep-alive stream ended".into() };
        self.requests.send(LeaseKeepAliveRequest { id }).await.map_err(|_| closed())?;
        match self.responses.message().await {
            Ok(Some(r)) => Ok(r.ttl_seconds),
            Ok(None) => Err(closed()),
            Err(status) => Err(ClientError::Rejected(status)),
        }
    }
}
