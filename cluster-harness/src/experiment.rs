//! `petkv-harness experiment NAME`: a fault injected under a recorded concurrent workload,
//! then a verdict, in the shape of etcd's robustness tests and Jepsen.
//!
//! 1. Start a 3-pod set and a workload of concurrent clients that records every operation
//!    ([`crate::workload`]).
//! 2. Run the experiment's fault schedule, marking each fault on the timeline.
//! 3. Stop the workload, read every key once more, and check the history for linearizability
//!    per key ([`crate::checker`]): a lost acknowledged write or a stale read is a violation.
//! 4. Check that every member converged to the same data, and that every pod still has its
//!    identity (hostname ↔ ordinal ↔ node id ↔ volume).
//! 5. Report: a human table, a JSON file and an SVG timeline (successful operations per 100 ms
//!    with the faults marked), saved together.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use petkv::pb::v1::Consistency;
use serde::Serialize;

use crate::checker::{self, Verdict};
use crate::workload::{self, Workload, WorkloadSpec};
use crate::{timeline, wait, Cluster, ClusterSpec, Mode};

const SETTLE: Duration = Duration::from_secs(60);
/// How long OrderedReady waits for petkv-0 alone before calling it deadlocked.
const ORDERED_READY_PATIENCE: Duration = Duration::from_secs(5);

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
        }
    }
}

/// What an experiment found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub experiment: Experiment,
    pub duration_ms: u64,
    pub operations: usize,
    pub successful: usize,
    pub unknown_outcome: usize,
    pub failed: usize,
    pub linearizability: String,
    pub violations: Vec<String>,
    /// Longest time without a successful write, from the first fault on.
    pub unavailability_ms: u64,
    pub members_converged: bool,
    pub identity_kept: bool,
    pub faults: Vec<(f64, String)>,
    pub notes: Vec<String>,
    pub report_json: String,
    pub timeline_svg: String,
}

impl Report {
    /// True when nothing was lost, nothing was stale, and identities held.
    pub fn passed(&self) -> bool {
        self.linearizability == "linearizable" && self.members_converged && self.identity_kept
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

/// Runs one experiment on a fresh cluster.
pub async fn run(experiment: Experiment, spec: &ExperimentSpec) -> anyhow::Result<Report> {
    let mut cluster = Cluster::new(ClusterSpec { mode: spec.mode, ..Default::default() })?;
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
    println!("mode: {}", if cluster.is_pod_mode() { "pod (network namespaces)" } else { "process (loopback)" });
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
    inject(experiment, &mut cluster, &mut faults).await?;
    cluster.wait_healthy(SETTLE).await?;
    faults.mark("healthy again");
    tokio::time::sleep(spec.cooldown).await;
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
    let first_fault = faults.marks.first().map(|m| m.0).unwrap_or(0);
    let unavailability_ns = longest_gap(&recorded.write_successes_ns, first_fault, duration_ns);
    let members_converged = converged(&cluster, &spec.workload).await?;
    let identity_kept = identities_hold(&cluster).await?;
    cluster.down().await?;

    std::fs::create_dir_all(&spec.out_dir).with_context(|| format!("create {}", spec.out_dir.display()))?;
    let stem = format!("{}-{}", serde_json::to_value(experiment)?.as_str().unwrap_or("experiment"), unix_seconds());
    let svg_path = spec.out_dir.join(format!("{stem}.svg"));
    let json_path = spec.out_dir.join(format!("{stem}.json"));
    let title = format!("petkv experiment {experiment:?}: successful operations per 100 ms");
    std::fs::write(&svg_path, timeline::svg(&title, &recorded.successes_ns, duration_ns, &faults.marks))?;
    let report = Report {
        experiment,
        duration_ms: duration_ns / 1_000_000,
        operations: recorded.history.len(),
        successful: recorded.successes_ns.len(),
        unknown_outcome: recorded.unknown_outcomes,
        failed: recorded.failed,
        linearizability,
        violations,
        unavailability_ms: unavailability_ns / 1_000_000,
        members_converged,
        identity_kept,
        faults: faults.marks.iter().map(|(t, l)| (*t as f64 / 1e9, l.clone())).collect(),
        notes: faults.notes,
        report_json: json_path.display().to_string(),
        timeline_svg: svg_path.display().to_string(),
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    Ok(report)
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

async fn inject(experiment: Experiment, cluster: &mut Cluster, faults: &mut Faults) -> anyhow::Result<()> {
    match experiment {
        Experiment::Failover => {
            let leader = cluster.wait_leader(SETTLE).await?;
            cluster.kill(leader).await?;
            faults.mark(format!("kill -9 petkv-{leader} (leader)"));
            let new = cluster.wait_leader(SETTLE).await?;
            faults.mark(format!("petkv-{new} leads"));
            cluster.start(leader)?;
            cluster.wait_member(leader, SETTLE).await?;
            faults.mark(format!("petkv-{leader} back"));
        }
        Experiment::RestartAllParallel => {
            for o in cluster.ordinals() {
                cluster.kill(o).await?;
            }
            faults.mark("kill -9 every pod");
            cluster.start_all()?;
            faults.mark("all pods recreated at once (Parallel)");
        }
        Experiment::RestartAllOrderedReady => {
            for o in cluster.ordinals() {
                cluster.kill(o).await?;
            }
            faults.mark("kill -9 every pod");
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
            cluster.kill(victim).await?;
            cluster.wipe_volume(victim)?;
            faults.mark(format!("petkv-{victim} killed and its volume deleted"));
            cluster.start(victim)?;
            cluster.wait_member(victim, SETTLE).await?;
            faults.mark(format!("petkv-{victim} rejoined under a new node id"));
        }
        Experiment::VolumeSwap => {
            let leader = cluster.wait_leader(SETTLE).await?;
            let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
            cluster.terminate(a).await?;
            cluster.terminate(b).await?;
            swap_dirs(&cluster.volume(a), &cluster.volume(b))?;
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
            swap_dirs(&cluster.volume(a), &cluster.volume(b))?;
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
    }
    Ok(())
}

fn swap_dirs(a: &Path, b: &Path) -> anyhow::Result<()> {
    let tmp = a.with_extension("swap");
    std::fs::rename(a, &tmp)?;
    std::fs::rename(b, a)?;
    std::fs::rename(&tmp, b)?;
    Ok(())
}

/// Every member applied the same data: stale reads of every key agree with a linearizable read.
async fn converged(cluster: &Cluster, workload: &WorkloadSpec) -> anyhow::Result<bool> {
    let client = cluster.client()?;
    let mut truth = Vec::new();
    for k in 0..workload.keys {
        let key = format!("key-{k}");
        truth.push(client.get(key.as_bytes(), Consistency::Linearizable).await?.kv.map(|kv| kv.value.to_vec()));
    }
    let target = cluster.status(cluster.wait_leader(SETTLE).await?).await?.applied_index;
    for o in cluster.ordinals() {
        wait::until(&format!("petkv-{o} to apply {target}"), SETTLE, || async {
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

/// Prints a report as a table.
pub fn print(report: &Report) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec!["experiment", &format!("{:?}", report.experiment)]);
    let rows: Vec<(&str, String)> = vec![
        ("operations recorded", report.operations.to_string()),
        ("successful", report.successful.to_string()),
        ("outcome unknown", report.unknown_outcome.to_string()),
        ("failed (not applied)", report.failed.to_string()),
        ("linearizability", report.linearizability.clone()),
        ("longest time without a successful write", format!("{} ms", report.unavailability_ms)),
        ("members converged", report.members_converged.to_string()),
        ("identity kept", report.identity_kept.to_string()),
        ("timeline", report.timeline_svg.clone()),
        ("report", report.report_json.clone()),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    println!("{t}");
    for v in &report.violations {
        println!("violation: {v}");
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
