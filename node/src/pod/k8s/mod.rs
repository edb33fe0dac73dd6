//! The Kubernetes API (feature `kube`): what the node reads from and writes to it.
//!
//! - [`KubeContext`]: the client, the namespace and the name of this pod's StatefulSet.
//! - The declared replica count follows the StatefulSet's `spec.replicas`:
//!   [`KubeContext::watch_replicas`] watches the set (list + watch with a `metadata.name` field
//!   selector, so RBAC can be limited by `resourceNames`; re-lists with back-off on errors),
//!   and [`follow_replicas`] makes the Raft leader propose `SetReplicas` through the same path
//!   as the Scale RPC whenever the declared count differs. The decision is the pure
//!   [`replica_action`]: followers do nothing; `spec.replicas: 0` (the whole set is stopping)
//!   keeps the declared count, so the membership survives for the scale back up.
//! - [`KubeContext::declared_by_the_set`]: a fresh read of `spec.replicas` at SIGTERM, so a pod
//!   being scaled away knows it even before the leader's `SetReplicas` has committed
//!   ([`crate::pod::shutdown`]).
//! - [`ConfigMapMarker`]: the "set was bootstrapped" marker as a ConfigMap (`clusterId: <id>`).
//!   It has no owner: like the volumes (`whenDeleted: Retain`) it outlives
//!   `kubectl delete statefulset`, so applying the set again resumes the same cluster instead of
//!   letting an ordinal 0 with an empty volume start a second one. An ownerReference it carries
//!   (from an older manifest or a restore) is dropped when it is written.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::api::validation::MAX_REPLICAS;
use crate::node::Node;
use crate::pod::marker::error_chain;
use crate::raft::ServerState;

/// Where a pod finds its namespace when `--kube-namespace` is not given.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The ConfigMap key that holds the cluster id.
pub const CLUSTER_ID_KEY: &str = "clusterId";
/// How often the leader compares the declared count with `spec.replicas` besides watch events
/// (a node that just became leader acts within this).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on one API call (not on the watch, which is long-lived).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on reading `spec.replicas` at SIGTERM (the grace period is short).
const SIGTERM_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "cannot tell the namespace: set --kube-namespace (PETKV_KUBE_NAMESPACE), or run in a pod (reading {path})"
    )]
    Namespace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot configure the Kubernetes client from the pod's service account (is this a pod?)")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("cannot {action} {object}")]
    Api {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot {action} {object}: no answer within {timeout:?}")]
    Timeout { action: &'static str, object: String, timeout: Duration },
    #[error("{object} kept changing under this node; gave up recording the marker after {attempts} attempts")]
    Contended { object: String, attempts: u32 },
}

/// The Kubernetes API as this pod sees it: the client, its namespace, and its StatefulSet.
#[derive(Clone)]
pub struct KubeContext {
    client: Client,
    namespace: String,
    statefulset: String,
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("namespace", &self.namespace)
            .field("statefulset", &self.statefulset)
            .finish()
    }
}

impl KubeContext {
    pub fn new(client: Client, namespace: impl Into<String>, statefulset: impl Into<String>) -> Self {
        Self { client, namespace: namespace.into(), statefulset: statefulset.into() }
    }

    /// The in-cluster client (the pod's service account); the namespace is the given one, or
    /// the service account's. Must run inside a Tokio runtime (the client spawns a task).
    pub fn in_cluster(namespace: Option<String>, statefulset: String) -> Result<Self, KubeError> {
        let namespace = match namespace {
            Some(ns) => ns,
            None => std::fs::read_to_string(NAMESPACE_FILE)
                .map(|s| s.trim().to_string())
                .map_err(|source| KubeError::Namespace { path: NAMESPACE_FILE.into(), source })?,
        };
        let config = kube::Config::incluster().map_err(KubeError::InCluster)?;
        let client = Client::try_from(config).map_err(KubeError::Client)?;
        Ok(Self::new(client, namespace, statefulset))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn statefulset(&self) -> &str {
        &self.statefulset
    }

    fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn set_object(&self) -> String {
        format!("StatefulSet {}/{}", self.namespace, self.statefulset)
    }

    /// Reads the StatefulSet once.
    async fn get_statefulset(&self) -> Result<StatefulSet, KubeError> {
        let object = self.set_object();
        bounded("read", object.clone(), self.statefulsets().get(&self.statefulset))
            .await?
            .map_err(|source| KubeError::Api { action: "read", object, source })
    }

    /// The StatefulSet's `spec.replicas`, read now.
    pub async fn spec_replicas(&self) -> Result<Option<u32>, KubeError> {
        Ok(spec_replicas(&self.get_statefulset().await?))
    }

    /// The replica count the StatefulSet declares right now, for a pod deciding at SIGTERM
    /// whether it is being scaled away. `None` when it cannot tell (the API does not answer)
    /// or the set is being stopped whole (`spec.replicas: 0`): the caller falls back to the
    /// declared count in the state machine.
    pub async fn declared_by_the_set(&self) -> Option<u32> {
        let read = tokio::time::timeout(SIGTERM_READ_TIMEOUT, self.spec_replicas()).await.unwrap_or_else(|_| {
            Err(KubeError::Timeout { action: "read", object: self.set_object(), timeout: SIGTERM_READ_TIMEOUT })
        });
        match read {
            Ok(Some(r)) if r > 0 => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read spec.replicas; using the declared count in the log");
                None
            }
        }
    }

    /// Watches the StatefulSet and yields its `spec.replicas` at every event (`None` when the
    /// set was deleted). Errors are logged and the watcher re-lists with back-off; the stream
    /// does not end.
    pub fn watch_replicas(&self) -> impl Stream<Item = Option<u32>> + Send + 'static {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.statefulset));
        let object = self.set_object();
        watcher(self.statefulsets(), config).default_backoff().filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::Apply(set) | watcher::Event::InitApply(set)) => Some(spec_replicas(&set)),
                Ok(watcher::Event::Delete(_)) => {
                    tracing::warn!("{object} was deleted");
                    Some(None)
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "watching {object} failed; listing it again after a back-off");
                    None
                }
            };
            std::future::ready(seen)
        })
    }
}

/// `spec.replicas` of a StatefulSet (the API defaults a missing value to 1; a negative one,
/// which the API rejects, is taken as unknown).
fn spec_replicas(set: &StatefulSet) -> Option<u32> {
    let replicas = set.spec.as_ref().map_or(Some(1), |s| s.replicas.or(Some(1)))?;
    u32::try_from(replicas).ok()
}

/// Runs a call with [`CALL_TIMEOUT`].
async fn bounded<T>(
    action: &'static str,
    object: String,
    call: impl std::future::Future<Output = T>,
) -> Result<T, KubeError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| KubeError::Timeout {
        action,
        object,
        timeout: CALL_TIMEOUT,
    })
}

/// What the leader does about the StatefulSet's `spec.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaAction {
    /// Not the leader, nothing seen yet, or the declared count already matches.
    Nothing,
    /// `spec.replicas` is 0: the whole set is being stopped (like a restart). The declared
    /// count stays, so the membership survives for the scale back up.
    FullStop,
    /// More replicas than a set may declare: the Scale path would refuse it.
    TooMany(u32),
    /// Propose this declared count (the Scale RPC's path: `Command::SetReplicas`).
    Propose(u32),
}

/// The decision, as a pure function of what the node knows.
pub fn replica_action(is_leader: bool, declared: Option<u32>, spec_replicas: Option<u32>) -> ReplicaAction {
    let Some(spec) = spec_replicas else { return ReplicaAction::Nothing };
    if !is_leader {
        return ReplicaAction::Nothing;
    }
    if spec == 0 {
        return ReplicaAction::FullStop;
    }
    if declared == Some(spec) {
        return ReplicaAction::Nothing;
    }
    if spec > MAX_REPLICAS {
        return ReplicaAction::TooMany(spec);
    }
    ReplicaAction::Propose(spec)
}

/// Proposes a declared replica count through the Scale RPC's own path (validation, proposal,
/// forwarding if leadership just moved).
async fn propose_replicas(node: &Arc<Node>, replicas: u32) -> Result<(), tonic::Status> {
    use petkv_client::pb::v1::cluster_server::Cluster;
    let api = crate::api::Api { node: node.clone() };
    api.scale(tonic::Request::new(petkv_client::pb::v1::ScaleRequest { replicas })).await.map(|_| ())
}

/// Feeds the StatefulSet's `spec.replicas` to the declared replica count, until shutdown.
/// Runs on every node; only the leader proposes. Re-checks on every watch event and every
/// [`RECHECK_INTERVAL`] (leadership moves without a watch event).
pub async fn follow_replicas(node: Arc<Node>, kube: KubeContext, mut shutdown: watch::Receiver<bool>) {
    let object = kube.set_object();
    tracing::info!("following spec.replicas of {object}");
    let seen = kube.watch_replicas();
    futures::pin_mut!(seen);
    let mut tick = tokio::time::interval(RECHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spec: Option<u32> = None;
    let mut last: Option<ReplicaAction> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            next = seen.next() => match next {
                Some(replicas) => {
                    if replicas != spec {
                        tracing::info!(spec_replicas = ?replicas, "{object}: spec.replicas seen");
                    }
                    spec = replicas;
                }
                None => return,
            },
            _ = shutdown.changed() => return,
        }
        let is_leader = node.metrics().is_some_and(|m| m.state == ServerState::Leader);
        let declared = node.sm.declared_replicas().ok().flatten();
        let action = replica_action(is_leader, declared, spec);
        let new = last != Some(action);
        last = Some(action);
        match action {
            ReplicaAction::Nothing => {}
            ReplicaAction::FullStop if new => tracing::info!(
                ?declared,
                "{object} has spec.replicas 0: the whole set is stopping; keeping the declared replica count \
                 (the membership survives for the scale back up)"
            ),
            ReplicaAction::TooMany(r) if new => tracing::warn!(
                spec_replicas = r,
                "{object} declares more than {MAX_REPLICAS} replicas; keeping the declared count {declared:?}"
            ),
            ReplicaAction::FullStop | ReplicaAction::TooMany(_) => {}
            ReplicaAction::Propose(replicas) => {
                tracing::info!(replicas, ?declared, "following {object}: declaring {replicas} replicas");
                match propose_replicas(&node, replicas).await {
                    Ok(()) => failing = false,
                    Err(status) => {
                        let message = format!("{}: {}", status.code(), status.message());
                        if failing {
                            tracing::debug!(replicas, error = %message, "declaring the replica count failed again");
                        } else {
                            tracing::warn!(replicas, error = %message, "declaring the replica count failed; will retry");
                        }
                        failing = true;
                    }
                }
            }
        }
    }
}

/// The "set was bootstrapped" marker as a ConfigMap owned by the StatefulSet.
#[derive(Clone)]
pub struct ConfigMapMarker {
    kube: KubeContext,
    name: String,
}

impl std::fmt::Debug for ConfigMapMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapMarker").field("kube", &self.kube).field("name", &self.name).finish()
    }
}

impl std::fmt::Display for ConfigMapMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfigMap {}/{}", self.kube.namespace, self.name)
    }
}

/// How often `record` retries when the ConfigMap changes between reading and replacing it.
const RECORD_ATTEMPTS: u32 = 3;

impl ConfigMapMarker {
    pub fn new(kube: KubeContext, name: impl Into<String>) -> Self {
        Self { kube, name: name.into() }
    }

    fn object(&self) -> String {
        self.to_string()
    }

    /// The cluster id under `clusterId`; `None` when the ConfigMap does not exist or holds no
    /// (or an empty) `clusterId` (for example created empty by the manifests).
    pub async fn read(&self) -> Result<Option<String>, KubeError> {
        let object = self.object();
        let found = bounded("read", object.clone(), self.kube.configmaps().get_opt(&self.name))
            .await?
            .map_err(|source| KubeError::Api { action: "read", object, source })?;
        Ok(found.as_ref().and_then(cluster_id_of))
    }

    /// Records `cluster_id`: creates the ConfigMap (without an owner). If it exists
    /// (409 AlreadyExists: someone else created it), reads it back and returns the id it names;
    /// one that exists without an id gets this one (a replace guarded by its resourceVersion).
    pub async fn record(&self, cluster_id: &str) -> Result<String, KubeError> {
        let object = self.object();
        let api = self.kube.configmaps();
        let wanted = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.kube.namespace.clone()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(CLUSTER_ID_KEY.to_string(), cluster_id.to_string())])),
            ..Default::default()
        };
        for _ in 0..RECORD_ATTEMPTS {
            match bounded("create", object.clone(), api.create(&PostParams::default(), &wanted)).await? {
                Ok(_) => {
                    tracing::info!(cluster_id, "recorded the bootstrap marker in {object}");
                    return Ok(cluster_id.to_string());
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.code == 409 => {}
                Err(source) => return Err(KubeError::Api { action: "create", object, source }),
            }
            let existing = bounded("read", object.clone(), api.get_opt(&self.name))
                .await?
                .map_err(|source| KubeError::Api { action: "read", object: object.clone(), source })?;
            let Some(mut existing) = existing else { continue }; // deleted meanwhile: create again
            if let Some(id) = cluster_id_of(&existing) {
                if id != cluster_id {
                    tracing::warn!(recorded = %id, mine = cluster_id, "{object} already names another cluster");
                }
                return Ok(id);
            }
            existing.data.get_or_insert_with(BTreeMap::new).insert(CLUSTER_ID_KEY.into(), cluster_id.into());
            self.disown(&mut existing);
            match bounded("replace", object.clone(), api.replace(&self.name, &PostParams::default(), &existing)).await?
            {
                Ok(_) => {
                    tracing::info!(cluster_id, "recorded the bootstrap marker in the existing {object}");
                    return Ok(cluster_id.to_string());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {} // changed meanwhile
                Err(source) => return Err(KubeError::Api { action: "replace", object, source }),
            }
        }
        Err(KubeError::Contended { object, attempts: RECORD_ATTEMPTS })
    }

    /// Makes the marker name `cluster_id` whatever it named before (a restore starts a new
    /// cluster for the set): records it, and overwrites another cluster's id, guarded by the
    /// ConfigMap's resourceVersion.
    pub async fn replace(&self, cluster_id: &str) -> Result<(), KubeError> {
        let object = self.object();
        let api = self.kube.configmaps();
        for _ in 0..RECORD_ATTEMPTS {
            if self.record(cluster_id).await? == cluster_id {
                return Ok(());
            }
            let existing = bounded("read", object.clone(), api.get_opt(&self.name))
                .await?
                .map_err(|source| KubeError::Api { action: "read", object: object.clone(), source })?;
            let Some(mut existing) = existing else { continue };
            existing.data.get_or_insert_with(BTreeMap::new).insert(CLUSTER_ID_KEY.into(), cluster_id.into());
            self.disown(&mut existing);
            match bounded("replace", object.clone(), api.replace(&self.name, &PostParams::default(), &existing)).await?
            {
                Ok(_) => {
                    tracing::warn!(cluster_id, "the bootstrap marker in {object} now names the restored cluster");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {}
                Err(source) => return Err(KubeError::Api { action: "replace", object, source }),
            }
        }
        Err(KubeError::Contended { object, attempts: RECORD_ATTEMPTS })
    }
}

impl ConfigMapMarker {
    /// Drops an ownerReference to this set (garbage collection would delete the marker with
    /// the set and let a second cluster start); other owners are someone else's business.
    fn disown(&self, cm: &mut ConfigMap) {
        if let Some(owners) = cm.metadata.owner_references.as_mut() {
            owners.retain(|o| !(o.kind == "StatefulSet" && o.name == self.kube.statefulset));
            if owners.is_empty() {
                cm.metadata.owner_references = None;
            }
        }
    }
}

fn cluster_id_of(cm: &ConfigMap) -> Option<String> {
    let id = cm.data.as_ref()?.get(CLUSTER_ID_KEY)?.trim();
    (!id.is_empty()).then(|| id.to_string())
}
