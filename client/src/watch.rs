//! A watch that survives the member it watches: [`Watcher`] keeps the last revision it
//! delivered and, when its stream ends for a reason another stream can fix (the member
//! stopped or restarted, the connection broke, the server cut it off for not reading), opens
//! a new one on the next member that answers from the revision after it. Nothing is missed or
//! delivered twice, because every member applies the same changes at the same revisions.
//!
//! A compacted history (FAILED_PRECONDITION), bad input or missing rights end the watch with
//! the server's answer.

use std::time::Duration;

use tonic::{Code, Status, Streaming};

use crate::pb::v1::{WatchRequest, WatchResponse};
use crate::{Client, ClientError};

/// The pause before a new stream after one ended, doubling up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A watch that resumes across members; see the module docs.
pub struct Watcher<'a> {
    client: &'a Client,
    request: WatchRequest,
    stream: Option<Streaming<WatchResponse>>,
    /// The next revision to ask for when a new stream is opened (0 until the first stream
    /// says where it starts).
    next: u64,
    /// Streams opened, the first included.
    streams: u64,
}

impl<'a> Watcher<'a> {
    /// A watcher for `request` (its `start_revision`, if set, is where it starts).
    pub fn new(client: &'a Client, request: WatchRequest) -> Self {
        let next = request.start_revision;
        Self { client, request, stream: None, next, streams: 0 }
    }

    /// The revision the next response starts from, as far as this watcher knows.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    /// How many streams it has opened (more than one: it resumed).
    pub fn streams_opened(&self) -> u64 {
        self.streams
    }

    /// The next response: events of whole revisions, progress, or (once per stream) `created`.
    pub async fn next(&mut self) -> Result<WatchResponse, ClientError> {
        let mut pause = FIRST_PAUSE;
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let request = WatchRequest { start_revision: self.next, ..self.request.clone() };
                    let stream = self.client.watch_stream(request).await?;
                    self.streams += 1;
                    self.stream.insert(stream)
                }
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    let revision = response.header.as_ref().map_or(0, |h| h.revision);
                    if response.created || response.progress || !response.events.is_empty() {
                        self.next = self.next.max(revision + 1);
                    }
                    return Ok(response);
                }
                Ok(None) => self.stream = None,
                Err(status) if resumable(&status) => self.stream = None,
                Err(status) => return Err(ClientError::Rejected(status)),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

/// Whether another stream from the same revision may succeed where this one ended.
fn resumable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::ResourceExhausted | Code::Internal | Code::Aborted
    )
}
