//! Leases end to end: keys attached to a lease live while it is kept alive (through a leader
//! failover), and disappear together, at one revision, when it is revoked or expires.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use petkv_client::pb::v1::event::EventType;
use petkv_client::pb::v1::{Consistency, WatchRequest};
use petkv_client::{Client, LeaseKeeper, Renewal, Watcher};
use petkv_e2e::{healthy_cluster, refused, SETTLE};
use tonic::Code;

async fn present(c: &Client, key: &str) -> anyhow::Result<bool> {
    Ok(c.get(key.as_bytes(), Consistency::Linearizable).await?.kv.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_lease_go_together_when_it_is_revoked_or_expires() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let c = cluster.client_of((leader + 1) % 3)?;

    // Revoke: every key of the lease is deleted at one revision, seen by a watcher at once.
    let lease = c.lease_grant(0, 30).await?;
    assert!(lease.id > 0 && lease.ttl_seconds == 30, "{lease:?}");
    for k in ["svc/a", "svc/b", "svc/c"] {
        c.put_with_lease(k.as_bytes(), b"up", lease.id).await?;
    }
    c.put(b"svc/static", b"stays", None).await?;
    let ttl = c.lease_time_to_live(lease.id, true).await?;
    assert_eq!(ttl.keys.len(), 3);
    assert!(ttl.remaining_ms > 0 && ttl.remaining_ms <= 30_000, "{ttl:?}");
    let mut watcher =
        Watcher::new(&c, WatchRequest { key: b"svc/".to_vec().into(), prefix: true, ..Default::default() });
    assert!(watcher.next().await?.created);
    let revoked = c.lease_revoke(lease.id).await?;
    assert_eq!(revoked.deleted, 3);
    let deletions = tokio::time::timeout(SETTLE, watcher.next()).await??;
    let revision = revoked.header.expect("header").revision;
    assert_eq!(deletions.events.len(), 3, "one response holds every key of the lease");
    assert!(deletions
        .events
        .iter()
        .all(|e| e.r#type == EventType::Delete as i32 && e.kv.as_ref().is_some_and(|kv| kv.mod_revision == revision)));
    assert!(present(&c, "svc/static").await?, "a key without the lease stays");
    assert_eq!(refused("a put on a revoked lease", c.put_with_lease(b"k", b"v", lease.id).await), Code::NotFound);
    assert_eq!(refused("revoking it again", c.lease_revoke(lease.id).await), Code::NotFound);

    // Expiry: kept alive, the key outlives its TTL several times; left alone, it goes.
    let short = c.lease_grant(0, 2).await?;
    c.put_with_lease(b"svc/short", b"up", short.id).await?;
    let mut keep = c.keep_alive().await?;
    let kept_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < kept_until {
        assert_eq!(keep.renew(short.id).await?, 2);
        assert!(present(&c, "svc/short").await?, "a kept-alive lease's key never disappears");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stopped = Instant::now();
    petkv_harness::wait::until("the expired lease's key to go", SETTLE, || async {
        (!present(&c, "svc/short").await.ok()?).then_some(())
    })
    .await?;
    let gone_after = stopped.elapsed();
    assert!(gone_after >= Duration::from_millis(1500), "not before its TTL: {gone_after:?}");
    assert!(gone_after < Duration::from_secs(2 + 3), "within TTL and a little: {gone_after:?}");
    assert_eq!(keep.renew(short.id).await?, 0, "an expired lease renews to 0");
    assert!(c.leases().await?.leases.iter().all(|l| l.id != short.id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_lease_outlives_a_paused_and_then_a_killed_leader() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    // The keeper's client starts at the leader, so the pause hangs the very member it renews on.
    let mut endpoints: Vec<String> = (0..3).map(|o| cluster.client_addr(o)).collect();
    endpoints.rotate_left(leader as usize);
    let c = Arc::new(cluster.client_for(&endpoints, Duration::from_secs(2))?);
    let lease = c.lease_grant(0, 2).await?;
    c.put_with_lease(b"lock/owner", b"me", lease.id).await?;
    let mut keeper = LeaseKeeper::start(c.clone(), lease.id, Duration::from_millis(500), Duration::from_millis(400));

    // Renewals are recorded while the leader is paused (its keep-alives hang) until one is
    // acknowledged by another member; then it is resumed, and the leader of that moment killed.
    let (renewed, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let recorder = {
        let (renewed, failed) = (renewed.clone(), failed.clone());
        tokio::spawn(async move {
            while let Some(r) = keeper.next().await {
                match r {
                    Renewal::Renewed { ttl_seconds, .. } => {
                        assert!(ttl_seconds > 0);
                        renewed.fetch_add(1, Ordering::Relaxed);
                    }
                    Renewal::Failed(_) => _ = failed.fetch_add(1, Ordering::Relaxed),
                    Renewal::Ended(e) => panic!("the keeper stopped: {e:?}"),
                }
            }
        })
    };
    petkv_harness::wait::until("a first renewal", SETTLE, || async {
        (renewed.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await?;
    cluster.signal(leader, Signal::SIGSTOP)?;
    let before = renewed.load(Ordering::Relaxed);
    let during_pause = petkv_harness::wait::until("a renewal while the leader is paused", SETTLE, || async {
        (renewed.load(Ordering::Relaxed) > before).then_some(())
    })
    .await;
    cluster.signal(leader, Signal::SIGCONT)?;
    during_pause?;
    assert!(failed.load(Ordering::Relaxed) > 0, "a renewal on the paused member timed out");
    let now_leading = cluster.wait_leader(SETTLE).await?;
    cluster.kill(now_leading).await?;
    let before = renewed.load(Ordering::Relaxed);
    petkv_harness::wait::until("a renewal after the kill", SETTLE, || async {
        (renewed.load(Ordering::Relaxed) > before).then_some(())
    })
    .await?;
    let survivor = cluster.client_of((now_leading + 1) % 3)?;
    assert!(present(&survivor, "lock/owner").await?, "the key outlived the pause and the failover");
    let ttl = survivor.lease_time_to_live(lease.id, false).await?;
    assert!(ttl.remaining_ms > 0, "{ttl:?}");
    recorder.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_held_by_one_at_a_time_in_arrival_order_and_freed_by_a_dead_holder() -> anyhow::Result<()> {
    use std::sync::Arc;
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let all: Vec<String> = (0..3).map(|o| cluster.client_addr(o)).collect();
    let client = || -> anyhow::Result<Arc<Client>> { Ok(Arc::new(cluster.client_for(&all, Duration::from_secs(10))?)) };
    let first = petkv_client::Lock::acquire(client()?, "jobs/lock", 5).await?;
    let waiting = tokio::spawn({
        let c = client()?;
        async move { petkv_client::Lock::acquire(c, "jobs/lock", 5).await }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!waiting.is_finished(), "a second holder took the lock while the first held it");
    let first_revision = first.revision;
    first.release().await?;
    let second = tokio::time::timeout(SETTLE, waiting).await???;
    assert!(second.revision > first_revision, "fencing tokens grow");

    // A holder that dies (its keep-alives stop, nobody revokes) frees the lock within its TTL.
    drop(second);
    let started = Instant::now();
    let third = tokio::time::timeout(SETTLE, petkv_client::Lock::acquire(client()?, "jobs/lock", 5)).await??;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3), "not before the dead holder's lease could expire: {waited:?}");
    assert!(waited < Duration::from_secs(5 + 4), "within its TTL and a little: {waited:?}");
    third.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_has_one_leader_whose_proposal_observers_see() -> anyhow::Result<()> {
    use std::sync::Arc;
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let all: Vec<String> = (0..3).map(|o| cluster.client_addr(o)).collect();
    let client = || -> anyhow::Result<Arc<Client>> { Ok(Arc::new(cluster.client_for(&all, Duration::from_secs(10))?)) };
    let observer = client()?;
    assert_eq!(petkv_client::leader(&observer, "db/primary").await?.0, None, "nobody leads yet");
    let a = petkv_client::Lock::acquire_with_value(client()?, "db/primary", 5, b"pod-a").await?;
    let (leader, at) = petkv_client::leader(&observer, "db/primary").await?;
    assert_eq!(leader.map(|(_, v)| v), Some(b"pod-a".to_vec()));
    let b = tokio::spawn({
        let c = client()?;
        async move { petkv_client::Lock::acquire_with_value(c, "db/primary", 5, b"pod-b").await }
    });
    // The observer hears a change (b's candidacy, then a's resignation) and then sees pod-b.
    petkv_client::next_leader_change(&observer, "db/primary", at).await?;
    a.release().await?;
    let b = tokio::time::timeout(SETTLE, b).await???;
    let (leader, _) = petkv_client::leader(&observer, "db/primary").await?;
    assert_eq!(leader.map(|(_, v)| v), Some(b"pod-b".to_vec()));
    b.release().await?;
    Ok(())
}
