//! Snapshots sized to the state: a small state is snapshotted more often than
//! `--snapshot-every`, which stays the upper bound (openraft's own policy fires at it).
//!
//! Why: the Raft log is kept until a snapshot covers it, and raft-log holds an in-memory index
//! record (~90 bytes) for every entry it keeps; with the default of 100,000 entries that index
//! was about a tenth of a node's peak memory under a write load. A snapshot writes the whole
//! state, so how often it pays to take one depends on how big the state is: this task takes one
//! once the entries since the last reach [`entries_between_snapshots`] of the state's records
//! (the keys and the revisions of history kept: a quarter of them, at least
//! [`MIN_ENTRIES_BETWEEN_SNAPSHOTS`]), so a snapshot writes at most about four records per
//! entry it lets the log drop, and never more often than every
//! [`MIN_ENTRIES_BETWEEN_SNAPSHOTS`] entries.
//!
//! The check runs every [`CHECK_EVERY`] on every node (each node snapshots its own state
//! machine); asking while a snapshot is being built does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::WatchReceiver;
use crate::node::Node;

/// A state this small is snapshotted at most this often (in entries), whatever its size.
pub const MIN_ENTRIES_BETWEEN_SNAPSHOTS: u64 = 20_000;
/// Records of the state per entry between snapshots: a snapshot every `records / 4` entries.
const RECORDS_PER_ENTRY_BETWEEN_SNAPSHOTS: u64 = 4;
/// How often the log's length behind the last snapshot is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Entries after which a state of `records` records (keys, and revisions of history) is
/// snapshotted; never more than `snapshot_every` (the configured bound, which openraft's
/// policy applies itself).
pub fn entries_between_snapshots(records: u64, snapshot_every: u64) -> u64 {
    (records / RECORDS_PER_ENTRY_BETWEEN_SNAPSHOTS).max(MIN_ENTRIES_BETWEEN_SNAPSHOTS).min(snapshot_every)
}

/// Runs until `stop` turns true (or Raft stops).
pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let Ok(raft) = node.raft().cloned() else { return };
    let snapshot_every = node.config.raft.snapshot_every;
    // The applied index at the last request: a request is not repeated before the log has grown
    // by a threshold again (the build may be running, or may have failed and been logged).
    let mut asked_at = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
        let (applied, snapshot) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        let Some(applied) = applied else { continue };
        let key_count = match node.sm.key_count() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the key count for the snapshot policy");
                continue;
            }
        };
        // Each revision of history kept is a record the snapshot writes too.
        let history = node.sm.current_revision().saturating_sub(node.sm.compacted());
        let threshold = entries_between_snapshots(key_count + history, snapshot_every);
        let base = snapshot.unwrap_or(0).max(asked_at);
        if applied.saturating_sub(base) < threshold {
            continue;
        }
        tracing::debug!(applied, ?snapshot, key_count, history, threshold, "log long for the state's size: snapshot");
        asked_at = applied;
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::debug!(error = %e, "snapshot request not taken: Raft is stopping");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_state_is_snapshotted_every_minimum_entries() {
        assert_eq!(entries_between_snapshots(0, 100_000), MIN_ENTRIES_BETWEEN_SNAPSHOTS);
        assert_eq!(entries_between_snapshots(50_000, 100_000), MIN_ENTRIES_BETWEEN_SNAPSHOTS);
    }

    #[test]
    fn the_threshold_grows_with_the_state_up_to_the_configured_bound() {
        assert_eq!(entries_between_snapshots(100_000, 100_000), 25_000);
        assert_eq!(entries_between_snapshots(200_000, 100_000), 50_000);
        assert_eq!(entries_between_snapshots(1_000_000, 100_000), 100_000);
    }

    #[test]
    fn a_configured_bound_below_the_minimum_wins() {
        assert_eq!(entries_between_snapshots(0, 50), 50);
        assert_eq!(entries_between_snapshots(1_000_000, 500), 500);
    }
}
