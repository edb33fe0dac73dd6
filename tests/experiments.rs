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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_is_refused_in_process_mode_with_a_reason() {
    let err = experiment::run(Experiment::Partition, &short()).await.expect_err("needs pod mode");
    assert!(err.to_string().contains("pod mode"), "{err}");
}
