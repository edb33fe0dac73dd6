//! Revisions and the retained history, end to end: every write that changes a key takes the
//! next revision, reads at a past revision see the keys as they were (on any member, through
//! restarts and snapshot installs), and compaction refuses older reads naming the oldest
//! revision kept.

use petkv_client::pb::v1::{Consistency, ScanRequest};
use petkv_client::ClientError;
use petkv_e2e::{healthy_cluster, refused, wait_value_on, SETTLE};
use petkv_harness::wait;
use tonic::Code;

fn value(r: &petkv_client::pb::v1::GetResponse) -> Option<String> {
    r.kv.as_ref().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_past_revisions_hold_on_every_member_and_compaction_refuses_older_ones() -> anyhow::Result<()> {
    // Frequent snapshots, so a wiped member catches up by snapshot and must get the history
    // from it.
    let mut cluster = healthy_cluster(3, 3, &["--snapshot-every", "20"]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let follower = (leader + 1) % 3;
    let c = cluster.client_of(follower)?;

    // Every write that changes a key takes the next revision; the others take none.
    let mut revisions = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let put = c.put(b"k", v.as_bytes(), None).await?;
        revisions.push(put.header.expect("header").revision);
    }
    let (r1, r2, r3) = (revisions[0], revisions[1], revisions[2]);
    assert_eq!((r2, r3), (r1 + 1, r1 + 2), "consecutive revisions: {revisions:?}");
    let failed = c.put(b"k", b"lost", Some(r1)).await?;
    assert!(!failed.succeeded);
    assert_eq!(failed.header.expect("header").revision, r3, "a failed compare takes no revision");
    let nothing = c.delete(b"absent", None).await?;
    assert_eq!(nothing.header.expect("header").revision, r3, "a delete of nothing takes none");
    let deleted = c.delete(b"k", None).await?;
    let r4 = deleted.header.expect("header").revision;
    assert_eq!(r4, r3 + 1);
    let kv = c.put(b"k", b"v5", None).await?.kv.expect("kv");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r4 + 1, r4 + 1, 1), "recreated after a delete");

    // Reads at past revisions, linearizable through the leader and stale on every member.
    let expected = [(r1, Some("v1")), (r2, Some("v2")), (r3, Some("v3")), (r4, None), (r4 + 1, Some("v5"))];
    let check_all = |cluster: &petkv_harness::Cluster| {
        let clients = (0..3).map(|o| cluster.client_of(o)).collect::<anyhow::Result<Vec<_>>>();
        async move {
            let clients = clients?;
            for (at, want) in expected {
                let lin = clients[0].get_at(b"k", Consistency::Linearizable, at).await?;
                assert_eq!(value(&lin).as_deref(), want, "linearizable at {at}");
                assert_eq!(lin.header.expect("header").revision, at);
                for (o, client) in clients.iter().enumerate() {
                    let stale = client.get_at(b"k", Consistency::Stale, at).await?;
                    assert_eq!(value(&stale).as_deref(), want, "stale on ordinal {o} at {at}");
                }
            }
            anyhow::Ok(())
        }
    };
    // Every member has applied the last write before its stale reads are checked.
    for o in 0..3 {
        wait_value_on(&cluster, o, "k", "v5").await?;
    }
    check_all(&cluster).await?;

    // A scan at a fixed revision stays at that state while writes go on.
    for i in 0..10 {
        c.put(format!("s/{i:02}").as_bytes(), b"x", None).await?;
    }
    let first = c.scan(ScanRequest { prefix: b"s/".to_vec().into(), limit: 4, ..Default::default() }).await?;
    let at = first.header.expect("header").revision;
    c.delete(b"s/05", None).await?;
    c.put(b"s/99", b"late", None).await?;
    let mut keys: Vec<String> = first.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = c
            .scan(ScanRequest {
                prefix: b"s/".to_vec().into(),
                limit: 4,
                page_token: token,
                revision: at,
                ..Default::default()
            })
            .await?;
        keys.extend(page.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()));
        token = page.next_page_token;
    }
    let want: Vec<String> = (0..10).map(|i| format!("s/{i:02}")).collect();
    assert_eq!(keys, want, "every page read revision {at}");

    // The history survives a restart of every pod and a wiped member catching up by snapshot.
    for o in 0..3 {
        cluster.kill(o).await?;
    }
    cluster.start_all()?;
    for o in 0..3 {
        cluster.wait_member(o, SETTLE).await?;
    }
    cluster.kill(follower).await?;
    cluster.wipe_volume(follower)?;
    let c = cluster.client_of(leader)?;
    for i in 0..40 {
        c.put(format!("fill/{i}").as_bytes(), b"y", None).await?;
    }
    cluster.start(follower)?;
    let back = cluster.wait_member(follower, SETTLE).await?;
    wait::until("the wiped member to catch up", SETTLE, || async {
        let s = cluster.client_of(follower).ok()?.status().await.ok()?;
        (s.applied_index >= back.committed_index && s.snapshot_index > 0).then_some(())
    })
    .await?;
    wait_value_on(&cluster, follower, "fill/39", "y").await?;
    check_all(&cluster).await?;

    // Compaction: older reads are refused naming the oldest revision kept; later ones work.
    let compacted = c.compact(r3).await?;
    assert_eq!(compacted.compacted, r3);
    for o in 0..3 {
        let client = cluster.client_of(o)?;
        wait::until("the compaction to apply", SETTLE, || async {
            (client.status().await.ok()?.compacted_revision == r3).then_some(())
        })
        .await?;
        let old = client.get_at(b"k", Consistency::Stale, r2).await;
        match &old {
            Err(ClientError::Rejected(s)) => {
                assert_eq!(s.code(), Code::FailedPrecondition);
                assert!(s.message().contains(&format!("oldest revision kept is {r3}")), "{}", s.message());
            }
            other => panic!("a read of a compacted revision on ordinal {o}: {other:?}"),
        }
        assert_eq!(value(&client.get_at(b"k", Consistency::Stale, r3).await?).as_deref(), Some("v3"));
    }
    let future = c.get_at(b"k", Consistency::Linearizable, u64::MAX / 2).await;
    assert_eq!(refused("a future revision", future), Code::OutOfRange);
    assert_eq!(refused("compacting again", c.compact(r2).await), Code::FailedPrecondition);
    assert_eq!(refused("compacting the future", c.compact(u64::MAX / 2).await), Code::OutOfRange);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_keeps_the_history_to_the_retention_on_every_member() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &["--history-retention", "20"]).await?;
    let c = cluster.client()?;
    let mut last = 0;
    for i in 0..60 {
        last = c.put(format!("r/{i}").as_bytes(), b"v", None).await?.header.expect("header").revision;
    }
    for o in 0..3 {
        let member = cluster.client_of(o)?;
        let s = wait::until("the history cut back to the retention", SETTLE, || async {
            let s = member.status().await.ok()?;
            // Kept about the retention: at most a tenth over it.
            (s.revision == last && s.compacted_revision > 0 && s.revision - s.compacted_revision <= 22).then_some(s)
        })
        .await?;
        assert!(s.revision - s.compacted_revision >= 20, "no more than needed was dropped: {s:?}");
        assert_eq!(
            refused("a read before the retention", member.get_at(b"r/0", Consistency::Stale, 1).await),
            Code::FailedPrecondition
        );
        assert!(member.get_at(b"r/59", Consistency::Stale, last).await?.kv.is_some());
    }
    Ok(())
}
