//! A small state is snapshotted long before `--snapshot-every` entries: after a quarter of its
//! key count in entries, at least `MIN_ENTRIES_BETWEEN_SNAPSHOTS` (`raft::snapshot_trigger`).
//! The log behind a snapshot is purged, which is what bounds raft-log's memory. Also: the Raft
//! log's libraries do not flood the node's log under those writes.

use std::sync::Arc;

use petkv::raft::snapshot_trigger::MIN_ENTRIES_BETWEEN_SNAPSHOTS;
use petkv_e2e::{healthy_cluster, http_get, sample, SETTLE};
use petkv_harness::wait;

const WRITERS: u64 = 32;
const BUILT: &str = r#"petkv_snapshots_total{kind="built"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_state_is_snapshotted_before_snapshot_every() -> anyhow::Result<()> {
    // The configured bound is far away: only the state-sized trigger can fire.
    let cluster = healthy_cluster(3, 3, &["--snapshot-every", "1000000"]).await?;
    let client = Arc::new(cluster.client()?);
    // Few keys (a small state), many entries: past the minimum by a margin.
    let puts = MIN_ENTRIES_BETWEEN_SNAPSHOTS + 2_000;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let client = client.clone();
        writers.spawn(async move {
            for i in (w..puts).step_by(WRITERS as usize) {
                client.put(format!("key-{}", i % 100).as_bytes(), b"value", None).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    wait::until("every pod to build a snapshot", SETTLE, || async {
        for ordinal in 0..3 {
            let (status, body) = http_get(&cluster.http_addr(ordinal), "/metrics").await.ok()?;
            let built = sample(&body, BUILT)?;
            (status == 200 && built >= 1.0).then_some(())?;
        }
        Some(())
    })
    .await?;
    // The Raft log's libraries log at info on every flush; a node keeps only their warnings,
    // so 22,000 writes leave its log short.
    for ordinal in 0..3 {
        let log = cluster.pod(ordinal)?.log_tail(usize::MAX);
        let noisy = log.lines().filter(|l| l.contains("raft_log") || l.contains("chunked_wal")).count();
        assert_eq!(
            noisy,
            0,
            "petkv-{ordinal} logged the Raft log's info lines:\n{}",
            cluster.pod(ordinal)?.log_tail(5)
        );
        assert!(log.lines().count() < 1_000, "petkv-{ordinal} logged {} lines", log.lines().count());
    }
    Ok(())
}
