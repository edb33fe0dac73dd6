//! Fencing a stale process that shares this node's identity.
//!
//! Kubernetes force-deletes a pod on an unreachable node while its process may still run; the
//! replacement starts under the same name on a copy of (or the same) volume. Two processes
//! with one node id would break Raft's one-vote-per-term rule. Every start of a node bumps a
//! **start epoch** kept on its volume; every Raft message carries the sender's epoch and the
//! newest epoch of the addressee that the sender has seen; replies carry the responder's.
//!
//! Invariants:
//! - A node refuses (and never hands to openraft) a message or a reply from an epoch older
//!   than the newest it has seen of that node id; the table of newest epochs is kept on the
//!   volume, so a restart does not forget it.
//! - A process that learns of a newer epoch of itself has been replaced: it leaves a
//!   `replaced` record on its volume and exits at once ([`EXIT_REPLACED`]); a later start on
//!   that copy of the volume refuses to run.
//! - A restarted node announces its epoch to every other voter, each records it durably
//!   before answering, and the node starts Raft only when all have answered: from then on no
//!   peer counts a vote or an append acknowledgement of the older process (a request that
//!   passed the check before the epoch was recorded gets a refusal instead of its answer).
//!   The answers give the [`VoteFloor`]: the node grants no vote, and campaigns in no term, at
//!   or below the highest term any peer had seen (the older process may have voted in those
//!   terms), and votes only for candidates whose log reaches the highest log id any peer held
//!   (every entry the older process helped commit is on some peer, and may be missing from
//!   this copy of the volume).
//! - A leader that learns of a newer epoch of a follower lets that follower's log go back
//!   (openraft's `allow_next_revert`): the new process's copy may lack the older one's
//!   last appends.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::types::{LogId, NodeId};
use crate::support::durable;

/// Exit status of a process that found itself replaced.
pub const EXIT_REPLACED: i32 = 5;
/// gRPC metadata key on a refusal of a stale sender: the newest epoch the refuser has seen.
pub const REPLACED_METADATA: &str = "petkv-replaced-by-epoch";

const EPOCH_FILE: &str = "start-epoch";
const SEEN_FILE: &str = "peer-epochs.json";
const REPLACED_FILE: &str = "replaced";

/// Errors opening the fence of a volume.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} is damaged ({detail}); it holds the start epoch or the peers' epochs of this node")]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "this copy of the volume belongs to a process that was replaced by a newer process with the same \
         identity ({record}): it is stale and must not run. If the pod should run from this volume anyway, \
         delete the volume's contents so the pod rejoins under a new identity"
    )]
    Replaced { record: String },
}

/// What a peer's epoch says about the process that sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// As new as any seen (or the sender named no epoch).
    Current,
    /// Newer than any seen before: recorded in memory; the caller persists the table.
    Newer,
    /// Older than `newest`: a replaced process.
    Stale { newest: u64 },
}

/// What a restarted node learned from its peers before it starts Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoteFloor {
    /// The highest term a peer had seen.
    pub term: u64,
    /// The highest log id a peer held (in its log or applied, committed or not).
    pub holds: Option<LogId>,
}

impl VoteFloor {
    /// Combines what two peers reported.
    pub fn max(self, other: VoteFloor) -> VoteFloor {
        VoteFloor { term: self.term.max(other.term), holds: self.holds.max(other.holds) }
    }

    /// Why a vote for a candidate in `term` whose log ends at `last_log_id` must be refused, if
    /// it must.
    pub fn refuses(&self, term: u64, last_log_id: Option<&LogId>) -> Option<String> {
        if term <= self.term {
            return Some(format!(
                "term {term} is not past term {} (this node restarted; an older process with its identity may \
                 have voted in terms up to that)",
                self.term
            ));
        }
        if last_log_id.copied() < self.holds {
            return Some(format!(
                "the candidate's log ends at {last_log_id:?}, before {:?}, which a peer held when this node restarted",
                self.holds
            ));
        }
        None
    }
}

/// This process's start epoch and the newest epochs seen of the other nodes.
pub struct Fence {
    dir: PathBuf,
    epoch: u64,
    seen: Mutex<BTreeMap<NodeId, u64>>,
    /// Serializes writes of the table, so an older snapshot never overwrites a newer one.
    persisting: tokio::sync::Mutex<()>,
    floor: OnceLock<VoteFloor>,
    /// Node ids seen with a newer epoch, for the leader to allow their logs to go back.
    restarted_tx: tokio::sync::mpsc::UnboundedSender<NodeId>,
    restarted_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<NodeId>>>,
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FenceError + 'a {
    move |source| FenceError::Io { what, path: path.to_path_buf(), source }
}

fn read_optional(path: &Path) -> Result<Option<String>, FenceError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", path)(e)),
    }
}

#[derive(Serialize, Deserialize)]
struct ReplacedRecord {
    epoch: u64,
    replaced_by: u64,
}

impl Fence {
    /// Opens the fence of the volume at `dir` for a new start: refuses a volume whose process
    /// was replaced, then bumps the start epoch durably. Blocking file I/O.
    pub fn start(dir: &Path) -> Result<Fence, FenceError> {
        let epoch_path = dir.join(EPOCH_FILE);
        let previous = match read_optional(&epoch_path)? {
            None => 0,
            Some(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| FenceError::Damaged { path: epoch_path.clone(), detail: e.to_string() })?,
        };
        let replaced_path = dir.join(REPLACED_FILE);
        if let Some(text) = read_optional(&replaced_path)? {
            let record: ReplacedRecord = serde_json::from_str(&text)
                .map_err(|e| FenceError::Damaged { path: replaced_path.clone(), detail: e.to_string() })?;
            // The volume itself moved on (the replacement ran on this very volume) when its
            // epoch is past the replaced one.
            if previous <= record.epoch {
                return Err(FenceError::Replaced {
                    record: format!("start epoch {} replaced by epoch {}", record.epoch, record.replaced_by),
                });
            }
        }
        let epoch = previous + 1;
        durable::write_atomically(&epoch_path, epoch.to_string().as_bytes())
            .map_err(io_error("writing", &epoch_path))?;
        let seen_path = dir.join(SEEN_FILE);
        let seen = match read_optional(&seen_path)? {
            None => BTreeMap::new(),
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| FenceError::Damaged { path: seen_path.clone(), detail: e.to_string() })?,
        };
        let (restarted_tx, restarted_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Fence {
            dir: dir.to_path_buf(),
            epoch,
            seen: Mutex::new(seen),
            persisting: tokio::sync::Mutex::new(()),
            floor: OnceLock::new(),
            restarted_tx,
            restarted_rx: Mutex::new(Some(restarted_rx)),
        })
    }

    /// This process's start epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, u64>> {
        crate::support::sync::lock(&self.seen)
    }

    /// The newest epoch seen of `node` (0: none).
    pub fn newest_of(&self, node: NodeId) -> u64 {
        self.seen().get(&node).copied().unwrap_or(0)
    }

    /// The newest epoch of `node` when `epoch` is older than it: a replaced process.
    pub fn stale(&self, node: NodeId, epoch: u64) -> Option<u64> {
        let newest = self.newest_of(node);
        (epoch != 0 && epoch < newest).then_some(newest)
    }

    /// The node ids seen restarting (a newer epoch), once: for the task that lets their logs
    /// go back on the leader.
    pub fn take_restarted(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<NodeId>> {
        crate::support::sync::lock(&self.restarted_rx).take()
    }

    /// Records that `node` spoke with `epoch` (0: the sender named none, which proves nothing).
    pub fn observe(&self, node: NodeId, epoch: u64) -> Observed {
        if epoch == 0 {
            return Observed::Current;
        }
        let mut seen = self.seen();
        let newest = seen.entry(node).or_insert(0);
        match epoch.cmp(newest) {
            std::cmp::Ordering::Less => Observed::Stale { newest: *newest },
            std::cmp::Ordering::Equal => Observed::Current,
            std::cmp::Ordering::Greater => {
                *newest = epoch;
                let _ = self.restarted_tx.send(node);
                Observed::Newer
            }
        }
    }

    /// Writes the table of newest epochs to the volume, durably.
    pub async fn persist(&self) -> io::Result<()> {
        let _turn = self.persisting.lock().await;
        let bytes = serde_json::to_vec(&*self.seen()).map_err(io::Error::other)?;
        let path = self.dir.join(SEEN_FILE);
        tokio::task::spawn_blocking(move || durable::write_atomically(&path, &bytes)).await.map_err(io::Error::other)?
    }

    /// Stops this process if `addressed_epoch` (the epoch of this node a sender has seen) is
    /// newer than its own: another process with this identity has started since.
    pub fn check_addressed(&self, addressed_epoch: u64) {
        if addressed_epoch > self.epoch {
            self.replaced(addressed_epoch);
        }
    }

    /// This process was replaced by one at epoch `newer`: it records that on its volume and
    /// exits at once. Nothing it would still do (flush, hand over, answer) is safe: its
    /// volume is a stale copy and its peers already follow the replacement.
    pub fn replaced(&self, newer: u64) -> ! {
        static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Another thread is recording it and exiting: never act again meanwhile.
            loop {
                std::thread::park();
            }
        }
        tracing::error!(
            epoch = self.epoch,
            newer,
            "this process was replaced by a newer process with the same identity (start epoch {newer}); \
             exiting (its peers refuse it)"
        );
        let record = ReplacedRecord { epoch: self.epoch, replaced_by: newer };
        let path = self.dir.join(REPLACED_FILE);
        if let Err(e) = serde_json::to_vec(&record)
            .map_err(io::Error::other)
            .and_then(|bytes| durable::write_atomically(&path, &bytes))
        {
            tracing::error!(error = %e, path = %path.display(), "cannot record the replacement on the volume");
        }
        std::process::exit(EXIT_REPLACED)
    }

    /// The refusal a stale sender gets: it carries the newest epoch, so the sender stops.
    pub fn refusal(node: NodeId, epoch: u64, newest: u64) -> tonic::Status {
        let mut status = tonic::Status::failed_precondition(format!(
            "refused a message of node {node} start epoch {epoch}: a newer process with that identity \
             (epoch {newest}) exists"
        ));
        if let Ok(value) = newest.to_string().parse() {
            status.metadata_mut().insert(REPLACED_METADATA, value);
        }
        status
    }

    /// Stops this process if `status` is a peer's refusal of it as replaced.
    pub fn check_refusal(&self, status: &tonic::Status) {
        let newest = status.metadata().get(REPLACED_METADATA).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(newest) = newest {
            self.replaced(newest.max(self.epoch + 1));
        }
    }

    /// Sets what the peers reported at start-up (once).
    pub fn set_floor(&self, floor: VoteFloor) {
        let _ = self.floor.set(floor);
    }

    /// What the peers reported at start-up, if this start announced itself.
    pub fn floor(&self) -> Option<VoteFloor> {
        self.floor.get().copied()
    }
}

/// [`Fence::observe`], then, when the epoch is newer than any seen, a background write of the
/// table (a lost write only means a restarted node learns that epoch again from its sender).
pub fn observe_and_persist(fence: &Arc<Fence>, node: NodeId, epoch: u64) -> Observed {
    let observed = fence.observe(node, epoch);
    if observed == Observed::Newer {
        tracing::info!(node, epoch, "a peer restarted: newer start epoch recorded");
        let fence = fence.clone();
        tokio::spawn(async move {
            if let Err(e) = fence.persist().await {
                tracing::warn!(error = %e, "cannot record a peer's start epoch on the volume");
            }
        });
    }
    observed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        use openraft::vote::RaftLeaderId;
        LogId::new(openraft::vote::leader_id_adv::CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn every_start_bumps_the_epoch_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Fence::start(dir.path()).expect("first").epoch(), 1);
        assert_eq!(Fence::start(dir.path()).expect("second").epoch(), 2);
        assert_eq!(std::fs::read_to_string(dir.path().join(EPOCH_FILE)).expect("file"), "2");
    }

    #[test]
    fn an_older_epoch_is_stale_and_a_newer_one_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fence = Fence::start(dir.path()).expect("start");
        assert_eq!(fence.observe(7, 3), Observed::Newer);
        assert_eq!(fence.observe(7, 3), Observed::Current);
        assert_eq!(fence.observe(7, 2), Observed::Stale { newest: 3 });
        assert_eq!(fence.observe(7, 0), Observed::Current, "no epoch named proves nothing");
        assert_eq!(fence.observe(8, 1), Observed::Newer, "per node id");
        assert_eq!(fence.newest_of(7), 3);
        assert_eq!(fence.newest_of(9), 0);
        assert_eq!(fence.stale(7, 2), Some(3));
        assert_eq!(fence.stale(7, 3), None);
        assert_eq!(fence.stale(7, 0), None);
        let mut restarted = fence.take_restarted().expect("first take");
        assert_eq!((restarted.try_recv().ok(), restarted.try_recv().ok()), (Some(7), Some(8)));
        assert!(fence.take_restarted().is_none());
    }

    #[tokio::test]
    async fn the_table_of_newest_epochs_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fence = Fence::start(dir.path()).expect("start");
        fence.observe(7, 4);
        fence.persist().await.expect("persist");
        drop(fence);
        let again = Fence::start(dir.path()).expect("restart");
        assert_eq!(again.observe(7, 3), Observed::Stale { newest: 4 });
    }

    #[test]
    fn a_replaced_copy_refuses_to_start_but_a_volume_that_moved_on_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Fence::start(dir.path()).expect("start");
        let record = serde_json::to_vec(&ReplacedRecord { epoch: 1, replaced_by: 2 }).expect("json");
        std::fs::write(dir.path().join(REPLACED_FILE), record).expect("write");
        let err = Fence::start(dir.path()).err().expect("a replaced copy must not start");
        assert!(matches!(err, FenceError::Replaced { .. }), "{err}");
        // The replacement on the same volume: its epoch is past the replaced one.
        std::fs::write(dir.path().join(EPOCH_FILE), "2").expect("write");
        assert_eq!(Fence::start(dir.path()).expect("moved on").epoch(), 3);
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(EPOCH_FILE), "x").expect("write");
        assert!(matches!(Fence::start(dir.path()), Err(FenceError::Damaged { .. })));
    }

    #[test]
    fn the_refusal_names_the_newest_epoch() {
        let status = Fence::refusal(7, 2, 3);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.metadata().get(REPLACED_METADATA).and_then(|v| v.to_str().ok()), Some("3"));
    }

    #[test]
    fn the_vote_floor_refuses_old_terms_and_short_logs() {
        let floor = VoteFloor { term: 5, holds: Some(log_id(5, 40)) };
        assert!(floor.refuses(5, Some(&log_id(5, 50))).is_some(), "a term the old process may have voted in");
        assert!(floor.refuses(6, Some(&log_id(5, 39))).is_some(), "a log short of what a peer held");
        assert!(floor.refuses(6, None).is_some());
        assert_eq!(floor.refuses(6, Some(&log_id(5, 40))), None);
        assert_eq!(floor.refuses(6, Some(&log_id(6, 10))), None, "a later term's log holds the entry");
        let a = VoteFloor { term: 3, holds: Some(log_id(3, 9)) };
        assert_eq!(a.max(floor), floor);
    }
}
