//! Raft timings and log/snapshot policy, with defaults tuned for a LAN or loopback.

use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};

/// Default heartbeat interval. A follower refuses votes while the leader's lease (the maximum
/// election timeout) since its last contact runs, so the election timeout bounds how long a
/// killed leader leaves the cluster without one: 150–300 ms here against etcd's 1 s default.
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
/// Default minimum election timeout; the maximum is twice this.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 150;
/// Default number of log entries between snapshots (etcd's `--snapshot-count` default). Each
/// snapshot dumps the whole state machine, so a small value costs throughput under writes.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// At most this many entries are kept behind a snapshot for lagging followers.
const MAX_LOG_KEPT_BEHIND_SNAPSHOT: u64 = 10_000;

/// The Raft settings a user can change.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

impl RaftSettings {
    /// Builds and validates the openraft configuration.
    pub fn to_config(&self, cluster_name: &str) -> Result<Arc<Config>, openraft::ConfigError> {
        let config = Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms * 2,
            // A new leader's first append waits for the follower; keep it well above a heartbeat.
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Keep some log behind the snapshot so a briefly lagging follower catches up by
            // log, not by a full snapshot.
            max_in_snapshot_log_to_keep: (self.snapshot_every / 2).min(MAX_LOG_KEPT_BEHIND_SNAPSHOT),
            enable_pre_vote: Some(true),
            // A restarted leader is a follower and must win a new election, in a new term: its
            // log may have lost a tail that it had appended (and that followers fsync'd and
            // acknowledged) but not made durable itself. Resuming leadership in the old term
            // would append other entries under log ids those followers already hold, and Raft's
            // log matching would be gone (docs/architecture.md, "Durability rules").
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        Ok(Arc::new(config.validate()?))
    }
}
