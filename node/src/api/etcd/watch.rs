//! etcd's `Watch` service: one bidirectional stream carrying many watches, each a petkv feed
//! ([`crate::api::watch::feed`]) of this member's state machine, told apart by watch id.
//!
//! - Create: the id asked for, or the next free one from 0 (etcd's numbering); a `created`
//!   answer first, then the events from the start revision on (`prev_kv`, the NOPUT/NODELETE
//!   filters), whole revisions per answer.
//! - A watch whose start revision was compacted away answers `canceled` with
//!   `compact_revision`, which etcd's clients turn into their compacted error.
//! - A watcher that reads slowly is not cut off as on petkv's own API: its feed restarts from
//!   where it stopped (bounded memory either way), so the watch stays whole, as etcd's does.
//! - Progress: `progress_notify` asks for a progress answer after [`PROGRESS_NOTIFY`] without
//!   events (etcd's default interval); a progress request is answered (watch id -1) with the
//!   lowest revision every watch of the stream has delivered up to.
//! - Cancel: the watch's feed stops and a `canceled` answer follows.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use petkv_client::pb::v1::WatchRequest as PbWatchRequest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::errors::to_etcd;
use super::{kv_to_etcd, non_negative, to_i64, EtcdApi};
use crate::api::watch::feed::{self, Ended, Update, WatchSpec};
use crate::pb::etcd::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcd::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcd::etcdserverpb::watch_server::Watch as EtcdWatch;
use crate::pb::etcd::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::pb::etcd::mvccpb;

/// After this long without events a `progress_notify` watch gets a progress answer (etcd's
/// default `--experimental-watch-progress-notify-interval`).
pub const PROGRESS_NOTIFY: Duration = Duration::from_secs(600);

/// Answers buffered for the client across all the watches of one stream.
const STREAM_BUFFER: usize = 64;

/// The id of answers that belong to no one watch (progress requested for the stream).
const STREAM_WIDE: i64 = -1;

/// The answers of one watch stream.
pub type EtcdWatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// One running watch of a stream.
struct Running {
    task: JoinHandle<()>,
    /// The revision this watch has delivered every change up to.
    delivered: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl EtcdWatch for EtcdApi {
    type WatchStream = EtcdWatchStream;

    async fn watch(&self, req: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        self.node().serving_raft().map_err(to_etcd)?;
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<WatchResponse, Status>>(STREAM_BUFFER);
        let etcd = self.clone();
        tokio::spawn(async move {
            let mut watches: HashMap<i64, Running> = HashMap::new();
            let mut next_id = 0i64;
            let stopped = etcd.node().stopped();
            tokio::pin!(stopped);
            loop {
                let request = tokio::select! {
                    request = incoming.next() => match request {
                        Some(Ok(request)) => request,
                        _ => break,
                    },
                    // The node stops: the stream ends (the client watches again elsewhere).
                    () = &mut stopped => {
                        let _ = tx.send(Err(Status::unavailable("etcdserver: server stopped"))).await;
                        break;
                    }
                };
                let answer = match request.request_union {
                    Some(RequestUnion::CreateRequest(create)) => {
                        etcd.create(create, &mut watches, &mut next_id, &tx).await
                    }
                    Some(RequestUnion::CancelRequest(cancel)) => match watches.remove(&cancel.watch_id) {
                        Some(running) => {
                            running.task.abort();
                            Some(WatchResponse {
                                header: Some(etcd.header(etcd.node().sm.current_revision())),
                                watch_id: cancel.watch_id,
                                canceled: true,
                                ..Default::default()
                            })
                        }
                        None => None,
                    },
                    Some(RequestUnion::ProgressRequest(_)) => {
                        let now = etcd.node().sm.current_revision();
                        let revision =
                            watches.values().map(|w| w.delivered.load(Ordering::Acquire)).min().unwrap_or(now);
                        Some(WatchResponse {
                            header: Some(etcd.header(revision)),
                            watch_id: STREAM_WIDE,
                            ..Default::default()
                        })
                    }
                    None => None,
                };
                if let Some(answer) = answer {
                    if tx.send(Ok(answer)).await.is_err() {
                        break;
                    }
                }
                watches.retain(|_, w| !w.task.is_finished());
            }
            for (_, w) in watches {
                w.task.abort();
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

impl EtcdApi {
    /// Starts a watch; the answer to send now (created, or why it was not).
    async fn create(
        &self,
        create: WatchCreateRequest,
        watches: &mut HashMap<i64, Running>,
        next_id: &mut i64,
        tx: &mpsc::Sender<Result<WatchResponse, Status>>,
    ) -> Option<WatchResponse> {
        let now = self.node().sm.current_revision();
        let refused = |watch_id: i64, reason: String| WatchResponse {
            header: Some(self.header(now)),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        let id = match create.watch_id {
            0 => {
                while watches.contains_key(next_id) {
                    *next_id += 1;
                }
                *next_id
            }
            id if watches.contains_key(&id) => {
                return Some(refused(id, format!("etcdserver: watch id {id} is already in use on this stream")))
            }
            id => id,
        };
        let spec = match self.spec(&create) {
            Ok(spec) => spec,
            Err(s) => return Some(refused(id, to_etcd(s).message().to_string())),
        };
        let filters: Vec<FilterType> = create.filters.iter().filter_map(|f| FilterType::try_from(*f).ok()).collect();
        let delivered = Arc::new(AtomicU64::new(spec.start.map_or(now, |s| s.saturating_sub(1))));
        let created =
            WatchResponse { header: Some(self.header(now)), watch_id: id, created: true, ..Default::default() };
        // The created answer goes before the feed's first events.
        if tx.send(Ok(created)).await.is_err() {
            return None;
        }
        let task = tokio::spawn(self.clone().run(id, spec, filters, delivered.clone(), tx.clone()));
        watches.insert(id, Running { task, delivered });
        None
    }

    /// What a create request watches, checked as petkv's own watch requests are.
    fn spec(&self, create: &WatchCreateRequest) -> Result<WatchSpec, Status> {
        let start = non_negative("start_revision", create.start_revision)?;
        let petkv = PbWatchRequest {
            key: create.key.clone(),
            range_end: create.range_end.clone(),
            prefix: false,
            start_revision: start,
            prev_kv: create.prev_kv,
            progress_interval_ms: 0,
        };
        let mut spec = self.node().config.limits.watch(&petkv)?;
        if create.progress_notify {
            spec.progress_every = Some(PROGRESS_NOTIFY);
        }
        Ok(spec)
    }

    /// Runs one watch until it is canceled, its history is compacted, or the stream ends.
    async fn run(
        self,
        id: i64,
        mut spec: WatchSpec,
        filters: Vec<FilterType>,
        delivered: Arc<AtomicU64>,
        tx: mpsc::Sender<Result<WatchResponse, Status>>,
    ) {
        let node = self.node();
        loop {
            let (mut updates, ended) = feed::start(node.sm.clone(), spec.clone(), node.config.watch, node.stopped());
            while let Some(update) = updates.recv().await {
                let (revision, answer) = match update {
                    Update::Created { revision } => (revision, None),
                    Update::Progress { revision } => {
                        (revision, Some(WatchResponse { watch_id: id, ..Default::default() }))
                    }
                    Update::Events { revision, events } => {
                        let events: Vec<mvccpb::Event> = events
                            .into_iter()
                            .map(crate::api::watch::event)
                            .map(event_to_etcd)
                            .filter(|e| !filtered(&filters, e))
                            .collect();
                        let answer =
                            (!events.is_empty()).then(|| WatchResponse { watch_id: id, events, ..Default::default() });
                        (revision, answer)
                    }
                };
                if let Some(mut answer) = answer {
                    answer.header = Some(self.header(revision));
                    if tx.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                delivered.store(revision, Ordering::Release);
            }
            let end = match ended.await {
                Ok(end) => end,
                Err(_) => return,
            };
            let answer = match end {
                // A slow reader: follow on from where the feed stopped.
                Ended::FellBehind { resume_from, .. } => {
                    spec.start = Some(resume_from);
                    continue;
                }
                Ended::Compacted { error, .. } => {
                    let compacted = match error {
                        crate::store::command::RevisionError::Compacted { compacted, .. } => compacted,
                        crate::store::command::RevisionError::Future { current, .. } => current,
                    };
                    Ok(WatchResponse {
                        header: Some(self.header(node.sm.current_revision())),
                        watch_id: id,
                        canceled: true,
                        compact_revision: to_i64(compacted),
                        ..Default::default()
                    })
                }
                Ended::Storage { detail, .. } => Ok(WatchResponse {
                    header: Some(self.header(node.sm.current_revision())),
                    watch_id: id,
                    canceled: true,
                    cancel_reason: format!("etcdserver: storage error: {detail}"),
                    ..Default::default()
                }),
                Ended::Stopped { .. } => Err(Status::unavailable("etcdserver: server stopped")),
            };
            let _ = tx.send(answer).await;
            return;
        }
    }
}

/// A petkv event as etcd's (the same types and key-values, etcd's integer widths).
fn event_to_etcd(e: petkv_client::pb::v1::Event) -> mvccpb::Event {
    mvccpb::Event { r#type: e.r#type, kv: e.kv.map(kv_to_etcd), prev_kv: e.prev_kv.map(kv_to_etcd) }
}

/// Whether a create request's filters drop `event`.
fn filtered(filters: &[FilterType], event: &mvccpb::Event) -> bool {
    let put = event.r#type == mvccpb::event::EventType::Put as i32;
    filters.iter().any(|f| match f {
        FilterType::Noput => put,
        FilterType::Nodelete => !put,
    })
}
