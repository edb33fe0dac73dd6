//! A small state is snapshotted long before `--snapshot-every` entries: after a quarter of its
//! key count in entries, at least `MIN_ENTRIES_BETWEEN_SNAPSHOTS` (`raft::snapshot_trigger`).
//! The log behind a snapshot is purged, which is what bounds raft-log's memory.

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
    Ok(())
}
