//! How commands from a second terminal reach a running `petkv-harness up`.
//!
//! `up` is the StatefulSet controller. It owns the pod processes and, every tick, reads
//! `desired.json` from the state dir (what the user asked for) and writes `running.json` (what
//! runs, with process ids and addresses). Commands change `desired.json` (scale, also to 0,
//! wipe a volume, rolling restart, delete the set and apply it again, stop) or signal a pod's process directly (kill, delete-pod); the
//! controller then does what a StatefulSet controller and kubelet would: recreate a pod that
//! died, with the same name and volume.
//!
//! Requests that must happen once (wipe a volume, restart everything) are counters: a command
//! increments one, the controller acts on every increment it has not seen yet. Only commands
//! write `desired.json` and only the controller writes `running.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// File the commands write.
pub const DESIRED_FILE: &str = "desired.json";
/// File the controller writes.
pub const RUNNING_FILE: &str = "running.json";

/// StatefulSet pod management policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Create pods 0..N-1 one at a time, each after the previous is ready; delete N-1..0.
    OrderedReady,
    /// Create and delete all pods at once (what deploy/ uses).
    #[default]
    Parallel,
}

/// What the user wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub replicas: u32,
    /// Incremented by `rolling-restart`.
    pub restart_requests: u64,
    /// Incremented per ordinal by `delete-volume`.
    pub wipe_requests: BTreeMap<u32, u64>,
    /// Set by `down`.
    pub stop: bool,
    /// With `down --delete-volumes`.
    pub delete_volumes: bool,
    /// Pods cut off the network (`partition`); `heal` empties it. Pod mode only.
    #[serde(default)]
    pub isolated: std::collections::BTreeSet<u32>,
    /// A split into groups (`partition --groups`); the first keeps the clients. Pod mode only.
    #[serde(default)]
    pub groups: Vec<Vec<u32>>,
    /// Set by `delete-set` (`kubectl delete statefulset` with `whenDeleted: Retain`: every pod
    /// terminated at once, volumes and the bootstrap marker kept), cleared by `apply` (the set
    /// created again at `replicas`, on its volumes).
    #[serde(default)]
    pub deleted: bool,
}

/// What runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub controller_pid: u32,
    pub set: String,
    pub policy: Policy,
    pub pods: BTreeMap<u32, RunningPod>,
    /// The set's certificates, when it runs with TLS (`up --tls`): the commands that talk to
    /// the pods from a second terminal use them.
    #[serde(default)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// The state dir holding `auth/tokens`, when the set runs with authentication (`up
    /// --auth`): the commands that talk to the pods use its admin token.
    #[serde(default)]
    pub auth_dir: Option<std::path::PathBuf>,
}

impl Running {
    /// How to dial the pods' client ports: TLS with the set's certificates, if it has them.
    pub fn client_tls(&self) -> anyhow::Result<Option<petkv_client::tls::ClientTls>> {
        let Some(dir) = &self.tls_dir else { return Ok(None) };
        Ok(Some(crate::tls::ClusterTls::open(dir, &self.set)?.client().clone()))
    }

    /// The admin token, if the set runs with authentication.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let Some(dir) = &self.auth_dir else { return Ok(None) };
        Ok(Some(crate::auth::ClusterAuth::open_in(dir)?.admin))
    }
}

/// One pod as the controller sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningPod {
    pub name: String,
    pub pid: Option<u32>,
    pub client_addr: String,
    /// `host:port` of the pod's HTTP port (`/metrics`, `/healthz`, `/readyz`).
    #[serde(default)]
    pub http_addr: String,
    pub volume: String,
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

pub fn read_desired(dir: &Path) -> anyhow::Result<Option<Desired>> {
    read_json(&dir.join(DESIRED_FILE))
}

pub fn write_desired(dir: &Path, desired: &Desired) -> anyhow::Result<()> {
    write_atomically(&dir.join(DESIRED_FILE), &serde_json::to_string_pretty(desired)?)
}

pub fn read_running(dir: &Path) -> anyhow::Result<Option<Running>> {
    read_json(&dir.join(RUNNING_FILE))
}

pub fn write_running(dir: &Path, running: &Running) -> anyhow::Result<()> {
    write_atomically(&dir.join(RUNNING_FILE), &serde_json::to_string_pretty(running)?)
}

/// The running controller's view, or an error saying that no `up` runs on `dir`.
pub fn running_controller(dir: &Path) -> anyhow::Result<Running> {
    let Some(running) = read_running(dir)? else {
        bail!("no `petkv-harness up` has run on {} (no {RUNNING_FILE})", dir.display());
    };
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(running.controller_pid as i32), None).is_ok();
    if !alive {
        bail!("the `petkv-harness up` of {} (pid {}) is not running", dir.display(), running.controller_pid);
    }
    Ok(running)
}

/// Changes `desired.json` of a running controller.
pub fn request(dir: &Path, change: impl FnOnce(&mut Desired)) -> anyhow::Result<Desired> {
    running_controller(dir)?;
    let mut desired = read_desired(dir)?.context("the controller has no desired.json")?;
    change(&mut desired);
    write_desired(dir, &desired)?;
    Ok(desired)
}

/// Parses `petkv-2` or `2` into an ordinal.
pub fn parse_pod(set: &str, pod: &str) -> anyhow::Result<u32> {
    let ordinal = pod.strip_prefix(&format!("{set}-")).unwrap_or(pod);
    ordinal.parse().with_context(|| format!("{pod:?} is not a pod of set {set} (expected {set}-N or N)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_desired(dir.path()).expect("read"), None);
        let d = Desired { replicas: 5, restart_requests: 2, wipe_requests: [(1, 3)].into(), ..Default::default() };
        write_desired(dir.path(), &d).expect("write");
        assert_eq!(read_desired(dir.path()).expect("read"), Some(d));
    }

    #[test]
    fn commands_need_a_running_controller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = request(dir.path(), |d| d.replicas = 3).expect_err("no controller");
        assert!(err.to_string().contains("no `petkv-harness up`"), "{err}");
        // A controller pid that does not exist.
        write_running(dir.path(), &Running { controller_pid: i32::MAX as u32, ..Default::default() }).expect("write");
        let err = request(dir.path(), |d| d.replicas = 3).expect_err("dead controller");
        assert!(err.to_string().contains("is not running"), "{err}");
    }

    #[test]
    fn pod_names_parse() {
        assert_eq!(parse_pod("petkv", "petkv-2").expect("parse"), 2);
        assert_eq!(parse_pod("petkv", "3").expect("parse"), 3);
        assert!(parse_pod("petkv", "other-1").is_err());
    }
}
