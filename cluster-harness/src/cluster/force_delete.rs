//! `kubectl delete pod --force --grace-period=0` of a pod whose node is unreachable, while its
//! process still runs (pod mode only).
//!
//! What Kubernetes does, and what [`Cluster::force_delete`] does in its place:
//!
//! - The pod object is gone at once, but nothing stops its process: its node cannot be reached
//!   (the kubelet kills it only when the node comes back). Here the process keeps running in
//!   its network namespace, with its address, its TCP connections, its hosts file and its
//!   volume; the harness no longer manages it as the pod but hands it back as a [`Zombie`].
//! - The StatefulSet controller creates the replacement, same name, on another node, with (on
//!   network storage) the same volume, as it was when the old node lost it. Here: the zombie is
//!   stopped (SIGSTOP), its volume copied (`cp -a`) to the replacement's, and continued
//!   (SIGCONT): a crash-consistent image of the disk at one instant, on which the replacement
//!   starts, while the zombie keeps writing to its own copy.
//! - The replacement gets a new IP and the pod's DNS name follows it: a new namespace and
//!   address ([`crate::netns::PodNetwork::replace_pod`]), and every pod's hosts file but the
//!   zombie's names the replacement.
//!
//! The zombie keeps writing its log, renamed `<set>-<ordinal>.zombie-<n>.log`; the replacement
//! starts a fresh `<set>-<ordinal>.log`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::signal::Signal;

use super::{Cluster, CLIENT_PORT};
use crate::pod::Pod;

/// The copy of a force-deleted pod's volume its replacement starts on.
#[derive(Debug, Clone)]
pub struct VolumeImage {
    /// The replacement's volume.
    pub path: PathBuf,
    /// How long the zombie was stopped for the copy.
    pub stopped_for: Duration,
    pub files: u64,
    pub bytes: u64,
}

/// A force-deleted pod's process, still running: the harness no longer manages it as the pod.
/// Dropping it kills it (SIGKILL to its process group), as the kubelet does when the node is
/// back.
pub struct Zombie {
    pub ordinal: u32,
    /// The process, with the spec it was started with (its namespace, addresses and volume);
    /// its log path is the renamed log it keeps writing.
    pub pod: Pod,
    /// Its namespace and address, which it keeps.
    pub namespace: String,
    pub ip: String,
    /// Its volume, which it keeps writing to.
    pub volume: PathBuf,
    /// What the replacement got.
    pub image: VolumeImage,
}

impl Zombie {
    /// `host:port` of its client API, at its old address.
    pub fn client_addr(&self) -> String {
        format!("{}:{CLIENT_PORT}", self.ip)
    }

    /// Its exit status, once it has exited by itself (reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.pod.reap()
    }

    /// kill -9 (the node is back and its kubelet kills the deleted pod's containers).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.pod.kill().await
    }

    /// The lines of its log that contain `needle`.
    pub fn logged(&self, needle: &str) -> Vec<String> {
        self.pod.log_since(0).lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }
}

impl Cluster {
    /// Force-deletes a running pod whose node is unreachable (see the module docs): returns its
    /// still-running process as a [`Zombie`], and leaves in its place a replacement pod with
    /// the same name, a new namespace and address, and a crash-consistent copy of the volume.
    /// The replacement is not started: [`Cluster::start`] it.
    pub fn force_delete(&mut self, ordinal: u32) -> anyhow::Result<Zombie> {
        ensure!(self.network.is_some(), "a force deletion needs pod mode (a new address for the replacement)");
        ensure!(
            self.lazyfs.is_none() && !self.volumes.contains_key(&ordinal),
            "a force deletion copies a plain volume directory (not LazyFS, not a size-limited volume)"
        );
        ensure!(self.pod_mut(ordinal)?.is_running(), "pod {ordinal} is not running: nothing would be left behind");
        let volume = self.volume(ordinal);
        let image_path = (1..)
            .map(|g| volume.with_file_name(format!("data-{}-{ordinal}.r{g}", self.spec.set)))
            .find(|p| !p.exists())
            .expect("an unused name");
        let mut pod = self.pods.remove(&ordinal).expect("checked above");

        // The zombie's log keeps growing under another name; the replacement starts a fresh one.
        let zombie_log = (1..)
            .map(|n| pod.spec.log_path.with_file_name(format!("{}-{ordinal}.zombie-{n}.log", self.spec.set)))
            .find(|p| !p.exists())
            .expect("an unused name");
        std::fs::rename(&pod.spec.log_path, &zombie_log)
            .with_context(|| format!("rename {} to {}", pod.spec.log_path.display(), zombie_log.display()))?;
        pod.spec.log_path = zombie_log;

        let image = crash_consistent_copy(&pod, &volume, &image_path)?;
        let net = self.network.as_mut().expect("pod mode");
        let retired = net.replace_pod(ordinal)?;
        self.replaced_volumes.insert(ordinal, image_path);
        self.add_pod(ordinal)?;
        Ok(Zombie { ordinal, pod, namespace: retired.namespace, ip: retired.ip, volume, image })
    }
}

/// SIGSTOP the process group, wait until the process is stopped, `cp -a` the volume, SIGCONT
/// (also when the copy failed).
fn crash_consistent_copy(pod: &Pod, from: &Path, to: &Path) -> anyhow::Result<VolumeImage> {
    let pid = pod.pid().context("the pod has no process")?;
    let t0 = Instant::now();
    pod.signal(Signal::SIGSTOP)?;
    let copied = wait_stopped(pid).and_then(|_| {
        let out = Command::new("cp").arg("-a").arg(from).arg(to).output().context("run cp")?;
        if !out.status.success() {
            bail!("cp -a {} {}: {}", from.display(), to.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    });
    let stopped_for = t0.elapsed();
    pod.signal(Signal::SIGCONT)?;
    copied?;
    let (files, bytes) = du(to);
    Ok(VolumeImage { path: to.to_path_buf(), stopped_for, files, bytes })
}

/// Waits until every thread of `pid` is stopped (state `T` in `/proc`).
fn wait_stopped(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("process {pid}"))?;
        let running = threads.flatten().any(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("T" | "t" | "Z" | "X") | None)
        });
        if !running {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "process {pid} did not stop within 2 s of SIGSTOP");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Files and bytes under a directory.
fn du(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    files += 1;
                    bytes += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}
