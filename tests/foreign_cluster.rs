//! Raft requests carry the sender's cluster id, and a node refuses a request of another
//! cluster. Two clusters can share pod names, addresses and node ids (each `petkv-0` is node 1
//! of its cluster), so without it a second cluster's leader could append entries under log
//! ids the first cluster's members hold with other contents.

use petkv::pb::raft::raft_client::RaftClient;
use petkv::pb::raft::RaftMessage;
use petkv_e2e::{healthy_cluster, SETTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_request_of_another_cluster_is_refused_with_both_ids() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let status = cluster.status(1).await?;
    let peer = format!("http://{}", cluster.pod(1)?.spec.peer_addr);
    let mut raft = RaftClient::connect(peer).await?;
    let message = |cluster_id: &str| RaftMessage {
        version: petkv::raft::codec::VERSION as i32,
        data: Vec::new().into(),
        target: status.node_id,
        cluster_id: cluster_id.to_string(),
        ..RaftMessage::default()
    };

    let refused = raft.vote(message("0123456789abcdef")).await.expect_err("a foreign cluster's vote request");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("0123456789abcdef") && refused.message().contains(&status.cluster_id),
        "the refusal names both clusters: {}",
        refused.message()
    );
    // No cluster id at all (a sender that predates it) is refused the same way.
    let anonymous = raft.append_entries(message("")).await.expect_err("a request without a cluster id");
    assert_eq!(anonymous.code(), tonic::Code::FailedPrecondition, "{anonymous:?}");

    // With this cluster's id the same bytes get past the check (and fail to decode).
    let own = raft.vote(message(&status.cluster_id)).await.expect_err("an empty vote request");
    assert_eq!(own.code(), tonic::Code::InvalidArgument, "{own:?}");

    let log = cluster.pod(1)?.log_tail(200);
    assert!(log.contains("refused a Raft message of cluster 0123456789abcdef"), "logged:\n{log}");

    // Another cluster claims this pod's peers: which one is wrong, the pod cannot tell, so it
    // reports not ready and serves no client, for a while after the last such message.
    let now = cluster.status(1).await?;
    assert!(!now.ready, "not ready while another cluster talks to it: {now:?}");
    let (code, body) = petkv_e2e::http_get(&cluster.http_addr(1), "/readyz").await?;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("another cluster claims this set's pods"), "{body}");
    let served = cluster
        .client_of(1)?
        .get(b"after", petkv_client::pb::v1::Consistency::Stale)
        .await
        .expect_err("no client is served");
    assert!(served.to_string().contains("another cluster"), "{served}");
    // The rest of the set is not disturbed: it still takes writes.
    let others = cluster.client_for(&[cluster.client_addr(0), cluster.client_addr(2)], SETTLE)?;
    others.put(b"after", b"1", None).await?;
    Ok(())
}
