//! The pod's life: from a hostname and a volume to a running member, and out again.
//!
//! - [`identity`]: who this node is (hostname → set and ordinal) and the identity record kept
//!   on its volume.
//! - [`volume`]: the start-up check that the identity record and the store agree.
//! - [`discovery`]: peer addresses, the StatefulSet way (DNS names or a static map).
//! - [`startup`]: the start-up decision table (resume, join, bootstrap, wait).
//! - [`marker`]: the "set was bootstrapped" marker (none, a file, or a ConfigMap).
//! - [`boot`]: carrying out the start-up decision against real peers (probe, join, bootstrap,
//!   fencing an older process of this pod).
//! - [`membership`]: the leader's reconciler of the membership with the declared replica count
//!   (promote, replace, remove).
//! - `k8s` (feature `kube`): the Kubernetes API: the StatefulSet's `spec.replicas` and the
//!   ConfigMap bootstrap marker.
//! - [`storage_failure`]: storage that fails while the node runs: the node exits to restart
//!   from its volume.
//! - [`shutdown`]: SIGTERM handling and leadership hand-off.
//! - [`server`]: `petkv serve`, one pod's life from start-up checks to exit.

pub mod boot;
pub mod discovery;
pub mod identity;
#[cfg(feature = "kube")]
pub mod k8s;
pub mod marker;
pub mod membership;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod storage_failure;
pub mod volume;
