//! The data path through real nodes: followers handing writes and read indexes to the leader,
//! compare-and-set, scans, deduplication of retried writes, health and reflection, what a
//! restarted member reports before it rejoins. (Every bad input the API can receive:
//! `bad_input.rs`.)

use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{Consistency, GetRequest, PutRequest, ScanRequest, WriteId};
use petkv_e2e::healthy_cluster;
use petkv_harness::Cluster;
use tonic::Code;

async fn raw(cluster: &Cluster, ordinal: u32) -> anyhow::Result<KvClient<tonic::transport::Channel>> {
    Ok(KvClient::connect(format!("http://{}", cluster.client_addr(ordinal))).await?)
}

async fn follower(cluster: &Cluster) -> anyhow::Result<u32> {
    let leader = cluster.wait_leader(petkv_e2e::SETTLE).await?;
    Ok((leader + 1) % 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_path_through_a_follower() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let f = follower(&cluster).await?;
    let c = cluster.client_of(f)?;

    // A write sent to a follower is forwarded and acknowledged with its revision.
    let put = c.put(b"a/1", b"one", None).await?;
    assert!(put.succeeded);
    let kv = put.kv.expect("kv");
    assert_eq!((kv.version, kv.create_revision), (1, kv.mod_revision));
    assert!(kv.value.is_empty(), "a successful put does not echo the value back");
    assert_eq!(put.header.expect("header").revision, kv.mod_revision);

    // Compare-and-set on the mod revision.
    let stale = c.put(b"a/1", b"lost", Some(kv.mod_revision + 1000)).await?;
    assert!(!stale.succeeded);
    assert_eq!(stale.kv.expect("current").value.as_ref(), b"one");
    let cas = c.put(b"a/1", b"two", Some(kv.mod_revision)).await?;
    assert!(cas.succeeded);
    assert_eq!(cas.kv.as_ref().expect("kv").version, 2);
    let create_only = c.put(b"a/1", b"three", Some(0)).await?;
    assert!(!create_only.succeeded, "if_mod_revision 0 means the key must not exist");

    // Scans by prefix and range, with paging.
    for i in 2..=7 {
        c.put(format!("a/{i}").as_bytes(), b"x", None).await?;
    }
    c.put(b"b/1", b"y", None).await?;
    let mut req = ScanRequest { prefix: b"a/".to_vec().into(), limit: 3, ..Default::default() };
    let mut keys = Vec::new();
    loop {
        let page = c.scan(req.clone()).await?;
        keys.extend(page.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(keys, ["a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7"]);
    let range = c
        .scan(ScanRequest { start_key: b"a/3".to_vec().into(), end_key: b"a/5".to_vec().into(), ..Default::default() })
        .await?;
    assert_eq!(range.kvs.len(), 2);

    // Conditional and plain deletes.
    let del_bad = c.delete(b"a/1", Some(1)).await?;
    assert!(!del_bad.succeeded);
    let del = c.delete(b"a/1", None).await?;
    assert!(del.succeeded && del.deleted);
    let again = c.delete(b"a/1", None).await?;
    assert!(again.succeeded && !again.deleted);
    assert!(c.get(b"a/1", Consistency::Linearizable).await?.kv.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let f = follower(&cluster).await?;
    let mut kv = raw(&cluster, f).await?;
    let id = WriteId { client_id: 42, sequence: 7 };
    let put = |value: &'static [u8]| PutRequest {
        key: b"counter".to_vec().into(),
        value: value.to_vec().into(),
        write_id: Some(id),
        ..Default::default()
    };
    let first = kv.put(put(b"1")).await?.into_inner();
    // The same write id again (a retry after a timeout): same answer, nothing applied.
    let retry = kv.put(put(b"1")).await?.into_inner();
    assert_eq!(first.kv, retry.kv);
    assert_eq!(first.header.as_ref().map(|h| h.raft_index), retry.header.as_ref().map(|h| h.raft_index));
    let now = kv.get(GetRequest { key: b"counter".to_vec().into(), ..Default::default() }).await?.into_inner();
    assert_eq!(now.kv.expect("kv").version, 1);
    // An older sequence of the same client is refused, not applied.
    let old = PutRequest { write_id: Some(WriteId { client_id: 42, sequence: 6 }), ..put(b"old") };
    let err = kv.put(old).await.expect_err("stale sequence");
    assert_eq!(err.code(), Code::FailedPrecondition);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_answers_with_the_key_before_it_only_when_asked() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let f = follower(&cluster).await?;
    let mut kv = raw(&cluster, f).await?;
    let put = |value: &'static [u8], prev_kv: bool| PutRequest {
        key: b"k".to_vec().into(),
        value: value.to_vec().into(),
        prev_kv,
        ..Default::default()
    };
    let first = kv.put(put(b"v1", true)).await?.into_inner();
    assert!(first.succeeded && first.prev_kv.is_none(), "a new key has no previous: {first:?}");
    let r1 = first.header.expect("header").revision;
    let kv1 = first.kv.expect("kv");
    assert_eq!((kv1.key.as_ref(), kv1.create_revision, kv1.mod_revision, kv1.version), (&b"k"[..], r1, r1, 1));

    let plain = kv.put(put(b"v2", false)).await?.into_inner();
    assert!(plain.prev_kv.is_none(), "not asked, not sent");
    let r2 = plain.header.expect("header").revision;

    let third = kv.put(put(b"v3", true)).await?.into_inner();
    let prev = third.prev_kv.expect("previous");
    assert_eq!((prev.value.as_ref(), prev.mod_revision, prev.version), (&b"v2"[..], r2, 2));
    let r3 = third.header.expect("header").revision;
    let kv3 = third.kv.expect("kv");
    assert_eq!((kv3.create_revision, kv3.mod_revision, kv3.version), (r1, r3, 3), "as a plain put answers");
    assert!(kv3.value.is_empty(), "the client has the value it wrote");

    // With a compare: a mismatch writes nothing and answers with the key as it is.
    let stale = PutRequest { if_mod_revision: Some(r2), ..put(b"lost", true) };
    let refused = kv.put(stale).await?.into_inner();
    assert!(!refused.succeeded && refused.prev_kv.is_none());
    let current = refused.kv.expect("current");
    assert_eq!((current.value.as_ref(), current.mod_revision), (&b"v3"[..], r3));
    let matching = PutRequest { if_mod_revision: Some(r3), ..put(b"v4", true) };
    let written = kv.put(matching).await?.into_inner();
    assert!(written.succeeded);
    assert_eq!(written.prev_kv.map(|p| p.value.to_vec()), Some(b"v3".to_vec()));

    // A retry with the same write id gets the same answer, the previous value included.
    let id = WriteId { client_id: 9, sequence: 1 };
    let once = PutRequest { write_id: Some(id), ..put(b"v5", true) };
    let a = kv.put(once.clone()).await?.into_inner();
    let b = kv.put(once).await?.into_inner();
    assert_eq!((a.kv, a.prev_kv.map(|p| p.value.to_vec())), (b.kv, Some(b"v4".to_vec())));
    assert_eq!(b.prev_kv.map(|p| p.value.to_vec()), Some(b"v4".to_vec()));

    // The CLI's --prev-kv.
    let out = tokio::process::Command::new(petkv_harness::binary::petkv_binary()?)
        .args(["put", "k", "v6", "--prev-kv", "--output", "json", "--endpoints", &cluster.client_addr(f)])
        .kill_on_drop(true)
        .output()
        .await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["prev_kv"]["value"], "v5", "{json}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served_on_the_client_port() -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cluster = healthy_cluster(3, 3, &[]).await?;
    let endpoint = format!("http://{}", cluster.client_addr(1));
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?.connect().await?;
    let mut health = HealthClient::new(channel.clone());
    for service in ["liveness", "readiness", "petkv.v1.KV"] {
        let status = petkv_harness::wait::until(&format!("{service} SERVING"), petkv_e2e::SETTLE, || {
            let mut health = health.clone();
            async move {
                let r = health.check(HealthCheckRequest { service: service.into() }).await.ok()?.into_inner();
                (r.status == ServingStatus::Serving as i32).then_some(r.status)
            }
        })
        .await?;
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection.server_reflection_info(tokio_stream::iter(vec![request])).await?.into_inner();
    let reply = replies.message().await?.expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        anyhow::bail!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    // The public API (petkv-client's descriptors) and the peer transport (the node's).
    for service in ["petkv.v1.KV", "petkv.v1.Cluster", "petkv.raft.v1.Raft"] {
        assert!(names.iter().any(|n| n == service), "{service} missing from {names:?}");
    }
    Ok(())
}

/// A follower serves linearizable reads itself (with the leader's read index) and answers a
/// write once it has applied it, so what was acknowledged anywhere is read here at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_linearizable_reads_itself_and_reads_its_own_writes() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let leader = cluster.wait_leader(petkv_e2e::SETTLE).await?;
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
    let on_leader = cluster.client_of(leader)?;
    let on_f1 = cluster.client_of(f1)?;
    let f1_id = cluster.status(f1).await?.node_id;
    for i in 0..20u32 {
        // Acknowledged by the leader, read at once on a follower: linearizable, served there.
        let key = format!("lin/{i}");
        on_leader.put(key.as_bytes(), &i.to_be_bytes(), None).await?;
        let got = on_f1.get(key.as_bytes(), Consistency::Linearizable).await?;
        assert_eq!(got.kv.expect("the acknowledged write").value.as_ref(), i.to_be_bytes());
        assert_eq!(got.header.expect("header").served_by, f1_id, "served by the follower itself");
        // Written through one follower, read stale on it at once: it applied it before answering.
        let mine = format!("own/{i}");
        let put = on_f1.put(mine.as_bytes(), b"v", None).await?;
        let stale = on_f1.get(mine.as_bytes(), Consistency::Stale).await?;
        assert_eq!(stale.kv.expect("its own write").mod_revision, put.kv.expect("kv").mod_revision);
    }
    // Many reads at once on the other follower share read-index rounds; each sees the last write.
    on_leader.put(b"lin/last", b"seen", None).await?;
    let on_f2 = std::sync::Arc::new(cluster.client_of(f2)?);
    let reads: Vec<_> = (0..64)
        .map(|_| {
            let c = on_f2.clone();
            tokio::spawn(async move { c.get(b"lin/last", Consistency::Linearizable).await })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await??.kv.expect("the last write").value.as_ref(), b"seen");
    }
    Ok(())
}

/// A restarted member answers `status` before Raft runs again with what its volume holds, not
/// zeros: after a graceful stop (SIGTERM: its applied state was written out) its applied index;
/// after kill -9 its log and term (the applied state is rebuilt from the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_reports_its_persisted_applied_index_from_its_first_answer() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &[]).await?;
    let f = follower(&cluster).await?;
    let c = cluster.client_of(f)?;
    for i in 0..50u32 {
        c.put(format!("k{i}").as_bytes(), b"v", None).await?;
    }
    let before = petkv_harness::wait::until("the follower to apply every write", petkv_e2e::SETTLE, || async {
        let s = cluster.status(f).await.ok()?;
        (s.applied_index >= c.get(b"k49", Consistency::Linearizable).await.ok()?.header?.raft_index).then_some(s)
    })
    .await?;
    for graceful in [true, false] {
        if graceful {
            cluster.terminate(f).await?;
        } else {
            cluster.kill(f).await?;
        }
        cluster.start(f)?;
        let first = petkv_harness::wait::until("the restarted member's first status", petkv_e2e::SETTLE, || async {
            cluster.status(f).await.ok()
        })
        .await?;
        let seen = format!("graceful {graceful}: first answer {first:?}, before {before:?}");
        if graceful {
            assert!(first.applied_index >= before.applied_index, "{seen}");
        }
        assert!(first.last_log_index >= before.applied_index, "{seen}");
        assert!(first.term >= before.term, "{seen}");
        cluster.wait_healthy(petkv_e2e::SETTLE).await?;
    }
    Ok(())
}
