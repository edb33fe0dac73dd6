//! TLS end to end: sets started through the harness with TLS on both gRPC ports
//! (`ClusterSpec::tls`, certificates issued by petkv's own `petkv certs` code). Clients without
//! the CA, without a certificate or with another CA's are refused; a peer with another CA's
//! certificate can neither send Raft messages nor join; a rotated certificate is served
//! without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use petkv::edge::tls::certs::{Authority, Issued, LeafSpec, SetCerts};
use petkv::pb::raft::raft_client::RaftClient;
use petkv::pb::raft::{ClusterInfoRequest, RaftMessage};
use petkv_client::pb::v1::Consistency;
use petkv_client::tls::{ClientTls, IdentityFiles, TlsFiles};
use petkv_client::Client;
use petkv_e2e::{endpoints, healthy, wait_log, SETTLE};
use petkv_harness::cluster::PEER_PORT;
use petkv_harness::{wait, ClusterSpec};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn tls_set(extra_args: &[&str]) -> ClusterSpec {
    ClusterSpec { tls: true, extra_args: extra_args.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

/// Writes an issued certificate and its key into `dir` as `<name>.pem` and `<name>-key.pem`.
fn write_identity(dir: &Path, name: &str, issued: &Issued) -> anyhow::Result<IdentityFiles> {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    std::fs::write(&cert, &issued.cert_pem)?;
    std::fs::write(&key, &issued.key_pem)?;
    Ok(IdentityFiles { cert, key })
}

fn dialer(ca: &Path, identity: Option<IdentityFiles>) -> anyhow::Result<ClientTls> {
    Ok(ClientTls::from_files(TlsFiles { ca: ca.to_path_buf(), identity })?)
}

fn raft_client(addr: &str, tls: &ClientTls) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
    let channel =
        petkv_client::tls::dial::lazy_channel(addr, Some(tls), |e| e.connect_timeout(Duration::from_secs(2)))?;
    Ok(RaftClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_get_through_and_clients_without_a_good_certificate_are_refused() -> anyhow::Result<()> {
    let cluster = healthy(tls_set(&["--tls-client-auth"])).await?;
    let tls = cluster.tls().context("the set runs with TLS")?.clone();

    // The harness's client (the CA, a client certificate): a write through a follower is
    // forwarded to the leader over TLS; every member reports its own status over TLS.
    let leader = cluster.wait_leader(SETTLE).await?;
    let follower = cluster.ordinals().into_iter().find(|o| *o != leader).context("a follower")?;
    cluster.client_of(follower)?.put(b"k", b"v", None).await?;
    let got = cluster.client()?.get(b"k", Consistency::Linearizable).await?;
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(b"v".to_vec()));
    let members = cluster.client_of(follower)?.members().await?;
    assert_eq!(members.members.len(), 3);
    assert!(members.members.iter().all(|m| m.status.is_some()), "{members:?}");

    // The CLI, with --ca, --cert and --key.
    let cli = |extra: &[&str]| {
        std::process::Command::new(petkv_harness::binary::petkv_binary()?)
            .args(["get", "k", "--timeout-ms", "3000", "--endpoints", &endpoints(&cluster).join(",")])
            .args(extra)
            .output()
            .context("run petkv get")
    };
    let ca = tls.ca().display().to_string();
    let (cert, key) =
        (tls.dir().join("client.pem").display().to_string(), tls.dir().join("client-key.pem").display().to_string());
    let out = cli(&["--ca", &ca, "--cert", &cert, "--key", &key])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&["--ca", &ca])?;
    assert!(!out.status.success(), "no client certificate, yet: {}", String::from_utf8_lossy(&out.stdout));

    // Refused: plaintext; TLS not trusting the CA; no client certificate; another CA's.
    let dir = tempfile::tempdir()?;
    let other_ca = Authority::generate("another CA")?;
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other_ca.cert_pem())?;
    let other_client = write_identity(dir.path(), "other-client", &other_ca.issue(&LeafSpec::client("petkv-client"))?)?;
    let eps = endpoints(&cluster);
    let timeout = Duration::from_secs(2);
    let refused = [
        ("a plaintext client", Client::new(&eps, timeout)?),
        ("a client that does not trust the CA", Client::with_tls(&eps, timeout, Some(&dialer(&other_ca_file, None)?))?),
        ("a client without a certificate", Client::with_tls(&eps, timeout, Some(&dialer(&tls.ca(), None)?))?),
        (
            "a client with another CA's certificate",
            Client::with_tls(&eps, timeout, Some(&dialer(&tls.ca(), Some(other_client))?))?,
        ),
    ];
    for (who, client) in refused {
        let result = client.get(b"k", Consistency::Stale).await;
        assert!(result.is_err(), "{who} read the key: {result:?}");
        println!("{who}: {}", result.err().map(|e| e.to_string()).unwrap_or_default());
    }
    wait_log(&cluster, 0, &["TLS handshake failed", "port=\"client\""]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_foreign_certificate_can_neither_send_raft_messages_nor_join() -> anyhow::Result<()> {
    let mut cluster = healthy(tls_set(&[])).await?;
    let tls = cluster.tls().context("the set runs with TLS")?.clone();
    let dir = tempfile::tempdir()?;
    let foreign_ca = Authority::generate("intruder CA")?;
    let intruder = foreign_ca.issue(&LeafSpec::server("petkv-3", &["petkv-3".into(), cluster.ip(3)]))?;

    // petkv-3 starts with a certificate for its own name, but from another CA (it trusts the
    // cluster CA, so only the cluster's side can refuse it).
    let (cert3, key3) = tls.pod_files(3);
    std::fs::write(&cert3, &intruder.cert_pem)?;
    std::fs::write(&key3, &intruder.key_pem)?;
    cluster.scale(4).await?;
    wait_log(&cluster, 0, &["TLS handshake failed", "port=\"peer\"", "UnknownIssuer"]).await?;
    let members = cluster.client()?.members().await?;
    assert_eq!(members.members.iter().map(|m| m.ordinal).collect::<Vec<_>>(), vec![0, 1, 2], "petkv-3 joined");
    assert!(cluster.status(3).await.is_err(), "petkv-3 serves: it got past its start-up probes");
    assert!(cluster.pod_mut(3)?.is_running(), "petkv-3 keeps waiting for a cluster that answers");

    // Raft messages straight to the peer port. A pod's own certificate gets answers (so the
    // refusals below are the certificate's doing) ...
    let peer0 = format!("{}:{PEER_PORT}", cluster.ip(0));
    let (cert1, key1) = tls.pod_files(1);
    let pod1 = dialer(&tls.ca(), Some(IdentityFiles { cert: cert1, key: key1 }))?;
    let info = raft_client(&peer0, &pod1)?.cluster_info(ClusterInfoRequest {}).await?.into_inner();
    assert!(info.initialized);
    // ... another CA's certificate does not, nor does the cluster CA's client certificate,
    // which names no pod of the set.
    let foreign = dialer(&tls.ca(), Some(write_identity(dir.path(), "intruder", &intruder)?))?;
    let not_a_pod = dialer(
        &tls.ca(),
        Some(IdentityFiles { cert: tls.dir().join("client.pem"), key: tls.dir().join("client-key.pem") }),
    )?;
    for (who, dialer) in [("another CA's certificate", &foreign), ("a certificate naming no pod", &not_a_pod)] {
        // TLS 1.3: the client finishes its side of the handshake before the server checks its
        // certificate, so the refusal reaches it as a closed connection, never as an answer.
        let vote = raft_client(&peer0, dialer)?.vote(RaftMessage::default()).await;
        let status = vote.expect_err(&format!("a vote with {who} got an answer"));
        assert!(
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown),
            "{who}: {status:?}"
        );
        let info = raft_client(&peer0, dialer)?.cluster_info(ClusterInfoRequest {}).await;
        assert!(info.is_err(), "{who} got the cluster info");
    }
    wait_log(&cluster, 0, &["TLS handshake failed", "port=\"peer\"", "NotAPodOfTheSet"]).await?;
    Ok(())
}

/// The serial number of the certificate a TLS server at `addr` presents to a new connection
/// (trusting `ca`; presenting `identity` for ports that require one).
async fn served_serial(addr: &str, ca: &Path, identity: Option<&IdentityFiles>) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(petkv_client::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(&id.cert)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(&id.key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = addr.rsplit_once(':').context("host:port")?.0.to_string();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from(host)?, tcp).await?;
    let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).context("no server certificate")?;
    Ok(webpki::EndEntityCert::try_from(leaf)?.serial().to_vec())
}

fn serial_of(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let der = CertificateDer::from_pem_slice(pem)?;
    Ok(webpki::EndEntityCert::try_from(&der)?.serial().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() -> anyhow::Result<()> {
    let mut cluster = healthy(tls_set(&["--tls-reload-ms", "200"])).await?;
    let tls = cluster.tls().context("the set runs with TLS")?.clone();
    let (client0, peer0) = (cluster.client_addr(0), format!("{}:{PEER_PORT}", cluster.ip(0)));
    let (cert0, key0) = tls.pod_files(0);
    let (cert1, key1) = tls.pod_files(1);
    let pod1 = IdentityFiles { cert: cert1, key: key1 };
    let before = serial_of(&std::fs::read(&cert0)?)?;
    assert_eq!(served_serial(&client0, &tls.ca(), None).await?, before);
    assert_eq!(served_serial(&peer0, &tls.ca(), Some(&pod1)).await?, before);
    let pid = cluster.pod(0)?.pid();

    // cert-manager renews: a new key and certificate from the same CA, written one after the
    // other (a check in between sees a key that does not match and keeps the old pair).
    let ca = Authority::from_pem(
        &std::fs::read_to_string(tls.ca())?,
        &std::fs::read_to_string(tls.dir().join(petkv::edge::tls::certs::CA_KEY))?,
    )?;
    let mut names = SetCerts::default().names_of(0);
    names.push(cluster.ip(0));
    let renewed = ca.issue(&LeafSpec::server("petkv-0", &names))?;
    let after = serial_of(renewed.cert_pem.as_bytes())?;
    assert_ne!(after, before);
    std::fs::write(&key0, &renewed.key_pem)?;
    std::fs::write(&cert0, &renewed.cert_pem)?;

    for (port, addr, identity) in [("client", &client0, None), ("peer", &peer0, Some(&pod1))] {
        wait::until(&format!("the renewed certificate on the {port} port"), SETTLE, || async {
            let serial = served_serial(addr, &tls.ca(), identity).await.ok()?;
            (serial == after).then_some(())
        })
        .await?;
    }
    assert_eq!(cluster.pod(0)?.pid(), pid, "petkv-0 was not restarted");
    wait_log(&cluster, 0, &["TLS files changed: new certificates in use"]).await?;

    // The renewed certificate works between peers on new connections: petkv-1 restarts and
    // dials petkv-0 afresh (and petkv-0 dials it with its renewed certificate).
    cluster.kill(1).await?;
    cluster.start(1)?;
    cluster.wait_member(1, SETTLE).await?;
    cluster.wait_healthy(SETTLE).await?;
    cluster.client_of(1)?.put(b"after-rotation", b"yes", None).await?;
    Ok(())
}
