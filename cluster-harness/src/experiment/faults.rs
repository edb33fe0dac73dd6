//! The fault schedules: what each experiment does to the set while the workload runs
//! ([`inject`], with `power-loss`'s cycles in [`power_loss_cycles`]), the ways a pod goes down
//! ([`crash`], [`crash_all`]) and comes back ([`wait_back`]), watching a pod's snapshot dir for
//! a new snapshot (`mid-snapshot`), and the fault marks and notes ([`Faults`]) that end up on the
//! timeline and in the report.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::{Experiment, ExperimentSpec, LeaderLoad, PowerLossTarget, SETTLE};
use crate::Cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `scale-to-zero`, `reapply`: how long the set stays stopped.
const STOPPED_FOR: Duration = Duration::from_secs(2);
/// `crash-loop`: the kubelet's first restart back-off (doubling up to the cap).
const CRASH_BACKOFF: Duration = Duration::from_secs(10);
/// `crash-loop`: an environment value `petkv serve` refuses at once (not a number), given to
/// the crash-looping pod only.
const CRASH_ENV: (&str, &str) = ("PETKV_HEARTBEAT_MS", "crash-loop-not-a-number");
/// `crash-loop`: what the leader may spend while the follower is down.
const MAX_LEADER_CPU_PERCENT: f64 = 25.0;
const MAX_LEADER_LOG_LINES_PER_S: f64 = 5.0;
/// `dns-blip`: how long petkv-0's DNS fails.
const DNS_BLIP: Duration = Duration::from_secs(5);
/// The line a node logs when it bootstraps a new cluster.
pub(super) const BOOTSTRAP_LINE: &str = "ordinal 0: bootstrapping";
/// The line a pod logs when it leaves the cluster at SIGTERM.
const LEAVING_LINE: &str = "leaving the cluster";

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
    /// The experiment's own checks that failed, with their evidence.
    pub(super) failed_checks: Vec<String>,
    /// Pauses the workload while set.
    pub(super) pause: Arc<AtomicBool>,
    /// `crash-loop`: the leader's CPU and log rate while the follower was down.
    pub(super) leader_load: Option<LeaderLoad>,
    /// `force-delete`: what the zombie and its replacement did.
    pub(super) zombie: Option<super::ZombieReport>,
}

impl Faults {
    /// No fault yet, on `workload`'s clock.
    pub(super) fn for_workload(workload: &crate::workload::Workload) -> Self {
        Faults {
            started: workload.started,
            marks: Vec::new(),
            notes: Vec::new(),
            failed_checks: Vec::new(),
            pause: workload.pause_handle(),
            leader_load: None,
            zombie: None,
        }
    }

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
pub(super) async fn wait_back(cluster: &mut Cluster, ordinal: u32) -> anyhow::Result<()> {
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

/// The members (node id, voter) as the leader lists them, sorted.
pub(super) async fn members(cluster: &Cluster) -> anyhow::Result<Vec<(u64, bool)>> {
    let mut m: Vec<(u64, bool)> =
        cluster.client()?.members().await?.members.iter().map(|m| (m.node_id, m.voter)).collect();
    m.sort_unstable();
    Ok(m)
}

/// Every pod's log length, to read what it logs from now on.
pub(super) fn log_offsets(cluster: &Cluster) -> Vec<(u32, u64)> {
    cluster.ordinals().into_iter().filter_map(|o| Some((o, cluster.pod(o).ok()?.log_len()))).collect()
}

/// The lines of each pod's log since `offsets` that contain `needle`.
pub(super) fn logged_since(cluster: &Cluster, offsets: &[(u32, u64)], needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (o, offset) in offsets {
        let Ok(pod) = cluster.pod(*o) else { continue };
        for line in pod.log_since(*offset).lines().filter(|l| l.contains(needle)) {
            out.push(format!("petkv-{o}: {line}"));
        }
    }
    out
}

/// Fails a check with its evidence unless `lines` is empty.
pub(super) fn none_logged(faults: &mut Faults, what: &str, lines: Vec<String>) {
    if lines.is_empty() {
        faults.notes.push(format!("no pod logged {what}"));
    } else {
        faults.failed_checks.push(format!("{what} was logged:\n{}", lines.join("\n")));
    }
}

/// After every pod of the set was stopped and started again (scale to 0 and back, delete and
/// apply): every pod is back and ready, none logged leaving the cluster or bootstrapping since
/// `offsets`, and the membership is the one before.
async fn back_as_before(
    cluster: &mut Cluster,
    faults: &mut Faults,
    offsets: &[(u32, u64)],
    before: &[(u64, bool)],
) -> anyhow::Result<()> {
    for o in cluster.ordinals() {
        wait_back(cluster, o).await?;
    }
    faults.mark("every pod ready");
    none_logged(faults, &format!("{LEAVING_LINE:?}"), logged_since(cluster, offsets, LEAVING_LINE));
    none_logged(faults, &format!("{BOOTSTRAP_LINE:?}"), logged_since(cluster, offsets, BOOTSTRAP_LINE));
    cluster.wait_healthy(SETTLE).await?;
    membership_kept(cluster, faults, before).await
}

/// Fails a check unless the membership is what it was.
async fn membership_kept(cluster: &Cluster, faults: &mut Faults, before: &[(u64, bool)]) -> anyhow::Result<()> {
    let after = members(cluster).await?;
    if after == before {
        faults.notes.push(format!("membership intact: {after:?} (node id, voter)"));
    } else {
        faults.failed_checks.push(format!("membership changed: {before:?} before, {after:?} after"));
    }
    Ok(())
}

/// Fails a check unless every pod still declares `replicas`.
async fn declared_kept(cluster: &Cluster, faults: &mut Faults, replicas: u32) -> anyhow::Result<()> {
    for o in cluster.ordinals() {
        let declared = cluster.status(o).await?.declared_replicas;
        if declared != replicas {
            faults.failed_checks.push(format!("petkv-{o} declares {declared} replicas, not {replicas}"));
        }
    }
    Ok(())
}

/// CPU seconds of every process in a pod's process group (the pod's shell, init container
/// and `petkv serve`, whichever run).
fn group_cpu_seconds(pgid: u32) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut ticks = 0u64;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // After the name: state, ppid, pgrp.
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2)?.parse::<u32>().ok());
        if pgrp == Some(pgid) {
            ticks += crate::bench::procstat::parse_cpu_ticks(&stat).unwrap_or(0);
        }
    }
    ticks as f64 / 100.0
}

/// One sample of a pod's load: when, CPU seconds so far, log lines so far.
struct LoadSample {
    at: Instant,
    cpu_s: f64,
    lines: usize,
}

fn sample(cluster: &Cluster, ordinal: u32) -> anyhow::Result<LoadSample> {
    let pod = cluster.pod(ordinal)?;
    let pid = pod.pid().with_context(|| format!("petkv-{ordinal} is not running"))?;
    let lines = std::fs::read(&pod.spec.log_path).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0);
    Ok(LoadSample { at: Instant::now(), cpu_s: group_cpu_seconds(pid), lines })
}

/// (percent of a core, log lines per second) between two samples.
fn rates(a: &LoadSample, b: &LoadSample) -> (f64, f64) {
    let secs = (b.at - a.at).as_secs_f64().max(1e-3);
    (100.0 * (b.cpu_s - a.cpu_s) / secs, (b.lines.saturating_sub(a.lines)) as f64 / secs)
}

/// `crash-loop`: the follower fails at start, restarted with the kubelet's back-off, for
/// `spec.crash_loop_for`; then it starts normally. The leader's load is sampled meanwhile:
/// with the workload running for the first half, paused for the second.
async fn crash_loop(spec: &ExperimentSpec, cluster: &mut Cluster, faults: &mut Faults) -> anyhow::Result<()> {
    let leader = cluster.wait_healthy(SETTLE).await?;
    let victim = (leader + 1) % 3;
    cluster.terminate(victim).await?;
    let total = spec.crash_loop_for;
    let cap = spec.crash_loop_backoff_cap.max(Duration::from_millis(100));
    faults.mark(format!(
        "petkv-{victim} (follower) deleted; recreated failing at start ({}={}) for {total:?}, back-off {:?} doubling, cap {cap:?}",
        CRASH_ENV.0,
        CRASH_ENV.1,
        CRASH_BACKOFF.min(cap)
    ));
    let normal_env = cluster.pod(victim)?.spec.env.clone();
    cluster.pod_mut(victim)?.spec.env.push((CRASH_ENV.0.into(), CRASH_ENV.1.into()));
    let t0 = Instant::now();
    let first = sample(cluster, leader)?;
    let mut middle = None;
    let mut backoff = CRASH_BACKOFF.min(cap);
    let mut next_start = t0;
    let mut failed_starts = 0;
    let outcome: anyhow::Result<()> = async {
        loop {
            let now = Instant::now();
            if middle.is_none() && now - t0 >= total / 2 {
                middle = Some(sample(cluster, leader)?);
                faults.pause.store(true, Ordering::Relaxed);
                faults.mark("workload paused: measuring the leader alone");
            }
            if now >= next_start {
                if now - t0 >= total {
                    break;
                }
                cluster.start(victim)?;
                let exit = cluster.pod_mut(victim)?.wait_exit(Duration::from_secs(10)).await?;
                match exit {
                    Some(status) if !status.success() => failed_starts += 1,
                    other => bail!(
                        "petkv-{victim} was meant to fail at start but did not ({other:?}); its log ends:\n{}",
                        cluster.pod(victim)?.log_tail(10)
                    ),
                }
                if failed_starts == 1 {
                    faults.notes.push(format!(
                        "petkv-{victim} fails at start: {}",
                        cluster.pod(victim)?.log_tail(3).replace('\n', " | ")
                    ));
                }
                faults.mark(format!("petkv-{victim} failed at start ({failed_starts}), next start in {backoff:?}"));
                next_start = Instant::now() + backoff;
                backoff = (backoff * 2).min(cap);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
    .await;
    let last = sample(cluster, leader);
    faults.pause.store(false, Ordering::Relaxed);
    cluster.pod_mut(victim)?.spec.env = normal_env;
    outcome?;
    let last = last?;
    let middle = middle.context("the crash loop ended before its middle")?;
    let (busy_cpu, busy_log) = rates(&first, &middle);
    let (cpu, log) = rates(&middle, &last);
    let load = LeaderLoad {
        leader,
        failed_starts,
        down_s: (last.at - first.at).as_secs_f64(),
        quiet_s: (last.at - middle.at).as_secs_f64(),
        cpu_percent: cpu,
        log_lines_per_s: log,
        busy_cpu_percent: busy_cpu,
        busy_log_lines_per_s: busy_log,
        max_cpu_percent: MAX_LEADER_CPU_PERCENT,
        max_log_lines_per_s: MAX_LEADER_LOG_LINES_PER_S,
    };
    if !load.within_budget() {
        let lines = cluster.pod(leader)?.log_tail(10);
        faults.failed_checks.push(format!(
            "while petkv-{victim} was down, the leader petkv-{leader} used {cpu:.1}% of a core (max \
             {MAX_LEADER_CPU_PERCENT}%) and logged {log:.2} lines/s (max {MAX_LEADER_LOG_LINES_PER_S}); its log ends:\n{lines}"
        ));
    }
    let leader_now = cluster.wait_leader(SETTLE).await?;
    if leader_now != leader {
        faults.notes.push(format!("leadership moved from petkv-{leader} to petkv-{leader_now} during the crash loop"));
    }
    faults.notes.push(format!(
        "the workload was paused for {:.1} s to measure the leader alone: the longest time without a \
         successful write includes that pause",
        load.quiet_s
    ));
    faults.leader_load = Some(load);
    cluster.start(victim)?;
    faults.mark(format!("workload resumed; petkv-{victim} started normally"));
    wait_back(cluster, victim).await?;
    faults.mark(format!("petkv-{victim} rejoined"));
    Ok(())
}

/// `dns-blip`: petkv-0 killed, its volume deleted (and with `delete_marker` the marker file),
/// then started with its DNS failing for [`DNS_BLIP`].
async fn dns_blip(spec: &ExperimentSpec, cluster: &mut Cluster, faults: &mut Faults) -> anyhow::Result<()> {
    let before = cluster.status(0).await?.node_id;
    cluster.kill(0).await?;
    cluster.wipe_volume(0)?;
    let marker = cluster.bootstrap_marker();
    if spec.delete_marker {
        std::fs::remove_file(&marker).with_context(|| format!("delete {}", marker.display()))?;
        faults.mark("petkv-0 killed, its volume and the bootstrap marker deleted");
    } else {
        anyhow::ensure!(marker.exists(), "no bootstrap marker at {}", marker.display());
        faults.mark("petkv-0 killed and its volume deleted (marker kept)");
    }
    // petkv-1 and petkv-2 report the dead petkv-0 as leader until they elect another.
    let deadline = Instant::now() + SETTLE;
    let leader = loop {
        let leader = cluster.wait_healthy(SETTLE).await?;
        if leader != 0 {
            break leader;
        }
        anyhow::ensure!(Instant::now() < deadline, "petkv-1 and petkv-2 elected no leader in {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    faults.mark(format!("petkv-1 and petkv-2 healthy (petkv-{leader} leads)"));
    let offsets = log_offsets(cluster);
    cluster.set_dns(0, false)?;
    cluster.start(0)?;
    faults.mark(format!("petkv-0 recreated with an empty /etc/hosts (DNS fails for {DNS_BLIP:?})"));
    tokio::time::sleep(DNS_BLIP).await;
    cluster.set_dns(0, true)?;
    faults.mark("petkv-0's DNS works again");
    let back = wait_back(cluster, 0).await;
    let bootstraps = logged_since(cluster, &offsets, BOOTSTRAP_LINE);
    none_logged(faults, &format!("{BOOTSTRAP_LINE:?} (a second cluster)"), bootstraps);
    back?;
    let after = cluster.status(0).await?;
    let (was, now) = (petkv::raft::incarnation_of(before), petkv::raft::incarnation_of(after.node_id));
    if now > was && after.ordinal == 0 {
        faults.notes.push(format!("petkv-0 rejoined as node {} (incarnation {was} → {now})", after.node_id));
    } else {
        faults.failed_checks.push(format!(
            "petkv-0 is node {} (incarnation {now}) after the wipe, node {before} (incarnation {was}) before",
            after.node_id
        ));
    }
    faults.mark("petkv-0 rejoined");
    Ok(())
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
        Experiment::Watch | Experiment::Lease => {
            // Every fault a watcher or a lease holder must ride through, one after the other.
            let mut schedule = vec![Experiment::Failover, Experiment::Pause];
            if experiment == Experiment::Watch {
                schedule.push(Experiment::Wipe);
            }
            if cluster.is_pod_mode() {
                schedule.push(Experiment::Partition);
            }
            for fault in schedule {
                Box::pin(inject(fault, spec, cluster, faults)).await?;
                cluster.wait_healthy(SETTLE).await?;
                faults.mark(format!("healthy after {fault:?}"));
            }
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
        Experiment::ScaleToZero => {
            let before = members(cluster).await?;
            let offsets = log_offsets(cluster);
            cluster.scale(0).await?;
            faults.mark("scale 3 → 0: SIGTERM petkv-2, petkv-1, petkv-0 in turn (volumes kept)");
            tokio::time::sleep(STOPPED_FOR).await;
            cluster.scale(3).await?;
            faults.mark("scale 0 → 3: every pod recreated at once (Parallel)");
            back_as_before(cluster, faults, &offsets, &before).await?;
            declared_kept(cluster, faults, 3).await?;
        }
        Experiment::Reapply => {
            let before = members(cluster).await?;
            let marker_path = cluster.bootstrap_marker();
            let marker = std::fs::read_to_string(&marker_path).ok();
            let offsets = log_offsets(cluster);
            let exits = cluster.delete_all_pods().await?;
            faults.mark("kubectl delete statefulset: every pod SIGTERM at once (volumes and marker kept)");
            for (o, status) in exits {
                if !status.is_some_and(|s| s.success()) {
                    faults.notes.push(format!("petkv-{o} did not exit cleanly at SIGTERM: {status:?}"));
                }
            }
            tokio::time::sleep(STOPPED_FOR).await;
            let kept = std::fs::read_to_string(&marker_path).ok();
            if marker.is_none() || kept != marker {
                faults.failed_checks.push(format!(
                    "the bootstrap marker {} was {marker:?} before the delete, {kept:?} after",
                    marker_path.display()
                ));
            }
            cluster.start_all()?;
            faults.mark("kubectl apply: every pod recreated at once on its volume (Parallel)");
            back_as_before(cluster, faults, &offsets, &before).await?;
        }
        Experiment::CrashLoop => crash_loop(spec, cluster, faults).await?,
        Experiment::DnsBlip => dns_blip(spec, cluster, faults).await?,
        Experiment::ForceDelete => super::force_delete::run(spec, cluster, faults).await?,
        Experiment::Restore => bail!("restore runs its own schedule (experiment/restore.rs)"),
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
