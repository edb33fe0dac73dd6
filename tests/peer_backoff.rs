//! A dead follower (its peer port refuses connections, as while its container restarts in its
//! pod or sits in CrashLoopBackOff) costs the leader little: replication backs off on every
//! failure path of the peer transport, and the leader logs about it a few times, not once per
//! retry.

use std::time::{Duration, Instant};

use petkv_e2e::{healthy_cluster, wait_value_on, SETTLE};
use petkv_harness::bench::procstat::cpu_seconds;

/// The measuring window with the follower dead.
const WINDOW: Duration = Duration::from_secs(3);

fn log_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_follower_costs_the_leader_little_cpu_and_few_log_lines() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let client = cluster.client()?;
    client.put(b"before", b"1", None).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let victim = (leader + 1) % 3;
    cluster.kill(victim).await?;
    // The leader goes on committing with the other follower.
    client.put(b"during", b"2", None).await?;

    let pid = cluster.pod(leader)?.pid().ok_or_else(|| anyhow::anyhow!("the leader is not running"))?;
    let log = cluster.pod(leader)?.spec.log_path.clone();
    let (lines_before, cpu_before, started) = (log_lines(&log), cpu_seconds(&[pid])?, Instant::now());
    tokio::time::sleep(WINDOW).await;
    let cpu = (cpu_seconds(&[pid])? - cpu_before) / started.elapsed().as_secs_f64();
    let lines = log_lines(&log) - lines_before;
    println!("leader with a dead follower: {:.1}% of a core, {lines} log lines in {WINDOW:?}", cpu * 100.0);
    assert!(cpu < 0.25, "the leader spins on a dead follower: {:.0}% of a core", cpu * 100.0);
    assert!(lines <= 10, "{lines} log lines in {WINDOW:?}; the last ones:\n{}", cluster.pod(leader)?.log_tail(5));

    // The follower comes back and catches up at once, back-off or not.
    cluster.start(victim)?;
    wait_value_on(&cluster, victim, "during", "2").await?;
    Ok(())
}
