//! Shared helpers for the end-to-end tests: real `petkv serve` processes on loopback, started
//! through the cluster harness, in temporary state dirs that are removed afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use petkv_client::pb::v1::Consistency;
use petkv_client::{Client, ClientError};
use petkv_harness::{wait, Cluster, ClusterSpec};

/// Generous bound for a cluster to form or heal on a loaded 2-core CI machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Starts a set with `replicas` pods and `voters` voters and waits until it is healthy.
pub async fn healthy_cluster(replicas: u32, voters: u32, extra_args: &[&str]) -> anyhow::Result<Cluster> {
    let spec = ClusterSpec {
        replicas,
        voters,
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    healthy(spec).await
}

/// Starts the set `spec` describes and waits until it is healthy.
pub async fn healthy(spec: ClusterSpec) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::new(spec)?;
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    Ok(cluster)
}

/// Waits until a stale read of `key` on pod `ordinal` returns `value`.
pub async fn wait_value_on(cluster: &Cluster, ordinal: u32, key: &str, value: &str) -> anyhow::Result<()> {
    let client: Client = cluster.client_of(ordinal)?;
    wait::until(&format!("{key}={value} on pod {ordinal}"), SETTLE, || async {
        let r = client.get(key.as_bytes(), Consistency::Stale).await.ok()?;
        r.kv.filter(|kv| kv.value.as_ref() == value.as_bytes()).map(|_| ())
    })
    .await
}

/// `GET path` on `addr` (status code and body), connecting within 2 s and reading within 5 s.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    petkv_harness::http::get(addr, path, Duration::from_secs(2), Duration::from_secs(5)).await
}

pub use petkv_harness::http::sample;

/// Waits until every pod has applied the same last log entry and reports 3 voters' worth of
/// agreement: nothing is in flight (membership promotions, the declared replica count), so a
/// test can compare log indexes before and after an action.
pub async fn wait_quiescent(cluster: &Cluster) -> anyhow::Result<u64> {
    wait::until("every pod applied the same last entry", SETTLE, || async {
        let mut indexes = Vec::new();
        for ordinal in cluster.ordinals() {
            let s = cluster.status(ordinal).await.ok()?;
            if s.applied_index != s.last_log_index || s.committed_index != s.last_log_index {
                return None;
            }
            indexes.push(s.last_log_index);
        }
        let first = *indexes.first()?;
        indexes.iter().all(|i| *i == first).then_some(first)
    })
    .await
}

/// Every file under `dir` (recursively) with its bytes: to show a refused start changed nothing.
pub fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.insert(path, bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Every pod's client address, for a client that may fail over between them.
pub fn endpoints(cluster: &Cluster) -> Vec<String> {
    cluster.ordinals().iter().map(|o| cluster.client_addr(*o)).collect()
}

/// The code of a refused call; fails the test if the call was not refused by the server.
pub fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, ClientError>) -> tonic::Code {
    match result {
        Err(ClientError::Rejected(status)) => status.code(),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// Waits until pod `ordinal`'s log has a line containing all of `words`.
pub async fn wait_log(cluster: &Cluster, ordinal: u32, words: &[&str]) -> anyhow::Result<()> {
    let pod = cluster.pod(ordinal)?;
    wait::until(&format!("{} to log {words:?}", pod.name()), SETTLE, || async {
        let log = std::fs::read_to_string(&pod.spec.log_path).ok()?;
        log.lines().any(|line| words.iter().all(|w| line.contains(w))).then_some(())
    })
    .await
}
