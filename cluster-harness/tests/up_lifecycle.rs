//! `petkv-harness up` and the two ways Kubernetes takes a whole set down and brings it back,
//! from a second terminal, against real processes:
//!
//! - `scale 0` then `scale 3` (`kubectl scale`, `whenScaled: Retain`): every pod stopped, every
//!   volume kept, no pod leaves the cluster; scaling back resumes the same cluster.
//! - `delete-set` then `apply` (`kubectl delete statefulset` with `whenDeleted: Retain`, then
//!   `kubectl apply`): every pod terminated, volumes and the bootstrap marker kept; the set comes
//!   back at the count it had and resumes the same cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use petkv_client::pb::v1::Consistency;
use petkv_client::Client;
use petkv_harness::control;
use petkv_harness::wait;

mod common;
use common::{harness, ok, Up, SETTLE};

/// One pod as it answers: node id, pid, cluster id, declared replica count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pod {
    node_id: u64,
    pid: u32,
    cluster_id: String,
    declared: u32,
}

/// Every pod of `running.json`, once there are `count` and each answers as ready and declares
/// `count` replicas.
async fn ready_pods(dir: &Path, count: usize) -> anyhow::Result<BTreeMap<u32, Pod>> {
    wait::until(&format!("{count} ready pods"), SETTLE, || async {
        let running = control::read_running(dir).ok()??;
        if running.pods.len() != count {
            return None;
        }
        let mut pods = BTreeMap::new();
        for (o, pod) in &running.pods {
            let s = Client::status_of(&pod.client_addr, Duration::from_millis(500), None).await.ok()?;
            if !s.ready || s.declared_replicas as usize != count {
                return None;
            }
            let p = Pod { node_id: s.node_id, pid: pod.pid?, cluster_id: s.cluster_id, declared: s.declared_replicas };
            pods.insert(*o, p);
        }
        Some(pods)
    })
    .await
}

/// Waits until `running.json` lists `count` pods, none with a process, and none answers.
async fn all_stopped(dir: &Path, count: usize) -> anyhow::Result<()> {
    let running = wait::until("every pod stopped", SETTLE, || async {
        let running = control::read_running(dir).ok()??;
        (running.pods.len() == count && running.pods.values().all(|p| p.pid.is_none())).then_some(running)
    })
    .await?;
    for pod in running.pods.values() {
        let answer = Client::status_of(&pod.client_addr, Duration::from_millis(300), None).await;
        assert!(answer.is_err(), "{} still answers: {answer:?}", pod.name);
    }
    Ok(())
}

/// A client over every pod of `running.json`.
fn client(dir: &Path) -> anyhow::Result<Client> {
    let running = control::read_running(dir)?.expect("running.json");
    let addrs: Vec<String> = running.pods.values().map(|p| p.client_addr.clone()).collect();
    Ok(Client::new(&addrs, Duration::from_secs(10))?)
}

/// The members (node id, voter), sorted.
async fn members(dir: &Path) -> anyhow::Result<Vec<(u64, bool)>> {
    let mut m: Vec<(u64, bool)> = client(dir)?.members().await?.members.iter().map(|m| (m.node_id, m.voter)).collect();
    m.sort_unstable();
    Ok(m)
}

/// The members once there are `count`, the first three voters and the rest learners (as
/// `--voters 3` says, every promotion done).
async fn settled_members(dir: &Path, count: usize) -> anyhow::Result<Vec<(u64, bool)>> {
    wait::until(&format!("{count} members, promotions done"), SETTLE, || async {
        let m = members(dir).await.ok()?;
        let settled = m.len() == count && m.iter().all(|(id, voter)| *voter == (petkv::raft::ordinal_of(*id) < 3));
        settled.then_some(m)
    })
    .await
}

/// Every pod's log length, to read what it logs from now on.
fn log_lengths(dir: &Path, count: u32) -> Vec<u64> {
    (0..count).map(|o| std::fs::metadata(log_path(dir, o)).map(|m| m.len()).unwrap_or(0)).collect()
}

fn log_path(dir: &Path, ordinal: u32) -> std::path::PathBuf {
    dir.join("logs").join(format!("petkv-{ordinal}.log"))
}

/// The lines logged since `offsets` that contain `needle`.
fn logged_since(dir: &Path, offsets: &[u64], needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (o, offset) in offsets.iter().enumerate() {
        let bytes = std::fs::read(log_path(dir, o as u32)).unwrap_or_default();
        let text = String::from_utf8_lossy(bytes.get(*offset as usize..).unwrap_or_default()).into_owned();
        out.extend(text.lines().filter(|l| l.contains(needle)).map(|l| format!("petkv-{o}: {l}")));
    }
    out
}

fn volumes_kept(dir: &Path, count: u32) {
    for o in 0..count {
        let identity = dir.join(format!("data-petkv-{o}")).join("identity.json");
        assert!(identity.exists(), "{} is gone", identity.display());
    }
}

/// The same cluster is back: the same node ids and cluster id on every pod, new processes,
/// the same membership, the key written before, and no pod logged leaving or bootstrapping.
async fn same_cluster_back(
    dir: &Path,
    before: &BTreeMap<u32, Pod>,
    members_before: &[(u64, bool)],
    offsets: &[u64],
) -> anyhow::Result<()> {
    let after = ready_pods(dir, before.len()).await?;
    for (o, was) in before {
        let now = &after[o];
        assert_eq!((now.node_id, &now.cluster_id), (was.node_id, &was.cluster_id), "petkv-{o}");
        assert_ne!(now.pid, was.pid, "petkv-{o} was not restarted");
        assert_eq!(now.declared, was.declared, "petkv-{o}'s declared replica count");
    }
    let m = wait::until("the membership as before", SETTLE, || async {
        members(dir).await.ok().filter(|m| m == members_before)
    })
    .await;
    assert!(m.is_ok(), "membership {:?} before, {:?} after", members_before, members(dir).await);
    let got = client(dir)?.get(b"before", Consistency::Linearizable).await?;
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(b"kept".to_vec()));
    for needle in ["leaving the cluster", "ordinal 0: bootstrapping"] {
        let lines = logged_since(dir, offsets, needle);
        assert!(lines.is_empty(), "{needle:?} was logged: {lines:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero_stops_every_pod_and_scaling_back_resumes_the_same_cluster() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("state");
    let up = Up::start(&dir, &["--mode", "process", "--replicas", "3"])?;
    let before = ready_pods(&dir, 3).await?;
    client(&dir)?.put(b"before", b"kept", None).await?;
    let members_before = settled_members(&dir, 3).await?;
    let offsets = log_lengths(&dir, 3);

    ok(&dir, &["scale", "0"]);
    all_stopped(&dir, 3).await?;
    volumes_kept(&dir, 3);
    assert!(ok(&dir, &["status"]).contains("scaled to 0"));
    // Nothing is recreated while the set is at 0 (a pod killed or deleted is not running).
    assert!(!harness(&dir, &["kill", "petkv-1"]).status.success());

    ok(&dir, &["scale", "3"]);
    same_cluster_back(&dir, &before, &members_before, &offsets).await?;

    // SIGTERM to `up` (as to Ctrl-C): it stops the set in order and exits 0.
    let pods = ready_pods(&dir, 3).await?;
    signal::kill(up.pid(), Signal::SIGTERM)?;
    let status = up.wait().await?;
    assert!(status.success());
    for (o, pod) in pods {
        assert!(signal::kill(Pid::from_raw(pod.pid as i32), None).is_err(), "petkv-{o} still runs after SIGTERM to up");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_set_keeps_volumes_and_marker_and_apply_resumes_the_same_cluster_at_its_size() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("state");
    let up = Up::start(&dir, &["--mode", "process", "--replicas", "3"])?;
    ready_pods(&dir, 3).await?;
    // The set's size when it is deleted is 4 (petkv-3 a read replica), not `up --replicas`.
    ok(&dir, &["scale", "4"]);
    let before = ready_pods(&dir, 4).await?;
    client(&dir)?.put(b"before", b"kept", None).await?;
    let members_before = settled_members(&dir, 4).await?;
    let marker = std::fs::read(dir.join("bootstrapped"))?;
    let offsets = log_lengths(&dir, 4);

    ok(&dir, &["delete-set"]);
    all_stopped(&dir, 4).await?;
    volumes_kept(&dir, 4);
    assert_eq!(std::fs::read(dir.join("bootstrapped"))?, marker, "the bootstrap marker changed");
    assert!(ok(&dir, &["status"]).contains("deleted"));
    let scale = harness(&dir, &["scale", "3"]);
    assert!(!scale.status.success(), "a deleted set cannot be scaled");
    assert!(String::from_utf8_lossy(&scale.stderr).contains("apply"), "{scale:?}");

    ok(&dir, &["apply"]);
    same_cluster_back(&dir, &before, &members_before, &offsets).await?;
    assert_eq!(std::fs::read(dir.join("bootstrapped"))?, marker, "the bootstrap marker changed");
    assert!(ok(&dir, &["apply"]).contains("nothing to apply"));

    ok(&dir, &["down"]);
    let status = up.wait().await?;
    assert!(status.success());
    Ok(())
}

/// `up --delete-volumes-when-scaled` (`whenScaled: Delete`, what `deploy/` no longer sets):
/// `scale 0` deletes the claim of every ordinal, so every volume goes; the bootstrap marker
/// stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero_under_when_scaled_delete_deletes_every_volume_but_not_the_marker() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path().join("state");
    let up = Up::start(&dir, &["--mode", "process", "--replicas", "3", "--delete-volumes-when-scaled"])?;
    ready_pods(&dir, 3).await?;
    let marker = std::fs::read(dir.join("bootstrapped"))?;
    ok(&dir, &["scale", "0"]);
    all_stopped(&dir, 3).await?;
    for o in 0..3 {
        let volume = dir.join(format!("data-petkv-{o}"));
        wait::until(&format!("{} deleted", volume.display()), SETTLE, || async { (!volume.exists()).then_some(()) })
            .await?;
    }
    assert_eq!(std::fs::read(dir.join("bootstrapped"))?, marker, "the bootstrap marker changed");
    ok(&dir, &["down"]);
    let status = up.wait().await?;
    assert!(status.success());
    Ok(())
}
