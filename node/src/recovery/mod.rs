//! Disaster recovery: backups out of a running cluster, restores into a new one.
//!
//! - [`backup`]: a consistent cut of the state machine streamed from the cluster into a
//!   checked file.
//! - [`restore`]: a new cluster from a backup (staged on ordinal 0's volume, finished at start).

pub mod backup;
pub mod restore;
