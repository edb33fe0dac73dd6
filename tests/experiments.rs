//! A short form of every harness experiment, as CI runs it: each must lose no acknowledged
//! write, show no linearizability violation, converge on every member (equal digests of every
//! member's whole state at one applied index, and agreeing reads), start every stopped pod
//! again, and keep every pod's identity. The power-loss experiments need LazyFS (root,
//! /dev/fuse, the LazyFS build): where it cannot run they say why and are skipped.

use std::time::Duration;

use petkv_harness::experiment::{self, Experiment, ExperimentSpec, ForceDeleteTarget, PowerLossTarget, Report};

fn short() -> ExperimentSpec {
    let out = std::env::temp_dir().join(format!("petkv-experiments-{}", std::process::id()));
    ExperimentSpec {
        warmup: Duration::from_secs(1),
        cooldown: Duration::from_secs(1),
        out_dir: out,
        check_budget: Duration::from_secs(60),
        ..Default::default()
    }
}

async fn passes(name: Experiment) -> anyhow::Result<()> {
    passes_with(name, &short()).await.map(|_| ())
}

async fn passes_with(name: Experiment, spec: &ExperimentSpec) -> anyhow::Result<Report> {
    let report = experiment::run(name, spec).await?;
    experiment::print(&report);
    assert_passes(name, report)
}

fn assert_passes(name: Experiment, report: Report) -> anyhow::Result<Report> {
    assert!(report.operations > 0, "the workload recorded nothing");
    assert!(report.acknowledged_writes > 0, "no write was acknowledged");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.lost_writes.is_empty(), "acknowledged writes lost: {:?}", report.lost_writes);
    assert_eq!(report.linearizability, "linearizable");
    assert!(report.all_started, "a pod did not start again after {name:?}: {:?}", report.fault_errors);
    // The digests were compared: a row per member, all at one index, all equal.
    let c = &report.convergence;
    assert_eq!(c.members.len(), 3, "{c:?}");
    assert!(c.members.iter().all(|m| m.error.is_none() && m.applied_index == c.applied_index), "{c:?}");
    assert!(c.members.iter().all(|m| !m.digest.is_empty() && m.digest == c.members[0].digest), "{c:?}");
    assert!(c.digests_equal && c.divergent.is_empty(), "{c:?}");
    assert!(report.reads_agree, "stale reads disagree after {name:?}");
    assert!(report.members_converged, "members disagree after {name:?}");
    assert!(report.identity_kept, "identity broken by {name:?}");
    assert!(report.passed(), "{report:?}");
    assert!(std::path::Path::new(&report.timeline_svg).exists());
    let _ = std::fs::remove_file(&report.timeline_svg);
    let _ = std::fs::remove_file(&report.report_json);
    Ok(report)
}

/// True when LazyFS volumes can be mounted here; otherwise says why the test is skipped. In CI
/// (`CI` set: root, /dev/fuse and the sources are there) a missing LazyFS is a failure, not a
/// skip.
fn lazyfs_or_skip(test: &str) -> bool {
    match petkv_harness::lazyfs::probe() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
            panic!("{test}: LazyFS must run in CI: {e:#}")
        }
        Err(e) => {
            eprintln!("skipped {test}: {e}");
            false
        }
    }
}

async fn power_loss(target: PowerLossTarget) -> anyhow::Result<()> {
    let spec = ExperimentSpec { target, cycles: 3, ..short() };
    let report = passes_with(Experiment::PowerLoss, &spec).await?;
    let cuts = report.faults.iter().filter(|(_, label)| label.contains("power loss")).count();
    assert_eq!(cuts, 3, "{:?}", report.faults);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover() -> anyhow::Result<()> {
    passes(Experiment::Failover).await
}

/// The same failover with the workload speaking etcd's v3 API (the `etcd-client` crate on every
/// pod's etcd port): the linearizability and convergence checks cover the etcd port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_through_the_etcd_port() -> anyhow::Result<()> {
    let mut spec = short();
    spec.workload.api = petkv_harness::workload::WorkloadApi::Etcd;
    passes_with(Experiment::Failover, &spec).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_all_parallel() -> anyhow::Result<()> {
    passes(Experiment::RestartAllParallel).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_all_ordered_ready_deadlocks_and_is_reported() -> anyhow::Result<()> {
    let report = experiment::run(Experiment::RestartAllOrderedReady, &short()).await?;
    assert!(report.notes.iter().any(|n| n.contains("OrderedReady deadlock")), "{:?}", report.notes);
    assert!(report.passed(), "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale() -> anyhow::Result<()> {
    passes(Experiment::Scale).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe() -> anyhow::Result<()> {
    passes(Experiment::Wipe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_swap() -> anyhow::Result<()> {
    passes(Experiment::VolumeSwap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause() -> anyhow::Result<()> {
    passes(Experiment::Pause).await
}

/// Pod mode where the machine allows it (CI runs as root); elsewhere the experiment must
/// refuse with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition() -> anyhow::Result<()> {
    if petkv_harness::netns::available() {
        return passes(Experiment::Partition).await;
    }
    let err = experiment::run(Experiment::Partition, &short()).await.expect_err("needs pod mode");
    assert!(err.to_string().contains("pod mode"), "{err}");
    Ok(())
}

/// Latency needs the kernel's netem as well; where it is missing the experiment says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency() -> anyhow::Result<()> {
    let netem = petkv_harness::netns::available() && petkv_harness::netns::check_netem().is_ok();
    if netem {
        return passes(Experiment::Latency).await;
    }
    let err = experiment::run(Experiment::Latency, &short()).await.expect_err("needs pod mode and netem");
    let msg = format!("{err:#}");
    assert!(msg.contains("pod mode") || msg.contains("netem"), "{msg}");
    Ok(())
}

/// Three power losses of the leader (kill -9 and LazyFS drops its volume's unsynced data),
/// each started again on its volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_of_the_leader() -> anyhow::Result<()> {
    if !lazyfs_or_skip("power_loss_of_the_leader") {
        return Ok(());
    }
    power_loss(PowerLossTarget::Leader).await
}

/// Three power losses of every member at once, all started again together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_of_every_member() -> anyhow::Result<()> {
    if !lazyfs_or_skip("power_loss_of_every_member") {
        return Ok(());
    }
    power_loss(PowerLossTarget::All).await
}

/// Three power losses of a member right after it wrote a snapshot (with a snapshot every 200
/// entries): the volume must start again, its snapshot record naming a complete file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_in_the_middle_of_a_snapshot() -> anyhow::Result<()> {
    if !lazyfs_or_skip("power_loss_in_the_middle_of_a_snapshot") {
        return Ok(());
    }
    power_loss(PowerLossTarget::MidSnapshot).await
}

/// Three times: kill -9 the leader and start it again within 0.1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_fast() -> anyhow::Result<()> {
    let report = passes_with(Experiment::FailoverFast, &short()).await?;
    let restarts: Vec<&String> =
        report.faults.iter().map(|(_, label)| label).filter(|label| label.contains("started again")).collect();
    assert_eq!(restarts.len(), 3, "{:?}", report.faults);
    Ok(())
}

/// `kubectl scale --replicas=0`, then 3: every pod stopped highest ordinal first and started
/// again; none left the cluster, the membership and the declared count are as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero() -> anyhow::Result<()> {
    let report = passes_with(Experiment::ScaleToZero, &short()).await?;
    assert!(report.one_cluster && report.failed_checks.is_empty(), "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("membership intact")), "{:?}", report.notes);
    Ok(())
}

/// `kubectl delete statefulset` then `kubectl apply`: the same cluster resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapply() -> anyhow::Result<()> {
    let report = passes_with(Experiment::Reapply, &short()).await?;
    assert!(report.one_cluster && report.failed_checks.is_empty(), "{report:?}");
    Ok(())
}

/// A backup under the workload, the set destroyed (pods and volumes; the marker stays) and
/// restored from it: a new cluster, one on every pod, holding exactly the backup's point of the
/// history (every write acknowledged before the backup, none invoked after it), on which the
/// workload goes on linearizably; `petkv restore` pointed at the running and at the stopped set
/// refused, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore() -> anyhow::Result<()> {
    let report = passes_with(Experiment::Restore, &short()).await?;
    assert!(report.one_cluster && report.failed_checks.is_empty(), "{report:?}");
    let r = report.restore.as_ref().expect("restore reports its findings");
    let point = r.point.as_ref().expect("the restored state was checked against the history");
    assert!(point.holds() && point.acknowledged_before > 0 && point.acknowledged_after > 0, "{r:?}");
    assert!(!r.new_cluster_id.is_empty() && r.new_cluster_id != r.old_cluster_id, "{r:?}");
    assert_eq!(report.cluster_id, r.new_cluster_id);
    assert!(r.refused_running && r.refused_stopped, "{r:?}");
    Ok(())
}

/// A follower failing at start for 20 s (back-off capped at 5 s): the leader stays within its
/// CPU and log budget meanwhile, and the follower rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop() -> anyhow::Result<()> {
    let spec = ExperimentSpec {
        crash_loop_for: Duration::from_secs(20),
        crash_loop_backoff_cap: Duration::from_secs(5),
        ..short()
    };
    let report = passes_with(Experiment::CrashLoop, &spec).await?;
    let load = report.leader_load.as_ref().expect("crash-loop measures the leader");
    eprintln!(
        "leader while the follower was down: {:.1}% CPU, {:.2} log lines/s (workload paused); {:.1}%, {:.2}/s with it",
        load.cpu_percent, load.log_lines_per_s, load.busy_cpu_percent, load.busy_log_lines_per_s
    );
    assert!(load.failed_starts >= 3, "{load:?}");
    assert!(load.within_budget(), "{load:?}");
    Ok(())
}

async fn dns_blip(delete_marker: bool) -> anyhow::Result<()> {
    let spec = ExperimentSpec { delete_marker, ..short() };
    if !petkv_harness::netns::available() {
        let err = experiment::run(Experiment::DnsBlip, &spec).await.expect_err("needs pod mode");
        assert!(err.to_string().contains("pod mode"), "{err}");
        return Ok(());
    }
    let report = experiment::run(Experiment::DnsBlip, &spec).await?;
    experiment::print(&report);
    // The second-cluster checks first, so a failure names its evidence (the bootstrap line).
    assert!(report.failed_checks.is_empty(), "{:?}", report.failed_checks);
    assert!(report.one_cluster, "a second cluster: {:?}", report.notes);
    assert_passes(Experiment::DnsBlip, report).map(|_| ())
}

/// Pod mode: petkv-0 loses its volume and starts while its DNS fails for 5 s; it rejoins,
/// never bootstraps. Process mode: refused with the reason, as `partition` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_blip_rejoins() -> anyhow::Result<()> {
    dns_blip(false).await
}

/// The same with the bootstrap marker deleted too: still no second cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_blip_without_the_marker_starts_no_second_cluster() -> anyhow::Result<()> {
    dns_blip(true).await
}

/// Pod mode: `kubectl delete pod --force` of a pod whose process runs on (the zombie, at its old
/// address, still connected to its peers) while the replacement starts at a new address on a
/// copy of the volume. Never two leaders in one term (every process polled, the zombie too),
/// nothing lost, every member converges once the zombie is gone; and the zombie is fenced: it
/// learns that it was replaced and exits with status 5 by itself. Process mode: refused.
async fn force_delete(target: ForceDeleteTarget) -> anyhow::Result<()> {
    let spec = ExperimentSpec { force_delete_target: target, zombie_for: Duration::from_secs(6), ..short() };
    if !petkv_harness::netns::available() {
        let err = experiment::run(Experiment::ForceDelete, &spec).await.expect_err("needs pod mode");
        assert!(err.to_string().contains("pod mode"), "{err}");
        return Ok(());
    }
    let report = experiment::run(Experiment::ForceDelete, &spec).await?;
    experiment::print(&report);
    let zombie = report.zombie.clone().expect("force-delete reports the zombie");
    assert!(zombie.leadership.answers > 0, "no process answered the leadership poll: {zombie:?}");
    assert!(
        zombie.leadership.changes.iter().any(|c| c.contains("(zombie)")),
        "the zombie was never polled: {:?}",
        zombie.leadership.changes
    );
    // Safety first (the verdict), then the fence.
    assert!(report.failed_checks.is_empty(), "{:?}", report.failed_checks);
    assert_passes(Experiment::ForceDelete, report)?;
    assert!(
        zombie.exited_by_itself && zombie.exit_code == Some(5),
        "{}; its log ends:\n{}",
        zombie.ending(),
        zombie.log_tail.join("\n")
    );
    assert!(!zombie.replaced_lines.is_empty(), "the zombie did not log {:?}", experiment::REPLACED_LINE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_delete_of_a_follower() -> anyhow::Result<()> {
    force_delete(ForceDeleteTarget::Follower).await
}

/// The harder case: the zombie is a leader that does not know it was replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_delete_of_the_leader() -> anyhow::Result<()> {
    force_delete(ForceDeleteTarget::Leader).await
}

/// Watchers on every member ride through a leader kill, a pause, a wiped follower and (in pod
/// mode) a partition: every stream holds every acknowledged write once, in order, with each
/// revision whole, and all streams agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch() -> anyhow::Result<()> {
    let report = passes_with(Experiment::Watch, &short()).await?;
    let w = report.watch.as_ref().expect("the watchers were checked");
    assert_eq!(w.watchers, 3);
    assert!(w.events.iter().all(|n| *n > 0), "{w:?}");
    assert!(w.acknowledged_checked > 0, "{w:?}");
    assert!(w.failures.is_empty(), "{:?}", w.failures);
    Ok(())
}

/// A key held by a kept-alive 2 s lease survives a leader kill, a pause and (in pod mode) a
/// partition, and goes within the TTL and a failover once the keep-alives stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease() -> anyhow::Result<()> {
    let report = passes_with(Experiment::Lease, &short()).await?;
    let l = report.lease.as_ref().expect("the lease holder reported");
    assert!(l.keep_alives_acknowledged > 3, "{l:?}");
    assert_eq!(l.absent_reads, 0, "{l:?}");
    assert!(l.gone_after_ms.is_some(), "{l:?}");
    assert!(l.failures.is_empty(), "{:?}", l.failures);
    Ok(())
}
