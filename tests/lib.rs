//! Shared helpers for the end-to-end tests: real `petkv serve` processes on loopback, started
//! through the cluster harness, in temporary state dirs that are removed afterwards.

use std::time::Duration;

use petkv::client::Client;
use petkv::pb::v1::Consistency;
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
