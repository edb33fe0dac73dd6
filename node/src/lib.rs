//! petkv: a replicated key-value store that runs as a Kubernetes StatefulSet.
//!
//! # Layout
//!
//! - [`identity`]: who this node is (hostname → set and ordinal) and the identity record
//!   kept on its volume.
//! - [`store`]: sled storage: the Raft log and vote, the state machine, snapshot files.
//! - [`raft`]: everything that names openraft: type config, peer transport (client and
//!   server), settings.
pub mod pb;
pub mod raft;
pub mod store;
