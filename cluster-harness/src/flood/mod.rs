//! `petkv-harness flood`: abuse one node of a 3-pod loopback set and measure what a normal
//! client sees meanwhile.
//!
//! 1. Start a fresh set (or use `--target` to pick the pod; default: the leader).
//! 2. Baseline: one normal client alternates puts and linearizable gets on the target for
//!    `phase` and records every latency.
//! 3. Flood, held while the normal client runs another `phase`: `connections` idle HTTP/2
//!    connections, `oversized_senders` clients putting values of `oversized_bytes` (over the
//!    message limit) in a loop, and a burst of `burst_streams` concurrent gets on each of
//!    `burst_connections` connections. The target's RSS is sampled every [`RSS_EVERY`].
//! 4. Report the normal client's p50/p99 and errors before and during, the target's RSS before
//!    and its peak during, and what the node counted (connections open and refused, requests
//!    shed and oversized) from its `/metrics`; then stop the flood and check the node still
//!    answers.
//!
//! - [`attack`]: the abusive clients (also used by the e2e tests of the limits);
//! - [`report`]: the figures, as a table or JSON.

pub mod attack;
pub mod report;

use std::time::{Duration, Instant};

use anyhow::Context;
use petkv_client::pb::v1::Consistency;
use petkv_client::Client;
use tokio::sync::watch;

use crate::bench::procstat;
use crate::http::metric;
use crate::measure::{fresh_cluster, percentile};
use crate::{Cluster, ClusterSpec};
use report::{FloodReport, NodeCounts, Phase};

/// How often the target's RSS is sampled during the flood.
pub const RSS_EVERY: Duration = Duration::from_millis(100);
/// Key the normal client and the burst read.
const KEY: &[u8] = b"flood-key";
/// Timeout of one normal-client request (its failovers included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to flood with.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// Ordinal of the pod to flood (default: the leader).
    pub target: Option<u32>,
    pub connections: usize,
    pub oversized_senders: usize,
    pub oversized_bytes: usize,
    pub burst_connections: usize,
    pub burst_streams: usize,
    /// Length of the baseline and of the measured flood.
    pub phase: Duration,
    /// Extra `petkv serve` flags of every pod (e.g. a smaller `--max-client-connections`).
    pub node_args: Vec<String>,
}

/// The normal client's figures over `phase`: alternating puts and gets on `client`.
async fn normal_client(client: &Client, phase: Duration) -> Phase {
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < phase {
        let t = Instant::now();
        let result = if i.is_multiple_of(2) {
            client.put(KEY, format!("v{i}").as_bytes(), None).await.map(|_| ())
        } else {
            client.get(KEY, Consistency::Linearizable).await.map(|_| ())
        };
        match result {
            Ok(()) => latencies.push(t.elapsed()),
            Err(e) => errors.push(e.to_string()),
        }
        i += 1;
    }
    latencies.sort();
    Phase {
        ops: latencies.len() as u64,
        errors: i - latencies.len() as u64,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        sample_errors: errors.into_iter().take(report::SAMPLE_ERRORS).collect(),
    }
}

/// What the node counted, from its `/metrics`.
async fn node_counts(http: &str) -> anyhow::Result<NodeCounts> {
    Ok(NodeCounts {
        open_connections: metric(http, r#"petkv_open_connections{port="client"}"#).await? as u64,
        refused_connections: metric(http, r#"petkv_connections_refused_total{port="client"}"#).await? as u64,
        shed_requests: metric(http, "petkv_requests_shed_total").await? as u64,
        oversized_requests: metric(http, "petkv_oversized_requests_total").await? as u64,
    })
}

/// Runs the flood on a fresh set and reports.
pub async fn run(spec: &FloodSpec) -> anyhow::Result<FloodReport> {
    let (mut cluster, leader) =
        fresh_cluster(ClusterSpec { extra_args: spec.node_args.clone(), ..Default::default() }).await?;
    let result = flood(&cluster, spec.target.unwrap_or(leader), spec).await;
    cluster.down().await?;
    result
}

async fn flood(cluster: &Cluster, target: u32, spec: &FloodSpec) -> anyhow::Result<FloodReport> {
    let addr = cluster.client_addr(target);
    let http = cluster.http_addr(target);
    let pid = cluster.pod(target)?.pid().context("the target pod is not running")?;
    let client = cluster.client_for(std::slice::from_ref(&addr), CLIENT_TIMEOUT)?;
    client.put(KEY, b"start", None).await?;
    let before = normal_client(&client, spec.phase).await;
    let rss_before = procstat::rss(pid)?;
    let counts_before = node_counts(&http).await?;

    let (stop_tx, stop) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(pid, stop.clone()));
    let flood_start = Instant::now();
    let mut idle = attack::open_idle(&addr, spec.connections).await;
    let opened_in = flood_start.elapsed();
    let oversized = attack::oversized(&addr, spec.oversized_senders, spec.oversized_bytes, stop.clone()).await?;
    let burst = attack::burst(&addr, spec.burst_connections, spec.burst_streams, KEY, stop.clone()).await?;
    let during = normal_client(&client, spec.phase).await;
    let counts_during = node_counts(&http).await?;
    let closed = idle.closed_by_server(Duration::from_millis(200)).await;
    let failed = idle.failed;
    let _ = stop_tx.send(true);
    let peak_rss_during = sampler.await.context("the RSS sampler stopped")??;
    drop(idle);
    let still_serves = client.put(KEY, b"after", None).await.is_ok();
    Ok(FloodReport {
        target: format!("{}-{target}", cluster.spec.set),
        connections: spec.connections,
        connections_failed: failed,
        connections_opened_in: opened_in,
        idle_closed_by_server: closed,
        oversized_bytes: spec.oversized_bytes,
        oversized: oversized.counts(),
        burst: burst.counts(),
        burst_streams: spec.burst_connections * spec.burst_streams,
        before,
        during,
        rss_before,
        peak_rss_during,
        hwm_after: procstat::peak_rss(&[pid])?.first().copied().unwrap_or_default(),
        node: counts_during.since(&counts_before),
        open_connections_during: counts_during.open_connections,
        still_serves,
    })
}

/// The largest RSS of `pid` seen until `stop`.
async fn sample_rss(pid: u32, mut stop: watch::Receiver<bool>) -> anyhow::Result<u64> {
    let mut peak = procstat::rss(pid)?;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RSS_EVERY) => peak = peak.max(procstat::rss(pid)?),
            _ = stop.wait_for(|s| *s) => return Ok(peak),
        }
    }
}
