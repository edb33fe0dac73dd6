//! The set of pods, StatefulSet-style.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use petkv_client::pb::v1::NodeStatus;
use petkv_client::tls::ClientTls;
use petkv_client::{Client, ClientError};

use crate::auth::ClusterAuth;
use crate::binary::petkv_binary;
use crate::lazyfs::LazyFsVolume;
use crate::pod::{Pod, PodSpec};
use crate::tls::ClusterTls;
use crate::volume::SizedVolume;
use crate::wait;

mod force_delete;

pub use force_delete::{VolumeImage, Zombie};

/// Client port of every pod (each pod has its own address).
pub const CLIENT_PORT: u16 = 7379;
/// Peer port of every pod.
pub const PEER_PORT: u16 = 7380;
/// HTTP port (`/metrics`, `/healthz`, `/readyz`) of every pod.
pub const HTTP_PORT: u16 = 7381;
/// etcd v3 API port of every pod, when the set serves it ([`ClusterSpec::etcd`]).
pub const ETCD_PORT: u16 = 7382;
/// File in the state dir that keeps the cluster's loopback range (`[a, b]` of `127.a.b.0/24`).
pub const ADDRESSES_FILE: &str = "addresses.json";
/// How long a pod gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// How pods are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Processes on private loopback addresses, with `--hostname` (works anywhere).
    #[default]
    Process,
    /// Each pod in its own network and UTS namespace on a bridge, with its own /etc/hosts,
    /// exactly the code path it runs on Kubernetes (Linux, root, iproute2).
    Pod,
    /// Pod mode where it is available, process mode elsewhere.
    Auto,
}

/// What set to run.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub set: String,
    pub replicas: u32,
    pub voters: u32,
    /// Extra `petkv serve` flags for every pod.
    pub extra_args: Vec<String>,
    pub mode: Mode,
    /// `persistentVolumeClaimRetentionPolicy.whenScaled: Delete` (default `Retain`): volumes of
    /// pods removed by a scale-down are deleted.
    pub delete_volumes_when_scaled: bool,
    /// TLS on every pod's client and peer ports, with certificates issued into the state dir
    /// ([`crate::tls`]); the harness's own connections use TLS too.
    pub tls: bool,
    /// Authentication on every pod's client port ([`crate::auth`]); the harness's own
    /// connections use the admin token.
    pub auth: bool,
    /// Size-limited volumes: each pod's volume is a tmpfs of this many bytes
    /// ([`crate::volume`]; needs root), mounted when the pod is added and gone with the
    /// cluster. `None`: plain directories in the state dir.
    pub volume_bytes: Option<u64>,
    /// Volumes on LazyFS ([`crate::lazyfs`]; needs root, `/dev/fuse` and the LazyFS build):
    /// each pod's volume is a LazyFS mount over a backing dir in the state dir, mounted when
    /// the pod is added and unmounted with the cluster; [`Cluster::power_loss`] works only
    /// with it.
    pub lazyfs: bool,
    /// Every pod also serves etcd's v3 API (`--etcd-listen`) on [`ETCD_PORT`] of its address.
    pub etcd: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            set: "petkv".into(),
            replicas: 3,
            voters: 3,
            extra_args: Vec::new(),
            mode: Mode::Process,
            delete_volumes_when_scaled: false,
            tls: false,
            auth: false,
            volume_bytes: None,
            lazyfs: false,
            etcd: false,
        }
    }
}

/// Limits how many clusters one process runs at once (tests run in parallel threads; each
/// cluster is several processes on a 2-core machine). `PETKV_HARNESS_PARALLEL`, default 2.
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots { used: Mutex::new(0), freed: Condvar::new() };

struct Slot;

impl Slot {
    fn acquire() -> Slot {
        let max = std::env::var("PETKV_HARNESS_PARALLEL").ok().and_then(|v| v.parse().ok()).unwrap_or(2usize).max(1);
        let mut used = SLOTS.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= max {
            used = SLOTS.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= 1;
        SLOTS.freed.notify_one();
    }
}

/// Set to keep the state dir (volumes and logs) of a cluster made by [`Cluster::new`].
pub const KEEP_STATE: &str = "PETKV_KEEP_STATE";

/// A set of pods with their volumes under one state directory.
pub struct Cluster {
    pub spec: ClusterSpec,
    state_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    subnet: (u8, u8),
    binary: PathBuf,
    pods: BTreeMap<u32, Pod>,
    /// Pod mode's bridge and namespaces (dropped after the pods, removing them).
    network: Option<crate::netns::PodNetwork>,
    /// The set's certificates, with `spec.tls`.
    tls: Option<ClusterTls>,
    /// The set's tokens, with `spec.auth`.
    auth: Option<ClusterAuth>,
    /// The pods' size-limited volumes, with `spec.volume_bytes`.
    volumes: BTreeMap<u32, SizedVolume>,
    /// The pods' LazyFS volumes and the binary, with `spec.lazyfs`.
    lazy_volumes: BTreeMap<u32, LazyFsVolume>,
    lazyfs: Option<PathBuf>,
    /// Force-deleted pods' replacements: the copy of the volume each one runs on
    /// ([`Cluster::force_delete`]).
    replaced_volumes: BTreeMap<u32, PathBuf>,
    _slot: Slot,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Pods first (killed), then their volumes (unmounted), then the state dir can go.
        self.pods.clear();
        self.volumes.clear();
        self.lazy_volumes.clear();
    }
}

impl Cluster {
    /// A cluster in a fresh temporary state dir, removed when the cluster is dropped unless
    /// `PETKV_KEEP_STATE` is set (then its path is printed, for a post-mortem of the logs).
    pub fn new(spec: ClusterSpec) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new().prefix("petkv-harness-").tempdir()?;
        let dir = temp.path().to_path_buf();
        let mut c = Self::in_dir(spec, &dir)?;
        if std::env::var_os(KEEP_STATE).is_some() {
            eprintln!("{KEEP_STATE}: keeping the cluster's state dir {}", temp.keep().display());
        } else {
            c._temp = Some(temp);
        }
        Ok(c)
    }

    /// A cluster whose state lives in `dir` (kept after the cluster is dropped).
    pub fn in_dir(spec: ClusterSpec, dir: &Path) -> anyhow::Result<Self> {
        let slot = Slot::acquire();
        std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("create {}", dir.display()))?;
        let subnet = Self::load_or_pick_subnet(dir)?;
        let pod_mode = match spec.mode {
            Mode::Process => false,
            Mode::Pod => true,
            Mode::Auto => crate::netns::available(),
        };
        anyhow::ensure!(
            !(spec.lazyfs && spec.volume_bytes.is_some()),
            "a volume is either size-limited (tmpfs) or on LazyFS, not both"
        );
        let lazyfs = if spec.lazyfs { Some(crate::lazyfs::probe()?) } else { None };
        let network = if pod_mode { Some(crate::netns::PodNetwork::create(&spec.set)?) } else { None };
        let mut cluster = Self {
            spec,
            state_dir: dir.to_path_buf(),
            _temp: None,
            subnet,
            binary: petkv_binary()?,
            pods: BTreeMap::new(),
            network,
            tls: None,
            auth: None,
            volumes: BTreeMap::new(),
            lazy_volumes: BTreeMap::new(),
            lazyfs,
            replaced_volumes: BTreeMap::new(),
            _slot: slot,
        };
        if cluster.spec.auth {
            cluster.auth = Some(ClusterAuth::issue_or_open(dir)?);
        }
        if cluster.spec.tls {
            let this = &cluster;
            let tls = ClusterTls::issue(dir, &this.spec.set, 0..this.spec.replicas, |o| this.tls_names(o))?;
            cluster.tls = Some(tls);
        }
        for ordinal in 0..cluster.spec.replicas {
            cluster.add_pod(ordinal)?;
        }
        Ok(cluster)
    }

    /// Pods' addresses are part of the Raft membership, so a state dir keeps its address range:
    /// a harness started again on the same state dir finds its pods where they were.
    fn load_or_pick_subnet(dir: &Path) -> anyhow::Result<(u8, u8)> {
        let path = dir.join(ADDRESSES_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let [a, b]: [u8; 2] =
                serde_json::from_str(&text).with_context(|| format!("{} is not a [u8, u8] range", path.display()))?;
            return Ok((a, b));
        }
        // A private /24 inside 127.0.0.0/8, so concurrent clusters never share an address.
        let subnet = (rand::random_range(1..=254u8), rand::random_range(1..=254u8));
        std::fs::write(&path, serde_json::to_string(&[subnet.0, subnet.1])?)
            .with_context(|| format!("write {}", path.display()))?;
        Ok(subnet)
    }

    /// The state directory: volumes, logs and the bootstrap marker.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// True in pod mode.
    pub fn is_pod_mode(&self) -> bool {
        self.network.is_some()
    }

    /// The address of a pod: on loopback (process mode) or in its namespace (pod mode).
    pub fn ip(&self, ordinal: u32) -> String {
        match &self.network {
            Some(net) => net.ip(ordinal),
            None => format!("127.{}.{}.{}", self.subnet.0, self.subnet.1, ordinal + 1),
        }
    }

    /// Pod mode: cuts a pod off the network. Process mode cannot partition.
    pub fn isolate(&self, ordinal: u32) -> anyhow::Result<()> {
        self.network.as_ref().context("partitions need pod mode")?.isolate(ordinal)
    }

    /// Pod mode: adds latency to a pod's link.
    pub fn add_latency(&self, ordinal: u32, delay: Duration) -> anyhow::Result<()> {
        self.network.as_ref().context("latency needs pod mode")?.add_latency(ordinal, delay)
    }

    /// Pod mode: removes added latency.
    pub fn clear_latency(&self, ordinal: u32) -> anyhow::Result<()> {
        self.network.as_ref().context("latency needs pod mode")?.clear_latency(ordinal)
    }

    /// Pod mode: splits the set into groups that cannot reach each other; clients stay with
    /// the first group.
    pub fn split(&self, groups: &[Vec<u32>]) -> anyhow::Result<()> {
        self.network.as_ref().context("partitions need pod mode")?.split(groups)
    }

    /// Pod mode: undoes a split.
    pub fn join_sides(&self) -> anyhow::Result<()> {
        self.network.as_ref().context("partitions need pod mode")?.join_sides()
    }

    /// Pod mode: reconnects an isolated pod.
    pub fn heal(&self, ordinal: u32) -> anyhow::Result<()> {
        self.network.as_ref().context("partitions need pod mode")?.heal(ordinal)
    }

    /// `host:port` of a pod's client API.
    pub fn client_addr(&self, ordinal: u32) -> String {
        format!("{}:{CLIENT_PORT}", self.ip(ordinal))
    }

    /// `host:port` of a pod's etcd v3 API (served when the spec says [`ClusterSpec::etcd`]).
    pub fn etcd_addr(&self, ordinal: u32) -> String {
        format!("{}:{ETCD_PORT}", self.ip(ordinal))
    }

    /// `host:port` of a pod's HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub fn http_addr(&self, ordinal: u32) -> String {
        format!("{}:{HTTP_PORT}", self.ip(ordinal))
    }

    /// The volume directory of a pod, named like its PVC (a force-deleted pod's replacement:
    /// the copy of the volume it runs on).
    pub fn volume(&self, ordinal: u32) -> PathBuf {
        if let Some(dir) = self.replaced_volumes.get(&ordinal) {
            return dir.clone();
        }
        self.state_dir.join(format!("data-{}-{ordinal}", self.spec.set))
    }

    fn peers_spec(&self) -> String {
        (0..self.spec.replicas).map(|o| format!("{o}={}:{PEER_PORT}", self.ip(o))).collect::<Vec<_>>().join(",")
    }

    fn peer_args(&self) -> Vec<String> {
        match &self.network {
            Some(_) => vec!["--peer-domain".into(), crate::netns::POD_DOMAIN.into()],
            None => vec!["--peers".into(), self.peers_spec()],
        }
    }

    /// The names a pod's certificate carries besides petkv's defaults: its address, and in pod
    /// mode its DNS name under the pods' domain.
    fn tls_names(&self, ordinal: u32) -> Vec<String> {
        let mut names = vec![self.ip(ordinal)];
        if self.network.is_some() {
            names.push(format!("{}-{ordinal}.{}", self.spec.set, crate::netns::POD_DOMAIN));
        }
        names
    }

    /// The set's certificates, when it runs with TLS.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// How the harness dials the pods' client ports (TLS when the set has it).
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref().map(ClusterTls::client)
    }

    /// The set's tokens, when it runs with authentication.
    pub fn auth(&self) -> Option<&ClusterAuth> {
        self.auth.as_ref()
    }

    /// A client over `endpoints`, over TLS when the set has it, with the admin token when it
    /// runs with authentication.
    pub fn client_for(&self, endpoints: &[String], timeout: Duration) -> anyhow::Result<Client> {
        Ok(self.petkv_client(endpoints, timeout)?)
    }

    fn petkv_client(&self, endpoints: &[String], timeout: Duration) -> Result<Client, ClientError> {
        let client = Client::with_tls(endpoints, timeout, self.client_tls())?;
        match &self.auth {
            Some(auth) => client.with_token(&auth.admin),
            None => Ok(client),
        }
    }

    fn add_pod(&mut self, ordinal: u32) -> anyhow::Result<()> {
        if let Some(net) = &mut self.network {
            net.add_pod(ordinal)?;
        }
        self.mount_volume(ordinal)?;
        let mut env = match &self.tls {
            Some(tls) => {
                tls.add_pod(ordinal, self.tls_names(ordinal))?;
                tls.pod_env(ordinal)
            }
            None => Vec::new(),
        };
        env.extend(self.auth.iter().flat_map(ClusterAuth::pod_env));
        let spec = PodSpec {
            set: self.spec.set.clone(),
            ordinal,
            binary: self.binary.clone(),
            client_addr: self.client_addr(ordinal),
            peer_addr: format!("{}:{PEER_PORT}", self.ip(ordinal)),
            http_addr: self.http_addr(ordinal),
            etcd_addr: self.spec.etcd.then(|| self.etcd_addr(ordinal)),
            data_dir: self.volume(ordinal),
            log_path: self.state_dir.join("logs").join(format!("{}-{ordinal}.log", self.spec.set)),
            peer_args: self.peer_args(),
            netns: self.network.as_ref().map(|n| n.namespace(ordinal)),
            bootstrap_marker: self.bootstrap_marker(),
            voters: self.spec.voters,
            extra_args: self.spec.extra_args.clone(),
            env,
        };
        self.pods.insert(ordinal, Pod::new(spec));
        Ok(())
    }

    /// With `spec.volume_bytes`: mounts the pod's size-limited volume, unless it is mounted.
    /// With `spec.lazyfs`: mounts the pod's LazyFS volume, unless it is mounted.
    fn mount_volume(&mut self, ordinal: u32) -> anyhow::Result<()> {
        if let (Some(bytes), false) = (self.spec.volume_bytes, self.volumes.contains_key(&ordinal)) {
            self.volumes.insert(ordinal, SizedVolume::mount(&self.volume(ordinal), bytes)?);
        }
        if let (Some(binary), false) = (&self.lazyfs, self.lazy_volumes.contains_key(&ordinal)) {
            let name = format!("{}-{ordinal}", self.spec.set);
            let volume = LazyFsVolume::mount(
                binary,
                &self.volume(ordinal),
                &self.state_dir,
                &name,
                &crate::lazyfs::cache_size(),
            )?;
            self.lazy_volumes.insert(ordinal, volume);
        }
        Ok(())
    }

    /// True when the pods' volumes are on LazyFS.
    pub fn has_lazyfs_volumes(&self) -> bool {
        self.lazyfs.is_some()
    }

    /// A power loss of one pod: kill -9 its process, then drop every byte its volume holds
    /// that was not fsync'd ([`LazyFsVolume::power_cut`]). The pod can then be started again
    /// on the same volume. Needs LazyFS volumes.
    pub async fn power_loss(&mut self, ordinal: u32) -> anyhow::Result<()> {
        anyhow::ensure!(self.lazyfs.is_some(), "a power loss needs LazyFS volumes (ClusterSpec::lazyfs)");
        self.kill(ordinal).await?;
        self.lazy_volumes
            .get_mut(&ordinal)
            .with_context(|| format!("pod {ordinal} has no LazyFS volume"))?
            .power_cut()
            .with_context(|| format!("power cut of pod {ordinal}'s volume"))
    }

    /// Swaps two stopped pods' volumes, as swapping their PVCs would (on LazyFS: their backing
    /// dirs, each mounted again at the other pod's volume).
    pub fn swap_volumes(&mut self, a: u32, b: u32) -> anyhow::Result<()> {
        for o in [a, b] {
            anyhow::ensure!(!self.pod_mut(o)?.is_running(), "stop pod {o} before swapping its volume");
        }
        anyhow::ensure!(!self.volumes.contains_key(&a), "size-limited volumes cannot be swapped");
        let (dir_a, dir_b) = match (self.lazy_volumes.remove(&a), self.lazy_volumes.remove(&b)) {
            (Some(va), Some(vb)) => {
                let dirs = (va.backing().to_path_buf(), vb.backing().to_path_buf());
                drop((va, vb)); // unmounted
                dirs
            }
            (None, None) => (self.volume(a), self.volume(b)),
            _ => anyhow::bail!("only one of pods {a} and {b} has a LazyFS volume"),
        };
        let tmp = dir_a.with_extension("swap");
        std::fs::rename(&dir_a, &tmp)?;
        std::fs::rename(&dir_b, &dir_a)?;
        std::fs::rename(&tmp, &dir_b)?;
        self.mount_volume(a)?;
        self.mount_volume(b)
    }

    /// Fills a pod's volume until at most `leave_free` bytes are free (0: until it is full),
    /// with a filler file ([`crate::volume::fill`]).
    pub fn fill_volume(&self, ordinal: u32, leave_free: u64) -> anyhow::Result<PathBuf> {
        crate::volume::fill(&self.volume(ordinal), leave_free)
    }

    /// Removes the filler file from a pod's volume: the space is back.
    pub fn unfill_volume(&self, ordinal: u32) -> anyhow::Result<()> {
        crate::volume::unfill(&self.volume(ordinal))
    }

    /// The pod with this ordinal.
    pub fn pod(&self, ordinal: u32) -> anyhow::Result<&Pod> {
        self.pods.get(&ordinal).with_context(|| format!("no pod with ordinal {ordinal}"))
    }

    pub fn pod_mut(&mut self, ordinal: u32) -> anyhow::Result<&mut Pod> {
        self.pods.get_mut(&ordinal).with_context(|| format!("no pod with ordinal {ordinal}"))
    }

    /// Ordinals of all pods.
    pub fn ordinals(&self) -> Vec<u32> {
        self.pods.keys().copied().collect()
    }

    /// Starts every pod at once (podManagementPolicy: Parallel).
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for pod in self.pods.values_mut() {
            pod.start()?;
        }
        Ok(())
    }

    /// Starts (or restarts) one pod with its volume.
    pub fn start(&mut self, ordinal: u32) -> anyhow::Result<()> {
        self.pod_mut(ordinal)?.start()
    }

    /// kill -9 one pod and reap it.
    pub async fn kill(&mut self, ordinal: u32) -> anyhow::Result<()> {
        self.pod_mut(ordinal)?.kill().await
    }

    /// Sends any signal (SIGSTOP/SIGCONT for pauses).
    pub fn signal(&self, ordinal: u32, sig: Signal) -> anyhow::Result<()> {
        self.pod(ordinal)?.signal(sig)
    }

    /// SIGTERM one pod and wait for it (SIGKILL after the grace period).
    pub async fn terminate(&mut self, ordinal: u32) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.pod_mut(ordinal)?.terminate(DEFAULT_GRACE).await
    }

    /// Deletes a (stopped) pod's volume, as deleting its PVC would.
    pub fn wipe_volume(&mut self, ordinal: u32) -> anyhow::Result<()> {
        let running = self.pod_mut(ordinal)?.is_running();
        anyhow::ensure!(!running, "stop pod {ordinal} before wiping its volume");
        // A size-limited volume is unmounted (its contents go with it) and a new one mounted,
        // as a new PVC of the same size would be.
        let sized = self.volumes.remove(&ordinal).is_some();
        // A LazyFS volume: unmounted, its backing dir deleted, a new one mounted.
        let lazy = self.lazy_volumes.remove(&ordinal).map(|v| v.backing().to_path_buf());
        if let Some(backing) = &lazy {
            std::fs::remove_dir_all(backing).with_context(|| format!("remove {}", backing.display()))?;
        }
        let dir = self.volume(ordinal);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        if sized || lazy.is_some() {
            self.mount_volume(ordinal)?;
        }
        Ok(())
    }

    /// A client over every pod's client address.
    pub fn client(&self) -> anyhow::Result<Client> {
        let endpoints: Vec<String> = self.pods.keys().map(|o| self.client_addr(*o)).collect();
        self.client_for(&endpoints, Duration::from_secs(10))
    }

    /// A client that talks to one pod only.
    pub fn client_of(&self, ordinal: u32) -> anyhow::Result<Client> {
        self.client_for(&[self.client_addr(ordinal)], Duration::from_secs(3))
    }

    /// The pod's own status (no failover).
    pub async fn status(&self, ordinal: u32) -> Result<NodeStatus, ClientError> {
        self.petkv_client(&[self.client_addr(ordinal)], Duration::from_secs(1))?.status_of_first().await
    }

    /// Waits until a pod is ready: a member that hears from a live leader and has caught up.
    pub async fn wait_member(&self, ordinal: u32, timeout: Duration) -> anyhow::Result<NodeStatus> {
        wait::until(&format!("pod {ordinal} to be ready"), timeout, || async {
            self.status(ordinal).await.ok().filter(|s| s.ready)
        })
        .await
        .with_context(|| {
            self.pod(ordinal).map(|p| format!("log of {}:\n{}", p.name(), p.log_tail(20))).unwrap_or_default()
        })
    }

    /// Waits until every running pod is a voter or learner as the set says, and all agree on
    /// one leader. Returns the leader's ordinal.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<u32> {
        let running: Vec<u32> = self.pods.iter_mut().filter_map(|(o, p)| p.is_running().then_some(*o)).collect();
        let voters = self.spec.voters;
        let this = &*self;
        wait::until("every running pod to settle into its role under one leader", timeout, || {
            let running = running.clone();
            async move {
                let mut leader = None;
                for o in &running {
                    let s = this.status(*o).await.ok()?;
                    let want = if *o < voters {
                        ["leader", "follower"].contains(&s.role.as_str())
                    } else {
                        s.role == "learner"
                    };
                    if !want || !s.ready || leader.is_some_and(|l| l != s.leader_id) {
                        return None;
                    }
                    leader = Some(s.leader_id);
                }
                leader.map(petkv::raft::ordinal_of)
            }
        })
        .await
    }

    /// Waits until some pod leads, returning its ordinal.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u32> {
        wait::until("a leader", timeout, || async {
            for o in self.pods.keys() {
                if let Ok(s) = self.status(*o).await {
                    if s.role == "leader" {
                        return Some(*o);
                    }
                }
            }
            None
        })
        .await
    }

    /// Scales the set to `replicas`, as `kubectl scale` does: the declared count changes first
    /// (the cluster learns it through `petkv scale`), then new pods start (each with the volume
    /// of its ordinal, kept from before if there was one) or pods beyond the count get SIGTERM,
    /// highest ordinal first. Volumes of removed pods are kept (PVC retention `whenScaled:
    /// Retain`) unless the spec says `Delete`.
    ///
    /// `0` is a full stop, as `--replicas=0` is on Kubernetes: the declared count is not
    /// changed (the node refuses 0 through `petkv scale`, and ignores a `spec.replicas` of 0),
    /// every pod gets SIGTERM, highest ordinal first, and keeps its volume and its membership.
    /// Scaling a fully stopped set back to its size starts every pod again at once (Parallel).
    pub async fn scale(&mut self, replicas: u32) -> anyhow::Result<()> {
        if replicas == 0 {
            return self.down().await;
        }
        if !self.pods.values_mut().any(|p| p.is_running()) {
            anyhow::ensure!(
                replicas == self.spec.replicas,
                "a fully stopped set comes back at its size ({}) first, then scales",
                self.spec.replicas
            );
            return self.start_all();
        }
        self.client()?.scale(replicas).await.context("declaring the replica count")?;
        let old = self.spec.replicas;
        self.spec.replicas = replicas;
        let peer_args = self.peer_args();
        for pod in self.pods.values_mut() {
            pod.spec.peer_args = peer_args.clone();
        }
        for ordinal in old..replicas {
            self.add_pod(ordinal)?;
            self.start(ordinal)?;
        }
        for ordinal in (replicas..old).rev() {
            self.terminate(ordinal).await?;
            self.pods.remove(&ordinal);
            if self.spec.delete_volumes_when_scaled {
                self.volumes.remove(&ordinal);
                if let Some(v) = self.lazy_volumes.remove(&ordinal) {
                    let backing = v.backing().to_path_buf();
                    drop(v);
                    std::fs::remove_dir_all(&backing).with_context(|| format!("delete {}", backing.display()))?;
                }
                let dir = self.volume(ordinal);
                std::fs::remove_dir_all(&dir).with_context(|| format!("delete {}", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Deletes every pod at once, as deleting the StatefulSet does (the garbage collector
    /// deletes its pods together, in no order): SIGTERM to all, then each gets its grace
    /// period (SIGKILL after it). Volumes and the bootstrap marker stay. Returns the exit
    /// status of each pod (`None`: it had to be killed, or was not running).
    pub async fn delete_all_pods(&mut self) -> anyhow::Result<Vec<(u32, Option<std::process::ExitStatus>)>> {
        for pod in self.pods.values_mut() {
            if pod.is_running() {
                pod.signal(Signal::SIGTERM)?;
            }
        }
        let mut out = Vec::new();
        for (o, pod) in self.pods.iter_mut() {
            let status = pod.wait_exit(DEFAULT_GRACE).await?;
            if pod.is_running() {
                tracing::warn!(pod = %pod.name(), "grace period over: SIGKILL");
                pod.kill().await?;
            }
            out.push((*o, status));
        }
        Ok(out)
    }

    /// The bootstrap marker file every pod is given (`<state-dir>/bootstrapped`).
    pub fn bootstrap_marker(&self) -> PathBuf {
        self.state_dir.join("bootstrapped")
    }

    /// Pod mode: one pod's DNS fails (`false`: its `/etc/hosts` is emptied) or works again.
    pub fn set_dns(&self, ordinal: u32, works: bool) -> anyhow::Result<()> {
        self.network.as_ref().context("a DNS failure needs pod mode")?.set_dns(ordinal, works)
    }

    /// Stops every pod (SIGTERM, highest ordinal first, as a StatefulSet deletes).
    pub async fn down(&mut self) -> anyhow::Result<()> {
        let ordinals: Vec<u32> = self.pods.keys().rev().copied().collect();
        for o in ordinals {
            self.terminate(o).await?;
        }
        Ok(())
    }
}
