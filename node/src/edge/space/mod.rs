//! The free-space guard of the node's volume: what etcd calls its NOSPACE alarm.
//!
//! A volume that fills up makes the Raft log's append fail, and openraft stops on any storage
//! error. So writes are refused *before* they are proposed, while the volume still has room:
//!
//! - [`probe`]: how full the volume is (statvfs of the data dir's filesystem).
//! - [`guard`]: the reserve (`--min-free-bytes`), the low/ok state with hysteresis, and the
//!   answer to "may this node take a write now?" (RESOURCE_EXHAUSTED with the reason if not).
//! - [`watch`]: the background task that measures the volume every [`watch::WATCH_EVERY`] and,
//!   on the leader, asks every other member how its volume is (`ClusterInfo` on the peer port):
//!   a member below its reserve makes the leader refuse writes too, or that member's log would
//!   fill up.
//!
//! Reads never look at the guard.

pub mod guard;
pub mod probe;
pub mod watch;

pub use guard::{Reserve, SpaceGuard, DEFAULT_RESERVE_BYTES};
