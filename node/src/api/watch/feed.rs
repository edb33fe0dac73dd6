//! One watcher's feed: the changes to a key range from a start revision on, read from the
//! local state machine, ordered, each once, with no gap.
//!
//! The feed subscribes to the state machine's applied runs *before* it reads anything, then
//! catches up from the retained history (in pages of about [`PAGE_BYTES`], read off the async
//! workers) until it reaches the store's revision, then follows the applied runs. A run that
//! starts past the revision it expects (after a snapshot install) or a subscription that fell
//! behind (the subscription keeps [`crate::store::state_machine::history::APPLIED_BACKLOG`]
//! runs) sends it back to the history. So a watcher's memory is bounded whatever it watches
//! and however slowly it reads, and writes never wait for a watcher.
//!
//! A feed ends: when the history it needs was compacted ([`Ended::Compacted`]); when its
//! watcher has not taken an update for [`FeedLimits::slow_grace`] ([`Ended::FellBehind`]: the
//! watcher stopped reading, the feed gives its place up); when the node stops. Each end says
//! the revision to resume from.

use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::store::command::RevisionError;
use crate::store::state_machine::history::{Applied, RevisionedEvent};
use crate::store::StateMachine;

/// About how many bytes of history one catch-up read (and so one update) holds; a single
/// revision larger than this still goes whole.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Updates buffered for a watcher that has not taken them yet.
pub const BUFFERED_UPDATES: usize = 8;

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    /// The first revision to deliver; `None`: the next change from now.
    pub start: Option<u64>,
    /// Keep each event's value before the change.
    pub prev_kv: bool,
    /// Send progress when nothing was sent for this long.
    pub progress_every: Option<Duration>,
}

/// The node's bounds on every feed.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// How long a full buffer may wait for its watcher before the feed is cut off.
    pub slow_grace: Duration,
}

/// What a feed sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The feed is established: it delivers every change after `revision`.
    Created { revision: u64 },
    /// The changes of whole revisions in the range, in order; `revision` is the last one's.
    Events { revision: u64, events: Vec<RevisionedEvent> },
    /// Nothing changed in the range up to `revision`.
    Progress { revision: u64 },
}

/// Why a feed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The history from `resume_from` on is compacted.
    Compacted { resume_from: u64, error: RevisionError },
    /// The watcher did not take an update for `waited`.
    FellBehind { resume_from: u64, waited: Duration },
    /// The state machine could not be read.
    Storage { resume_from: u64, detail: String },
    /// The node stops.
    Stopped { resume_from: u64 },
}

/// Starts a feed; updates go to the returned receiver, and the reason it ended to the
/// oneshot. Dropping the receiver ends it; so does `node_stopped` completing.
pub fn start(
    sm: StateMachine,
    spec: WatchSpec,
    limits: FeedLimits,
    node_stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> (mpsc::Receiver<Update>, oneshot::Receiver<Ended>) {
    let (tx, rx) = mpsc::channel(BUFFERED_UPDATES);
    let (end_tx, end_rx) = oneshot::channel();
    let applied = sm.subscribe();
    let next = spec.start.unwrap_or_else(|| sm.current_revision() + 1).max(1);
    let node_stopped = Box::pin(node_stopped);
    let feed = Feed { sm, spec, limits, tx, next, last_sent: Instant::now(), node_stopped };
    tokio::spawn(async move {
        if let Some(ended) = feed.run(applied).await {
            let _ = end_tx.send(ended);
        }
    });
    (rx, end_rx)
}

struct Feed {
    sm: StateMachine,
    spec: WatchSpec,
    limits: FeedLimits,
    tx: mpsc::Sender<Update>,
    /// The next revision to deliver.
    next: u64,
    last_sent: Instant,
    /// Completes when the node begins to stop: the feed ends then (`Ended::Stopped`).
    node_stopped: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// What the feed does next.
enum Step {
    /// Read the history from `next` on.
    CatchUp,
    /// Follow the applied runs.
    Follow,
}

impl Feed {
    /// Runs until the feed ends; `None` when its watcher went away.
    async fn run(mut self, mut applied: broadcast::Receiver<Applied>) -> Option<Ended> {
        let created = Update::Created { revision: self.next - 1 };
        if let Err(end) = self.send(created).await {
            return end;
        }
        let mut step = Step::CatchUp;
        loop {
            step = match step {
                Step::CatchUp => match self.catch_up().await {
                    Ok(()) => Step::Follow,
                    Err(end) => return end,
                },
                Step::Follow => match self.follow(&mut applied).await {
                    Ok(step) => step,
                    Err(end) => return end,
                },
            };
        }
    }

    /// Delivers the history from `next` up to the store's revision.
    async fn catch_up(&mut self) -> Result<(), Option<Ended>> {
        while self.next <= self.sm.current_revision() {
            let (sm, from) = (self.sm.clone(), self.next);
            let read = tokio::task::spawn_blocking(move || sm.events_from(from, PAGE_BYTES)).await;
            let events = match read {
                Ok(Ok(Ok(events))) => events,
                Ok(Ok(Err(error))) => return Err(Some(Ended::Compacted { resume_from: from, error })),
                Ok(Err(e)) => return Err(Some(Ended::Storage { resume_from: from, detail: e.to_string() })),
                Err(e) => return Err(Some(Ended::Storage { resume_from: from, detail: e.to_string() })),
            };
            let Some(last) = events.last().map(|e| e.revision) else {
                // Nothing kept from `from` on although the store is past it: a snapshot that
                // replaced the history is being installed; follow, and come back.
                return Ok(());
            };
            self.deliver(last, events).await?;
        }
        Ok(())
    }

    /// Follows the applied runs until it must catch up from the history again.
    async fn follow(&mut self, applied: &mut broadcast::Receiver<Applied>) -> Result<Step, Option<Ended>> {
        loop {
            let progress_at = self.spec.progress_every.map(|every| self.last_sent + every);
            let tick = async {
                match progress_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = applied.recv() => match received {
                    Ok(run) => {
                        if run.revision < self.next {
                            continue;
                        }
                        let contiguous = run.events.first().is_some_and(|e| e.revision <= self.next);
                        if !contiguous {
                            return Ok(Step::CatchUp);
                        }
                        let events: Vec<RevisionedEvent> =
                            run.events.iter().filter(|e| e.revision >= self.next).cloned().collect();
                        self.deliver(run.revision, events).await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Step::CatchUp),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Some(Ended::Stopped { resume_from: self.next }));
                    }
                },
                () = tick => {
                    let progress = Update::Progress { revision: self.next - 1 };
                    self.send(progress).await?;
                }
                () = self.tx.closed() => return Err(None),
                () = &mut self.node_stopped => return Err(Some(Ended::Stopped { resume_from: self.next })),
            }
        }
    }

    /// Sends the events of whole revisions up to `last` that fall in the range; moves `next`
    /// past `last` either way.
    async fn deliver(&mut self, last: u64, events: Vec<RevisionedEvent>) -> Result<(), Option<Ended>> {
        let range = &self.spec.range;
        let events: Vec<RevisionedEvent> = events
            .into_iter()
            .filter(|e| range.contains(&e.event.key))
            .map(|mut e| {
                if !self.spec.prev_kv {
                    e.event.before = None;
                }
                e
            })
            .collect();
        let resume_from = self.next;
        self.next = last + 1;
        if let Some(revision) = events.last().map(|e| e.revision) {
            if let Err(end) = self.send(Update::Events { revision, events }).await {
                // Nothing of this update reached the watcher.
                return Err(end.map(|e| e.resuming_from(resume_from)));
            }
        }
        Ok(())
    }

    /// Hands `update` to the watcher, waiting at most the slow-watcher grace for room.
    async fn send(&mut self, update: Update) -> Result<(), Option<Ended>> {
        match tokio::time::timeout(self.limits.slow_grace, self.tx.send(update)).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(Ended::FellBehind { resume_from: self.next, waited: self.limits.slow_grace })),
        }
    }
}

impl Ended {
    /// The revision to watch from again to miss nothing.
    pub fn resume_from(&self) -> u64 {
        match self {
            Ended::Compacted { resume_from, .. }
            | Ended::FellBehind { resume_from, .. }
            | Ended::Storage { resume_from, .. }
            | Ended::Stopped { resume_from } => *resume_from,
        }
    }

    fn resuming_from(self, from: u64) -> Self {
        match self {
            Ended::FellBehind { waited, .. } => Ended::FellBehind { resume_from: from, waited },
            other => other,
        }
    }
}
