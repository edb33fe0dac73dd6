//! The HTTP port of every pod: `/metrics` agrees with the cluster's state and counts the
//! requests it served; `/healthz` and `/readyz` answer; a killed leader's successor shows up.

use petkv_e2e::{healthy_cluster, http_get, sample, SETTLE};
use petkv_harness::{wait, Cluster};

const PUTS: u64 = 12;
const PUT_OK: &str = r#"petkv_grpc_requests_total{method="/petkv.v1.KV/Put",code="OK"}"#;
const LEADER: &str = r#"petkv_raft_state{state="leader"}"#;

async fn scrape(cluster: &Cluster, ordinal: u32) -> Option<String> {
    match http_get(&cluster.http_addr(ordinal), "/metrics").await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Scrapes every given pod; `None` unless all answer.
async fn scrape_all(cluster: &Cluster, ordinals: &[u32]) -> Option<Vec<String>> {
    let mut all = Vec::new();
    for o in ordinals {
        all.push(scrape(cluster, *o).await?);
    }
    Some(all)
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Every pod reports one leader (exactly one of them says it leads), the same term and leader
/// id, and applied at least `index`. Returns (term, leader id).
fn agreed(scrapes: &[String], index: u64) -> Option<(f64, f64)> {
    let leaders = scrapes.iter().filter(|t| sample(t, LEADER) == Some(1.0)).count();
    let term = sample(&scrapes[0], "petkv_raft_term")?;
    let leader = sample(&scrapes[0], "petkv_raft_leader_id")?;
    let same = scrapes.iter().all(|t| {
        sample(t, "petkv_raft_term") == Some(term)
            && sample(t, "petkv_raft_leader_id") == Some(leader)
            && sample(t, "petkv_raft_applied_index").is_some_and(|a| a >= index as f64)
    });
    (leaders == 1 && leader > 0.0 && same).then_some((term, leader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_exports_metrics_and_health_over_http() -> anyhow::Result<()> {
    let mut cluster = healthy_cluster(3, 3, &["--snapshot-every", "10"]).await?;
    let client = cluster.client()?;
    let mut last_index = 0;
    for i in 0..PUTS {
        let r = client.put(format!("key-{i}").as_bytes(), b"value", None).await?;
        last_index = r.header.map(|h| h.raft_index).unwrap_or(0);
    }
    assert!(last_index >= PUTS);

    let all = [0, 1, 2];
    let scrapes = wait::until("every pod to agree on the leader and apply the puts", SETTLE, || async {
        let scrapes = scrape_all(&cluster, &all).await?;
        agreed(&scrapes, last_index).map(|_| scrapes)
    })
    .await?;
    let puts: f64 = scrapes.iter().map(|t| sample(t, PUT_OK).unwrap_or(0.0)).sum();
    let merged: f64 = scrapes
        .iter()
        .map(|t| sample(t, r#"petkv_raft_batch_entries_sum{stage="client_writes"}"#).unwrap_or(0.0))
        .sum();
    assert!(merged >= PUTS as f64, "the leader counts every client write in a write batch: {merged}");
    assert!(puts >= PUTS as f64, "put requests counted: {puts}");
    for text in &scrapes {
        assert_eq!(value(text, r#"petkv_raft_members{role="voter"}"#), 3.0);
        assert_eq!(value(text, r#"petkv_raft_members{role="learner"}"#), 0.0);
        assert_eq!(value(text, "petkv_ready"), 1.0);
        assert!(value(text, "petkv_raft_commit_index") >= last_index as f64);
        assert!(value(text, "petkv_raft_last_log_index") >= last_index as f64);
        assert!(value(text, r#"petkv_fsync_duration_seconds_count{store="log"}"#) > 0.0, "{text}");
        // Every member appended and applied the puts; how many per batch is the bench's figure.
        assert!(value(text, r#"petkv_raft_batch_entries_sum{stage="append"}"#) >= PUTS as f64, "{text}");
        assert!(value(text, r#"petkv_raft_batch_entries_sum{stage="apply"}"#) >= PUTS as f64, "{text}");
        assert!(text.contains("# TYPE petkv_grpc_request_duration_seconds histogram"));
        assert!(!text.contains("key-"), "no keys in the metrics");
    }
    // Snapshots every 10 entries: each pod builds one on its own.
    wait::until("a snapshot to be built on every pod", SETTLE, || async {
        let scrapes = scrape_all(&cluster, &all).await?;
        scrapes
            .iter()
            .all(|t| {
                sample(t, r#"petkv_snapshots_total{kind="built"}"#).is_some_and(|n| n >= 1.0)
                    && sample(t, r#"petkv_snapshot_size_bytes{kind="built"}"#).is_some_and(|b| b > 0.0)
                    && sample(t, r#"petkv_snapshot_entries{kind="built"}"#).is_some_and(|e| e >= 1.0)
            })
            .then_some(())
    })
    .await?;
    for o in all {
        let addr = cluster.http_addr(o);
        assert_eq!(http_get(&addr, "/healthz").await?, (200, "ok\n".to_string()));
        assert_eq!(http_get(&addr, "/readyz").await?.0, 200);
        let (status, _) = http_get(&addr, "/nothing-here").await?;
        assert_eq!(status, 404);
    }

    // Kill the leader: the other two agree on a successor in a later term and are ready again;
    // the dead pod's port is closed.
    let (term, _) = agreed(&scrapes, last_index).expect("agreed above");
    let leader = cluster.wait_leader(SETTLE).await?;
    cluster.kill(leader).await?;
    let rest: Vec<u32> = all.into_iter().filter(|o| *o != leader).collect();
    let new_term = wait::until("the other two pods to agree on a new leader", SETTLE, || async {
        let scrapes = scrape_all(&cluster, &rest).await?;
        agreed(&scrapes, last_index).and_then(|(t, _)| (t > term).then_some(t))
    })
    .await?;
    assert!(new_term > term);
    for o in &rest {
        let addr = cluster.http_addr(*o);
        wait::until("readyz 200 after failover", SETTLE, || async {
            http_get(&addr, "/readyz").await.ok().filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await?;
    }
    assert!(http_get(&cluster.http_addr(leader), "/healthz").await.is_err(), "a killed pod does not answer");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_health_service_serves_once_the_node_started() -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let cluster = healthy_cluster(1, 1, &[]).await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(0)))?.connect().await?;
    let mut health = HealthClient::new(channel);
    for service in [petkv::pod::server::STARTUP_SERVICE, petkv::pod::server::LIVENESS_SERVICE] {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await?.into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service}");
    }
    // Readiness is re-evaluated periodically, so it may trail the status the harness waited for.
    wait::until("the readiness health service to serve", SETTLE, || {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest { service: petkv::pod::server::READINESS_SERVICE.into() };
            let reply = health.check(request).await.ok()?.into_inner();
            (reply.status() == ServingStatus::Serving).then_some(())
        }
    })
    .await?;
    let (status, body) = http_get(&cluster.http_addr(0), "/metrics").await?;
    assert_eq!(status, 200);
    assert_eq!(sample(&body, LEADER), Some(1.0), "{body}");
    Ok(())
}
