//! Watchers that run beside an experiment's workload: one per member (each starts on another
//! member and resumes on the next when its stream ends), watching every key of the workload
//! from the moment it starts. Their streams are checked afterwards against each other and the
//! recorded history ([`crate::checker::watch`]).

use std::time::Duration;

use petkv_client::pb::v1::event::EventType;
use petkv_client::pb::v1::WatchRequest;
use petkv_client::Watcher;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checker::watch::{SeenEvent, WatchLog};
use crate::workload::WorkloadSpec;

/// The keys the workload writes start with this.
const WORKLOAD_PREFIX: &[u8] = b"key-";

/// Running watchers.
pub struct Watchers {
    tasks: Vec<JoinHandle<WatchLog>>,
    /// `Some(r)`: stop once every revision up to `r` is covered.
    stop: watch::Sender<Option<u64>>,
}

impl Watchers {
    /// Starts `n` watchers; watcher `i` tries the endpoints from the `i`-th on.
    pub fn start(endpoints: &[String], spec: &WorkloadSpec, n: usize) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(None);
        let mut tasks = Vec::new();
        for i in 0..n {
            let client = spec.client(&crate::workload::endpoints_from(endpoints, i), Duration::from_secs(10))?;
            let stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move { record(client, stop_rx).await }));
        }
        Ok(Self { tasks, stop })
    }

    /// Stops every watcher once it covers `final_revision` (or after `patience`), and returns
    /// what each received.
    pub async fn stop(self, final_revision: u64, patience: Duration) -> Vec<WatchLog> {
        let _ = self.stop.send(Some(final_revision));
        let mut logs = Vec::new();
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(patience, task).await {
                Ok(Ok(log)) => logs.push(log),
                Ok(Err(e)) => {
                    logs.push(WatchLog { error: Some(format!("the watcher task failed: {e}")), ..Default::default() })
                }
                Err(_) => {
                    abort.abort();
                    logs.push(WatchLog {
                        error: Some(format!("did not reach revision {final_revision} within {patience:?}")),
                        ..Default::default()
                    });
                }
            }
        }
        logs
    }
}

/// Records one watcher's stream until told to stop.
async fn record(client: petkv_client::Client, mut stop: watch::Receiver<Option<u64>>) -> WatchLog {
    let request = WatchRequest {
        key: WORKLOAD_PREFIX.to_vec().into(),
        prefix: true,
        progress_interval_ms: 500,
        ..Default::default()
    };
    let mut watcher = Watcher::new(&client, request);
    let mut log = WatchLog::default();
    let mut created = false;
    loop {
        if let Some(target) = *stop.borrow() {
            if created && log.to >= target {
                break;
            }
        }
        let next = tokio::select! {
            next = watcher.next() => next,
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        match next {
            Ok(response) => {
                let revision = response.header.as_ref().map_or(0, |h| h.revision);
                if response.created && !created {
                    created = true;
                    log.from = revision + 1;
                }
                log.to = log.to.max(revision);
                if !response.events.is_empty() {
                    log.responses.push(
                        response
                            .events
                            .iter()
                            .map(|e| {
                                let kv = e.kv.clone().unwrap_or_default();
                                SeenEvent {
                                    revision: kv.mod_revision,
                                    key: kv.key.to_vec(),
                                    value: (e.r#type != EventType::Delete as i32).then(|| kv.value.to_vec()),
                                }
                            })
                            .collect(),
                    );
                }
            }
            Err(e) => {
                log.error = Some(format!("the watch ended: {e}"));
                break;
            }
        }
    }
    log.streams = watcher.streams_opened();
    log
}
