//! `petkv-harness up` driven from "a second terminal": the real binary runs the set in the
//! background while the test issues `status`, `kill`, `scale`, `delete-volume`,
//! `rolling-restart` and `down`, and checks what the pods report.

use std::path::Path;
use std::time::Duration;

use petkv_harness::control;
use petkv_harness::wait;

mod common;
use common::{harness, ok, Up, SETTLE};

/// Node ids and pids of the pods, once every pod in `running.json` answers as ready.
async fn ready_pods(dir: &Path, count: usize) -> anyhow::Result<Vec<(u32, u64, u32)>> {
    wait::until(&format!("{count} ready pods"), SETTLE, || async {
        let running = control::read_running(dir).ok()??;
        if running.pods.len() != count {
            return None;
        }
        let mut pods = Vec::new();
        for (o, pod) in &running.pods {
            let s = petkv_client::Client::status_of(&pod.client_addr, Duration::from_millis(500), None).await.ok()?;
            if !s.ready {
                return None;
            }
            pods.push((*o, s.node_id, pod.pid?));
        }
        Some(pods)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_is_steered_from_a_second_terminal() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("state");
    let up = Up::start(&dir, &["--replicas", "3"])?;
    let first = ready_pods(&dir, 3).await?;
    assert!(ok(&dir, &["status"]).contains("leader"));

    // A killed pod is recreated with the same name, volume and node id.
    ok(&dir, &["kill", "petkv-1"]);
    let after_kill = wait::until("petkv-1 recreated", SETTLE, || async {
        let pods = ready_pods(&dir, 3).await.ok()?;
        (pods[1].2 != first[1].2).then_some(pods)
    })
    .await?;
    assert_eq!(after_kill[1].1, first[1].1, "same node id after the pod was recreated");

    // Scale up: petkv-3 joins as a read replica.
    ok(&dir, &["scale", "4"]);
    ready_pods(&dir, 4).await?;

    // Delete a volume: the pod comes back under a new node id.
    ok(&dir, &["delete-volume", "2"]);
    wait::until("petkv-2 back under a new id", SETTLE, || async {
        let pods = ready_pods(&dir, 4).await.ok()?;
        (pods[2].1 != first[2].1 && petkv::raft::ordinal_of(pods[2].1) == 2).then_some(())
    })
    .await?;

    // Rolling restart: every pod gets a new process and keeps its node id.
    let before = ready_pods(&dir, 4).await?;
    ok(&dir, &["rolling-restart"]);
    wait::until("every pod restarted", SETTLE, || async {
        let pods = ready_pods(&dir, 4).await.ok()?;
        pods.iter().zip(&before).all(|(now, was)| now.2 != was.2 && now.1 == was.1).then_some(())
    })
    .await?;

    // Pod mode (where the test runs as root): cut a pod off the network and heal it.
    if petkv_harness::netns::available() {
        ok(&dir, &["partition", "petkv-3"]);
        let running = control::read_running(&dir)?.expect("running");
        let addr = running.pods[&3].client_addr.clone();
        wait::until("petkv-3 unreachable", SETTLE, || async {
            petkv_client::Client::status_of(&addr, Duration::from_millis(300), None).await.is_err().then_some(())
        })
        .await?;
        ok(&dir, &["heal"]);
        ready_pods(&dir, 4).await?;
    }

    // Down: the controller stops the set and exits; volumes are kept.
    ok(&dir, &["down"]);
    let status = up.wait().await?;
    assert!(status.success());
    assert!(dir.join("data-petkv-0").join("identity.json").exists());
    let err = harness(&dir, &["status"]);
    assert!(!err.status.success(), "status without a running up is an error");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_tls_runs_the_set_with_tls_and_the_harness_talks_tls() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("state");
    let up = Up::start(&dir, &["--tls", "--mode", "process", "--replicas", "3"])?;
    // Every pod answers its status over TLS, with the certificates `up` issued.
    let running = wait::until("running.json with the TLS dir", SETTLE, || async {
        control::read_running(&dir).ok()?.filter(|r| r.tls_dir.is_some() && r.pods.len() == 3)
    })
    .await?;
    let tls = running.client_tls()?.expect("TLS");
    for pod in running.pods.values() {
        let addr = pod.client_addr.clone();
        wait::until(&format!("{} ready over TLS", pod.name), SETTLE, || async {
            let s = petkv_client::Client::status_of(&addr, Duration::from_millis(500), Some(&tls)).await.ok()?;
            s.ready.then_some(())
        })
        .await?;
        let plain = petkv_client::Client::status_of(&addr, Duration::from_millis(500), None).await;
        assert!(plain.is_err(), "{} answered a plaintext client", pod.name);
    }
    // `status` from a second terminal finds the certificates through running.json.
    assert!(ok(&dir, &["status"]).contains("leader"));
    assert!(dir.join("tls").join("ca.pem").exists() && dir.join("tls").join("petkv-2-key.pem").exists());

    ok(&dir, &["down"]);
    let status = up.wait().await?;
    assert!(status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_auth_runs_the_set_with_tokens_and_the_harness_uses_its_admin_token() -> anyhow::Result<()> {
    use petkv_client::{Client, ClientError};
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("state");
    let up = Up::start(&dir, &["--auth", "--mode", "process", "--replicas", "1"])?;
    let running = wait::until("running.json with the auth dir", SETTLE, || async {
        control::read_running(&dir).ok()?.filter(|r| r.auth_dir.is_some() && r.pods.len() == 1)
    })
    .await?;
    let auth = petkv_harness::auth::ClusterAuth::open_in(&dir)?;
    assert_eq!(running.admin_token()?.as_deref(), Some(auth.admin.as_str()));
    let addr = [running.pods[&0].client_addr.clone()];
    let as_user = |token: &str| Client::new(&addr, Duration::from_secs(2))?.with_token(token);
    wait::until("the pod ready to the admin token", SETTLE, || async {
        as_user(&auth.admin).ok()?.status_of_first().await.ok()?.ready.then_some(())
    })
    .await?;
    // `status` from a second terminal finds the admin token through running.json.
    assert!(ok(&dir, &["status"]).contains("leader"));
    as_user(&auth.write)?.put(b"k", b"v", None).await?;
    match as_user(&auth.read)?.put(b"k", b"w", None).await {
        Err(ClientError::Rejected(s)) => assert_eq!(s.code(), tonic::Code::PermissionDenied),
        other => panic!("the read token wrote: {other:?}"),
    }
    let anonymous = Client::new(&addr, Duration::from_secs(2))?.status_of_first().await;
    assert!(anonymous.is_err_and(|e| e.to_string().contains("credentials required")));

    ok(&dir, &["down"]);
    let status = up.wait().await?;
    assert!(status.success());
    Ok(())
}
