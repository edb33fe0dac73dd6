//! Watches end to end: ordered, unique, gap-free events from any member, replayed from a past
//! revision, resumed across the restart of the member watched, progress when idle, and a
//! watcher that stops reading cut off (RESOURCE_EXHAUSTED) and resumed without a gap.

use std::time::Duration;

use petkv_client::pb::v1::event::EventType;
use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{WatchRequest, WatchResponse};
use petkv_client::{Client, ClientError, Watcher};
use petkv_e2e::{healthy_cluster, SETTLE};
use tonic::Code;

/// `(revision, PUT|DELETE, key, value)` of every event of `r`.
fn events(r: &WatchResponse) -> Vec<(u64, &'static str, String, String)> {
    r.events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let kind = if e.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" };
            (
                kv.mod_revision,
                kind,
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn prefix(p: &str, start_revision: u64) -> WatchRequest {
    WatchRequest { key: p.as_bytes().to_vec().into(), prefix: true, start_revision, ..Default::default() }
}

/// Collects events from `watcher` until `n` have arrived (within `SETTLE`).
async fn collect(watcher: &mut Watcher<'_>, n: usize) -> anyhow::Result<Vec<(u64, &'static str, String, String)>> {
    let mut got = Vec::new();
    tokio::time::timeout(SETTLE, async {
        while got.len() < n {
            got.extend(events(&watcher.next().await?));
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_every_change_in_order_and_replays_the_history() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let follower = (leader + 1) % 3;
    let writer = cluster.client_of(leader)?;
    let on_follower = cluster.client_of(follower)?;
    writer.put(b"other", b"not watched", None).await?;

    let mut watcher = Watcher::new(&on_follower, WatchRequest { prev_kv: true, ..prefix("w/", 0) });
    let created = watcher.next().await?;
    assert!(created.created, "{created:?}");
    let from = created.header.expect("header").revision + 1;
    writer.put(b"w/a", b"1", None).await?;
    writer.put(b"outside", b"x", None).await?;
    writer.put(b"w/b", b"2", None).await?;
    writer.put(b"w/a", b"3", None).await?;
    writer.delete(b"w/b", None).await?;
    let got = collect(&mut watcher, 4).await?;
    let kinds: Vec<_> = got.iter().map(|(_, k, key, v)| (*k, key.as_str(), v.as_str())).collect();
    assert_eq!(kinds, [("PUT", "w/a", "1"), ("PUT", "w/b", "2"), ("PUT", "w/a", "3"), ("DELETE", "w/b", "")]);
    let revisions: Vec<u64> = got.iter().map(|e| e.0).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "ordered and unique: {revisions:?}");
    assert!(revisions[0] >= from, "changes after the watch began: {revisions:?} from {from}");

    // From a past revision, the history is replayed, the same events at the same revisions.
    let mut replay = Watcher::new(&on_follower, prefix("w/", from));
    let again = collect(&mut replay, 4).await?;
    assert_eq!(again, got);

    // With prev_kv, a change carries the value before it.
    let mut with_prev = Watcher::new(&on_follower, WatchRequest { prev_kv: true, ..prefix("w/a", got[2].0) });
    let r = loop {
        let r = with_prev.next().await?;
        if !r.events.is_empty() {
            break r;
        }
    };
    let prev = r.events[0].prev_kv.as_ref().expect("prev_kv");
    assert_eq!((prev.value.as_ref(), r.events[0].kv.as_ref().expect("kv").value.as_ref()), (&b"1"[..], &b"3"[..]));

    // Progress when idle: the watcher is told how far it is current.
    let progress_req = WatchRequest { progress_interval_ms: 200, ..prefix("w/", 0) };
    let mut idle = Watcher::new(&on_follower, progress_req);
    let head = idle.next().await?.header.expect("header").revision;
    let progress = tokio::time::timeout(SETTLE, idle.next()).await??;
    assert!(progress.progress && progress.events.is_empty(), "{progress:?}");
    assert_eq!(progress.header.expect("header").revision, head);

    // Bad input and a compacted start are refused with the reason.
    let refused = |r: Result<WatchResponse, ClientError>| r.expect_err("refused").status().map(|s| s.code());
    let mut bad = Watcher::new(&on_follower, WatchRequest::default());
    assert_eq!(refused(bad.next().await), Some(Code::InvalidArgument));
    writer.compact(from + 2).await?;
    petkv_harness::wait::until("the follower to apply the compaction", SETTLE, || async {
        (on_follower.status().await.ok()?.compacted_revision == from + 2).then_some(())
    })
    .await?;
    let mut old = Watcher::new(&on_follower, prefix("w/", from));
    let err = old.next().await.expect_err("compacted");
    let status = err.status().expect("a status");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains(&format!("oldest revision kept is {}", from + 2)), "{}", status.message());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_member_when_the_one_it_watched_restarts() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let (watched, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let endpoints = [cluster.client_addr(watched), cluster.client_addr(other)];
    let watch_client = cluster.client_for(&endpoints, Duration::from_secs(10))?;
    let writer = cluster.client_for(&[cluster.client_addr(leader)], Duration::from_secs(10))?;
    let mut watcher = Watcher::new(&watch_client, prefix("seq/", 0));
    assert!(watcher.next().await?.created);

    let total = 60usize;
    let writing = async {
        for i in 0..total {
            writer.put(format!("seq/{i:03}").as_bytes(), b"v", None).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    };
    let watching = collect(&mut watcher, total);
    let restart = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.kill(watched).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.start(watched)?;
        anyhow::Ok(())
    };
    let (w, got, r) = tokio::join!(writing, watching, restart);
    w?;
    r?;
    let got = got?;
    let keys: Vec<String> = got.iter().map(|e| e.2.clone()).collect();
    let want: Vec<String> = (0..total).map(|i| format!("seq/{i:03}")).collect();
    assert_eq!(keys, want, "every change once, in order, across the restart");
    assert!(watcher.streams_opened() >= 2, "the watch resumed on a new stream");
    cluster.wait_member(watched, SETTLE).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_and_resumes_without_a_gap() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &["--watch-slow-ms", "300"]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let writer = cluster.client_of(leader)?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(leader)))?.connect().await?;
    let mut stalled = KvClient::new(channel).watch(prefix("big/", 0)).await?.into_inner();
    let created = stalled.message().await?.expect("created");
    let from = created.header.expect("header").revision + 1;

    // Far more than the buffers hold (the feed's updates, HTTP/2's windows), unread.
    let value = vec![b'x'; 16 * 1024];
    let total = 400usize;
    for i in 0..total {
        writer.put(format!("big/{i:04}").as_bytes(), &value, None).await?;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Now read: what was buffered, then the end.
    let mut received = Vec::new();
    let end = loop {
        match stalled.message().await {
            Ok(Some(r)) => received.extend(events(&r)),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(received.len() < total, "it was cut off before the end: {}", received.len());
    let resume_from = received.last().map_or(from, |e| e.0 + 1);
    assert!(end.message().contains(&format!("watch again from revision {resume_from}")), "{}", end.message());

    // Resumed from there, nothing is missing and nothing repeats.
    let c: Client = cluster.client_of(leader)?;
    let mut resumed = Watcher::new(&c, prefix("big/", resume_from));
    let rest = collect(&mut resumed, total - received.len()).await?;
    let keys: Vec<String> = received.iter().chain(&rest).map(|e| e.2.clone()).collect();
    let want: Vec<String> = (0..total).map(|i| format!("big/{i:04}")).collect();
    assert_eq!(keys, want);
    // The node is fine: writes go on.
    writer.put(b"after", b"ok", None).await?;
    Ok(())
}
