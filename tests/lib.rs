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

/// A minimal HTTP/1.1 GET (test code: no client library needed). Returns the status code and
/// the body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr} timed out"))??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))??;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    anyhow::ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked body: {head}");
    Ok((status, body.to_string()))
}

/// The value of one sample (`name` or `name{labels}`, exactly as exported) in a Prometheus
/// text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

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
