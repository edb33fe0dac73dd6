//! Automatic compaction: the leader keeps the history to the last `--history-retention`
//! revisions by proposing [`Command::Compact`] once the history holds a tenth more than that
//! (so compactions come in steps of about a tenth of the retention, not one per write).
//! Compaction goes through Raft, so every member drops the same history at the same point.
//! Retention 0 keeps the whole history (compaction is then only explicit).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::node::Node;
use crate::raft::ServerState;
use crate::store::command::{Command, CommandResult};

/// How often the leader looks at the history's length.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// The revision to compact to for a store at `current` whose history starts at `compacted`,
/// keeping `retention` revisions; `None` while the history is within a tenth over it.
pub fn compact_to(current: u64, compacted: u64, retention: u64) -> Option<u64> {
    if retention == 0 {
        return None;
    }
    let kept = current.saturating_sub(compacted);
    let slack = (retention / 10).max(1);
    (kept > retention + slack).then(|| current - retention)
}

/// Runs until `stop` turns true.
pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let retention = node.config.history_retention;
    if retention == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
        if node.metrics().is_none_or(|m| m.state != ServerState::Leader) {
            continue;
        }
        let Some(revision) = compact_to(node.sm.current_revision(), node.sm.compacted(), retention) else { continue };
        let Ok(raft) = node.raft() else { continue };
        match tokio::time::timeout(node.config.request_timeout, raft.client_write(Command::Compact { revision })).await
        {
            Ok(Ok(r)) => match r.data {
                CommandResult::Compacted { compacted, .. } => {
                    tracing::info!(compacted, retention, "history compacted to the retention")
                }
                other => tracing::debug!(?other, "automatic compaction not applied"),
            },
            Ok(Err(e)) => tracing::debug!(error = %e, "automatic compaction not proposed"),
            Err(_) => tracing::warn!(revision, "automatic compaction timed out; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_cut_back_to_the_retention_in_steps() {
        assert_eq!(compact_to(1_000, 0, 1_000), None);
        assert_eq!(compact_to(1_100, 0, 1_000), None, "within a tenth over");
        assert_eq!(compact_to(1_101, 0, 1_000), Some(101));
        assert_eq!(compact_to(1_200, 101, 1_000), None);
        assert_eq!(compact_to(5, 0, 1), Some(4));
        assert_eq!(compact_to(u64::MAX, 0, 0), None, "retention 0 keeps everything");
    }
}
