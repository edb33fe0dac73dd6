//! Disaster recovery: backups out of a running cluster, restores into a new one.
//!
//! - [`backup`]: a consistent cut of the state machine streamed from the cluster into a
//!   checked file.
//! - [`restore`]: a new cluster from a backup (staged on ordinal 0's volume, finished at start).
//! - [`etcd_snapshot`]: a backup in etcd's snapshot envelope (the etcd port's `Snapshot`),
//!   which a restore takes as a plain backup.

pub mod backup;
pub mod etcd_snapshot;
pub mod restore;
