//! A short form of every harness experiment, as CI runs it: each must lose no acknowledged
//! write, show no linearizability violation, converge on every member, and keep every pod's
//! identity.

use std::time::Duration;

use petkv_harness::experiment::{self, Experiment, ExperimentSpec};

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
    let report = experiment::run(name, &short()).await?;
    experiment::print(&report);
    assert!(report.operations > 0, "the workload recorded nothing");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.linearizability, "linearizable");
    assert!(report.members_converged, "members disagree after {name:?}");
    assert!(report.identity_kept, "identity broken by {name:?}");
    assert!(std::path::Path::new(&report.timeline_svg).exists());
    let _ = std::fs::remove_file(&report.timeline_svg);
    let _ = std::fs::remove_file(&report.report_json);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover() -> anyhow::Result<()> {
    passes(Experiment::Failover).await
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
