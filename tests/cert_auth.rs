//! Client certificates as identities, end to end: a 3-pod set with TLS on both ports and
//! authentication (`ClusterSpec { tls, auth }`). Users' certificates are issued from the set's
//! CA by `petkv certs --client NAME` and given roles by `cert:NAME ROLE` lines added to the
//! tokens file while the set runs. A certificate gets its role on any pod, also through a
//! follower (which states the verified subject to the leader over its own pod certificate);
//! a verified but unmapped certificate, no credentials at all, or a client forging the
//! follower's statement get UNAUTHENTICATED; another CA's certificate does not get past the
//! handshake.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use petkv::edge::tls::certs::{client_files, Authority, LeafSpec};
use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{Consistency, PutRequest};
use petkv_client::tls::{ClientTls, IdentityFiles, TlsFiles};
use petkv_client::{Client, ClientError};
use petkv_e2e::{endpoints, healthy, refused, wait_log, SETTLE};
use petkv_harness::{Cluster, ClusterSpec};
use tonic::metadata::MetadataValue;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A client of `endpoints` trusting the set's CA and presenting `identity`, if any.
fn tls_client(ca: &Path, identity: Option<IdentityFiles>, endpoints: &[String]) -> anyhow::Result<Client> {
    let tls = ClientTls::from_files(TlsFiles { ca: ca.to_path_buf(), identity })?;
    Ok(Client::with_tls(endpoints, TIMEOUT, Some(&tls))?)
}

/// The certificate files `petkv certs --client NAME` wrote for user `name` into `dir`.
fn user(dir: &Path, name: &str) -> IdentityFiles {
    let (cert, key) = client_files(dir, name);
    IdentityFiles { cert, key }
}

/// Runs the `petkv` binary; its exit status and output.
fn petkv(args: &[&str]) -> anyhow::Result<std::process::Output> {
    std::process::Command::new(petkv_harness::binary::petkv_binary()?).args(args).output().context("run petkv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_get_their_role_on_every_pod_and_through_a_follower() -> anyhow::Result<()> {
    let cluster: Cluster = healthy(ClusterSpec {
        tls: true,
        auth: true,
        extra_args: vec!["--tls-reload-ms".into(), "200".into()],
        ..Default::default()
    })
    .await?;
    let tls = cluster.tls().context("the set runs with TLS")?.clone();
    let auth = cluster.auth().context("the set runs with auth")?.clone();
    let (dir, ca) = (tls.dir().to_path_buf(), tls.ca());
    let eps = endpoints(&cluster);

    // Users' certificates from the set's CA, by the CLI; roles by the tokens file, picked up
    // by every pod while it runs.
    let dir_arg = dir.display().to_string();
    let out = petkv(&["certs", "--out", &dir_arg, "--client", "alice", "--client", "bob", "--client", "carol"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cert:alice ROLE"));
    auth.rewrite(&["cert:alice read".into(), "cert:bob write bob-the-writer".into()], true)?;
    for ordinal in cluster.ordinals() {
        wait_log(&cluster, ordinal, &["tokens file changed"]).await?;
    }

    // write: writes; read: reads, and is refused writes.
    let bob = tls_client(&ca, Some(user(&dir, "bob")), &eps)?;
    bob.put(b"k", b"from bob", None).await?;
    let alice = tls_client(&ca, Some(user(&dir, "alice")), &eps)?;
    let got = alice.get(b"k", Consistency::Linearizable).await?;
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(b"from bob".to_vec()));
    match alice.put(b"k", b"from alice", None).await {
        Err(ClientError::Rejected(s)) => {
            assert_eq!(s.code(), Code::PermissionDenied);
            assert_eq!(s.message(), "role read may not call /petkv.v1.KV/Put (needs write)");
        }
        other => panic!("a read certificate wrote: {other:?}"),
    }

    // Through a follower: the write, a linearizable read and Members are served on the leader
    // (or every member) for the certificate's identity.
    let leader = cluster.wait_leader(SETTLE).await?;
    let follower = (leader + 1) % 3;
    let via_follower = [cluster.client_addr(follower)];
    tls_client(&ca, Some(user(&dir, "bob")), &via_follower)?.put(b"forwarded", b"yes", None).await?;
    let alice_via_follower = tls_client(&ca, Some(user(&dir, "alice")), &via_follower)?;
    let got = alice_via_follower.get(b"forwarded", Consistency::Linearizable).await?;
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(b"yes".to_vec()));
    let members = alice_via_follower.members().await?;
    assert!(members.members.len() == 3 && members.members.iter().all(|m| m.status.is_some()), "{members:?}");
    assert_eq!(
        refused("read put via a follower", alice_via_follower.put(b"forwarded", b"no", None).await),
        Code::PermissionDenied
    );

    // The CLI presents a certificate with --cert/--key.
    let (bob_files, alice_files) = (user(&dir, "bob"), user(&dir, "alice"));
    let cli_put = |who: &IdentityFiles, value: &str| {
        let (cert, key, ca) = (who.cert.display().to_string(), who.key.display().to_string(), ca.display().to_string());
        let follower = cluster.client_addr(follower);
        petkv(&["put", "cli", value, "--endpoints", &follower, "--ca", &ca, "--cert", &cert, "--key", &key])
    };
    let out = cli_put(&bob_files, "by bob")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli_put(&alice_files, "by alice")?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{out:?}");

    // Verified but not in the file; no credentials at all: UNAUTHENTICATED.
    let carol = tls_client(&ca, Some(user(&dir, "carol")), &eps)?;
    match carol.get(b"k", Consistency::Stale).await {
        Err(ClientError::Rejected(s)) => {
            assert_eq!(s.code(), Code::Unauthenticated);
            assert!(s.message().contains("cert:carol"), "{}", s.message());
        }
        other => panic!("an unmapped certificate read: {other:?}"),
    }
    let anonymous = tls_client(&ca, None, &eps)?;
    assert_eq!(
        refused("no certificate, no token", anonymous.get(b"k", Consistency::Stale).await),
        Code::Unauthenticated
    );

    // Another CA's certificate, even with a mapped name, is refused at the handshake.
    let elsewhere = tempfile::tempdir()?;
    let other_ca = Authority::generate("another CA")?;
    let forged_bob = other_ca.issue(&LeafSpec::client("bob"))?;
    let forged = IdentityFiles { cert: elsewhere.path().join("bob.pem"), key: elsewhere.path().join("bob-key.pem") };
    std::fs::write(&forged.cert, &forged_bob.cert_pem)?;
    std::fs::write(&forged.key, &forged_bob.key_pem)?;
    let impostor = tls_client(&ca, Some(forged), &eps)?;
    let result = impostor.put(b"k", b"from the impostor", None).await;
    assert!(matches!(result, Err(ClientError::Unavailable { .. } | ClientError::OutcomeUnknown(_))), "{result:?}");
    wait_log(&cluster, 0, &["TLS handshake failed", "port=\"client\"", "UnknownIssuer"]).await?;

    // A client cannot state a certificate identity itself: only a pod's connection may.
    let alice_tls = ClientTls::from_files(TlsFiles { ca: ca.clone(), identity: Some(user(&dir, "alice")) })?;
    let channel = petkv_client::tls::dial::lazy_channel(&cluster.client_addr(leader), Some(&alice_tls), |e| e)?;
    let mut req = tonic::Request::new(PutRequest {
        key: b"k".to_vec().into(),
        value: b"by a forged statement".to_vec().into(),
        ..Default::default()
    });
    req.metadata_mut().insert_bin(petkv::edge::auth::FORWARDED_CERT, MetadataValue::from_bytes(b"bob"));
    req.metadata_mut().insert(petkv::api::forward::FORWARDED, MetadataValue::from_static("1"));
    let status = KvClient::new(channel).put(req).await.expect_err("a forged statement wrote");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let got = bob.get(b"k", Consistency::Linearizable).await?;
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(b"from bob".to_vec()), "nothing else was written");

    // Token clients keep working next to certificates (the harness's own client is one).
    let writer = tls_client(&ca, None, &eps)?.with_token(&auth.write)?;
    writer.put(b"token", b"still works", None).await?;
    Ok(())
}
