//! A 3-member etcd cluster on 127.0.0.1 for the comparison: Debian's `etcd` binary (3.4,
//! `scripts/install-etcd.sh`), free ports, data dirs in a temporary dir beside petkv's (same
//! filesystem), default flags otherwise (no auto-compaction, default `--snapshot-count` and
//! `--quota-backend-bytes`), logs in the data dir. Members can be signalled and restarted one
//! by one (the fault scenarios).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

/// Members of the comparison cluster.
pub const MEMBERS: usize = 3;

/// One member: its ports and, while it runs, its process.
struct Member {
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    client_endpoints: Vec<String>,
    initial: String,
    /// Flags every member gets besides its name, URLs and data dir (`--etcd-arg`).
    extra_args: Vec<String>,
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
    /// Starts the members with their data in a new temporary dir under `parent`, each with
    /// `extra_args` besides its own flags.
    pub fn start(parent: &Path, extra_args: &[String]) -> anyhow::Result<Self> {
        anyhow::ensure!(installed(), "etcd is not installed: run scripts/install-etcd.sh");
        let dir = tempfile::Builder::new()
            .prefix("etcd-bench-")
            .tempdir_in(parent)
            .with_context(|| format!("create a temp dir in {}", parent.display()))?;
        let members: Vec<Member> = (0..MEMBERS)
            .map(|_| Ok(Member { client: free_port()?, peer: free_port()?, child: None }))
            .collect::<anyhow::Result<_>>()?;
        let initial = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://127.0.0.1:{}", m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let client_endpoints = members.iter().map(|m| format!("127.0.0.1:{}", m.client)).collect();
        let mut cluster = Self { members, client_endpoints, initial, extra_args: extra_args.to_vec(), dir };
        for i in 0..MEMBERS {
            cluster.start_member(i)?;
        }
        Ok(cluster)
    }

    /// The flags every member gets besides its name, URLs and data dir (for reports).
    pub fn flags_note(extra_args: &[String]) -> String {
        let base = "etcd 3.4 flags: --name --data-dir --listen/advertise-client-urls \
                    --listen/initial-advertise-peer-urls --initial-cluster --initial-cluster-state=new \
                    --initial-cluster-token";
        if extra_args.is_empty() {
            format!(
                "{base}; everything else default (no --auto-compaction-retention, so no compaction; \
                 --snapshot-count 100000; --quota-backend-bytes 2 GiB)"
            )
        } else {
            format!("{base} {}; everything else default", extra_args.join(" "))
        }
    }

    /// Starts member `i` (again) on its data dir; an existing data dir makes it rejoin.
    pub fn start_member(&mut self, i: usize) -> anyhow::Result<()> {
        let data = self.data_dir(i);
        let log_path = self.dir.path().join(format!("m{i}.log"));
        let m = self.members.get_mut(i).with_context(|| format!("no etcd member {i}"))?;
        anyhow::ensure!(m.child.is_none(), "etcd member m{i} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let (client, peer) = (m.client, m.peer);
        let child = Command::new("etcd")
            .arg(format!("--name=m{i}"))
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster={}", self.initial))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=petkv-bench")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start etcd")?;
        m.child = Some(child);
        Ok(())
    }

    /// Sends `sig` to member `i`.
    pub fn signal_member(&self, i: usize, sig: Signal) -> anyhow::Result<()> {
        let child =
            self.members.get(i).and_then(|m| m.child.as_ref()).with_context(|| format!("m{i} is not running"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)
            .with_context(|| format!("send {sig} to etcd m{i}"))
    }

    /// Waits up to `timeout` for member `i` to exit, then SIGKILLs it; reaps it.
    pub async fn wait_exit(&mut self, i: usize, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let m = self.members.get_mut(i).with_context(|| format!("no etcd member {i}"))?;
        let Some(child) = &mut m.child else { return Ok(None) };
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                child.wait()?;
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        m.child = None;
        Ok(status)
    }

    /// `host:port` of every member's client URL.
    pub fn endpoints(&self) -> &[String] {
        &self.client_endpoints
    }

    /// `127.0.0.1:port` of member `i`'s client URL (which also serves `/health`).
    pub fn endpoint(&self, i: usize) -> &str {
        &self.client_endpoints[i]
    }

    /// The running members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.child.as_ref().map(|c| c.id())).collect()
    }

    /// Indexes of the members that run.
    pub fn running(&mut self) -> Vec<usize> {
        self.members
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| matches!(m.child.as_mut().map(|c| c.try_wait()), Some(Ok(None))).then_some(i))
            .collect()
    }

    /// The directory holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i`'s data dir.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}"))
    }

    /// Waits until a linearizable read succeeds through every running member (a leader is
    /// elected and each member is serving).
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            let Some(child) = self.members[i].child.as_mut() else { continue };
            let exited = child.try_wait()?;
            anyhow::ensure!(exited.is_none(), "etcd member m{i} exited: {exited:?}; see {}", self.dir().display());
            let endpoint = self.client_endpoints[i].clone();
            let endpoint = &endpoint;
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
        for i in 0..self.members.len() {
            let _ = self.signal_member(i, Signal::SIGTERM);
        }
        for i in 0..self.members.len() {
            let _ = self.wait_exit(i, Duration::from_secs(5)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(child) = &mut m.child {
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}
