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
//!    stopped started again, that every pod still has its identity (hostname ↔ ordinal ↔
//!    node id ↔ volume), that every pod reports the cluster id it had before the fault (no
//!    second cluster), and the experiment's own checks (`failed_checks`: a bootstrap line in a
//!    log, a changed membership, `crash-loop`'s budget for the leader's CPU and log rate).
//! 5. Report: a human table, a JSON file and an SVG timeline (successful operations per 100 ms
//!    with the faults marked), saved together.
//!
//! With LazyFS volumes ([`crate::lazyfs`]) a kill -9 can be a power loss: the pod is killed
//! and its volume loses every byte not fsync'd (`power-loss`, and `--power-loss` for the
//! others).
//!
//! # Layout
//!
//! - `mod.rs`: the experiments, their options ([`ExperimentSpec`]) and [`run`], which starts
//!   the set and the workload, runs the fault schedule, checks the outcome and saves the report.
//! - `faults.rs`: the fault schedule of each experiment (kill -9, power loss, pause, partition,
//!   latency, volume swap…), marked on the timeline.
//! - `checks.rs`: the checks after the workload stopped (reads agree, identities hold, pods
//!   that did not start again) and [`longest_gap`], the longest time without a successful write.
//! - `report.rs`: what an experiment found ([`Report`]) and its table ([`print()`]).
//! - `restore.rs`: `restore`, which runs its own schedule: a backup under the workload, the
//!   refusals, the set destroyed and restored, the workload on the restored cluster; and
//!   `restore_point.rs`, the check that the restored state is the backup's point in the history.
//! - `force_delete.rs`: `force-delete`, a force-deleted pod's process left running (the zombie)
//!   beside its replacement, with every process polled for its term and leader.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::checker::{self, Verdict};
use crate::workload::{self, Workload, WorkloadApi, WorkloadSpec};
use crate::{timeline, Cluster, ClusterSpec, Mode};

mod checks;
mod faults;
mod force_delete;
mod lease_holder;
mod report;
mod restore;
mod restore_point;
mod watchers;

pub use checks::longest_gap;
pub use force_delete::{ForceDeleteTarget, Leadership, ZombieReport, REPLACED_LINE};
pub use lease_holder::LeaseFindings;
pub use report::{print, LeaderLoad, Report};
pub use restore::RestoreFindings;
pub use restore_point::{BackupPoint, RestorePoint};

use checks::not_ready;
use faults::{inject, Faults, MID_SNAPSHOT_EVERY};
use watchers::Watchers;

const SETTLE: Duration = Duration::from_secs(60);
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
    /// `kubectl scale --replicas=0`, then back to 3: SIGTERM every pod, highest ordinal first
    /// (volumes and membership kept), then all started again at once.
    ScaleToZero,
    /// `kubectl delete statefulset` (every pod SIGTERM at once; volumes and the bootstrap marker
    /// kept), then `kubectl apply`: every pod recreated; the same cluster resumes.
    Reapply,
    /// A follower that fails at start for `--crash-loop-secs`, restarted with the kubelet's
    /// back-off; the leader's CPU and log rate are measured meanwhile.
    CrashLoop,
    /// petkv-0 loses its volume and starts while its DNS fails for 5 s (needs pod mode): it
    /// must rejoin, never bootstrap (`--delete-marker`: the marker file is deleted too).
    DnsBlip,
    /// `kubectl delete pod --force --grace-period=0` of `--target` (a follower, or the leader)
    /// while its process runs on (needs pod mode): the replacement starts at a new address on a
    /// copy of the volume next to the stale process (the zombie) for `--zombie-secs`; never two
    /// leaders in one term, nothing lost.
    ForceDelete,
    /// Watchers on every member while the leader is killed and restarted, paused, a follower
    /// wiped and (in pod mode) the leader cut off: every watcher's events are checked against
    /// the history and each other (ordered, unique, atomic, no gap).
    Watch,
    /// A key held by a 2 s lease, kept alive every 0.5 s, while the leader is killed and
    /// restarted, paused and (in pod mode) cut off: the key never disappears while
    /// keep-alives are acknowledged, and goes within the TTL and a failover once they stop.
    Lease,
    /// Backup under the workload, destroy the set (pods and volumes; the marker stays),
    /// `petkv restore` and apply it again: a new cluster holding the backup's point of the
    /// history, on which the workload goes on; a restore pointed at a running or stopped set
    /// must refuse.
    Restore,
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
    /// `crash-loop`: how long the follower keeps failing at start.
    pub crash_loop_for: Duration,
    /// `crash-loop`: the cap of the restart back-off (10 s, doubling; the kubelet caps it at
    /// 5 min).
    pub crash_loop_backoff_cap: Duration,
    /// `dns-blip`: the bootstrap marker file is deleted too.
    pub delete_marker: bool,
    /// `force-delete`: which pod is force-deleted.
    pub force_delete_target: ForceDeleteTarget,
    /// `force-delete`: how long the zombie may run before it is killed (if it has not exited).
    pub zombie_for: Duration,
    /// Watchers beside the workload, checked afterwards (`watch` runs at least 3).
    pub watchers: usize,
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
            crash_loop_for: Duration::from_secs(60),
            crash_loop_backoff_cap: Duration::from_secs(300),
            delete_marker: false,
            force_delete_target: ForceDeleteTarget::default(),
            zombie_for: Duration::from_secs(20),
            watchers: 0,
        }
    }
}

/// Runs one experiment on a fresh cluster. Fails with [`crate::lazyfs::Unavailable`] when it
/// needs LazyFS volumes and LazyFS cannot run here (the caller reports it as skipped).
pub async fn run(experiment: Experiment, spec: &ExperimentSpec) -> anyhow::Result<Report> {
    if experiment == Experiment::Restore {
        return restore::run(spec).await;
    }
    let lazyfs = spec.needs_lazyfs(experiment);
    if lazyfs {
        crate::lazyfs::probe()?;
    }
    let mut extra_args = spec.extra_args.clone();
    if experiment == Experiment::PowerLoss && spec.target == PowerLossTarget::MidSnapshot {
        extra_args.extend(["--snapshot-every".to_string(), MID_SNAPSHOT_EVERY.to_string()]);
    }
    let through_etcd = spec.workload.api == WorkloadApi::Etcd;
    let mut cluster =
        Cluster::new(ClusterSpec { mode: spec.mode, lazyfs, extra_args, etcd: through_etcd, ..Default::default() })?;
    let needs_pod_mode = matches!(
        experiment,
        Experiment::Partition | Experiment::Latency | Experiment::DnsBlip | Experiment::ForceDelete
    );
    if needs_pod_mode && !cluster.is_pod_mode() {
        bail!(
            "the {experiment:?} experiment needs pod mode (each pod in its own network namespace: Linux, root, \
             iproute2); in process mode all pods share loopback and the network cannot be cut or slowed, \
             and there is no per-pod /etc/hosts to break"
        );
    }
    if experiment == Experiment::Latency {
        crate::netns::check_netem()?;
    }
    if experiment == Experiment::ForceDelete && lazyfs {
        bail!("force-delete copies the pod's volume directory for the replacement: it runs on plain volumes only");
    }
    let (cluster_id, endpoints) = start_set(&mut cluster, lazyfs).await?;
    println!("experiment {experiment:?}: 3 pods, {} clients on {} keys", spec.workload.clients, spec.workload.keys);

    let workload_spec = WorkloadSpec {
        tls: cluster.client_tls().cloned(),
        token: cluster.auth().map(|a| a.write.clone()),
        ..spec.workload.clone()
    };
    // The recorded workload and its final reads go through the etcd ports when asked; the
    // watchers and the lease holder keep petkv's own API.
    let workload_endpoints: Vec<String> = if through_etcd {
        cluster.ordinals().iter().map(|o| cluster.etcd_addr(*o)).collect()
    } else {
        endpoints.clone()
    };
    if through_etcd {
        println!("  the workload speaks etcd's v3 API on every pod's etcd port");
    }
    let workload = std::sync::Arc::new(Workload::start(&workload_endpoints, &workload_spec).await?);
    let watcher_count = if experiment == Experiment::Watch { spec.watchers.max(3) } else { spec.watchers };
    let watchers =
        (watcher_count > 0).then(|| Watchers::start(&endpoints, &workload_spec, watcher_count)).transpose()?;
    let lease_holder = match experiment {
        Experiment::Lease => Some(lease_holder::LeaseHolder::start(&endpoints, &workload_spec).await?),
        _ => None,
    };
    let mut faults = Faults::for_workload(&workload);
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
    // A schedule that failed half-way may have left the workload paused.
    faults.pause.store(false, std::sync::atomic::Ordering::Relaxed);
    progress.abort();
    let _ = progress.await; // cancelled: it no longer holds the workload
    let workload = std::sync::Arc::try_unwrap(workload)
        .map_err(|_| anyhow::anyhow!("the progress display still holds the workload"))?;
    let started = workload.started;
    let mut recorded = workload.stop().await;
    workload::final_reads(&workload_endpoints, &workload_spec, &mut recorded, started).await;
    let duration_ns = started.elapsed().as_nanos() as u64;
    let lease = match lease_holder {
        Some(holder) => {
            let f = holder.finish().await;
            println!(
                "  lease: {} keep-alives acknowledged ({} failed), {} reads ({} absent), gone {:?} ms after the last \
                 keep-alive, {} failure(s)",
                f.keep_alives_acknowledged,
                f.keep_alives_failed,
                f.reads,
                f.absent_reads,
                f.gone_after_ms,
                f.failures.len()
            );
            Some(f)
        }
        None => None,
    };
    let watch = match watchers {
        Some(watchers) => {
            let mut final_revision = 0;
            for o in cluster.ordinals() {
                if let Ok(s) = cluster.status(o).await {
                    final_revision = final_revision.max(s.revision);
                }
            }
            let logs = watchers.stop(final_revision, SETTLE).await;
            let findings = crate::checker::watch::check(&logs, &recorded.history);
            println!(
                "  watchers: {} events each ({:?}), {:?} streams, {} acknowledged writes checked, {} failure(s)",
                findings.events.first().copied().unwrap_or(0),
                findings.events,
                findings.streams,
                findings.acknowledged_checked,
                findings.failures.len()
            );
            Some(findings)
        }
        None => None,
    };

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
    let checks::MemberChecks { convergence, reads_agree, identity_kept, one_cluster } =
        checks::members(&cluster, &spec.workload, &cluster_id, &mut faults.notes).await;
    cluster.down().await?;

    std::fs::create_dir_all(&spec.out_dir).with_context(|| format!("create {}", spec.out_dir.display()))?;
    // Unique even for runs that end in the same second (tests run experiments in parallel).
    let name = serde_json::to_value(experiment)?.as_str().unwrap_or("experiment").to_string();
    let target = match experiment {
        Experiment::PowerLoss => format!("-{}", serde_json::to_value(spec.target)?.as_str().unwrap_or("")),
        Experiment::DnsBlip if spec.delete_marker => "-no-marker".to_string(),
        Experiment::ForceDelete => {
            format!("-{}", serde_json::to_value(spec.force_delete_target)?.as_str().unwrap_or(""))
        }
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
        cluster_id,
        one_cluster,
        failed_checks: faults.failed_checks,
        leader_load: faults.leader_load,
        delete_marker: experiment == Experiment::DnsBlip && spec.delete_marker,
        faults: faults.marks.iter().map(|(t, l)| (*t as f64 / 1e9, l.clone())).collect(),
        notes: faults.notes,
        report_json: json_path.display().to_string(),
        timeline_svg: svg_path.display().to_string(),
        restore: None,
        zombie: faults.zombie,
        watch,
        lease,
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// Prints, once a second, how many operations the workload has recorded.
/// Starts the 3-pod set every experiment begins with, says how it runs, and returns its cluster
/// id and client endpoints.
async fn start_set(cluster: &mut Cluster, lazyfs: bool) -> anyhow::Result<(String, Vec<String>)> {
    println!(
        "mode: {}; volumes: {}",
        if cluster.is_pod_mode() { "pod (network namespaces)" } else { "process (loopback)" },
        if lazyfs { "LazyFS (unsynced data is lost on a power cut)" } else { "plain directories" }
    );
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    cluster.client()?.scale(3).await?;
    let cluster_id = cluster.status(0).await.context("the status of petkv-0")?.cluster_id;
    let endpoints = cluster.ordinals().iter().map(|o| cluster.client_addr(*o)).collect();
    Ok((cluster_id, endpoints))
}

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
