//! petkv: a replicated key-value store that runs as a Kubernetes StatefulSet.
//!
//! # Layout
//!
//! - [`identity`]: who this node is (hostname → set and ordinal) and the identity record
//!   kept on its volume.
//! - [`startup`]: the start-up decision table (resume, join, bootstrap, wait).
//! - [`discovery`]: peer addresses, the StatefulSet way (DNS names or a static map).
//! - [`store`]: sled storage: the Raft log and vote, the state machine, snapshot files.
//! - [`raft`]: everything that names openraft: type config, peer transport (client and
//!   server), settings.
//! - [`node`]: the running node's shared context.
//! - [`validation`]: request checks at the edge.
pub mod api;
pub mod boot;
pub mod cli;
pub mod client;
pub mod config;
pub mod discovery;
pub mod identity;
pub mod membership;
pub mod node;
pub mod pb;
pub mod raft;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod validation;
