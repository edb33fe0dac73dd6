//! `petkv-harness experiment NAME`: a fault injected under a recorded concurrent workload,
//! then a verdict, in the shape of etcd's robustness tests and Jepsen.
//!
//! 1. Start a 3-pod set and a workload of concurrent clients that records every operation
//!    ([`crate::workload`]).
//! 2. Run the experiment's fault schedule, marking each fault on the timeline.
//! 3. Stop the workload, read every key once more, and check the history for linearizability
//!    per key ([`crate::checker`]): a lost acknowledged write or a stale read is a violation.
//!    Acknowledged writes missing from the final reads are counted ([`checker::lost_writes`]).
//! 4. Check that every member converged to the same data: at one applied index, every
//!    member's whole state machine has the same digest ([`crate::digest`]), and stale reads of
//!    every key on every member agree with a linearizable read. Check that every pod that was
//!    stopped started again, and that every pod still has its identity (hostname ↔ ordinal ↔
//!    node id ↔ volume).
//! 5. Report: a human table, a JSON file and an SVG timeline (successful operations per 100 ms
//!    with the faults marked), saved together.
//!
//! With LazyFS volumes ([`crate::lazyfs`]) a kill -9 can be a power loss: the pod is killed
//! and its volume loses every byte not fsync'd (`power-loss`, and `--power-loss` for the
//! others).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use petkv::pb::v1::Consistency;
use serde::Serialize;

use crate::checker::{self, Verdict};
use crate::digest::{self, Convergence};
use crate::workload::{self, Workload, WorkloadSpec};
use crate::{timeline, wait, Cluster, ClusterSpec, Mode};

const SETTLE: Duration = Duration::from_secs(60);
/// How long OrderedReady waits for petkv-0 alone before calling it deadlocked.
const ORDERED_READY_PATIENCE: Duration = Duration::from_secs(5);
/// How long a power-cut pod stays down before it is started again.
const POWER_OFF: Duration = Duration::from_millis(300);
/// failover-fast: the leader is started again within this.
const FAST_RESTART: Duration = Duration::from_millis(100);
/// mid-snapshot: `--snapshot-every` of the pods, and how long after a new snapshot file
/// appears the power is cut, by cycle (0 ms: while it is being written).
const MID_SNAPSHOT_EVERY: u64 = 200;
const MID_SNAPSHOT_DELAYS_MS: [u64; 3] = [0, 5, 25];
/// Budget of the convergence checks after the workload stopped.
const CONVERGE: Duration = Duration::from_secs(30);

/// The experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    /// kill -9 the leader, restart it.
    Failover,
    /// kill -9 every pod, recreate them all at once (podManagementPolicy: Parallel).
    RestartAllParallel,
    /// kill -9 every pod, recreate them in order, each after the previous is ready.
    RestartAllOrderedReady,
    /// Scale to 5 and back to 3.
    Scale,
    /// Delete a follower's volume; it rejoins under a new node id.
    Wipe,
    /// Swap two followers' volumes: both must refuse to start; swap back, both recover.
    VolumeSwap,
    /// SIGSTOP the leader for 3 s, then SIGCONT.
    Pause,
    /// Cut the leader off the network for 3 s, then heal (needs pod mode).
    Partition,
    /// Add 50 ms of latency to every pod's link for 3 s (needs pod mode and the kernel's netem).
    Latency,
    /// Power loss (kill -9 and drop the volume's unsynced data; LazyFS volumes) of `--target`,
    /// then start it again, `--cycles` times.
    PowerLoss,
    /// kill -9 the leader and start it again within 0.1 s, `--cycles` times.
    FailoverFast,
}

/// Whose power `power-loss` cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerLossTarget {
    /// The leader.
    #[default]
    Leader,
    /// A follower.
    Follower,
    /// Every member at once; all are started again together.
    All,
    /// A member (a follower, the leader every other cycle) just as it writes a snapshot: the
    /// pods snapshot every 200 entries, and the power is cut when a new `snap-*` file appears
    /// in its snapshot dir (0, 5 or 25 ms later, by cycle).
    MidSnapshot,
}

/// What the pods' volumes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Volumes {
    /// Directories in the state dir.
    #[default]
    Plain,
    /// LazyFS mounts: unsynced data lives in LazyFS's cache until fsync (a slower disk, and
    /// power loss can be simulated).
    Lazyfs,
}

/// How an experiment runs.
#[derive(Debug, Clone)]
pub struct ExperimentSpec {
    /// Workload time before the fault and after it has been healed.
    pub warmup: Duration,
    pub cooldown: Duration,
    pub workload: WorkloadSpec,
    /// Where the report, JSON and SVG go.
    pub out_dir: PathBuf,
    /// Budget of the linearizability check.
    pub check_budget: Duration,
    /// Process or pod mode (`Auto`: pod mode where it is available).
    pub mode: Mode,
    /// `power-loss`: whose power is cut.
    pub target: PowerLossTarget,
    /// `power-loss`, `failover-fast`: faults per run.
    pub cycles: usize,
    /// The pods' volumes (`power-loss` and `power_loss` put them on LazyFS anyway).
    pub volumes: Volumes,
    /// Every kill -9 of the experiment is a power loss of that pod (LazyFS volumes).
    pub power_loss: bool,
    /// Extra `petkv serve` flags for every pod.
    pub extra_args: Vec<String>,
}

impl ExperimentSpec {
    /// True when the experiment runs on LazyFS volumes.
    pub fn needs_lazyfs(&self, experiment: Experiment) -> bool {
        experiment == Experiment::PowerLoss || self.power_loss || self.volumes == Volumes::Lazyfs
    }
}

impl Default for ExperimentSpec {
    fn default() -> Self {
        Self {
            warmup: Duration::from_secs(2),
            cooldown: Duration::from_secs(2),
            workload: WorkloadSpec::default(),
            out_dir: PathBuf::from("experiment-reports"),
            check_budget: Duration::from_secs(30),
            mode: Mode::Auto,
            target: PowerLossTarget::default(),
            cycles: 3,
            volumes: Volumes::default(),
            power_loss: false,
            extra_args: Vec::new(),
        }
    }
}

/// What an experiment found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub experiment: Experiment,
    /// `power-loss`: whose power was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<PowerLossTarget>,
    pub volumes: Volumes,
    /// Every kill -9 was a power loss.
    pub power_loss: bool,
    pub duration_ms: u64,
    pub operations: usize,
    pub successful: usize,
    pub unknown_outcome: usize,
    pub failed: usize,
    pub linearizability: String,
    pub violations: Vec<String>,
    /// Puts and deletes acknowledged to the workload.
    pub acknowledged_writes: usize,
    /// Acknowledged writes the final reads do not show ([`checker::lost_writes`]).
    pub lost_writes: Vec<String>,
    /// Longest time without a successful write, from the first fault on.
    pub unavailability_ms: u64,
    /// Every member's digest at one applied index (the per-member rows).
    pub convergence: Convergence,
    /// Stale reads of every key on every member agree with a linearizable read.
    pub reads_agree: bool,
    /// `convergence.digests_equal && reads_agree`.
    pub members_converged: bool,
    pub identity_kept: bool,
    /// Every pod that was stopped started again (and the set became healthy).
    pub all_started: bool,
    /// What went wrong in the fault schedule, with the log tails of pods that did not start.
    pub fault_errors: Vec<String>,
    pub faults: Vec<(f64, String)>,
    pub notes: Vec<String>,
    pub report_json: String,
    pub timeline_svg: String,
}

impl Report {
    /// True when nothing was lost, nothing was stale, every member holds the same state,
    /// every pod started again, and identities held.
    pub fn passed(&self) -> bool {
        self.linearizability == "linearizable"
            && self.lost_writes.is_empty()
            && self.members_converged
            && self.identity_kept
            && self.all_started
    }

    /// One line: verdict, acknowledged and lost writes, digests.
    pub fn summary_line(&self) -> String {
        let c = &self.convergence;
        let digests = if c.digests_equal {
            let d = c.members.first().map(|m| m.digest.as_str()).unwrap_or("");
            format!("{} digests equal ({d}) at index {}", c.members.len(), c.applied_index)
        } else {
            format!("digests DIFFER or missing (members {:?})", c.divergent)
        };
        format!(
            "{}: {}, {} acknowledged writes, {} lost, {}{}{}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.linearizability,
            self.acknowledged_writes,
            self.lost_writes.len(),
            digests,
            if self.reads_agree { "" } else { ", reads DISAGREE" },
            if self.all_started { "" } else { ", a member did NOT start again" },
        )
    }
}

struct Faults {
    started: Instant,
    marks: Vec<(u64, String)>,
    notes: Vec<String>,
}

impl Faults {
    fn mark(&mut self, label: impl Into<String>) {
        let label = label.into();
        println!("  {:>6.2}s  {label}", self.started.elapsed().as_secs_f64());
        self.marks.push((self.started.elapsed().as_nanos() as u64, label));
    }
}

/// Runs one experiment on a fresh cluster. Fails with [`crate::lazyfs::Unavailable`] when it
/// needs LazyFS volumes and LazyFS cannot run here (the caller reports it as skipped).
pub async fn run(experiment: Experiment, spec: &ExperimentSpec) -> anyhow::Result<Report> {
    let lazyfs = spec.needs_lazyfs(experiment);
    if lazyfs {
        crate::lazyfs::probe()?;
    }
    let mut extra_args = spec.extra_args.clone();
    if experiment == Experiment::PowerLoss && spec.target == PowerLossTarget::MidSnapshot {
        extra_args.extend(["--snapshot-every".to_string(), MID_SNAPSHOT_EVERY.to_string()]);
    }
    let mut cluster = Cluster::new(ClusterSpec { mode: spec.mode, lazyfs, extra_args, ..Default::default() })?;
    let needs_pod_mode = matches!(experiment, Experiment::Partition | Experiment::Latency);
    if needs_pod_mode && !cluster.is_pod_mode() {
        bail!(
            "the {experiment:?} experiment needs pod mode (each pod in its own network namespace: Linux, root, \
             iproute2); in process mode all pods share loopback and the network cannot be cut or slowed"
        );
    }
    if experiment == Experiment::Latency {
        crate::netns::check_netem()?;
    }
    println!(
        "mode: {}; volumes: {}",
        if cluster.is_pod_mode() { "pod (network namespaces)" } else { "process (loopback)" },
        if lazyfs { "LazyFS (unsynced data is lost on a power cut)" } else { "plain directories" }
    );
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    cluster.client()?.scale(3).await?;
    let endpoints: Vec<String> = cluster.ordinals().iter().map(|o| cluster.client_addr(*o)).collect();
    println!("experiment {experiment:?}: 3 pods, {} clients on {} keys", spec.workload.clients, spec.workload.keys);

    let workload_spec = WorkloadSpec {
        tls: cluster.client_tls().cloned(),
        token: cluster.auth().map(|a| a.write.clone()),
        ..spec.workload.clone()
    };
    let workload = std::sync::Arc::new(Workload::start(&endpoints, &workload_spec)?);
    let mut faults = Faults { started: workload.started, marks: Vec::new(), notes: Vec::new() };
    let progress = tokio::spawn(show_progress(workload.clone()));
    tokio::time::sleep(spec.warmup).await;
    // A fault schedule that fails (a pod that does not start again, a set that does not heal)
    // is a FAIL with the reason, and the run still checks what it can.
    let mut fault_errors = Vec::new();
    let schedule = async {
        inject(experiment, spec, &mut cluster, &mut faults).await?;
        cluster.wait_healthy(SETTLE).await
    }
    .await;
    match schedule {
        Ok(_) => {
            faults.mark("healthy again");
            tokio::time::sleep(spec.cooldown).await;
        }
        Err(e) => {
            faults.mark("the fault schedule failed");
            println!("  fault schedule failed: {e:#}");
            fault_errors.push(format!("{e:#}"));
            fault_errors.extend(not_ready(&mut cluster).await);
        }
    }
    progress.abort();
    let _ = progress.await; // cancelled: it no longer holds the workload
    let workload = std::sync::Arc::try_unwrap(workload)
        .map_err(|_| anyhow::anyhow!("the progress display still holds the workload"))?;
    let started = workload.started;
    let mut recorded = workload.stop().await;
    workload::final_reads(&endpoints, &workload_spec, &mut recorded, started).await;
    let duration_ns = started.elapsed().as_nanos() as u64;

    let check = checker::check(&recorded.history, spec.check_budget).context("the recorded history is malformed")?;
    let violations: Vec<String> = check
        .keys
        .iter()
        .filter(|k| k.verdict != Verdict::Linearizable)
        .map(|k| {
            format!(
                "{}: {:?} {}",
                String::from_utf8_lossy(&k.key),
                k.verdict,
                k.explanation.clone().unwrap_or_default()
            )
        })
        .collect();
    let linearizability = match check.verdict {
        Verdict::Linearizable => "linearizable",
        Verdict::NotLinearizable => "NOT linearizable",
        Verdict::Inconclusive => "inconclusive (check budget exhausted)",
    }
    .to_string();
    let lost = checker::lost_writes(&recorded.history, workload::FINAL_READER);
    for u in &lost.unexplained {
        faults.notes.push(format!("final read: {u}"));
    }
    let first_fault = faults.marks.first().map(|m| m.0).unwrap_or(0);
    let unavailability_ns = longest_gap(&recorded.write_successes_ns, first_fault, duration_ns);
    let convergence = digest::compare(&cluster, CONVERGE).await;
    let reads_agree = match reads_agree(&cluster, &spec.workload).await {
        Ok(agree) => agree,
        Err(e) => {
            faults.notes.push(format!("reads could not be compared: {e:#}"));
            false
        }
    };
    let identity_kept = identities_hold(&cluster).await.unwrap_or_else(|e| {
        faults.notes.push(format!("identities could not be checked: {e:#}"));
        false
    });
    if !convergence.digests_equal {
        for m in &convergence.members {
            if let Some(e) = &m.error {
                faults.notes.push(format!("petkv-{}: no digest: {e}", m.ordinal));
            }
        }
        if let Some(e) = &convergence.error {
            faults.notes.push(e.clone());
        }
        for o in &convergence.divergent {
            let log = cluster.pod(*o).map(|p| p.log_tail(10)).unwrap_or_default();
            faults.notes.push(format!("petkv-{o} diverges; its log ends:\n{log}"));
        }
    }
    cluster.down().await?;

    std::fs::create_dir_all(&spec.out_dir).with_context(|| format!("create {}", spec.out_dir.display()))?;
    // Unique even for runs that end in the same second (tests run experiments in parallel).
    let name = serde_json::to_value(experiment)?.as_str().unwrap_or("experiment").to_string();
    let target = match experiment {
        Experiment::PowerLoss => format!("-{}", serde_json::to_value(spec.target)?.as_str().unwrap_or("")),
        _ => String::new(),
    };
    let stem = format!("{name}{target}-{}-{:04x}", unix_seconds(), rand::random::<u16>());
    let svg_path = spec.out_dir.join(format!("{stem}.svg"));
    let json_path = spec.out_dir.join(format!("{stem}.json"));
    let title = format!("petkv experiment {experiment:?}: successful operations per 100 ms");
    std::fs::write(&svg_path, timeline::svg(&title, &recorded.successes_ns, duration_ns, &faults.marks))?;
    let report = Report {
        experiment,
        target: (experiment == Experiment::PowerLoss).then_some(spec.target),
        volumes: if lazyfs { Volumes::Lazyfs } else { Volumes::Plain },
        power_loss: experiment == Experiment::PowerLoss || spec.power_loss,
        duration_ms: duration_ns / 1_000_000,
        operations: recorded.history.len(),
        successful: recorded.successes_ns.len(),
        unknown_outcome: recorded.unknown_outcomes,
        failed: recorded.failed,
        linearizability,
        violations,
        acknowledged_writes: lost.acknowledged,
        lost_writes: lost.lost,
        unavailability_ms: unavailability_ns / 1_000_000,
        members_converged: convergence.digests_equal && reads_agree,
        convergence,
        reads_agree,
        identity_kept,
        all_started: fault_errors.is_empty(),
        fault_errors,
        faults: faults.marks.iter().map(|(t, l)| (*t as f64 / 1e9, l.clone())).collect(),
        notes: faults.notes,
        report_json: json_path.display().to_string(),
        timeline_svg: svg_path.display().to_string(),
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// Every pod that is not running or not ready, with the end of its log.
async fn not_ready(cluster: &mut Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for o in cluster.ordinals() {
        let exited = cluster.pod_mut(o).ok().and_then(|p| p.reap());
        let running = cluster.pod_mut(o).is_ok_and(|p| p.is_running());
        let ready = cluster.status(o).await.is_ok_and(|s| s.ready);
        if ready {
            continue;
        }
        let state = match (exited, running) {
            (Some(status), _) => format!("exited ({status})"),
            (None, true) => "running but not ready".to_string(),
            (None, false) => "not running".to_string(),
        };
        let log = cluster.pod(o).map(|p| p.log_tail(20)).unwrap_or_default();
        out.push(format!("petkv-{o} did not start again: {state}; its log ends:\n{log}"));
    }
    out
}

/// Prints, once a second, how many operations the workload has recorded.
async fn show_progress(workload: std::sync::Arc<Workload>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ops, unknown) = workload.progress();
        println!(
            "  {:>6.2}s  {ops} operations recorded ({}/s, {unknown} with unknown outcome)",
            workload.started.elapsed().as_secs_f64(),
            ops - last
        );
        last = ops;
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Longest stretch in `[from, to]` without a successful write.
pub fn longest_gap(successes: &[u64], from: u64, to: u64) -> u64 {
    let mut times: Vec<u64> = successes.iter().copied().filter(|t| *t >= from && *t <= to).collect();
    times.sort_unstable();
    let mut last = from;
    let mut gap = 0;
    for t in times.into_iter().chain([to]) {
        gap = gap.max(t - last);
        last = t;
    }
    gap
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

async fn inject(
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

/// Every member applied the same data: after each has applied the leader's index, stale reads
/// of every key on each member agree with a linearizable read.
async fn reads_agree(cluster: &Cluster, workload: &WorkloadSpec) -> anyhow::Result<bool> {
    let client = cluster.client()?;
    let mut truth = Vec::new();
    for k in 0..workload.keys {
        let key = format!("key-{k}");
        truth.push(client.get(key.as_bytes(), Consistency::Linearizable).await?.kv.map(|kv| kv.value.to_vec()));
    }
    let target = cluster.status(cluster.wait_leader(CONVERGE).await?).await?.applied_index;
    for o in cluster.ordinals() {
        wait::until(&format!("petkv-{o} to apply {target}"), CONVERGE, || async {
            (cluster.status(o).await.ok()?.applied_index >= target).then_some(())
        })
        .await?;
        let pod = cluster.client_of(o)?;
        for (k, want) in truth.iter().enumerate() {
            let got = pod.get(format!("key-{k}").as_bytes(), Consistency::Stale).await?.kv.map(|kv| kv.value.to_vec());
            if &got != want {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Every pod's status agrees with its hostname and with the identity record on its volume.
async fn identities_hold(cluster: &Cluster) -> anyhow::Result<bool> {
    for o in cluster.ordinals() {
        let s = cluster.status(o).await?;
        let Some(record) = petkv::identity::load(&cluster.volume(o))? else { return Ok(false) };
        let ok = s.hostname == format!("petkv-{o}")
            && s.ordinal == o
            && record.node_id == s.node_id
            && petkv::raft::ordinal_of(s.node_id) == o;
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Prints a report as a table, with a row per member.
pub fn print(report: &Report) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let name = match report.target {
        Some(target) => format!("{:?} --target {target:?}", report.experiment),
        None => format!("{:?}", report.experiment),
    };
    t.set_header(vec!["experiment", &name]);
    let c = &report.convergence;
    let rows: Vec<(&str, String)> = vec![
        ("volumes", format!("{:?}{}", report.volumes, if report.power_loss { ", kill -9 = power loss" } else { "" })),
        ("operations recorded", report.operations.to_string()),
        ("successful", report.successful.to_string()),
        ("outcome unknown", report.unknown_outcome.to_string()),
        ("failed (not applied)", report.failed.to_string()),
        ("acknowledged writes", report.acknowledged_writes.to_string()),
        ("acknowledged writes lost", report.lost_writes.len().to_string()),
        ("linearizability", report.linearizability.clone()),
        ("longest time without a successful write", format!("{} ms", report.unavailability_ms)),
        ("digests equal", format!("{} (at applied index {})", c.digests_equal, c.applied_index)),
        ("reads agree", report.reads_agree.to_string()),
        ("members converged", report.members_converged.to_string()),
        ("every member started again", report.all_started.to_string()),
        ("identity kept", report.identity_kept.to_string()),
        ("timeline", report.timeline_svg.clone()),
        ("report", report.report_json.clone()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    println!("{t}");
    let mut m = comfy_table::Table::new();
    m.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    m.set_header(vec!["pod", "node id", "applied index", "keys", "digest"]);
    for row in &c.members {
        let digest = match &row.error {
            Some(e) => format!("— {e}"),
            None if c.divergent.contains(&row.ordinal) => format!("{} DIFFERS", row.digest),
            None => row.digest.clone(),
        };
        m.add_row(vec![
            format!("petkv-{}", row.ordinal),
            row.node.clone(),
            row.applied_index.to_string(),
            row.key_count.to_string(),
            digest,
        ]);
    }
    println!("{m}");
    for v in &report.violations {
        println!("violation: {v}");
    }
    for l in &report.lost_writes {
        println!("lost: {l}");
    }
    for e in &report.fault_errors {
        println!("fault schedule: {e}");
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!("verdict: {}", if report.passed() { "PASS" } else { "FAIL" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_gap_counts_from_the_fault_to_the_end() {
        assert_eq!(longest_gap(&[1, 5, 6, 20], 2, 25), 14);
        assert_eq!(longest_gap(&[], 2, 25), 23);
        assert_eq!(longest_gap(&[30], 0, 10), 10);
    }
}
