//! The cluster harness: a StatefulSet on one machine.
//!
//! # Layout
//!
//! - [`binary`]: finds the `petkv` binary the pods run.
//! - [`pod`]: one pod: a `petkv serve` process with a stable name, its own volume directory
//!   (named like its PVC, `data-<set>-<ordinal>`), its own loopback address and a log file.
//! - [`cluster`]: the set: starts pods, kills them with a signal, restarts them with the same
//!   volume, wipes volumes, force-deletes a pod whose process runs on (`cluster/force_delete.rs`,
//!   pod mode), and waits for conditions with deadlines.
//! - [`volume`]: size-limited pod volumes (a tmpfs each) and filling them up.
//! - [`lazyfs`]: pod volumes on LazyFS, which drops unsynced data on a simulated power loss.
//! - [`digest`]: every member's whole state machine digested at one applied index.
//! - [`tls`]: the set's certificates when it runs with TLS (`up --tls`).
//! - [`auth`]: the set's tokens file when it runs with authentication (`up --auth`).
//! - [`control`]: the state-dir files through which a second terminal steers a running `up`.
//! - [`controller`]: `up`, the StatefulSet controller loop with a live status view.
//! - [`wait`]: polling a condition until a deadline (never a fixed sleep).
//! - [`http`]: a minimal HTTP GET for the pods' HTTP port (and etcd's health).
//! - [`demo`]: the README's main command.
//! - [`measure`]: failover window, put latency and throughput on a 3-pod cluster.
//! - [`bench`]: closed-loop workloads against petkv and, side by side, etcd.
//! - [`flood`]: abuse one node (idle connections, oversized requests, stream bursts) and
//!   measure a normal client and the node's memory meanwhile.
//! - [`workload`], [`checker`], [`experiment`], [`timeline`]: fault experiments under a recorded
//!   concurrent workload, checked for linearizability, with a report and an SVG timeline.
//!
//! Process mode gives each pod its own address in a private `127.x.y.0/24` range (Linux
//! routes all of 127.0.0.0/8 to loopback), so every pod uses the same ports (client 7379,
//! peer 7380, HTTP 7381), as pods do.
//! Traffic never leaves loopback.

pub mod auth;
pub mod bench;
pub mod binary;
pub mod checker;
pub mod cluster;
pub mod control;
pub mod controller;
pub mod demo;
pub mod digest;
pub mod experiment;
pub mod flood;
pub mod http;
pub mod lazyfs;
pub mod measure;
pub mod netns;
pub mod pod;
pub mod timeline;
pub mod tls;
pub mod volume;
pub mod wait;
pub mod workload;

pub use cluster::{Cluster, ClusterSpec, Mode};
pub use pod::Pod;
