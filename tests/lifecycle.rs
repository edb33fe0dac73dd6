//! A pod's life: bootstrap, waiting replicas, failover, restart with the same identity, a
//! wiped volume rejoining under a new id, graceful hand-off, catch-up by snapshot.

use std::time::{Duration, Instant};

use petkv_client::pb::v1::Consistency;
use petkv_e2e::{healthy_cluster, wait_value_on, SETTLE};
use petkv_harness::{wait, Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_bootstrap_and_replicate_to_every_node() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let members = cluster.client()?.members().await?;
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| m.voter && m.status.is_some()));
    // Exactly one cluster id, and node ids follow ordinal << 32 | incarnation.
    let ids: Vec<_> = members.members.iter().filter_map(|m| m.status.clone()).collect();
    assert!(ids.windows(2).all(|w| w[0].cluster_id == w[1].cluster_id));
    for s in &ids {
        assert_eq!(petkv::raft::ordinal_of(s.node_id), s.ordinal);
        assert_eq!(s.hostname, format!("petkv-{}", s.ordinal));
    }
    cluster.client_of(1)?.put(b"greeting", b"hello", None).await?;
    for o in 0..3 {
        wait_value_on(&cluster, o, "greeting", "hello").await?;
        let r = cluster.client_of(o)?.get(b"greeting", Consistency::Linearizable).await?;
        assert_eq!(r.kv.map(|kv| kv.value.to_vec()), Some(b"hello".to_vec()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_empty_volumes_wait_for_the_primary_then_join() -> anyhow::Result<()> {
    let mut cluster = Cluster::new(ClusterSpec::default())?;
    cluster.start(1)?;
    cluster.start(2)?;
    // The replicas wait in their init container (`petkv wait-primary`), saying for whom; the
    // node itself has not started, so nothing answers on their client port yet.
    for o in [1, 2] {
        wait::until(&format!("replica {o} to log that it waits for petkv-0"), SETTLE, || async {
            cluster.pod(o).ok()?.log_tail(50).contains("waiting for the primary petkv-0").then_some(())
        })
        .await?;
        assert!(cluster.status(o).await.is_err(), "serve must not run before the primary exists");
    }
    assert!(!cluster.volume(1).join(petkv::pod::identity::IDENTITY_FILE).exists());
    // A waiting pod stops on SIGTERM within the grace period (its init container with it), and
    // started again it still just waits (its volume is empty).
    let exit = cluster.terminate(1).await?;
    assert!(exit.is_some_and(|s| s.code() == Some(143)), "a waiting pod stops on SIGTERM: {exit:?}");
    cluster.start(1)?;
    cluster.start(0)?;
    cluster.wait_healthy(SETTLE).await?;
    assert!(cluster.state_dir().join("bootstrapped").exists(), "bootstrap marker is written outside the volumes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_comes_back_with_the_same_identity() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let client = cluster.client()?;
    client.put(b"before", b"1", None).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let old_status = cluster.status(leader).await?;

    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    client.put(b"after", b"2", None).await?;
    let window = killed_at.elapsed();
    let new_leader = cluster.wait_leader(SETTLE).await?;
    assert_ne!(new_leader, leader);
    assert!(window < SETTLE, "writes resumed after {window:?}");

    cluster.start(leader)?;
    let back = cluster.wait_member(leader, SETTLE).await?;
    assert_eq!(back.node_id, old_status.node_id, "a restarted pod keeps its node id");
    assert_eq!(back.cluster_id, old_status.cluster_id);
    wait_value_on(&cluster, leader, "after", "2").await?;
    wait_value_on(&cluster, leader, "before", "1").await?;
    cluster.wait_healthy(SETTLE).await?;
    Ok(())
}

/// A crashed leader that is back at once (a container restarted in its pod) must not lead again
/// in the term it had: its log may have lost a tail that its followers fsync'd and acknowledged,
/// and as leader of the same term it would write other entries under the same log ids (Raft's
/// log matching gone). A long election timeout makes sure it is back before anyone else runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_at_once_never_leads_again_in_its_old_term() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &["--heartbeat-ms", "100", "--election-timeout-ms", "3000"]).await?;
    let client = cluster.client()?;
    client.put(b"before", b"1", None).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let old_term = cluster.status(leader).await?.term;

    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    cluster.start(leader)?;
    let back =
        wait::until("the restarted leader to answer", SETTLE, || async { cluster.status(leader).await.ok() }).await?;
    assert!(
        killed_at.elapsed() < Duration::from_secs(3),
        "the pod must be back within the election timeout to test this: {:?}",
        killed_at.elapsed()
    );
    assert!(
        !(back.role == "leader" && back.term == old_term),
        "the restarted pod resumed leadership in its old term {old_term}: {back:?}"
    );
    client.put(b"after", b"2", None).await?;
    let new_leader = cluster.wait_leader(SETTLE).await?;
    let now = cluster.status(new_leader).await?;
    assert!(now.term > old_term, "a leader after the crash leads in a new term: {old_term} then {now:?}");
    for o in 0..3 {
        wait_value_on(&cluster, o, "after", "2").await?;
        wait_value_on(&cluster, o, "before", "1").await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_rejoins_under_a_new_id_with_all_data() -> anyhow::Result<()> {
    // Frequent snapshots, so the wiped pod must catch up by snapshot, not by log.
    let mut cluster = healthy_cluster(3, 3, &["--snapshot-every", "20"]).await?;
    let client = cluster.client()?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let victim = (leader + 1) % 3;
    let old_id = cluster.status(victim).await?.node_id;
    cluster.kill(victim).await?;
    cluster.wipe_volume(victim)?;
    for i in 0..60 {
        client.put(format!("k{i:03}").as_bytes(), format!("v{i}").as_bytes(), None).await?;
    }
    cluster.start(victim)?;
    let back = cluster.wait_member(victim, SETTLE).await?;
    assert_ne!(back.node_id, old_id, "a wiped volume never reuses its node id");
    assert_eq!(petkv::raft::ordinal_of(back.node_id), victim);
    assert!(petkv::raft::incarnation_of(back.node_id) > petkv::raft::incarnation_of(old_id));
    wait_value_on(&cluster, victim, "k059", "v59").await?;
    // The old id is gone and the new one votes.
    wait::until("old id removed and new id a voter", SETTLE, || async {
        let m = client.members().await.ok()?;
        let ids: Vec<_> = m.members.iter().map(|m| (m.node_id, m.voter)).collect();
        (ids.len() == 3 && !ids.iter().any(|(id, _)| *id == old_id) && ids.contains(&(back.node_id, true)))
            .then_some(())
    })
    .await?;
    let s = cluster.status(victim).await?;
    assert!(s.snapshot_index > 0, "caught up by snapshot: {s:?}");
    assert_eq!(s.key_count, 60);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_and_exits_cleanly() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let client = cluster.client()?;
    client.put(b"k", b"v", None).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let started = Instant::now();
    let status = cluster.terminate(leader).await?;
    let log = cluster.pod(leader)?.log_tail(40);
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}; log:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}; log:\n{log}", started.elapsed());
    assert!(cluster.pod(leader)?.log_tail(20).contains("leadership handed over"));
    client.put(b"k2", b"v2", None).await?;
    let new_leader = cluster.wait_leader(SETTLE).await?;
    assert_ne!(new_leader, leader);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_identity_and_data() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let client = cluster.client()?;
    for i in 0..20 {
        client.put(format!("key{i}").as_bytes(), b"x", None).await?;
    }
    let before: Vec<_> = futures_ids(&cluster).await?;
    cluster.down().await?;
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    assert_eq!(futures_ids(&cluster).await?, before);
    for o in 0..3 {
        wait::until("all 20 keys on every pod", SETTLE, || async {
            (cluster.status(o).await.ok()?.key_count == 20).then_some(())
        })
        .await?;
    }
    Ok(())
}

/// Every pod is killed right after a run of acknowledged writes and all start again, with
/// saved commit indexes and state machines that lag their logs: the first linearizable read
/// must see every write that was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_of_every_pod_a_linearizable_read_sees_every_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let client = cluster.client()?;
    let last = 199;
    for i in 0..=last {
        client.put(b"counter", i.to_string().as_bytes(), None).await?;
    }
    for o in cluster.ordinals() {
        cluster.kill(o).await?;
    }
    cluster.start_all()?;
    let read = client.get(b"counter", Consistency::Linearizable).await?;
    let value = read.kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    assert_eq!(value.as_deref(), Some(last.to_string().as_str()), "served by {:?}", read.header);
    Ok(())
}

async fn futures_ids(cluster: &Cluster) -> anyhow::Result<Vec<(u32, u64, String)>> {
    let mut ids = Vec::new();
    for o in cluster.ordinals() {
        let s = cluster.status(o).await?;
        ids.push((s.ordinal, s.node_id, s.cluster_id));
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_served_by_a_read_replica() -> anyhow::Result<()> {
    // Three pods, two voters: petkv-2 is a read replica (Raft learner).
    let cluster = healthy_cluster(3, 2, &[]).await?;
    let members = cluster.client()?.members().await?;
    let replica = members.members.iter().find(|m| m.ordinal == 2).expect("pod 2 is a member");
    assert!(!replica.voter);
    cluster.client()?.put(b"r", b"1", None).await?;
    wait_value_on(&cluster, 2, "r", "1").await?;
    let s = cluster.status(2).await?;
    assert_eq!(s.role, "learner");
    Ok(())
}

/// The README's main command, as a test: the demo must pass on a fresh cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes() -> anyhow::Result<()> {
    let report = petkv_harness::demo::run_fresh(None).await?;
    assert!(report.identity_ok && report.data_ok, "{report:?}");
    assert!(report.acknowledged_writes > 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_primary_with_its_peers_down_waits_instead_of_starting_a_second_cluster() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    cluster.client()?.put(b"precious", b"data", None).await?;
    let cluster_id = cluster.status(1).await?.cluster_id;
    cluster.down().await?;
    cluster.wipe_volume(0)?;
    cluster.start(0)?;
    wait::until("petkv-0 to say it waits for the existing cluster", SETTLE, || async {
        cluster.pod(0).ok()?.log_tail(50).contains("instead of starting a second cluster").then_some(())
    })
    .await?;
    assert_eq!(cluster.status(0).await?.role, "joining");
    assert!(!cluster.volume(0).join(petkv::pod::identity::IDENTITY_FILE).exists(), "no new cluster was bootstrapped");
    cluster.start(1)?;
    cluster.start(2)?;
    cluster.wait_healthy(SETTLE).await?;
    let s = cluster.status(0).await?;
    assert_eq!(s.cluster_id, cluster_id, "petkv-0 joined the original cluster");
    wait_value_on(&cluster, 0, "precious", "data").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_follows_the_declared_replica_count_up_and_down() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let client = cluster.client()?;
    client.put(b"before-scale", b"1", None).await?;

    // Up to 5: ordinals 3 and 4 join as read replicas (learners), with the data.
    cluster.scale(5).await?;
    cluster.wait_healthy(SETTLE).await?;
    wait_value_on(&cluster, 4, "before-scale", "1").await?;
    let m = cluster.client()?.members().await?;
    assert_eq!(m.members.len(), 5);
    assert_eq!(m.members.iter().filter(|m| m.voter).count(), 3);
    let id3 = cluster.status(3).await?.node_id;

    // Down to 3: pods 4 and 3 leave the cluster before they exit.
    let state_dir = cluster.state_dir().to_path_buf();
    cluster.scale(3).await?;
    for o in [3, 4] {
        let log = std::fs::read_to_string(state_dir.join("logs").join(format!("petkv-{o}.log")))?;
        assert!(log.contains("removed from the cluster"), "petkv-{o} did not leave:\n{log}");
    }
    let m = cluster.client()?.members().await?;
    assert_eq!(m.members.iter().map(|m| m.ordinal).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(cluster.status(0).await?.declared_replicas, 3);

    // Up to 4 again: petkv-3 comes back with its kept volume and the same node id.
    cluster.scale(4).await?;
    cluster.wait_healthy(SETTLE).await?;
    let back = cluster.wait_member(3, SETTLE).await?;
    assert_eq!(back.node_id, id3);
    client.put(b"after-scale", b"2", None).await?;
    wait_value_on(&cluster, 3, "after-scale", "2").await?;
    wait::until("4 members", SETTLE, || async {
        (cluster.client().ok()?.members().await.ok()?.members.len() == 4).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_of_scaled_away_pods_are_deleted_when_the_policy_says_so() -> anyhow::Result<()> {
    let spec = ClusterSpec { delete_volumes_when_scaled: true, ..Default::default() };
    let mut cluster = Cluster::new(spec)?;
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    cluster.scale(4).await?;
    cluster.wait_healthy(SETTLE).await?;
    assert!(cluster.volume(3).join(petkv::pod::identity::IDENTITY_FILE).exists());
    cluster.scale(3).await?;
    assert!(!cluster.volume(3).exists(), "whenScaled: Delete removes the volume");
    assert!(cluster.volume(2).exists());
    Ok(())
}
