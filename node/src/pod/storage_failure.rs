//! Storage that can no longer be written, and the node exiting because of it.
//!
//! openraft stops its core for good on any storage error: a log append or vote that cannot be
//! written (ENOSPC on a full volume, EDQUOT, EIO), a snapshot that cannot be built, an apply
//! that fails. The state machine's background writer ([`crate::store`]'s `sm-writer`) may
//! also fail to write applied entries into sled; the state machine then refuses every further
//! apply, but nothing would notice until the next write. Left alone the process would stay up
//! half-alive: answering stale reads and `status` (role "shutdown"), failing writes and
//! linearizable reads, never recovering when space returns.
//!
//! [`wait`] resolves once either happens, and `petkv serve` then exits non-zero without
//! sealing the store, so the StatefulSet restarts the pod and it recovers from its volume:
//! raft-log's crash recovery drops a record cut short by the failed write (never
//! acknowledged: acknowledgement waits for the fsync), and the state machine re-applies the
//! log from what sled holds.

use crate::node::Node;
use crate::raft::{RaftFatal, WatchReceiver};

/// Which part of the store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedPart {
    /// openraft stopped on a storage error (log, vote, snapshot, apply).
    Raft,
    /// The state machine's background writer could not write applied entries into sled.
    StateMachine,
}

/// Storage that failed while the node ran.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.message())]
pub struct StorageFailure {
    pub part: FailedPart,
    /// The error, as the failing part reported it.
    pub detail: String,
    /// A disk operation failed because the volume (or the quota on it) was full: told by the
    /// error's kind where it happened ([`crate::store::faults`]), since openraft keeps only text.
    pub volume_full: bool,
}

impl StorageFailure {
    fn message(&self) -> String {
        let what = match self.part {
            FailedPart::Raft => "raft stopped",
            FailedPart::StateMachine => "the state machine cannot be written",
        };
        if self.volume_full {
            format!(
                "{what}: the volume is full ({}); the node exits so that it restarts and recovers from its volume \
                 once space is freed or the volume grown (nothing acknowledged is lost)",
                self.detail
            )
        } else {
            format!("{what} on a storage error ({}); the node exits to restart from its volume", self.detail)
        }
    }
}

/// Resolves when Raft stops with an error or the state machine's writer fails; never while
/// both work, nor after a requested shutdown.
pub async fn wait(node: &Node) -> StorageFailure {
    tokio::select! {
        failure = raft_failure(node) => failure,
        failure = state_machine_failure(node) => failure,
    }
}

async fn raft_failure(node: &Node) -> StorageFailure {
    let Ok(raft) = node.raft() else { return std::future::pending().await };
    let mut metrics = raft.metrics();
    loop {
        let failure = match &metrics.borrow_watched().running_state {
            Ok(()) | Err(RaftFatal::Stopped) => None,
            Err(e) => Some(StorageFailure {
                part: FailedPart::Raft,
                detail: e.to_string(),
                volume_full: node.sm.volume_faults().out_of_space(),
            }),
        };
        if let Some(failure) = failure {
            return failure;
        }
        if metrics.changed().await.is_err() {
            // The metrics sender is gone: Raft was shut down; nothing more will come.
            return std::future::pending().await;
        }
    }
}

async fn state_machine_failure(node: &Node) -> StorageFailure {
    let mut failures = node.sm.write_failures();
    // The borrow `wait_for` returns is dropped at once: it must not live across an await.
    let failed = failures.wait_for(Option::is_some).await.map(|failed| failed.clone());
    match failed {
        Ok(detail) => StorageFailure {
            part: FailedPart::StateMachine,
            detail: detail.unwrap_or_default(),
            volume_full: node.sm.volume_faults().out_of_space(),
        },
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_volume_is_told_apart_from_other_storage_errors() {
        let failure = |part, volume_full| StorageFailure { part, detail: "append raft log: …".into(), volume_full };
        let full = failure(FailedPart::Raft, true);
        assert!(full.to_string().starts_with("raft stopped: the volume is full"), "{full}");
        let quota = failure(FailedPart::StateMachine, true);
        assert!(quota.to_string().starts_with("the state machine cannot be written: the volume is full"), "{quota}");
        let eio = failure(FailedPart::Raft, false);
        assert!(eio.to_string().starts_with("raft stopped on a storage error"), "{eio}");
    }
}
