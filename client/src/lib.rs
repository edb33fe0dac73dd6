//! petkv-client: what a program needs to talk to a petkv cluster, without the server (no
//! storage, Raft, certificate issuing or Kubernetes code is built with it).
//!
//! It owns:
//!
//! - [`pb`]: the public API (`proto/petkv/v1/kv.proto`, package `petkv.v1`): messages, gRPC
//!   clients, and the server traits the node implements; its descriptors for gRPC reflection.
//! - [`Client`]: endpoint failover, write ids on "lanes", and "outcome unknown" for a write
//!   that may have been applied ([`ClientError`]).
//! - [`outcome`]: whether a failed request was certainly not applied: the `x-petkv-not-applied`
//!   mark a server sets and the client reads, and connections that were never made.
//! - [`tls`]: the client side of TLS: PEM files and what is read from them, [`tls::ClientTls`],
//!   and [`tls::dial::lazy_channel`], the one dialer of every outgoing gRPC channel (the node's
//!   too).
//! - [`auth`]: bearer tokens on the wire (`authorization: Bearer <token>`).
//! - [`Watcher`]: a watch that resumes on another member from its last revision.
//! - [`KeepAlive`]: a stream that keeps leases alive; [`LeaseKeeper`]: a task that keeps one
//!   lease alive across members, each renewal with a timeout.
//! - [`Lock`]: a lock on leases and revisions (etcd's recipe), and elections on it.
//!
//! The node (crate `petkv`) builds on this crate for the same pieces: it serves [`pb::v1`],
//! marks and relays "not applied" errors with [`outcome`], dials with [`tls::dial`] and checks
//! the metadata [`auth`] names.

pub mod auth;
mod client;
mod lease;
mod lock;
pub mod outcome;
pub mod pb;
pub mod tls;
mod watch;

pub use client::{is_retryable, Client, ClientError, DEFAULT_TIMEOUT, MAX_WATCH_RESPONSE_BYTES};
pub use lease::{KeepAlive, LeaseKeeper, Renewal};
pub use lock::{leader, next_leader_change, Lock};
pub use watch::Watcher;
