//! The client port's limits hold under abuse (`petkv::edge::limits`): an oversized request is
//! refused with RESOURCE_EXHAUSTED and a clear message; connections over the cap are closed
//! while a connected client is served; one connection cannot run more concurrent streams than
//! the server advertises; requests over the in-flight cap are shed at once; and during a small
//! flood (`petkv-harness flood`) a normal client keeps getting answers with the node's memory
//! bounded. Behaviour only: no latency is asserted.

use std::time::Duration;

use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{Consistency, PutRequest};
use petkv_client::ClientError;
use petkv_e2e::{healthy_cluster, SETTLE};
use petkv_harness::flood::{self, attack, FloodSpec};
use petkv_harness::http::metric;
use petkv_harness::{wait, Cluster};
use tonic::Code;

const OPEN: &str = r#"petkv_open_connections{port="client"}"#;
const REFUSED: &str = r#"petkv_connections_refused_total{port="client"}"#;
const INFLIGHT: &str = "petkv_inflight_requests";
/// A bound that unbounded growth would cross; a node idles at ~30 MiB.
const RSS_BOUND: u64 = 300 * 1024 * 1024;

/// Waits until `series` on pod 0 satisfies `check`, and returns its value.
async fn wait_metric(cluster: &Cluster, series: &str, check: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
    let http = cluster.http_addr(0);
    wait::until(&format!("{series} on pod 0"), SETTLE, || async {
        metric(&http, series).await.ok().filter(|v| check(*v))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_resource_exhausted_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let cluster = healthy_cluster(1, 1, &["--max-key-bytes", "64", "--max-value-bytes", "1024"]).await?;
    let mut kv = KvClient::new(attack::connect(&cluster.client_addr(0)).await?);
    // Over the value limit but within the message limit (1024 + 64 + 64 KiB): validation's answer.
    let put =
        |bytes: usize| PutRequest { key: b"k".to_vec().into(), value: vec![7; bytes].into(), ..Default::default() };
    let status = kv.put(put(2048)).await.expect_err("over --max-value-bytes");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Over the message limit: refused before the message is read.
    let status = kv.put(put(512 * 1024)).await.expect_err("over the message limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    assert!(message.contains("request too large for the client port"), "{message}");
    assert!(message.contains("the limit is: 66624 bytes") && message.contains("--max-value-bytes"), "{message}");
    assert_eq!(metric(&cluster.http_addr(0), "petkv_oversized_requests_total").await?, 1.0);
    // The same connection and the node serve on.
    assert!(kv.put(put(1024)).await?.into_inner().succeeded);
    assert!(cluster.client()?.put(b"after", b"ok", None).await?.succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_a_connected_client_is_served() -> anyhow::Result<()> {
    let cluster = healthy_cluster(1, 1, &["--max-client-connections", "20"]).await?;
    let client = cluster.client()?;
    client.put(b"before", b"1", None).await?;
    let mut flood = attack::open_idle(&cluster.client_addr(0), 60).await;
    assert_eq!(flood.failed, 0, "every connection is accepted by the kernel");
    let refused = wait_metric(&cluster, REFUSED, |v| v >= 41.0).await?;
    let closed = flood.closed_by_server(Duration::from_secs(2)).await;
    assert!(closed >= 41, "at most 19 of 60 fit beside the client: {closed} closed, {refused} refused");
    assert_eq!(metric(&cluster.http_addr(0), OPEN).await?, 20.0, "the cap");
    // The client connected before the flood is served.
    assert!(client.put(b"during", b"2", None).await?.succeeded);
    assert_eq!(
        client.get(b"during", Consistency::Linearizable).await?.kv.map(|kv| kv.value.to_vec()),
        Some(b"2".to_vec())
    );
    // Closing the flood frees the slots for new clients.
    drop(flood);
    wait_metric(&cluster, OPEN, |v| v <= 2.0).await?;
    assert!(cluster.client()?.put(b"after", b"3", None).await?.succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_runs_no_more_streams_than_the_server_allows() -> anyhow::Result<()> {
    let args = ["--max-concurrent-streams", "4", "--request-timeout-ms", "60000"];
    let cluster = healthy_cluster(1, 1, &args).await?;
    let stalled = attack::stall_streams(&cluster.client_addr(0), 12).await?;
    assert_eq!(stalled.server_max_streams, 4, "the server advertises --max-concurrent-streams");
    wait_metric(&cluster, INFLIGHT, |v| v == 4.0).await?;
    // 12 asked for: 4 in flight, the rest wait. Another client on its own connection is served meanwhile, and the stalled connection
    // still holds only 4.
    assert!(cluster.client()?.put(b"k", b"v", None).await?.succeeded);
    assert_eq!(metric(&cluster.http_addr(0), INFLIGHT).await?, 4.0);
    stalled.stop();
    wait_metric(&cluster, INFLIGHT, |v| v == 0.0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_cap_are_shed_at_once() -> anyhow::Result<()> {
    let args = ["--max-inflight-requests", "6", "--request-timeout-ms", "60000"];
    let cluster = healthy_cluster(1, 1, &args).await?;
    let client = cluster.client()?;
    client.put(b"k", b"v", None).await?;
    let stalled = attack::stall_streams(&cluster.client_addr(0), 6).await?;
    wait_metric(&cluster, INFLIGHT, |v| v == 6.0).await?;
    match client.get(b"k", Consistency::Stale).await {
        Err(ClientError::Rejected(status)) => {
            assert_eq!(status.code(), Code::ResourceExhausted);
            assert!(status.message().contains("too many requests"), "{}", status.message());
            assert!(status.message().contains("--max-inflight-requests"), "{}", status.message());
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    assert!(metric(&cluster.http_addr(0), "petkv_requests_shed_total").await? >= 1.0);
    stalled.stop();
    wait_metric(&cluster, INFLIGHT, |v| v == 0.0).await?;
    assert_eq!(client.get(b"k", Consistency::Stale).await?.kv.map(|kv| kv.value.to_vec()), Some(b"v".to_vec()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_client_is_served_through_a_small_flood_with_memory_bounded() -> anyhow::Result<()> {
    let spec = FloodSpec {
        target: None,
        connections: 200,
        oversized_senders: 2,
        oversized_bytes: 2 * 1024 * 1024,
        burst_connections: 1,
        burst_streams: 64,
        phase: Duration::from_secs(2),
        node_args: Vec::new(),
    };
    let report = flood::run(&spec).await?;
    let table = report.table();
    assert_eq!(report.during.errors, 0, "{table}");
    assert!(report.during.ops > 0, "{table}");
    assert_eq!(report.idle_closed_by_server, 0, "200 connections are under the default cap of 1024: {table}");
    assert!(report.open_connections_during >= 200, "{table}");
    assert!(report.node.oversized_requests > 0, "{table}");
    assert!(report.oversized.keys().all(|code| code != "Ok"), "no oversized put is accepted: {table}");
    assert!(report.peak_rss_during < RSS_BOUND && report.hwm_after < RSS_BOUND, "{table}");
    assert!(report.still_serves, "{table}");
    Ok(())
}
