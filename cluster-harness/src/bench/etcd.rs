//! A 3-member etcd cluster on 127.0.0.1 for the comparison: Debian's `etcd` binary (3.4,
//! `scripts/install-etcd.sh`), free ports, data dirs in a temporary dir beside petkv's (same
//! filesystem), default `--quota-backend-bytes`, logs in the data dir.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// Members of the comparison cluster.
const MEMBERS: usize = 3;

/// A running etcd cluster; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct EtcdCluster {
    children: Vec<Child>,
    client_endpoints: Vec<String>,
    dir: tempfile::TempDir,
}

/// Whether the `etcd` binary is on the PATH.
pub fn installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port nobody listens on now (bound, then released).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts the members with their data in a new temporary dir under `parent`.
    pub fn start(parent: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(installed(), "etcd is not installed: run scripts/install-etcd.sh");
        let dir = tempfile::Builder::new()
            .prefix("etcd-bench-")
            .tempdir_in(parent)
            .with_context(|| format!("create a temp dir in {}", parent.display()))?;
        let ports: Vec<(u16, u16)> =
            (0..MEMBERS).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self { children: Vec::new(), client_endpoints: Vec::new(), dir };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = cluster.dir.path().join(format!("m{i}"));
            let log = std::fs::File::create(cluster.dir.path().join(format!("m{i}.log")))?;
            let child = Command::new("etcd")
                .arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=petkv-bench")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("start etcd")?;
            cluster.children.push(child);
            cluster.client_endpoints.push(format!("127.0.0.1:{client}"));
        }
        Ok(cluster)
    }

    /// `host:port` of every member's client URL.
    pub fn endpoints(&self) -> &[String] {
        &self.client_endpoints
    }

    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// The directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until a linearizable read succeeds through every member (a leader is elected and
    /// each member is serving).
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for (i, endpoint) in self.client_endpoints.clone().iter().enumerate() {
            let exited = self.children[i].try_wait()?;
            anyhow::ensure!(exited.is_none(), "etcd member m{i} exited: {exited:?}; see {}", self.dir().display());
            crate::wait::until(&format!("etcd member {endpoint} to serve reads"), timeout, || async move {
                let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
                client.get("health", None).await.ok().map(|_| ())
            })
            .await
            .with_context(|| format!("etcd logs are in {}", self.dir().display()))?;
        }
        Ok(())
    }

    /// Stops every member: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        for child in &self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in &mut self.children {
            for _ in 0..50 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
