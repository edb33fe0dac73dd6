//! A lease holder beside an experiment's workload: it holds a key with a short lease, keeps the
//! lease alive every half second (resuming on another member when its stream ends), while a
//! reader checks the key every 100 ms. Afterwards the holder stops and the time until the key
//! disappears is measured. What petkv promises, and what is checked:
//!
//! - a key whose lease's keep-alives are acknowledged never disappears: a read that found it
//!   absent must come at least a TTL after the last acknowledged keep-alive;
//! - after the holder stops, the key disappears within the TTL plus an election and a
//!   margin ([`GONE_MARGIN`]), and not before the TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use petkv_client::pb::v1::Consistency;
use petkv_client::{LeaseKeeper, Renewal};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::workload::WorkloadSpec;

/// The lease's TTL.
pub const TTL: Duration = Duration::from_secs(2);
/// How long past the TTL the key may take to disappear (an election, the expiry check, reads).
pub const GONE_MARGIN: Duration = Duration::from_secs(3);
const KEY: &[u8] = b"lease-holder/owner";

/// What the lease holder found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeaseFindings {
    pub lease: u64,
    pub ttl_ms: u64,
    pub keep_alives_acknowledged: usize,
    pub keep_alives_failed: usize,
    pub reads: usize,
    /// Reads that found the key absent while the lease was being kept alive.
    pub absent_reads: usize,
    /// The longest time between two acknowledged keep-alives.
    pub longest_gap_ms: u64,
    /// After the holder stopped: how long from the last acknowledged keep-alive until the key
    /// was gone.
    pub gone_after_ms: Option<u64>,
    pub failures: Vec<String>,
}

impl LeaseFindings {
    pub fn holds(&self) -> bool {
        self.failures.is_empty()
    }
}

#[derive(Default)]
struct Record {
    /// When each acknowledged keep-alive was sent: the lease lives at least a TTL past it.
    acks: Vec<Instant>,
    failed: usize,
    /// (completed, found) of each read.
    reads: Vec<(Instant, bool)>,
    /// When a keep-alive found the lease gone, if one did.
    ended: Option<Instant>,
}

/// How long one keep-alive may take before the holder tries the next member.
const RENEW_TIMEOUT: Duration = Duration::from_millis(400);
/// The pause after an acknowledged keep-alive before the next.
const RENEW_EVERY: Duration = Duration::from_millis(500);

/// A running lease holder.
pub struct LeaseHolder {
    lease: u64,
    client: Arc<petkv_client::Client>,
    record: Arc<Mutex<Record>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl LeaseHolder {
    /// Grants the lease, puts the key with it, and starts keeping it alive and reading it.
    pub async fn start(endpoints: &[String], spec: &WorkloadSpec) -> anyhow::Result<Self> {
        let client = Arc::new(spec.client(endpoints, Duration::from_secs(5))?);
        let lease = client.lease_grant(0, TTL.as_secs()).await?.id;
        client.put_with_lease(KEY, b"held", lease).await?;
        let record = Arc::new(Mutex::new(Record::default()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        // Its own client: a member that hangs is left for the next (the keeper's renewal
        // timeout), without moving the reader's client.
        let keeper_client = Arc::new(spec.client(endpoints, RENEW_TIMEOUT)?);
        let mut keeper = LeaseKeeper::start(keeper_client, lease, RENEW_EVERY, RENEW_TIMEOUT);
        let keeper = {
            let (record, mut stop_rx) = (record.clone(), stop_rx.clone());
            tokio::spawn(async move {
                loop {
                    // Stopping drops the keeper: no keep-alive is sent after it.
                    let renewal = tokio::select! {
                        _ = stop_rx.wait_for(|stop| *stop) => return,
                        renewal = keeper.next() => renewal,
                    };
                    let Some(renewal) = renewal else { return };
                    let mut r = record.lock().await;
                    match renewal {
                        Renewal::Renewed { sent, .. } => r.acks.push(sent.into_std()),
                        Renewal::Failed(_) => r.failed += 1,
                        Renewal::Ended(_) => {
                            r.ended = Some(Instant::now());
                            return;
                        }
                    }
                }
            })
        };
        let reader = {
            let (client, record) = (client.clone(), record.clone());
            tokio::spawn(async move {
                while !*stop_rx.borrow() {
                    if let Ok(r) = client.get(KEY, Consistency::Linearizable).await {
                        record.lock().await.reads.push((Instant::now(), r.kv.is_some()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Ok(Self { lease, client, record, stop, tasks: vec![keeper, reader] })
    }

    /// Stops keeping the lease alive, waits for the key to go, and checks what was recorded.
    pub async fn finish(self) -> LeaseFindings {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let record = self.record.lock().await;
        let mut f = LeaseFindings {
            lease: self.lease,
            ttl_ms: TTL.as_millis() as u64,
            keep_alives_acknowledged: record.acks.len(),
            keep_alives_failed: record.failed,
            reads: record.reads.len(),
            ..Default::default()
        };
        // The lease lives at least a TTL past the sending of any acknowledged keep-alive, so a
        // read that completed before then cannot find the key gone.
        let alive_until = record.acks.iter().max().map(|s| *s + TTL);
        for (completed, found) in &record.reads {
            if *found {
                continue;
            }
            f.absent_reads += 1;
            if let Some(until) = alive_until.filter(|until| completed < until) {
                f.failures.push(format!(
                    "the key was found gone {} ms before the lease could expire (a TTL after the last \
                     acknowledged keep-alive)",
                    until.duration_since(*completed).as_millis()
                ));
            }
        }
        let gaps = record.acks.windows(2).map(|w| w[1].duration_since(w[0])).max().unwrap_or_default();
        f.longest_gap_ms = gaps.as_millis() as u64;
        if let Some(ended) = record.ended {
            f.failures.push(format!(
                "the lease ended while it was being kept alive ({} ms after the last acknowledged keep-alive; \
                 longest gap between acknowledgements {} ms)",
                record.acks.last().map_or(0, |a| ended.duration_since(*a).as_millis()),
                f.longest_gap_ms
            ));
        }
        let last_ack = record.acks.last().copied();
        drop(record);
        // Now the holder has stopped: the key must go within the TTL and a failover.
        let Some(last_ack) = last_ack else {
            f.failures.push("no keep-alive was ever acknowledged".into());
            return f;
        };
        let deadline = last_ack + TTL + GONE_MARGIN + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(KEY, Consistency::Linearizable).await {
                if r.kv.is_none() {
                    let gone = Instant::now().duration_since(last_ack);
                    f.gone_after_ms = Some(gone.as_millis() as u64);
                    if gone < TTL {
                        f.failures.push(format!("the key went {} ms after the last keep-alive", gone.as_millis()));
                    }
                    if gone > TTL + GONE_MARGIN {
                        f.failures
                            .push(format!("the key took {} ms to go after the last keep-alive", gone.as_millis()));
                    }
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if f.gone_after_ms.is_none() {
            f.failures.push("the key never went after the holder stopped".into());
        }
        f
    }
}
