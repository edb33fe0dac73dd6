//! The fault schedules: what each experiment does to the set while the workload runs
//! ([`inject`], with `power-loss`'s cycles in [`power_loss_cycles`]), the ways a pod goes down
//! ([`crash`], [`crash_all`]) and comes back ([`wait_back`]), watching a pod's snapshot dir for
//! a new snapshot (`mid-snapshot`), and the fault marks and notes ([`Faults`]) that end up on the
//! timeline and in the report.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::Signal;

use super::{Experiment, ExperimentSpec, PowerLossTarget, SETTLE};
use crate::Cluster;

/// How long OrderedReady waits for petkv-0 alone before calling it deadlocked.
const ORDERED_READY_PATIENCE: Duration = Duration::from_secs(5);
/// How long a power-cut pod stays down before it is started again.
const POWER_OFF: Duration = Duration::from_millis(300);
/// failover-fast: the leader is started again within this.
const FAST_RESTART: Duration = Duration::from_millis(100);
/// mid-snapshot: `--snapshot-every` of the pods, and how long after a new snapshot file
/// appears the power is cut, by cycle (0 ms: while it is being written).
pub(super) const MID_SNAPSHOT_EVERY: u64 = 200;
const MID_SNAPSHOT_DELAYS_MS: [u64; 3] = [0, 5, 25];

pub(super) struct Faults {
    pub(super) started: Instant,
    pub(super) marks: Vec<(u64, String)>,
    pub(super) notes: Vec<String>,
}

impl Faults {
    pub(super) fn mark(&mut self, label: impl Into<String>) {
        let label = label.into();
        println!("  {:>6.2}s  {label}", self.started.elapsed().as_secs_f64());
        self.marks.push((self.started.elapsed().as_nanos() as u64, label));
    }
}

/// kill -9 of a pod, or with `power_loss` a power loss (the volume's unsynced data dropped).
/// Returns what was done, for the timeline.
async fn crash(cluster: &mut Cluster, ordinal: u32, power_loss: bool) -> anyhow::Result<&'static str> {
    if power_loss {
        cluster.power_loss(ordinal).await?;
        Ok("power loss of")
    } else {
        cluster.kill(ordinal).await?;
        Ok("kill -9")
    }
}

/// Crashes every pod at once: all processes first, then (power loss) every volume.
async fn crash_all(cluster: &mut Cluster, power_loss: bool) -> anyhow::Result<&'static str> {
    let all = cluster.ordinals();
    for o in &all {
        cluster.kill(*o).await?;
    }
    if power_loss {
        for o in &all {
            cluster.power_loss(*o).await?;
        }
        return Ok("power loss of every pod");
    }
    Ok("kill -9 every pod")
}

/// Waits until a started pod is ready again; fails at once, with its log, if it exits.
async fn wait_back(cluster: &mut Cluster, ordinal: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(status) = cluster.pod_mut(ordinal)?.reap() {
            bail!(
                "petkv-{ordinal} exited ({status}) instead of starting again; its log ends:\n{}",
                cluster.pod(ordinal)?.log_tail(20)
            );
        }
        if cluster.status(ordinal).await.is_ok_and(|s| s.ready) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "petkv-{ordinal} was not ready {SETTLE:?} after it was started again; its log ends:\n{}",
                cluster.pod(ordinal)?.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `snap-*` files in a pod's snapshot dir.
fn snapshot_files(cluster: &Cluster, ordinal: u32) -> BTreeSet<String> {
    let dir = cluster.volume(ordinal).join("snapshots");
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("snap-") && n.ends_with(".snap"))
        .collect()
}

/// Waits (polling every 2 ms) for a `snap-*` file not in `before` to appear; its name.
async fn new_snapshot(cluster: &Cluster, ordinal: u32, before: &BTreeSet<String>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(name) = snapshot_files(cluster, ordinal).into_iter().find(|n| !before.contains(n)) {
            return Some(name);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

pub(super) async fn inject(
    experiment: Experiment,
    spec: &ExperimentSpec,
    cluster: &mut Cluster,
    faults: &mut Faults,
) -> anyhow::Result<()> {
    let pl = spec.power_loss;
    match experiment {
        Experiment::Failover => {
            let leader = cluster.wait_leader(SETTLE).await?;
            let how = crash(cluster, leader, pl).await?;
            faults.mark(format!("{how} petkv-{leader} (leader)"));
            let new = cluster.wait_leader(SETTLE).await?;
            faults.mark(format!("petkv-{new} leads"));
            cluster.start(leader)?;
            wait_back(cluster, leader).await?;
            faults.mark(format!("petkv-{leader} back"));
        }
        Experiment::RestartAllParallel => {
            let how = crash_all(cluster, pl).await?;
            faults.mark(how);
            cluster.start_all()?;
            faults.mark("all pods recreated at once (Parallel)");
        }
        Experiment::RestartAllOrderedReady => {
            let how = crash_all(cluster, pl).await?;
            faults.mark(how);
            cluster.start(0)?;
            faults.mark("OrderedReady: petkv-0 recreated, waiting for it to be ready");
            match cluster.wait_member(0, ORDERED_READY_PATIENCE).await {
                Ok(_) => faults.notes.push("OrderedReady: petkv-0 became ready alone".into()),
                Err(_) => {
                    let note = format!(
                        "OrderedReady deadlock: petkv-0 alone has no quorum, so it never becomes ready and a \
                         StatefulSet would never create petkv-1 and petkv-2 (waited {ORDERED_READY_PATIENCE:?}); \
                         this is why deploy/ uses Parallel. The harness now starts the rest to finish the run."
                    );
                    println!("  {note}");
                    faults.notes.push(note);
                    faults.mark("deadlock: starting petkv-1 and petkv-2 anyway");
                }
            }
            for o in 1..cluster.spec.replicas {
                cluster.start(o)?;
            }
        }
        Experiment::Scale => {
            cluster.scale(5).await?;
            faults.mark("scale 3 → 5");
            cluster.wait_healthy(SETTLE).await?;
            faults.mark("5 pods healthy");
            cluster.scale(3).await?;
            faults.mark("scale 5 → 3");
        }
        Experiment::Wipe => {
            let leader = cluster.wait_leader(SETTLE).await?;
            let victim = (leader + 1) % 3;
            crash(cluster, victim, pl).await?;
            cluster.wipe_volume(victim)?;
            faults.mark(format!("petkv-{victim} killed and its volume deleted"));
            cluster.start(victim)?;
            wait_back(cluster, victim).await?;
            faults.mark(format!("petkv-{victim} rejoined under a new node id"));
        }
        Experiment::VolumeSwap => {
            let leader = cluster.wait_leader(SETTLE).await?;
            let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
            cluster.terminate(a).await?;
            cluster.terminate(b).await?;
            cluster.swap_volumes(a, b)?;
            faults.mark(format!("volumes of petkv-{a} and petkv-{b} swapped"));
            for o in [a, b] {
                cluster.start(o)?;
                let exit = cluster.pod_mut(o)?.wait_exit(SETTLE).await?;
                let refused = exit.is_some_and(|s| !s.success());
                let log = cluster.pod(o)?.log_tail(3);
                let named_both = log.contains(&format!("petkv-{a}")) && log.contains(&format!("petkv-{b}"));
                if !(refused && named_both) {
                    bail!("petkv-{o} started on the volume of another pod: exit {exit:?}, log:\n{log}");
                }
                faults
                    .notes
                    .push(format!("petkv-{o} refused the swapped volume: {}", log.lines().last().unwrap_or("")));
            }
            faults.mark("both pods refused the swapped volumes");
            cluster.swap_volumes(a, b)?;
            cluster.start(a)?;
            cluster.start(b)?;
            faults.mark("volumes swapped back, pods recreated");
        }
        Experiment::Pause => {
            let leader = cluster.wait_leader(SETTLE).await?;
            cluster.signal(leader, Signal::SIGSTOP)?;
            faults.mark(format!("SIGSTOP petkv-{leader} (leader)"));
            tokio::time::sleep(Duration::from_secs(3)).await;
            cluster.signal(leader, Signal::SIGCONT)?;
            faults.mark(format!("SIGCONT petkv-{leader}"));
        }
        Experiment::Partition => {
            let leader = cluster.wait_leader(SETTLE).await?;
            cluster.isolate(leader)?;
            faults.mark(format!("petkv-{leader} (leader) cut off the network"));
            tokio::time::sleep(Duration::from_secs(3)).await;
            cluster.heal(leader)?;
            faults.mark(format!("petkv-{leader} reconnected"));
        }
        Experiment::Latency => {
            for o in cluster.ordinals() {
                cluster.add_latency(o, Duration::from_millis(50))?;
            }
            faults.mark("50 ms latency on every pod's link");
            tokio::time::sleep(Duration::from_secs(3)).await;
            for o in cluster.ordinals() {
                cluster.clear_latency(o)?;
            }
            faults.mark("latency removed");
        }
        Experiment::PowerLoss => power_loss_cycles(spec, cluster, faults).await?,
        Experiment::FailoverFast => {
            for cycle in 1..=spec.cycles {
                let leader = cluster.wait_healthy(SETTLE).await?;
                let cut = Instant::now();
                let how = crash(cluster, leader, pl).await?;
                cluster.start(leader)?;
                let down = cut.elapsed();
                faults.mark(format!(
                    "cycle {cycle}: {how} petkv-{leader} (leader), started again {} ms later",
                    down.as_millis()
                ));
                if down > FAST_RESTART {
                    faults.notes.push(format!(
                        "cycle {cycle}: petkv-{leader} was down {} ms, over the {} ms aimed at{}",
                        down.as_millis(),
                        FAST_RESTART.as_millis(),
                        if pl { " (a power cut remounts LazyFS)" } else { "" }
                    ));
                }
                wait_back(cluster, leader).await?;
                faults.mark(format!("cycle {cycle}: petkv-{leader} ready"));
            }
        }
    }
    Ok(())
}

/// `power-loss`: `spec.cycles` power cuts of `spec.target`, each followed by a restart.
async fn power_loss_cycles(spec: &ExperimentSpec, cluster: &mut Cluster, faults: &mut Faults) -> anyhow::Result<()> {
    for cycle in 1..=spec.cycles {
        let leader = cluster.wait_healthy(SETTLE).await?;
        let follower = (leader + 1) % 3;
        match spec.target {
            PowerLossTarget::Leader | PowerLossTarget::Follower => {
                let (victim, role) =
                    if spec.target == PowerLossTarget::Leader { (leader, "leader") } else { (follower, "follower") };
                cluster.power_loss(victim).await?;
                faults.mark(format!("cycle {cycle}: power loss of petkv-{victim} ({role})"));
                tokio::time::sleep(POWER_OFF).await;
                cluster.start(victim)?;
                wait_back(cluster, victim).await?;
                faults.mark(format!("cycle {cycle}: petkv-{victim} started again and ready"));
            }
            PowerLossTarget::All => {
                crash_all(cluster, true).await?;
                faults.mark(format!("cycle {cycle}: power loss of every pod"));
                tokio::time::sleep(POWER_OFF).await;
                cluster.start_all()?;
                for o in cluster.ordinals() {
                    wait_back(cluster, o).await?;
                }
                faults.mark(format!("cycle {cycle}: every pod started again and ready"));
            }
            PowerLossTarget::MidSnapshot => {
                let (victim, role) = if cycle % 2 == 0 { (leader, "leader") } else { (follower, "follower") };
                let before = snapshot_files(cluster, victim);
                let delay = Duration::from_millis(MID_SNAPSHOT_DELAYS_MS[(cycle - 1) % MID_SNAPSHOT_DELAYS_MS.len()]);
                let what = match new_snapshot(cluster, victim, &before).await {
                    Some(name) => {
                        tokio::time::sleep(delay).await;
                        format!("{} ms after {name} appeared", delay.as_millis())
                    }
                    None => {
                        faults.notes.push(format!(
                            "cycle {cycle}: petkv-{victim} wrote no new snapshot within 30 s; its power was cut anyway"
                        ));
                        "with no new snapshot".to_string()
                    }
                };
                cluster.power_loss(victim).await?;
                faults.mark(format!("cycle {cycle}: power loss of petkv-{victim} ({role}) {what}"));
                tokio::time::sleep(POWER_OFF).await;
                cluster.start(victim)?;
                wait_back(cluster, victim).await?;
                faults.mark(format!("cycle {cycle}: petkv-{victim} started again and ready"));
            }
        }
    }
    Ok(())
}
