//! Disk full: pods on size-limited volumes (a tmpfs each, [`petkv_harness::volume`]; needs
//! root, as CI has; elsewhere each test says why it cannot run and returns), in pod mode where
//! it is available.
//!
//! - The free-space guard: a leader whose volume drops below the reserve refuses writes with
//!   RESOURCE_EXHAUSTED, every acknowledged key stays readable (linearizable and stale, on
//!   every pod), and writes are accepted again, without a restart, once the space is back.
//! - A follower low on space makes the leader refuse writes too (its log would fill up).
//! - A volume that fills up anyway (guard off): the pod exits non-zero saying its volume is
//!   full, the others go on, and restarted with space it recovers and catches up; nothing
//!   acknowledged is lost.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use petkv_client::pb::v1::Consistency;
use petkv_client::{Client, ClientError};
use petkv_e2e::{healthy, http_get, sample, wait_value_on, SETTLE};
use petkv_harness::{volume, wait, Cluster, ClusterSpec, Mode};
use tonic::Code;

const MIB: u64 = 1024 * 1024;
/// Each pod's volume.
const VOLUME: u64 = 32 * MIB;
/// `--min-free-bytes` of the guarded sets.
const RESERVE: u64 = 4 * MIB;

type Acked = BTreeMap<String, String>;

fn not_available() -> bool {
    let missing = !volume::available();
    if missing {
        eprintln!("size-limited volumes need root (mount -t tmpfs): not run");
    }
    missing
}

/// A healthy set of three with its first keys written.
struct Set {
    cluster: Cluster,
    client: Client,
    acked: Acked,
    leader: u32,
}

/// A set of three on volumes of [`VOLUME`] bytes, with `--min-free-bytes reserve`, and ten
/// keys written; `None` where size-limited volumes cannot be mounted.
async fn set_with_keys(reserve: u64) -> anyhow::Result<Option<Set>> {
    if not_available() {
        return Ok(None);
    }
    let cluster = healthy(ClusterSpec {
        // Pod mode where it runs (root and iproute2): the nodes see their volumes from their
        // own mount namespaces, as on Kubernetes.
        mode: Mode::Auto,
        volume_bytes: Some(VOLUME),
        extra_args: vec!["--min-free-bytes".into(), reserve.to_string()],
        ..Default::default()
    })
    .await?;
    let client = cluster.client()?;
    let mut acked = Acked::new();
    put_keys(&client, "before", 10, &mut acked).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    Ok(Some(Set { cluster, client, acked, leader }))
}

/// Writes `count` keys `<prefix>-<i>` and adds them to `acked`.
async fn put_keys(client: &Client, prefix: &str, count: usize, acked: &mut Acked) -> anyhow::Result<()> {
    for i in 0..count {
        let (key, value) = (format!("{prefix}-{i}"), format!("value of {prefix}-{i}"));
        client.put(key.as_bytes(), value.as_bytes(), None).await?;
        acked.insert(key, value);
    }
    Ok(())
}

fn is_refused_for_space(e: &ClientError) -> Option<String> {
    e.status().filter(|s| s.code() == Code::ResourceExhausted).map(|s| s.message().to_string())
}

/// Puts new keys until one is refused for lack of space; returns the refusal's message. The
/// guard measures every 200 ms, so puts may still be accepted meanwhile: those were
/// acknowledged and join `acked`.
async fn put_until_refused(client: &Client, acked: &mut Acked) -> anyhow::Result<String> {
    let accepted = RefCell::new(Acked::new());
    let attempt = Cell::new(0);
    let refusal = wait::until("a put refused with RESOURCE_EXHAUSTED", SETTLE, || async {
        let key = format!("racing-{}", attempt.replace(attempt.get() + 1));
        match client.put(key.as_bytes(), b"raced the guard", None).await {
            Ok(_) => {
                accepted.borrow_mut().insert(key, "raced the guard".into());
                None
            }
            Err(e) => is_refused_for_space(&e),
        }
    })
    .await?;
    acked.extend(accepted.into_inner());
    Ok(refusal)
}

/// Waits until a put is accepted again, and counts it as acknowledged.
async fn wait_writable(client: &Client, acked: &mut Acked) -> anyhow::Result<()> {
    let key = wait::until("writes to be accepted again", SETTLE, || async {
        client.put(b"writable-again", b"yes", None).await.ok().map(|_| "writable-again".to_string())
    })
    .await?;
    acked.insert(key, "yes".into());
    Ok(())
}

/// Every acknowledged key reads back: linearizable through the set, stale on every pod.
async fn assert_all_readable(cluster: &Cluster, acked: &Acked) -> anyhow::Result<()> {
    let client = cluster.client()?;
    for (key, value) in acked {
        let r = client.get(key.as_bytes(), Consistency::Linearizable).await?;
        assert_eq!(r.kv.map(|kv| kv.value.to_vec()), Some(value.as_bytes().to_vec()), "{key}");
        for ordinal in cluster.ordinals() {
            wait_value_on(cluster, ordinal, key, value).await?;
        }
    }
    Ok(())
}

async fn metrics_of(cluster: &Cluster, ordinal: u32) -> anyhow::Result<String> {
    let (code, body) = http_get(&cluster.http_addr(ordinal), "/metrics").await?;
    anyhow::ensure!(code == 200, "GET /metrics: {code}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_low_on_space_refuses_writes_keeps_every_read_and_recovers_when_space_returns() -> anyhow::Result<()> {
    let Some(Set { mut cluster, client, mut acked, leader }) = set_with_keys(RESERVE).await? else { return Ok(()) };

    cluster.fill_volume(leader, RESERVE / 2)?;
    let refusal = put_until_refused(&client, &mut acked).await?;
    let expected = format!("volume of petkv-{leader} has");
    assert!(refusal.contains(&expected) && refusal.contains("below the reserve of 4194304"), "{refusal}");
    assert!(refusal.contains("free space or grow the volume"), "{refusal}");
    let err = client.delete(b"before-0", None).await.expect_err("deletes are writes too");
    assert!(is_refused_for_space(&err).is_some(), "{err}");
    let put = cluster.client_of(leader)?.put(b"direct", b"x", None).await.expect_err("refused on the leader");
    assert!(is_refused_for_space(&put).is_some(), "{put}");

    // Reads go on, everywhere; the refusal shows in the status and the metrics.
    assert_all_readable(&cluster, &acked).await?;
    let status = cluster.status(leader).await?;
    assert!(status.writes_refused.contains(&expected), "{status:?}");
    assert!(status.volume_free_bytes < RESERVE && status.volume_reserve_bytes == RESERVE, "{status:?}");
    let metrics = metrics_of(&cluster, leader).await?;
    assert_eq!(sample(&metrics, "petkv_volume_low"), Some(1.0), "{metrics}");
    assert!(sample(&metrics, r#"petkv_space_refused_writes_total{reason="own_volume"}"#) >= Some(3.0));

    // Space back: writes are accepted again, without a restart, and nothing was lost.
    cluster.unfill_volume(leader)?;
    wait_writable(&client, &mut acked).await?;
    put_keys(&client, "after", 5, &mut acked).await?;
    assert_all_readable(&cluster, &acked).await?;
    assert!(cluster.status(leader).await?.writes_refused.is_empty());
    assert_eq!(sample(&metrics_of(&cluster, leader).await?, "petkv_volume_low"), Some(0.0));
    cluster.down().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_low_on_space_makes_the_leader_refuse_writes_until_it_has_room() -> anyhow::Result<()> {
    let Some(Set { mut cluster, client, mut acked, leader }) = set_with_keys(RESERVE).await? else { return Ok(()) };
    let follower = (leader + 1) % 3;

    cluster.fill_volume(follower, RESERVE / 2)?;
    let refusal = put_until_refused(&client, &mut acked).await?;
    let expected = format!("volume of petkv-{follower} has");
    assert!(refusal.contains(&expected) && refusal.contains("until every member has room"), "{refusal}");
    // Refused by the leader, whose own volume has room; it still leads.
    let status = cluster.status(leader).await?;
    assert_eq!(status.role, "leader");
    assert!(status.writes_refused.contains(&expected), "{status:?}");
    assert!(status.volume_free_bytes > RESERVE, "{status:?}");
    let metrics = metrics_of(&cluster, leader).await?;
    assert!(sample(&metrics, r#"petkv_space_refused_writes_total{reason="member_volume"}"#) >= Some(1.0));
    assert_all_readable(&cluster, &acked).await?;

    cluster.unfill_volume(follower)?;
    wait_writable(&client, &mut acked).await?;
    put_keys(&client, "after", 5, &mut acked).await?;
    assert_all_readable(&cluster, &acked).await?;
    cluster.down().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_that_fills_up_anyway_stops_its_pod_which_recovers_once_space_returns() -> anyhow::Result<()> {
    // Guard off: the follower's log appends run into ENOSPC.
    let Some(Set { mut cluster, client, mut acked, leader }) = set_with_keys(0).await? else { return Ok(()) };
    let follower = (leader + 1) % 3;
    cluster.fill_volume(follower, 0)?;

    // Writes go on (the leader and the other follower are a majority) until the full
    // follower's append fails and it exits.
    let value = "v".repeat(4096);
    let deadline = Instant::now() + SETTLE;
    let exit = loop {
        let key = format!("while-full-{}", acked.len());
        if client.put(key.as_bytes(), value.as_bytes(), None).await.is_ok() {
            acked.insert(key, value.clone());
        }
        if let Some(exit) = cluster.pod_mut(follower)?.reap() {
            break exit;
        }
        anyhow::ensure!(Instant::now() < deadline, "petkv-{follower} did not stop on its full volume");
    };
    let log = cluster.pod(follower)?.log_tail(30);
    assert_eq!(exit.code(), Some(1), "{exit}: {log}");
    assert!(log.contains("raft stopped: the volume is full"), "{log}");
    put_keys(&client, "one-down", 5, &mut acked).await?;

    // The StatefulSet restarts it; with space back, it recovers from its volume and catches up.
    cluster.unfill_volume(follower)?;
    cluster.start(follower)?;
    cluster.wait_member(follower, SETTLE).await?;
    assert_all_readable(&cluster, &acked).await?;
    cluster.down().await?;
    Ok(())
}
