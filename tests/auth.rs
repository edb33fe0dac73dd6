//! Authentication end to end: a 3-pod set started with `--auth-tokens` (`ClusterSpec::auth`:
//! an admin token for the harness, a write and a read token for the user). Clients without a
//! token or with an unknown one are refused with UNAUTHENTICATED; a role too low for a method
//! gets PERMISSION_DENIED, on the node the client talks to and again on the leader when a
//! request arrives marked as forwarded; refusals are counted in /metrics, and no token nor a
//! stored value appears in the metrics or the logs.

use std::time::Duration;

use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{Consistency, PutRequest};
use petkv_client::{Client, ClientError};
use petkv_e2e::{endpoints, healthy, http_get, refused, sample, SETTLE};
use petkv_harness::{wait, Cluster, ClusterSpec};
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(5);
const SECRET_VALUE: &str = "value-that-must-not-leak-7f3a";

fn with_token(endpoints: &[String], token: &str) -> anyhow::Result<Client> {
    Ok(Client::new(endpoints, TIMEOUT)?.with_token(token)?)
}

/// The sum of one series over every pod's /metrics.
async fn total(cluster: &Cluster, series: &str) -> anyhow::Result<(f64, Vec<String>)> {
    let (mut sum, mut pages) = (0.0, Vec::new());
    for ordinal in cluster.ordinals() {
        let (code, body) = http_get(&cluster.http_addr(ordinal), "/metrics").await?;
        assert_eq!(code, 200);
        sum += sample(&body, series).unwrap_or(0.0);
        pages.push(body);
    }
    Ok((sum, pages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_what_their_role_allows_and_nothing_more() -> anyhow::Result<()> {
    let cluster = healthy(ClusterSpec { auth: true, ..Default::default() }).await?;
    let auth = cluster.auth().expect("the set runs with auth").clone();
    let eps = endpoints(&cluster);
    let unknown_token = "not-a-known-token-0123456789abcdef";

    // No credentials, and credentials no one holds: UNAUTHENTICATED, for reads and writes.
    let anonymous = Client::new(&eps, TIMEOUT)?;
    assert_eq!(refused("anonymous get", anonymous.get(b"k", Consistency::Linearizable).await), Code::Unauthenticated);
    assert_eq!(refused("anonymous put", anonymous.put(b"k", b"v", None).await), Code::Unauthenticated);
    assert_eq!(refused("anonymous status", anonymous.status().await), Code::Unauthenticated);
    let stranger = with_token(&eps, unknown_token)?;
    assert_eq!(refused("unknown token get", stranger.get(b"k", Consistency::Stale).await), Code::Unauthenticated);

    // write: puts and deletes, reads too; not admin.
    let writer = with_token(&eps, &auth.write)?;
    writer.put(b"k", SECRET_VALUE.as_bytes(), None).await?;
    assert_eq!(refused("write scale", writer.scale(3).await), Code::PermissionDenied);

    // read: reads (Members asks every member with the caller's token), no writes.
    let reader = with_token(&eps, &auth.read)?;
    let got = reader.get(b"k", Consistency::Linearizable).await?;
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(SECRET_VALUE.as_bytes().to_vec()));
    let members = reader.members().await?;
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| m.status.is_some()), "{members:?}");
    let denied = reader.put(b"k", b"overwritten", None).await;
    match &denied {
        Err(ClientError::Rejected(s)) => {
            assert_eq!(s.code(), Code::PermissionDenied);
            assert_eq!(s.message(), "role read may not call /petkv.v1.KV/Put (needs write)");
        }
        other => panic!("a read token wrote: {other:?}"),
    }
    assert_eq!(refused("read delete", reader.delete(b"k", None).await), Code::PermissionDenied);

    // admin: scale and backup.
    let admin = with_token(&eps, &auth.admin)?;
    assert_eq!(admin.scale(3).await?.replicas, 3);
    let dir = tempfile::tempdir()?;
    let backup = petkv::recovery::backup::take(&admin, &dir.path().join("b.snap"), Duration::from_secs(30)).await?;
    assert_eq!(backup.keys, 1);
    assert!(petkv::recovery::backup::take(&writer, &dir.path().join("w.snap"), Duration::from_secs(30)).await.is_err());

    // Through a follower: the write is forwarded to the leader with the client's token.
    let leader = cluster.wait_leader(SETTLE).await?;
    let follower = (leader + 1) % 3;
    let via_follower = [cluster.client_addr(follower)];
    with_token(&via_follower, &auth.write)?.put(b"forwarded", b"yes", None).await?;
    let read_via_follower = with_token(&via_follower, &auth.read)?;
    assert_eq!(
        refused("read put via follower", read_via_follower.put(b"forwarded", b"no", None).await),
        Code::PermissionDenied
    );

    // A client that marks its request as forwarded gains nothing: the leader checks anyway.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(leader)))?.connect().await?;
    let mut kv = KvClient::new(channel);
    let forged = |token: Option<&str>| {
        let mut req = tonic::Request::new(PutRequest {
            key: b"forged".to_vec().into(),
            value: b"x".to_vec().into(),
            ..Default::default()
        });
        req.metadata_mut().insert("x-petkv-forwarded", "1".parse().unwrap());
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    assert_eq!(kv.put(forged(None)).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(kv.put(forged(Some(&auth.read))).await.unwrap_err().code(), Code::PermissionDenied);
    let absent = admin.get(b"forged", Consistency::Linearizable).await?;
    assert!(absent.kv.is_none(), "a forged forwarded write was applied");

    // Health stays open (probes carry no credentials).
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(0)))?.connect().await?;
    let reply = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: petkv::pod::server::LIVENESS_SERVICE.into() })
        .await?;
    assert_eq!(reply.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    // Refusals are counted by reason and method, and logged with the identity's name.
    let (unauthenticated_gets, _) =
        total(&cluster, r#"petkv_auth_refusals_total{reason="unauthenticated",method="/petkv.v1.KV/Get"}"#).await?;
    assert_eq!(unauthenticated_gets, 2.0);
    let (denied_puts, pages) =
        total(&cluster, r#"petkv_auth_refusals_total{reason="permission_denied",method="/petkv.v1.KV/Put"}"#).await?;
    assert_eq!(denied_puts, 3.0, "reader, reader via a follower, forged forwarded request with the read token");
    // (A refusal is logged before it is answered, so the lines are in the files by now.)
    let mut logs = Vec::new();
    for ordinal in cluster.ordinals() {
        logs.push(std::fs::read_to_string(&cluster.pod(ordinal)?.spec.log_path)?);
    }
    let logged = |words: &[&str]| logs.iter().flat_map(|l| l.lines()).any(|l| words.iter().all(|w| l.contains(w)));
    assert!(logged(&["permission denied", "identity=user-read", "/petkv.v1.KV/Put"]), "no pod logged the refusal");
    assert!(logged(&["unauthenticated request refused", "unknown token"]));

    // Neither the metrics nor any log holds a token or a stored value.
    let secrets = [auth.admin.as_str(), auth.write.as_str(), auth.read.as_str(), unknown_token];
    for page in &pages {
        assert!(!page.contains(SECRET_VALUE), "a stored value appears in /metrics");
        for s in secrets {
            assert!(!page.contains(s), "a token appears in /metrics");
        }
    }
    for (ordinal, log) in logs.iter().enumerate() {
        for s in secrets {
            assert!(!log.contains(s), "a token appears in pod {ordinal}'s log");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tokens_file_takes_effect_without_a_restart() -> anyhow::Result<()> {
    let cluster = healthy(ClusterSpec {
        auth: true,
        extra_args: vec!["--tls-reload-ms".into(), "200".into()],
        ..Default::default()
    })
    .await?;
    let auth = cluster.auth().expect("the set runs with auth").clone();
    let pids: Vec<Option<u32>> =
        cluster.ordinals().iter().map(|o| cluster.pod(*o).map(|p| p.pid())).collect::<Result<_, _>>()?;
    let on_pod = |ordinal: u32, token: &str| with_token(&[cluster.client_addr(ordinal)], token);
    let newcomer = "newcomer-token-0123456789abcdef";
    for ordinal in cluster.ordinals() {
        on_pod(ordinal, &auth.read)?.get(b"k", Consistency::Stale).await?;
        assert_eq!(
            refused("an unknown token", on_pod(ordinal, newcomer)?.get(b"k", Consistency::Stale).await),
            Code::Unauthenticated
        );
    }

    // A new token, and the user tokens gone: every pod follows the file within its reload
    // interval.
    auth.rewrite(&[format!("{newcomer} write newcomer")], false)?;
    for ordinal in cluster.ordinals() {
        let (reader, writer) = (on_pod(ordinal, &auth.read)?, on_pod(ordinal, newcomer)?);
        wait::until(&format!("pod {ordinal} to follow the tokens file"), SETTLE, || async {
            let removed = matches!(
                reader.get(b"k", Consistency::Stale).await,
                Err(ClientError::Rejected(s)) if s.code() == Code::Unauthenticated
            );
            let added = writer.put(format!("by-newcomer-{ordinal}").as_bytes(), b"yes", None).await.is_ok();
            (removed && added).then_some(())
        })
        .await?;
    }

    // A file that does not parse keeps the tokens in use, and says so in the log.
    auth.rewrite(&[format!("{newcomer} write newcomer"), "half-written-line".into()], false)?;
    for ordinal in cluster.ordinals() {
        petkv_e2e::wait_log(&cluster, ordinal, &["tokens file changed but do not load", "line 4"]).await?;
        on_pod(ordinal, newcomer)?.put(b"after-a-bad-file", b"yes", None).await?;
        assert_eq!(refused("a removed token", on_pod(ordinal, &auth.read)?.status().await), Code::Unauthenticated);
    }
    let after: Vec<Option<u32>> =
        cluster.ordinals().iter().map(|o| cluster.pod(*o).map(|p| p.pid())).collect::<Result<_, _>>()?;
    assert_eq!(after, pids, "no pod was restarted");
    Ok(())
}

/// The series of `/metrics` without their values: what a flood must not grow.
fn series(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_paths_without_credentials_adds_no_metrics_series() -> anyhow::Result<()> {
    let cluster = healthy(ClusterSpec { auth: true, replicas: 1, voters: 1, ..Default::default() }).await?;
    let anonymous = Client::new(&endpoints(&cluster), TIMEOUT)?;
    // One refused request first, so the series it adds (method "unknown") exists before.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(0)))?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut send = async |path: String| -> anyhow::Result<Code> {
        grpc.ready().await?;
        let path = http::uri::PathAndQuery::try_from(path)?;
        let codec = tonic_prost::ProstCodec::<PutRequest, PutRequest>::default();
        let answer = grpc.unary(tonic::Request::new(PutRequest::default()), path, codec).await;
        Ok(answer.map(|_| Code::Ok).unwrap_or_else(|s| s.code()))
    };
    assert_eq!(send("/x-first/y".into()).await?, Code::Unauthenticated);
    assert_eq!(refused("anonymous get", anonymous.get(b"k", Consistency::Stale).await), Code::Unauthenticated);
    let (_, before) = total(&cluster, "petkv_grpc_requests_total").await?;

    for i in 0..2_000u32 {
        let code = send(format!("/x{:08x}{i}/y", rand::random::<u32>())).await?;
        assert_eq!(code, Code::Unauthenticated, "request {i}");
    }
    let (_, after) = total(&cluster, "petkv_grpc_requests_total").await?;
    assert_eq!(series(&before[0]), series(&after[0]), "the flood added series");
    let unknown = r#"petkv_grpc_requests_total{method="unknown",code="UNAUTHENTICATED"}"#;
    assert_eq!(sample(&after[0], unknown).unwrap_or(0.0) - sample(&before[0], unknown).unwrap_or(0.0), 2_000.0);
    Ok(())
}
