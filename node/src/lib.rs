//! petkv: a replicated key-value store that runs as a Kubernetes StatefulSet.
//!
//! The public API's generated code (`petkv.v1`), the client library and the client side of
//! TLS are the `petkv-client` crate (`petkv_client`), which this crate serves and dials with.
//!
//! # Layout
//!
//! - [`identity`]: who this node is (hostname → set and ordinal) and the identity record
//!   kept on its volume.
//! - [`startup`]: the start-up decision table (resume, join, bootstrap, wait).
//! - [`discovery`]: peer addresses, the StatefulSet way (DNS names or a static map).
//! - [`store`]: storage: the Raft log and vote (raft-log), the state machine (sled), snapshot
//!   files.
//! - [`raft`]: the seam to openraft: type config, peer transport (client and server),
//!   settings, and re-exports; only `store` names openraft besides it (storage traits).
//! - [`volume`]: the start-up check that the identity record and the store agree.
//! - [`node`]: the running node's shared context.
//! - [`storage_failure`]: storage that fails while the node runs (a full volume): the node
//!   exits non-zero, unsealed, to restart and recover from its volume.
//! - [`marker`]: the "set was bootstrapped" marker (none, a file, or a ConfigMap).
//! - `k8s` (feature `kube`): the Kubernetes API: the StatefulSet's `spec.replicas` feeds the
//!   declared replica count; the ConfigMap bootstrap marker.
//! - [`boot`]: carrying out the start-up decision against real peers (probe, join, bootstrap).
//! - [`membership`]: the leader's membership reconciler (promote, replace, remove).
//! - [`space`]: the free-space guard: writes refused while a volume is below its reserve.
//! - [`metrics`]: the Prometheus registry and metric families, the gRPC metrics layer.
//! - [`http`]: the HTTP port: `/metrics`, `/healthz`, `/readyz`.
//! - [`api`]: the public gRPC services (KV, Cluster, from `petkv_client::pb::v1`) and
//!   forwarding to the leader.
//! - [`validation`]: request checks at the edge.
//! - [`limits`]: bounds under a flood: connections, streams, requests in flight, message size,
//!   deadlines, keepalive, the open-file limit.
//! - [`server`]: `petkv serve`, one pod's life from start-up checks to exit.
//! - [`shutdown`]: SIGTERM handling and leadership hand-off.
//! - [`backup`]: consistent backups streamed from the cluster into checked files.
//! - [`restore`]: a new cluster from a backup (staged on ordinal 0's volume, finished at start).
//! - [`reload`]: values built from files (TLS material, the tokens file), rebuilt when the
//!   files change.
//! - [`tls`]: TLS on the client port, mutual TLS on the peer port, reloaded when the files
//!   change; `petkv certs`. (The files, `ClientTls` and the dialer: `petkv_client::tls`.)
//! - [`cli`]: the command line.
//! - [`config`], [`discovery`], [`pb`]: settings, peer addresses, generated code of the Raft
//!   transport (`petkv.raft.v1`).
//! - [`sync`]: taking in-memory locks, with one policy for a poisoned lock.
pub mod api;
pub mod auth;
pub mod backup;
pub mod boot;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod durable;
pub mod http;
pub mod identity;
#[cfg(feature = "kube")]
pub mod k8s;
pub mod limits;
pub mod marker;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod pb;
pub mod raft;
pub mod reload;
pub mod restore;
pub mod server;
pub mod shutdown;
pub mod space;
pub mod startup;
pub mod storage_failure;
pub mod store;
pub mod sync;
pub mod tls;
pub mod validation;
pub mod volume;
