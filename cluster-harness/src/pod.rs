//! One pod: a `petkv serve` process with a stable name, volume, address and log file.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Everything needed to (re)start a pod the same way.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub set: String,
    pub ordinal: u32,
    pub binary: PathBuf,
    pub client_addr: String,
    pub peer_addr: String,
    /// `host:port` of the HTTP port (metrics and health).
    pub http_addr: String,
    /// `host:port` of the etcd v3 API port, when the pod serves one.
    pub etcd_addr: Option<String>,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// How the pod finds its peers: `--peers <map>` (process mode) or `--peer-domain <d>`.
    pub peer_args: Vec<String>,
    /// Pod mode: the network namespace the pod runs in (with its own hostname).
    pub netns: Option<String>,
    pub bootstrap_marker: PathBuf,
    pub voters: u32,
    pub extra_args: Vec<String>,
    /// Extra environment of both containers (the TLS files: [`crate::tls::ClusterTls::pod_env`]).
    pub env: Vec<(String, String)>,
}

/// The TLS and auth variables of `petkv serve` and `wait-primary`: cleared unless the pod sets
/// them, so the harness's own environment never turns TLS or authentication on by accident.
const TLS_ENV: [&str; 8] = [
    "PETKV_AUTH_TOKENS",
    "PETKV_TLS_CERT",
    "PETKV_TLS_KEY",
    "PETKV_TLS_CA",
    "PETKV_TLS_CLIENT_AUTH",
    "PETKV_PEER_TLS_CERT",
    "PETKV_PEER_TLS_KEY",
    "PETKV_PEER_TLS_CA",
];

/// The pod's entry point: `$1` pod name, `$2` petkv binary, the rest `serve` flags.
const POD_SCRIPT: &str = r#"pod="$0"; bin="$1"; shift
if [ -n "$PETKV_SET_HOSTNAME" ]; then hostname "$pod" || exit 1; fi
trap 'kill -TERM "$init" 2>/dev/null; exit 143' TERM INT
"$bin" wait-primary & init=$!
wait "$init" || exit 1
trap - TERM INT
exec "$bin" serve "$@""#;

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(_, p)| p).unwrap_or(addr)
}

/// A pod and, while it runs, its process (the leader of its own process group).
pub struct Pod {
    pub spec: PodSpec,
    child: Option<Child>,
}

impl Pod {
    pub fn new(spec: PodSpec) -> Self {
        Self { spec, child: None }
    }

    /// `<set>-<ordinal>`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.spec.set, self.spec.ordinal)
    }

    /// Starts the pod's process (its log is appended to, so restarts keep history).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            anyhow::bail!("{} is already running", self.name());
        }
        let s = &self.spec;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log_path)
            .with_context(|| format!("open {}", s.log_path.display()))?;
        // The pod's two containers, as in deploy/: the init container `petkv wait-primary`, then
        // `petkv serve`. Identity and peers travel in PETKV_* variables, which both read. The
        // shell `exec`s serve, so the pod keeps one pid; a signal during the init phase stops
        // the waiting init container too.
        let mut cmd = match &s.netns {
            // Pod mode: the pod's own network and UTS namespaces; gethostname() returns the pod
            // name, so no --hostname is needed.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare", "--uts", "sh", "-c", POD_SCRIPT])
                    .env("PETKV_SET_HOSTNAME", "1")
                    .env_remove("PETKV_HOSTNAME")
                    .env("PETKV_CLIENT_LISTEN", format!("0.0.0.0:{}", port_of(&s.client_addr)))
                    .env("PETKV_PEER_LISTEN", format!("0.0.0.0:{}", port_of(&s.peer_addr)))
                    .env("PETKV_HTTP_LISTEN", format!("0.0.0.0:{}", port_of(&s.http_addr)));
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", POD_SCRIPT])
                    .env_remove("PETKV_SET_HOSTNAME")
                    .env("PETKV_HOSTNAME", self.name())
                    .env("PETKV_CLIENT_LISTEN", &s.client_addr)
                    .env("PETKV_PEER_LISTEN", &s.peer_addr)
                    .env("PETKV_HTTP_LISTEN", &s.http_addr);
                c
            }
        };
        cmd.arg(self.name()).arg(&s.binary).env("PETKV_DATA_DIR", &s.data_dir);
        match (&s.etcd_addr, &s.netns) {
            (Some(addr), Some(_)) => {
                cmd.env("PETKV_ETCD_LISTEN", format!("0.0.0.0:{}", port_of(addr))).env("PETKV_ETCD_ADVERTISE", addr)
            }
            (Some(addr), None) => cmd.env("PETKV_ETCD_LISTEN", addr).env("PETKV_ETCD_ADVERTISE", addr),
            (None, _) => cmd.env_remove("PETKV_ETCD_LISTEN").env_remove("PETKV_ETCD_ADVERTISE"),
        };
        for var in TLS_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
        match s.peer_args.as_slice() {
            [flag, value] if flag == "--peers" => cmd.env("PETKV_PEERS", value).env_remove("PETKV_PEER_DOMAIN"),
            [flag, value] if flag == "--peer-domain" => cmd.env("PETKV_PEER_DOMAIN", value).env_remove("PETKV_PEERS"),
            other => anyhow::bail!("unexpected peer arguments {other:?}"),
        };
        cmd.arg("--bootstrap-marker")
            .arg(&s.bootstrap_marker)
            .args(["--voters", &s.voters.to_string()])
            .args(&s.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().with_context(|| format!("spawn {}", s.binary.display()))?);
        Ok(())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// If the process exited on its own (or was killed by someone else), reaps it and returns
    /// its exit status. A pod the harness stopped itself has no process and returns `None`.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self.pid().with_context(|| format!("{} is not running", self.name()))?;
        // The pod's process group: during the init phase that includes the waiting init container.
        signal::killpg(Pid::from_raw(pid as i32), sig).with_context(|| format!("send {sig} to {}", self.name()))
    }

    /// Waits for the process to exit; `None` if it did not within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = &mut self.child else { return Ok(None) };
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => {
                let status = status?;
                self.child = None;
                Ok(Some(status))
            }
            Err(_) => Ok(None),
        }
    }

    /// kill -9 and reap.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.signal(Signal::SIGKILL)?;
        }
        self.wait_exit(Duration::from_secs(10)).await?;
        self.child = None;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        if !self.is_running() {
            return Ok(None);
        }
        self.signal(Signal::SIGTERM)?;
        if let Some(status) = self.wait_exit(grace).await? {
            return Ok(Some(status));
        }
        tracing::warn!(pod = %self.name(), "grace period over: SIGKILL");
        self.kill().await?;
        Ok(None)
    }

    /// The length of the pod's log in bytes (an offset for [`Pod::log_since`]).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.spec.log_path).map(|m| m.len()).unwrap_or(0)
    }

    /// The pod's log from byte `offset` on.
    pub fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(&self.spec.log_path).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    /// The last lines of the pod's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // kill_on_drop reaches only the group leader; an init container still waiting would be
        // left behind.
        if let Some(pid) = self.pid() {
            let _ = signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}
