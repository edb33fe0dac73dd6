//! Raft stopping on its own, and the node exiting because of it.
//!
//! openraft stops its core for good on any storage error: a log append or vote that cannot be
//! written (ENOSPC on a full volume, EDQUOT, EIO), a state-machine write that failed. Left
//! alone the process would stay up half-alive: answering stale reads and `status` (role
//! "shutdown"), failing every write and linearizable read, never recovering when space
//! returns. [`stopped`] resolves once that happens, and `petkv serve` then exits non-zero
//! without sealing the store, so the StatefulSet restarts the pod and it recovers from its
//! volume: raft-log's crash recovery drops the record cut short by the failed write (never
//! acknowledged: acknowledgement waits for the fsync) and the state machine re-applies the log.

use crate::node::Node;
use crate::raft::{RaftFatal, WatchReceiver};

/// Why Raft stopped without being told to.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.message())]
pub struct RaftStopped {
    /// openraft's error, as it reports it.
    pub detail: String,
}

/// The messages a full volume or an exhausted quota produce (strerror of ENOSPC and EDQUOT).
fn is_out_of_space(detail: &str) -> bool {
    [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT].iter().any(|e| detail.contains(e.desc()))
}

impl RaftStopped {
    /// True when the storage error was the volume running out of space.
    pub fn volume_full(&self) -> bool {
        is_out_of_space(&self.detail)
    }

    fn message(&self) -> String {
        if self.volume_full() {
            format!(
                "raft stopped: the volume is full ({}); the node exits so that it restarts and recovers from its \
                 volume once space is freed or the volume grown (nothing acknowledged is lost)",
                self.detail
            )
        } else {
            format!("raft stopped on a storage error ({}); the node exits to restart from its volume", self.detail)
        }
    }
}

/// Resolves when Raft stops with an error; never while it runs or after a requested shutdown.
pub async fn stopped(node: &Node) -> RaftStopped {
    let Ok(raft) = node.raft() else { return std::future::pending().await };
    let mut metrics = raft.metrics();
    loop {
        let failure = match &metrics.borrow_watched().running_state {
            Ok(()) | Err(RaftFatal::Stopped) => None,
            Err(e) => Some(RaftStopped { detail: e.to_string() }),
        };
        if let Some(failure) = failure {
            return failure;
        }
        if metrics.changed().await.is_err() {
            // The metrics sender is gone: Raft is shut down (by us); nothing more will come.
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_volume_is_told_apart_from_other_storage_errors() {
        let full = RaftStopped {
            detail: "when Write Log(..): std::io::error::Error: No space left on device (os error 28)".into(),
        };
        assert!(full.volume_full());
        assert!(full.to_string().contains("the volume is full"), "{full}");
        let quota = RaftStopped { detail: "append: Disk quota exceeded (os error 122)".into() };
        assert!(quota.volume_full());
        let eio = RaftStopped { detail: "append: Input/output error (os error 5)".into() };
        assert!(!eio.volume_full());
        assert!(eio.to_string().starts_with("raft stopped on a storage error"), "{eio}");
    }
}
