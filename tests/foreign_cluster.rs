//! Raft requests carry the sender's cluster id, and a node refuses a request of another
//! cluster. Two clusters can share pod names, addresses and node ids (each `petkv-0` is node 1
//! of its cluster), so without it a second cluster's leader could append entries under log
//! ids the first cluster's members hold with other contents.

use petkv::pb::raft::raft_client::RaftClient;
use petkv::pb::raft::{RaftMessage, TransportVersion};
use petkv_e2e::healthy_cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_request_of_another_cluster_is_refused_with_both_ids() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let status = cluster.status(1).await?;
    let peer = format!("http://{}", cluster.pod(1)?.spec.peer_addr);
    let mut raft = RaftClient::connect(peer).await?;
    let message = |cluster_id: &str| RaftMessage {
        version: TransportVersion::Openraft010A37 as i32,
        data: Vec::new().into(),
        target: status.node_id,
        cluster_id: cluster_id.to_string(),
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

    // The node was not disturbed: the cluster still takes writes.
    cluster.client()?.put(b"after", b"1", None).await?;
    let log = cluster.pod(1)?.log_tail(200);
    assert!(log.contains("refused a Raft message of cluster 0123456789abcdef"), "logged once:\n{log}");
    Ok(())
}
