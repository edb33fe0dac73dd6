//! petkv: a replicated key-value store that runs as a Kubernetes StatefulSet.
//!
//! # Layout
//!
//! The data path, a request from the client port to the replicated state and back:
//!
//! - [`api`]: the public gRPC services (KV, Cluster), request validation, forwarding to the
//!   leader.
//! - [`raft`]: the seam to openraft: type config, peer transport (client and server), fencing
//!   of replaced processes, settings; only `store` names openraft besides it.
//! - [`store`]: the Raft log (raft-log) and the state machine (sled): keys, revisions and
//!   history, dedup sessions, snapshots.
//!
//! The pod's life, from a hostname and a volume to a running member and out again:
//!
//! - [`pod`]: identity, the volume check, discovery, the start-up decision and boot, the
//!   bootstrap marker, the membership reconciler, Kubernetes, storage failures, shutdown, and
//!   `petkv serve` itself.
//! - [`recovery`]: backups out of a running cluster, restores into a new one.
//!
//! The edge, what every connection crosses and what the node shows of itself:
//!
//! - [`edge`]: TLS, authentication and roles, limits under a flood, the free-space guard,
//!   metrics and the HTTP port, files reloaded when they change.
//!
//! Shared by all:
//!
//! - [`node`]: the running node's shared context.
//! - [`config`]: the settings of one node.
//! - [`cli`]: the command line.
//! - [`pb`]: the generated code of the internal Raft transport (the public API's is in
//!   `petkv-client`).
//! - [`support`]: writing files durably, taking locks.
pub mod api;
pub mod cli;
pub mod config;
pub mod edge;
pub mod node;
pub mod pb;
pub mod pod;
pub mod raft;
pub mod recovery;
pub mod store;
pub mod support;
