//! Keeping leases alive.
//!
//! - [`KeepAlive`]: one keep-alive stream; [`KeepAlive::renew`] sends a lease id and waits for
//!   the leader's answer, the TTL granted from now (0: the lease no longer exists).
//! - [`LeaseKeeper`]: a task that keeps one lease alive until it is dropped, over streams it
//!   opens itself. A renewal that fails, or takes longer than its timeout (a member that hangs:
//!   paused, or cut off with its connection still open), is given up and the next goes over a
//!   new stream that starts at the next member. Every renewal's outcome is reported
//!   ([`Renewal`]) for callers that want to know.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Streaming;

use crate::pb::v1::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use crate::{is_retryable, Client, ClientError};

/// An open keep-alive stream ([`crate::Client::keep_alive`]). When it fails (the leader
/// changed, the member stopped), open a new one and renew again.
pub struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    /// The client's endpoint the stream went to.
    endpoint: usize,
}

impl KeepAlive {
    pub(crate) fn new(
        requests: mpsc::Sender<LeaseKeepAliveRequest>,
        responses: Streaming<LeaseKeepAliveResponse>,
        endpoint: usize,
    ) -> Self {
        Self { requests, responses, endpoint }
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

/// The outcome of one renewal by a [`LeaseKeeper`].
#[derive(Debug)]
pub enum Renewal {
    /// The leader acknowledged it: the lease lives at least `ttl_seconds` from `sent`.
    Renewed { sent: Instant, ttl_seconds: u64 },
    /// It failed or timed out; the keeper tries again at once over a new stream, starting at
    /// the next member.
    Failed(ClientError),
    /// The keeper stopped: the lease no longer exists (`None`: it expired or was revoked), or
    /// the cluster refused the renewal in a way no retry fixes (bad credentials, say).
    Ended(Option<ClientError>),
}

/// Renewal outcomes kept for a caller that reads them late; later ones are dropped until it
/// catches up (the keeper never waits for its reader).
const REPORTS: usize = 64;
/// The pause after a failed renewal, so that a cluster that is down is not asked in a loop.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Keeps one lease alive until dropped; see the module docs.
pub struct LeaseKeeper {
    task: JoinHandle<()>,
    reports: mpsc::Receiver<Renewal>,
}

impl LeaseKeeper {
    /// Renews lease `id` every `every` after the last acknowledged renewal, each renewal
    /// given at most `renew_timeout`.
    pub fn start(client: Arc<Client>, id: u64, every: Duration, renew_timeout: Duration) -> Self {
        let (tx, reports) = mpsc::channel(REPORTS);
        let task = tokio::spawn(keep(client, id, every, renew_timeout, tx));
        Self { task, reports }
    }

    /// [`LeaseKeeper::start`] for a lease of `ttl_seconds`: a renewal every third of the TTL,
    /// each given a third of it, so two can fail before the lease is at risk.
    pub fn for_ttl(client: Arc<Client>, id: u64, ttl_seconds: u64) -> Self {
        let third = Duration::from_millis(ttl_seconds.max(1) * 1000 / 3);
        Self::start(client, id, third, third)
    }

    /// The next renewal's outcome; `None` once the keeper has stopped and every outcome was read.
    pub async fn next(&mut self) -> Option<Renewal> {
        self.reports.recv().await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(client: Arc<Client>, id: u64, every: Duration, renew_timeout: Duration, tx: mpsc::Sender<Renewal>) {
    let mut stream: Option<KeepAlive> = None;
    loop {
        let sent = Instant::now();
        let renewed = tokio::time::timeout(renew_timeout, async {
            let keep = match &mut stream {
                Some(k) => k,
                None => stream.insert(client.keep_alive().await?),
            };
            keep.renew(id).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Unavailable {
                endpoints: String::new(),
                last: format!("no answer to a keep-alive within {renew_timeout:?}"),
            })
        });
        match renewed {
            Ok(0) => {
                let _ = tx.try_send(Renewal::Ended(None));
                return;
            }
            Ok(ttl_seconds) => {
                let _ = tx.try_send(Renewal::Renewed { sent, ttl_seconds });
                tokio::time::sleep_until(sent + every).await;
            }
            Err(ClientError::Rejected(status)) if !is_retryable(&status) => {
                let _ = tx.try_send(Renewal::Ended(Some(ClientError::Rejected(status))));
                return;
            }
            Err(e) => {
                // The member that failed (or the one a stream was being opened on) is left
                // for the next.
                let failed = stream.take().map_or_else(|| client.preferred(), |k| k.endpoint);
                client.avoid(failed);
                let _ = tx.try_send(Renewal::Failed(e));
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
