//! The seam to openraft. Outside this module only `store/` names openraft directly (it
//! implements openraft's storage traits); everything else uses openraft through the
//! re-exports below, so the next openraft bump touches this module and the store.
//!
//! - [`types`]: the Raft type configuration (node id, node address, command and response).
//! - [`batch_metrics`]: openraft's batch sizes into the node's Prometheus histograms.
//! - [`codec`]: how openraft's messages are encoded on the wire and on disk (postcard).
//! - [`fence`]: start epochs that fence a stale process sharing this node's identity.
//! - [`network`]: the client side of the peer transport, one cached channel per peer.
//! - [`service`]: the server side of the peer transport (Raft RPCs, join, start-up probes,
//!   followers' proposals and read-index requests).
//! - [`leader_rpc`]: the follower's side of those: a proposal or a read index from the leader.
//! - [`settings`]: Raft timings and snapshot policy.
//! - [`snapshot_trigger`]: earlier snapshots for a small state.
//! - [`compactor`]: the leader keeps the history to `--history-retention` revisions.

pub mod batch_metrics;
pub mod codec;
pub mod compactor;
pub mod fence;
pub mod leader_rpc;
pub mod network;
pub mod peer_health;
pub mod service;
pub mod settings;
pub mod snapshot_trigger;
pub mod types;

pub use types::*;

/// openraft items the rest of the node uses.
pub use openraft::async_runtime::WatchReceiver;
pub use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
pub use openraft::errors::Fatal as RaftFatal;
pub use openraft::{ChangeMembers, Instant as RaftInstant, ReadPolicy, ServerState};
