//! `petkv-harness measure`: the figures of the node issue, on a 3-pod loopback cluster.
//!
//! - failover: kill -9 the leader, time until the first write succeeds (several runs);
//! - put latency with one client (sequential puts, 100-byte values);
//! - put throughput with N concurrent clients for a fixed duration.
//!
//! A first, simple measurement; the full benchmark against etcd is [`crate::bench`], whose driver the throughput figure uses. Medians,
//! because the machine is shared and noisy.

use std::time::{Duration, Instant};

use crate::bench::petkv_target::PetkvTarget;
use crate::bench::workload::{drive, Workload};
use crate::bench::Mode;
use crate::{Cluster, ClusterSpec};

const SETTLE: Duration = Duration::from_secs(60);
const VALUE: [u8; 100] = [b'x'; 100];

/// What to measure.
#[derive(Debug, Clone)]
pub struct MeasureSpec {
    pub failover_runs: usize,
    pub latency_puts: usize,
    pub clients: usize,
    pub throughput_for: Duration,
}

/// The figures.
#[derive(Debug, Clone)]
pub struct Measured {
    pub failover_windows: Vec<Duration>,
    pub put_latency_p50: Duration,
    pub put_latency_p99: Duration,
    pub throughput_ops: f64,
    pub clients: usize,
}

/// The value at fraction `p` (0..=1) of sorted durations; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of some values (durations, rates); the default value for none.
pub fn median<T: Copy + PartialOrd + Default>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return T::default();
    }
    v[v.len() / 2]
}

/// A fresh set in a temporary dir, started and settled; returns it with its leader's ordinal.
/// Shared by `measure` and `bench`.
pub async fn fresh_cluster(spec: ClusterSpec) -> anyhow::Result<(Cluster, u32)> {
    let mut cluster = Cluster::new(spec)?;
    cluster.start_all()?;
    let leader = cluster.wait_healthy(SETTLE).await?;
    Ok((cluster, leader))
}

/// Runs the measurements on a fresh cluster.
pub async fn run(spec: &MeasureSpec) -> anyhow::Result<Measured> {
    let (mut cluster, _) = fresh_cluster(ClusterSpec::default()).await?;
    let client = cluster.client()?;

    // Single-client latency.
    let mut latencies = Vec::with_capacity(spec.latency_puts);
    for i in 0..spec.latency_puts {
        let t = Instant::now();
        client.put(format!("lat-{i}").as_bytes(), &VALUE, None).await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!("put latency, 1 client, {} puts: p50 {:?}, p99 {:?}", spec.latency_puts, p50, p99);

    // Throughput with N clients sharing one client (the bench's closed-loop driver).
    let endpoints: Vec<String> = cluster.ordinals().iter().map(|o| cluster.client_addr(*o)).collect();
    let workload = Workload {
        mode: Mode::Put,
        clients: spec.clients,
        keys: 1000 * spec.clients.max(1) as u64,
        value_size: VALUE.len(),
        warmup: Duration::ZERO,
        duration: spec.throughput_for,
        rate: None,
    };
    let outcome = drive(&PetkvTarget::connect(&endpoints, 1)?, &workload).await?;
    anyhow::ensure!(outcome.errors == 0, "{} puts failed: {:?}", outcome.errors, outcome.sample_errors);
    let ops = outcome.ops as f64 / outcome.elapsed.as_secs_f64();
    println!("put throughput, {} clients, {:?}: {ops:.0} ops/s", spec.clients, spec.throughput_for);

    // Failover windows.
    let mut windows = Vec::new();
    for run in 0..spec.failover_runs {
        let leader = cluster.wait_leader(SETTLE).await?;
        let t = Instant::now();
        cluster.kill(leader).await?;
        client.put(format!("failover-{run}").as_bytes(), &VALUE, None).await?;
        let window = t.elapsed();
        println!("failover run {}: kill -9 petkv-{leader} → first successful write after {:?}", run + 1, window);
        windows.push(window);
        cluster.start(leader)?;
        cluster.wait_healthy(SETTLE).await?;
    }
    cluster.down().await?;
    Ok(Measured {
        failover_windows: windows,
        put_latency_p50: p50,
        put_latency_p99: p99,
        throughput_ops: ops,
        clients: spec.clients,
    })
}
