//! `petkv.v1.KV/Watch`: a stream of the changes to a key, a prefix or a range.
//!
//! - [`feed`]: one watcher's feed from the local state machine (catch-up from the history,
//!   then the applied runs; bounded memory; cut off when its watcher stops reading).
//! - this module: the request checked and turned into a [`WatchSpec`], the feed's updates
//!   turned into `WatchResponse`s, and the way it ended into the stream's final status.
//!
//! A watch is served by the member that receives it, follower or read replica included: its
//! events are those its state machine applied, which every member applies in the same order.

pub mod feed;

use std::ops::Bound;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use petkv_client::pb::v1::{event::EventType, Event, WatchRequest, WatchResponse};
use tonic::{Request, Response, Status};

pub use feed::{Ended, FeedLimits, Update, WatchSpec};

use super::txn::TO_THE_END;
use super::validation::{prefix_end, Limits};
use super::{header, revision_status, to_pb, Api};
use crate::store::command::{KeyValue, RevisionError};
use crate::store::state_machine::history::RevisionedEvent;

/// The shortest progress interval a watcher may ask for.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The response stream of a watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

impl Limits {
    /// Checks a watch request and turns it into what the feed watches.
    pub fn watch(&self, req: &WatchRequest) -> Result<WatchSpec, Status> {
        for k in [&req.key, &req.range_end] {
            if k.len() > self.max_key_bytes {
                return Err(Status::invalid_argument(format!(
                    "watched key is {} bytes, over the limit of {} bytes (--max-key-bytes)",
                    k.len(),
                    self.max_key_bytes
                )));
            }
        }
        let range = match (req.prefix, req.range_end.is_empty()) {
            (true, true) => (Bound::Included(req.key.to_vec()), prefix_end(&req.key)),
            (true, false) => return Err(Status::invalid_argument("set either prefix or range_end, not both")),
            (false, true) if req.key.is_empty() => {
                return Err(Status::invalid_argument("key must not be empty (set prefix to watch every key)"))
            }
            (false, true) => (Bound::Included(req.key.to_vec()), Bound::Included(req.key.to_vec())),
            (false, false) if req.range_end == TO_THE_END => (Bound::Included(req.key.to_vec()), Bound::Unbounded),
            (false, false) if req.key >= req.range_end => {
                return Err(Status::invalid_argument(format!(
                    "empty or inverted range: key {:?} must sort before range_end {:?}",
                    String::from_utf8_lossy(&req.key),
                    String::from_utf8_lossy(&req.range_end)
                )))
            }
            (false, false) => (Bound::Included(req.key.to_vec()), Bound::Excluded(req.range_end.to_vec())),
        };
        let progress_every = match req.progress_interval_ms {
            0 => None,
            ms => {
                let every = Duration::from_millis(u64::from(ms));
                if every < MIN_PROGRESS_INTERVAL {
                    return Err(Status::invalid_argument(format!(
                        "progress_interval_ms must be 0 (none) or at least {}",
                        MIN_PROGRESS_INTERVAL.as_millis()
                    )));
                }
                Some(every)
            }
        };
        let start = (req.start_revision != 0).then_some(req.start_revision);
        Ok(WatchSpec { range, start, prev_kv: req.prev_kv, progress_every })
    }
}

impl Api {
    /// Starts a watch on this node.
    pub(super) fn watch_here(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let node = self.node.clone();
        node.serving_raft()?;
        let spec = node.config.limits.watch(req.get_ref())?;
        // A start past the current revision is fine: the watcher waits for it.
        let compacted = node.sm.compacted();
        if let Some(requested) = spec.start.filter(|start| *start < compacted) {
            return Err(revision_status(RevisionError::Compacted { requested, compacted }));
        }
        let (updates, ended) = feed::start(node.sm.clone(), spec, node.config.watch, node.stopped());
        let head = node.clone();
        let responses =
            tokio_stream::wrappers::ReceiverStream::new(updates).map(move |update| Ok(response(&head, update)));
        let end = futures::stream::once(async move {
            match ended.await {
                Ok(ended) => Err(end_status(&ended)),
                Err(_) => Err(Status::unavailable("the watch ended; watch again from the last revision received + 1")),
            }
        });
        Ok(Response::new(Box::pin(responses.chain(end))))
    }
}

/// A feed's update as a response.
fn response(node: &crate::node::Node, update: Update) -> WatchResponse {
    let at = |revision| Some(header(node, node.sm.applied_index(), revision));
    match update {
        Update::Created { revision } => WatchResponse { header: at(revision), created: true, ..Default::default() },
        Update::Progress { revision } => WatchResponse { header: at(revision), progress: true, ..Default::default() },
        Update::Events { revision, events } => WatchResponse {
            header: at(revision),
            events: events.into_iter().map(event).collect(),
            ..Default::default()
        },
    }
}

/// One change as an event.
pub(crate) fn event(e: RevisionedEvent) -> Event {
    let key = e.event.key;
    let prev_kv = e.event.before.map(|stored| to_pb(KeyValue { key: key.clone(), stored }));
    match e.event.after {
        Some(stored) => Event { r#type: EventType::Put as i32, kv: Some(to_pb(KeyValue { key, stored })), prev_kv },
        None => Event {
            r#type: EventType::Delete as i32,
            kv: Some(petkv_client::pb::v1::KeyValue {
                key: key.into(),
                mod_revision: e.revision,
                ..Default::default()
            }),
            prev_kv,
        },
    }
}

/// The status a watch stream ends with.
pub fn end_status(ended: &Ended) -> Status {
    let resume = ended.resume_from();
    match ended {
        Ended::Compacted { error, .. } => {
            Status::failed_precondition(format!("{error}; the watch cannot resume from revision {resume}"))
        }
        Ended::FellBehind { waited, .. } => Status::resource_exhausted(format!(
            "the watcher did not read for {} ms with its buffer full, so the watch was ended; \
             watch again from revision {resume} to miss nothing",
            waited.as_millis()
        )),
        Ended::Storage { detail, .. } => {
            Status::internal(format!("storage error: {detail}; watch again from revision {resume}"))
        }
        Ended::Stopped { .. } => {
            Status::unavailable(format!("the node is stopping; watch again from revision {resume} on another member"))
        }
    }
}
