//! Start epochs fence a stale process that shares a node's identity (a force-deleted pod's
//! process still running beside its replacement): its peers refuse its messages, and a process
//! that learns of a newer start of itself stops and never runs again on that copy of the volume.

use std::time::Duration;

use petkv::pb::raft::raft_client::RaftClient;
use petkv::pb::raft::RaftMessage;
use petkv::raft::fence::{EXIT_REPLACED, REPLACED_METADATA};
use petkv_e2e::{healthy_cluster, SETTLE};

fn start_epoch(cluster: &petkv_harness::Cluster, ordinal: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_to_string(cluster.volume(ordinal).join("start-epoch"))?.trim().parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_refuse_a_replaced_process_and_a_replaced_process_stops_for_good() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    assert_eq!(start_epoch(&cluster, 0)?, 1);
    // A restart is a new start epoch; the node announces it to both voters before Raft starts.
    cluster.kill(0).await?;
    cluster.start(0)?;
    cluster.wait_healthy(SETTLE).await?;
    assert_eq!(start_epoch(&cluster, 0)?, 2);
    // Both other voters were asked, though a kill -9 leaves the applied membership behind the
    // log (the voters come from the log's membership entries too).
    let log = cluster.pod(0)?.log_tail(400);
    let recorded = log.lines().find(|l| l.contains("every voter recorded this start")).unwrap_or_default();
    assert!(recorded.contains("voters=2"), "{log}");

    // A message from petkv-0's first process (epoch 1) is refused by its peers, with the
    // newest epoch attached so that process stops.
    let node0 = cluster.status(0).await?;
    let node1 = cluster.status(1).await?;
    let mut raft1 = RaftClient::connect(format!("http://{}", cluster.pod(1)?.spec.peer_addr)).await?;
    let stale = RaftMessage {
        version: petkv::raft::codec::VERSION as i32,
        target: node1.node_id,
        cluster_id: node1.cluster_id.clone(),
        sender: node0.node_id,
        sender_epoch: 1,
        ..RaftMessage::default()
    };
    let refused = raft1.vote(stale).await.expect_err("a replaced process's vote request");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert_eq!(refused.metadata().get(REPLACED_METADATA).and_then(|v| v.to_str().ok()), Some("2"));

    // petkv-2 receives a message for a newer start of itself: it has been replaced, so it
    // exits with its own status and refuses to start again on this volume.
    let node2 = cluster.status(2).await?;
    let epoch2 = start_epoch(&cluster, 2)?;
    let mut raft2 = RaftClient::connect(format!("http://{}", cluster.pod(2)?.spec.peer_addr)).await?;
    let newer = RaftMessage {
        version: petkv::raft::codec::VERSION as i32,
        target: node2.node_id,
        cluster_id: node2.cluster_id.clone(),
        target_epoch: epoch2 + 1,
        ..RaftMessage::default()
    };
    let _ = raft2.append_entries(newer).await;
    let status = cluster.pod_mut(2)?.wait_exit(Duration::from_secs(10)).await?.expect("petkv-2 exits");
    assert_eq!(status.code(), Some(EXIT_REPLACED), "{status:?}");
    assert!(cluster.pod(2)?.log_tail(50).contains("was replaced by a newer process"));
    cluster.start(2)?;
    let again = cluster.pod_mut(2)?.wait_exit(Duration::from_secs(10)).await?.expect("refuses to start");
    assert_eq!(again.code(), Some(EXIT_REPLACED), "{again:?}");
    assert!(cluster.pod(2)?.log_tail(20).contains("must not run"), "{}", cluster.pod(2)?.log_tail(20));

    // The other two still form a quorum and take writes.
    let others = cluster.client_for(&[cluster.client_addr(0), cluster.client_addr(1)], SETTLE)?;
    others.put(b"after", b"1", None).await?;
    Ok(())
}
