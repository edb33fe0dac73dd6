//! Backups and restores through real nodes: a backup taken under write load holds exactly the
//! acknowledged writes up to its Raft index, and a new cluster restored from it serves exactly
//! that data; corrupt or truncated backups are refused before anything is touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use petkv::recovery::restore::StageOutcome;
use petkv_client::pb::v1::{Consistency, ScanRequest};
use petkv_client::Client;
use petkv_e2e::{healthy_cluster, SETTLE};
use petkv_harness::{Cluster, ClusterSpec};

/// An acknowledged write: key, value, the Raft index it was committed at.
type Acked = (String, String, u64);

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 40;

/// Writes keys `w<t>/<n>` with increasing values until told to stop; every write of a key comes
/// from one writer, one at a time, so a key's acknowledged writes are ordered by index.
async fn writer(
    client: Arc<petkv_client::Client>,
    t: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut i = 0usize;
    loop {
        let key = format!("w{t}/{:03}", i % KEYS_PER_WRITER);
        let value = format!("v{i}");
        let put = client.put(key.as_bytes(), value.as_bytes(), None);
        tokio::select! {
            r = put => {
                let r = r.expect("no faults are injected: every write must be acknowledged");
                let index = r.header.expect("header").raft_index;
                acked.lock().expect("lock").push((key, value, index));
            }
            _ = stop.notified() => return,
        }
        i += 1;
    }
}

fn acked_count(acked: &Mutex<Vec<Acked>>) -> usize {
    acked.lock().expect("lock").len()
}

/// The state the acknowledged writes imply at `index`: each key's last write at or below it.
fn expected_at(acked: &[Acked], index: u64) -> BTreeMap<String, String> {
    let mut sorted: Vec<&Acked> = acked.iter().filter(|(_, _, i)| *i <= index).collect();
    sorted.sort_by_key(|(_, _, i)| *i);
    sorted.into_iter().map(|(k, v, _)| (k.clone(), v.clone())).collect()
}

async fn all_keys(cluster: &Cluster) -> anyhow::Result<BTreeMap<String, String>> {
    let client = cluster.client()?;
    let mut req = ScanRequest {
        prefix: b"w".to_vec().into(),
        consistency: Consistency::Linearizable as i32,
        ..Default::default()
    };
    let mut out = BTreeMap::new();
    loop {
        let page = client.scan(req.clone()).await?;
        for kv in page.kvs {
            out.insert(String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned());
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        req.page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_to_exactly_the_acknowledged_data_up_to_its_index() -> anyhow::Result<()> {
    let mut source = healthy_cluster(3, 3, &["--snapshot-every", "300"]).await?;
    let endpoints: Vec<String> = source.ordinals().into_iter().map(|o| source.client_addr(o)).collect();
    let client = Arc::new(source.client()?);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let writers: Vec<_> =
        (0..WRITERS).map(|t| tokio::spawn(writer(client.clone(), t, acked.clone(), stop.clone()))).collect();

    petkv_harness::wait::until("400 acknowledged writes", SETTLE, || async {
        (acked_count(&acked) >= 400).then_some(())
    })
    .await?;
    let acked_before: u64 = acked.lock().expect("lock").iter().map(|(_, _, i)| *i).max().unwrap_or(0);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("under-load.snap");
    // Through a follower's endpoint first: the follower relays the leader's stream.
    let leader = source.wait_leader(SETTLE).await?;
    let mut order = endpoints.clone();
    order.rotate_left(((leader + 1) % 3) as usize);
    let summary =
        petkv::recovery::backup::take(&Client::new(&order, Duration::from_secs(60))?, &file, Duration::from_secs(60))
            .await?;
    let at_backup = acked_count(&acked);
    petkv_harness::wait::until("200 more writes after the backup", SETTLE, || async {
        (acked_count(&acked) >= at_backup + 200).then_some(())
    })
    .await?;
    for _ in 0..WRITERS {
        stop.notify_waiters();
    }
    stop.notify_waiters();
    for w in writers {
        w.abort();
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        summary.raft_index >= acked_before,
        "the backup (index {}) must hold every write acknowledged before it was asked for (up to {acked_before})",
        summary.raft_index
    );
    assert!(acked.iter().any(|(_, _, i)| *i > summary.raft_index), "writes went on after the backup's index");
    let expected = expected_at(&acked, summary.raft_index);
    assert_eq!(summary.keys, expected.len() as u64, "keys in the backup file");

    // The restore applied to the set while it runs (deploy/restore's Job, which mounts
    // petkv-0's volume and runs `petkv restore --hostname petkv-0 --if-empty`): the volume
    // holds a cluster that was not restored from this backup, so the stage is refused even
    // with --if-empty, saying what to do, and nothing is staged.
    let pod0 = petkv::pod::identity::parse_hostname("petkv-0")?;
    let err =
        petkv::recovery::restore::stage(&file, &source.volume(0), &pod0, true).expect_err("a running set's volume");
    let msg = format!("{err:#}");
    assert!(msg.contains("not restored from this backup") && msg.contains("delete its volumes"), "{msg}");
    assert!(!petkv::recovery::restore::is_staged(&source.volume(0)));

    // Staged on a wiped petkv-0 while its peers still run a cluster: refused, nothing forked.
    source.kill(0).await?;
    source.wipe_volume(0)?;
    assert!(matches!(
        petkv::recovery::restore::stage(&file, &source.volume(0), &pod0, false)?,
        StageOutcome::Staged(_)
    ));
    source.start(0)?;
    let exit = source.pod_mut(0)?.wait_exit(SETTLE).await?;
    assert!(exit.is_some_and(|s| !s.success()), "petkv-0 must refuse to restore beside a running cluster");
    let log = source.pod(0)?.log_tail(20);
    assert!(log.contains("would start a second cluster"), "{log}");
    source.down().await?;

    // A new set restored from the backup: ordinal 0 stages it, the others join empty.
    let mut restored = Cluster::new(ClusterSpec { replicas: 3, voters: 3, ..Default::default() })?;
    let pod1 = petkv::pod::identity::parse_hostname("petkv-1")?;
    assert!(matches!(
        petkv::recovery::restore::stage(&file, &restored.volume(0), &pod0, false)?,
        StageOutcome::Staged(_)
    ));
    assert_eq!(petkv::recovery::restore::stage(&file, &restored.volume(1), &pod1, false)?, StageOutcome::NotPrimary);
    restored.start_all()?;
    restored.wait_healthy(SETTLE).await?;
    assert_eq!(all_keys(&restored).await?, expected, "the restored cluster holds exactly the backup's writes");
    // Every member holds the restored data (the followers caught up by snapshot).
    for ordinal in restored.ordinals() {
        let c = restored.client_of(ordinal)?;
        let (k, v) = expected.iter().next_back().expect("keys");
        petkv_harness::wait::until(&format!("restored data on pod {ordinal}"), SETTLE, || async {
            let r = c.get(k.as_bytes(), Consistency::Stale).await.ok()?;
            r.kv.filter(|kv| kv.value.as_ref() == v.as_bytes()).map(|_| ())
        })
        .await?;
    }
    // The log continues after the backup's index.
    let put = restored.client()?.put(b"after-restore", b"1", None).await?;
    assert!(put.header.expect("header").raft_index > summary.raft_index);
    // A restored volume keeps its state: staging again is refused, or with --if-empty (a
    // restarted pod) left alone, since it holds the cluster restored from this very backup.
    restored.down().await?;
    assert!(petkv::recovery::restore::stage(&file, &restored.volume(0), &pod0, false).is_err());
    assert!(matches!(
        petkv::recovery::restore::stage(&file, &restored.volume(0), &pod0, true)?,
        StageOutcome::AlreadyRestored(_)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_backups_are_refused_and_nothing_is_staged() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(1, 1, &[]).await?;
    let client = cluster.client()?;
    for i in 0..50 {
        client.put(format!("k{i}").as_bytes(), b"value", None).await?;
    }
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.snap");
    let summary = petkv::recovery::backup::take(&cluster.client_of(0)?, &good, Duration::from_secs(30)).await?;
    assert_eq!(summary.keys, 50);
    cluster.down().await?;

    let bytes = std::fs::read(&good)?;
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x5a;
    let cases = [
        ("flipped", flipped),
        ("truncated", bytes[..bytes.len() - 7].to_vec()),
        ("headless", bytes[..5].to_vec()),
        ("empty", Vec::new()),
    ];
    let pod0 = petkv::pod::identity::parse_hostname("petkv-0")?;
    for (name, content) in cases {
        let path = dir.path().join(format!("{name}.snap"));
        std::fs::write(&path, content)?;
        let err = petkv::recovery::backup::inspect(&path).expect_err(name);
        assert!(err.to_string().contains("corrupt or truncated"), "{name}: {err}");
        let volume = dir.path().join(format!("volume-{name}"));
        let err = petkv::recovery::restore::stage(&path, &volume, &pod0, false).expect_err(name);
        assert!(err.to_string().contains("corrupt or truncated"), "{name}: {err:#}");
        assert!(!petkv::recovery::restore::is_staged(&volume), "{name}: nothing staged");
    }
    Ok(())
}
