//! `bench --scenario footprint`: what an idle watcher and a lease cost a member in memory.
//!
//! On a fresh system, after 1,000 warm-up puts: the members' resident memory (`VmRSS`), then
//! `--watchers` idle watch streams opened (watcher `i` on member `i mod 3`, [`PER_CONNECTION`]
//! streams per connection, each established), the memory again, then `--leases` leases granted
//! (a long TTL, no keys), the memory again. Per watcher: the growth summed over the members,
//! divided by the watchers. Per lease: every member keeps every lease, so the growth of the
//! member that grew most, divided by the leases.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::procstat;
use super::report::Metric;
use super::sut::SystemUnderTest;
use super::workload::{self, KvTarget, KEY_PREFIX};
use super::Target;

/// Watch streams per connection (below petkv's default limit of 256 streams per connection).
pub const PER_CONNECTION: usize = 100;
/// Watches being opened, or leases being granted, at once.
const IN_FLIGHT: usize = 64;
/// Warm-up puts before the first measurement.
const WARM_UP_PUTS: u64 = 1_000;
/// The leases' TTL: longer than any run, so none expires while measured.
const LEASE_TTL_SECONDS: u64 = 3_600;
const KIB: f64 = 1024.0;

/// Each member's resident memory now, in bytes.
fn rss(pids: &[u32]) -> anyhow::Result<Vec<u64>> {
    pids.iter().map(|p| procstat::rss(*p)).collect()
}

/// The figures and notes of one footprint run.
pub async fn measure<S: SystemUnderTest>(
    s: &S,
    watchers: usize,
    leases: u64,
    value_size: usize,
    target: Target,
) -> anyhow::Result<(Vec<Metric>, Vec<String>)> {
    let conns = s.connect(8, target).await?;
    workload::put_range(&conns, 0..WARM_UP_PUTS, WARM_UP_PUTS, value_size, IN_FLIGHT).await?;
    let pids = s.pids();
    anyhow::ensure!(pids.len() == s.members(), "a {} member is not running", s.system().name());
    let before = rss(&pids)?;

    // Connections per member, then each watcher on its member's connections in turn.
    let members = s.members();
    let mut per_member: Vec<Vec<Arc<S::Target>>> = Vec::new();
    for m in 0..members {
        let watchers_here = watchers / members + usize::from(m < watchers % members);
        let mut list = Vec::new();
        for _ in 0..watchers_here.div_ceil(PER_CONNECTION) {
            list.push(s.connect_to(m).await?);
        }
        per_member.push(list);
    }
    let placed: Vec<Arc<S::Target>> =
        (0..watchers).map(|i| per_member[i % members][(i / members) / PER_CONNECTION].clone()).collect();
    let streams: Vec<_> = futures::stream::iter(placed.into_iter().enumerate())
        .map(|(i, conn)| async move {
            conn.watch_prefix(KEY_PREFIX.into()).await.map_err(|e| anyhow::anyhow!("watcher {i}: {e}"))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let with_watchers = rss(&pids)?;

    futures::stream::iter(0..leases)
        .map(|n| {
            let conn = conns[n as usize % conns.len()].clone();
            async move { conn.lease_grant(LEASE_TTL_SECONDS).await.map_err(|e| anyhow::anyhow!("lease {n}: {e}")) }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let with_leases = rss(&pids)?;
    drop(streams);

    let growth = |after: &[u64], from: &[u64]| -> Vec<f64> {
        after.iter().zip(from).map(|(a, b)| *a as f64 - *b as f64).collect()
    };
    let watcher_growth = growth(&with_watchers, &before);
    let lease_growth = growth(&with_leases, &with_watchers);
    let per = |bytes: f64, n: f64| if n > 0.0 { bytes / n / KIB } else { 0.0 };
    let mib = |v: &[u64]| v.iter().map(|b| format!("{:.1}", *b as f64 / KIB / KIB)).collect::<Vec<_>>().join(" / ");
    let metrics = vec![
        Metric::new("KiB per idle watcher (all members)", per(watcher_growth.iter().sum(), watchers as f64), 2),
        Metric::new(
            "KiB per lease (the member that grew most)",
            per(lease_growth.iter().copied().fold(f64::MIN, f64::max), leases as f64),
            2,
        ),
        Metric::new("RSS before, MiB (all members)", before.iter().sum::<u64>() as f64 / KIB / KIB, 1),
    ];
    let notes = vec![format!(
        "RSS per member MiB: before {}; with {watchers} watchers {}; with {leases} leases too {}",
        mib(&before),
        mib(&with_watchers),
        mib(&with_leases)
    )];
    Ok((metrics, notes))
}
