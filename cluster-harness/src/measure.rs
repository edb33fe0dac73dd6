//! `petkv-harness measure`: the figures of the node issue, on a 3-pod loopback cluster.
//!
//! - failover: kill -9 the leader, time until the first write succeeds (several runs);
//! - put latency with one client (sequential puts, 100-byte values);
//! - put throughput with N concurrent clients for a fixed duration.
//!
//! A first, simple measurement; the full benchmark against etcd is `bench` (later). Medians,
//! because the machine is shared and noisy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of some durations.
pub fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    percentile(&v, 0.5)
}

/// Runs the measurements on a fresh cluster.
pub async fn run(spec: &MeasureSpec) -> anyhow::Result<Measured> {
    let mut cluster = Cluster::new(ClusterSpec::default())?;
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    let client = Arc::new(cluster.client()?);

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

    // Throughput with N clients.
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + spec.throughput_for;
    let started = Instant::now();
    let tasks: Vec<_> = (0..spec.clients)
        .map(|c| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    client.put(format!("tp-{c}-{}", i % 1000).as_bytes(), &VALUE, None).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let ops = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
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
