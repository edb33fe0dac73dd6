//! Pod mode: every pod in its own network and UTS namespace on a bridge, with its own
//! /etc/hosts. The node runs with no `--hostname` and finds its peers by DNS name, exactly as on
//! Kubernetes; and a pod can be cut off the network. Needs root and iproute2 (CI runs as root);
//! elsewhere the test says why it cannot run and returns.

use std::time::Duration;

use petkv_client::pb::v1::Consistency;
use petkv_e2e::{wait_value_on, SETTLE};
use petkv_harness::{netns, wait, Cluster, ClusterSpec, Mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_in_their_own_namespaces_find_each_other_by_name_and_survive_a_partition() -> anyhow::Result<()> {
    if !netns::available() {
        eprintln!("pod mode is not available here (needs root and iproute2): not run");
        return Ok(());
    }
    let mut cluster = Cluster::new(ClusterSpec { mode: Mode::Pod, ..Default::default() })?;
    assert!(cluster.is_pod_mode());
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    for o in 0..3 {
        let s = cluster.status(o).await?;
        assert_eq!(s.hostname, format!("petkv-{o}"), "the hostname comes from the pod's UTS namespace");
        assert_eq!(s.client_addr, format!("petkv-{o}.{}:7379", netns::POD_DOMAIN), "advertised by DNS name");
    }
    let client = cluster.client()?;
    client.put(b"before", b"1", None).await?;

    // Cut the leader off: the other two elect a leader and keep accepting writes.
    let leader = cluster.wait_leader(SETTLE).await?;
    cluster.isolate(leader)?;
    let others: Vec<u32> = (0..3).filter(|o| *o != leader).collect();
    wait::until("a leader among the connected pods", SETTLE, || async {
        for o in &others {
            if cluster.status(*o).await.ok()?.role == "leader" {
                return Some(());
            }
        }
        None
    })
    .await?;
    let majority = petkv_client::Client::new(
        &others.iter().map(|o| cluster.client_addr(*o)).collect::<Vec<_>>(),
        Duration::from_secs(10),
    )?;
    majority.put(b"during", b"2", None).await?;

    // Heal: the old leader rejoins as a follower and catches up.
    cluster.heal(leader)?;
    cluster.wait_healthy(SETTLE).await?;
    wait_value_on(&cluster, leader, "during", "2").await?;
    let r = cluster.client_of(leader)?.get(b"before", Consistency::Linearizable).await?;
    assert_eq!(r.kv.map(|kv| kv.value.to_vec()), Some(b"1".to_vec()));
    cluster.down().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_into_groups_leaves_only_the_majority_side_writable() -> anyhow::Result<()> {
    if !netns::available() {
        eprintln!("pod mode is not available here (needs root and iproute2): not run");
        return Ok(());
    }
    let spec = ClusterSpec { mode: Mode::Pod, replicas: 5, voters: 5, ..Default::default() };
    let mut cluster = Cluster::new(spec)?;
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    cluster.client()?.put(b"k", b"before", None).await?;
    // {2, 3, 4} keep the clients and a quorum; {0, 1} are cut off together.
    cluster.split(&[vec![2, 3, 4], vec![0, 1]])?;
    let majority = petkv_client::Client::new(
        &[2, 3, 4].iter().map(|o| cluster.client_addr(*o)).collect::<Vec<_>>(),
        Duration::from_secs(15),
    )?;
    majority.put(b"k", b"during", None).await?;
    cluster.join_sides()?;
    cluster.wait_healthy(SETTLE).await?;
    for o in [0, 1] {
        wait_value_on(&cluster, o, "k", "during").await?;
    }
    cluster.down().await?;
    Ok(())
}
