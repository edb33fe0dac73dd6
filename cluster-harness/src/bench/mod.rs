//! `petkv-harness bench`: a closed-loop workload against petkv and, with `--compare etcd`,
//! against a 3-member etcd on the same loopback and filesystem, alternating the two systems
//! round by round so drift on a shared machine hits both.
//!
//! - [`workload`]: the driver, generic over [`workload::KvTarget`];
//! - [`petkv_target`] and (feature `etcd`) `etcd_target`: the two targets;
//! - (feature `etcd`) `etcd`: starts and stops the etcd members;
//! - [`batching`]: petkv's batch sizes over a run, from the members' `/metrics`;
//! - [`procstat`]: CPU seconds and peak RSS of the server processes from `/proc`;
//! - [`report`]: medians per system, the side by side table, JSON;
//! - [`sweep`]: throughput and p99 against client count, as an SVG;
//! - [`watch`]: `--mode watch`, watchers beside the writers;
//! - [`footprint`]: `--scenario footprint`, memory per idle watcher and per lease;
//! - [`sut`]: each system as a cluster to steer (leader, signal, restart, readiness, data dirs);
//! - [`scenario`]: `--scenario`: failover (kill -9, SIGTERM), cold start, restart-to-ready and
//!   volume size, on both systems.

pub mod batching;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
pub mod etcd_target;
pub mod footprint;
pub mod petkv_target;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod sut;
pub mod sweep;
pub mod watch;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::ClusterSpec;
use report::{Report, RunResult};
use sut::{PetkvSystem, SystemUnderTest};
use workload::{KvTarget, Workload};

/// How long a fresh etcd cluster may take to elect a leader and settle.
#[cfg(feature = "etcd")]
const SETTLE: Duration = Duration::from_secs(60);
/// Writes in flight while preloading keys for the read modes.
const PRELOAD_CONCURRENCY: usize = 64;

/// The operation mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every operation writes.
    Put,
    /// Linearizable reads of preloaded keys.
    Get,
    /// Reads any member serves from its local state (etcd: serializable).
    GetStale,
    /// Half puts, half linearizable gets.
    Mixed,
    /// Read the key's revision, then write only if it is unchanged (petkv: if_mod_revision; etcd:
    /// a txn comparing mod_revision).
    Cas,
    /// A transaction that puts one value to two keys (the key and the next one): one atomic
    /// change of both (petkv and etcd: `Txn` with two puts and no compare).
    Txn,
    /// --watchers watchers of every bench key, spread over the members, while --clients clients
    /// put: events delivered per second and the put-to-event latency ([`watch`]).
    Watch,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Put => "put",
            Mode::Get => "get",
            Mode::GetStale => "get-stale",
            Mode::Mixed => "mixed",
            Mode::Cas => "cas",
            Mode::Txn => "txn",
            Mode::Watch => "watch",
        }
    }

    /// Whether the keys must exist before the run.
    pub fn reads(self) -> bool {
        !matches!(self, Mode::Put | Mode::Txn | Mode::Watch)
    }
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Petkv,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Petkv => "petkv",
            System::Etcd => "etcd",
        }
    }
}

/// Which members the clients' connections go to: one policy for both systems, named in every
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Every member: petkv's connection c starts at member c mod 3 (failing over to the next);
    /// etcd's client balances each connection's requests over all members.
    Spread,
    /// The leader: petkv's connections start at the leader; etcd's connect to it alone.
    Leader,
}

impl Target {
    /// The policy, as the reports state it.
    pub fn describe(self) -> &'static str {
        match self {
            Target::Spread => {
                "endpoints: spread over all members (petkv: connection c starts at member c mod 3; etcd: its client \
                 balances every connection over all members)"
            }
            Target::Leader => "endpoints: the leader only, for both systems",
        }
    }
}

/// Which API petkv is driven through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// petkv's own API with its client library.
    #[default]
    Native,
    /// petkv's etcd v3 port (`--etcd-listen`) with the `etcd-client` crate: the very client
    /// and connection policy the bench uses for etcd (needs the `etcd` feature).
    EtcdApi,
}

impl Via {
    /// The API, as the reports state it.
    pub fn describe(self) -> &'static str {
        match self {
            Via::Native => "petkv through its own API and client",
            Via::EtcdApi => "petkv through its etcd v3 port, with the same etcd-client as etcd",
        }
    }
}

/// What to compare petkv with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compare {
    Etcd,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub mode: Mode,
    pub clients: usize,
    /// Connections per system (default min(clients, 8)); clients share them round-robin.
    pub connections: Option<usize>,
    pub keys: u64,
    /// Keys written before a mode that reads (default: all of `keys`); the read modes then use
    /// these keys only.
    pub preload: Option<u64>,
    pub value_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub compare: Option<Compare>,
    pub rounds: usize,
    pub target: Target,
    /// Watch mode: watchers of every bench key.
    pub watchers: usize,
    /// Operations per second over all clients (paced); `None`: closed loop.
    pub rate: Option<f64>,
    /// Extra flags for every member of each system.
    pub args: sut::ExtraArgs,
    /// The API petkv is driven through.
    pub via: Via,
}

impl Default for BenchSpec {
    fn default() -> Self {
        Self {
            mode: Mode::Put,
            clients: 16,
            connections: None,
            keys: 100_000,
            preload: None,
            value_size: 100,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            compare: None,
            rounds: 1,
            target: Target::Spread,
            watchers: 16,
            rate: None,
            args: sut::ExtraArgs::default(),
            via: Via::Native,
        }
    }
}

impl BenchSpec {
    fn connections_for(&self, clients: usize) -> usize {
        self.connections.unwrap_or(clients.min(8)).clamp(1, clients.max(1))
    }

    fn key_space(&self) -> u64 {
        if self.mode.reads() {
            self.preload.unwrap_or(self.keys).min(self.keys).max(1)
        } else {
            self.keys
        }
    }
}

/// The running systems.
struct Systems {
    petkv: PetkvSystem,
    #[cfg(feature = "etcd")]
    etcd: Option<sut::EtcdSystem>,
}

impl Systems {
    async fn start(spec: &BenchSpec) -> anyhow::Result<Self> {
        if spec.compare.is_some() {
            ensure_etcd_available()?;
        }
        if spec.via == Via::EtcdApi {
            ensure_etcd_client()?;
        }
        say_which_build()?;
        let cluster_spec = ClusterSpec {
            extra_args: spec.args.petkv.clone(),
            etcd: spec.via == Via::EtcdApi,
            ..ClusterSpec::default()
        };
        let (cluster, _) = crate::measure::fresh_cluster(cluster_spec).await?;
        let petkv = PetkvSystem::new(cluster);
        #[allow(unused_mut)]
        let mut systems = Self {
            #[cfg(feature = "etcd")]
            etcd: None,
            petkv,
        };
        #[cfg(feature = "etcd")]
        if spec.compare == Some(Compare::Etcd) {
            let dir = systems.petkv.cluster.state_dir();
            let parent = dir.parent().unwrap_or(std::path::Path::new("/tmp")).to_path_buf();
            let mut e = sut::EtcdSystem::launch(&parent, &spec.args)?;
            e.wait_healthy(SETTLE).await?;
            systems.etcd = Some(e);
        }
        let key_space = spec.key_space();
        if spec.mode.reads() {
            println!("preloading {key_space} keys of {} bytes", spec.value_size);
            let conns = systems.petkv.connect(8, spec.target).await?;
            workload::preload(&conns, key_space, spec.value_size, PRELOAD_CONCURRENCY)
                .await
                .context("petkv preload")?;
            #[cfg(feature = "etcd")]
            if let Some(e) = &systems.etcd {
                let conns = e.connect(8, spec.target).await?;
                workload::preload(&conns, key_space, spec.value_size, PRELOAD_CONCURRENCY)
                    .await
                    .context("etcd preload")?;
            }
        }
        Ok(systems)
    }

    async fn stop(self) -> anyhow::Result<()> {
        #[cfg(feature = "etcd")]
        if let Some(e) = self.etcd {
            e.shutdown().await?;
        }
        self.petkv.shutdown().await
    }
}

/// Names the node binary and its build profile: the figures in docs/benchmarks.md are of the
/// `dist` profile (whole-program optimisation), which a `dev` or `release` build is not.
fn say_which_build() -> anyhow::Result<()> {
    let binary = crate::binary::petkv_binary()?;
    let profile = binary.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned());
    println!("node binary: {} (profile {})", binary.display(), profile.as_deref().unwrap_or("unknown"));
    if profile.as_deref() != Some("dist") {
        eprintln!(
            "note: this is not a `dist` build; benchmark figures are measured on one \
             (cargo build --profile dist -p petkv -p petkv-harness)"
        );
    }
    Ok(())
}

/// Fails unless this build has the etcd client (`--via etcd-api` needs no etcd server).
pub(crate) fn ensure_etcd_client() -> anyhow::Result<()> {
    #[cfg(feature = "etcd")]
    return Ok(());
    #[cfg(not(feature = "etcd"))]
    anyhow::bail!(
        "this petkv-harness was built without etcd support: cargo build --profile dist -p petkv -p petkv-harness \
         --features petkv-harness/etcd"
    )
}

pub(crate) fn ensure_etcd_available() -> anyhow::Result<()> {
    #[cfg(feature = "etcd")]
    {
        anyhow::ensure!(
            etcd::installed(),
            "--compare etcd needs the etcd binary: run scripts/install-etcd.sh (Debian's etcd-server)"
        );
        Ok(())
    }
    #[cfg(not(feature = "etcd"))]
    anyhow::bail!(
        "this petkv-harness was built without etcd support: run scripts/install-etcd.sh, then \
         cargo build --profile dist -p petkv -p petkv-harness --features petkv-harness/etcd"
    )
}

/// Runs the workload once on one system, with CPU sampled exactly over the measured window
/// and the Raft term read before and after (leader changes during a run without faults).
async fn measure_one<S: SystemUnderTest, T: KvTarget>(
    s: &S,
    targets: &[Arc<T>],
    w: &Workload,
    header: (Mode, usize, usize, usize),
) -> anyhow::Result<RunResult> {
    let pids = s.pids();
    anyhow::ensure!(pids.len() == s.members(), "a {} member is not running", s.system().name());
    let term_before = s.term().await?;
    let batches_before = s.batching().await;
    let cpu = cpu_over_window(pids.clone(), tokio::time::Instant::now(), w.warmup, w.duration);
    let outcome = workload::drive(targets, w).await?;
    let cpu_seconds = cpu.await??;
    let rss = procstat::peak_rss(&pids)?;
    let leader_changes = s.term().await?.saturating_sub(term_before);
    let mut result = RunResult::new(s.system(), header, &outcome, cpu_seconds, &rss, leader_changes);
    result.batching = batches_before.zip(s.batching().await).map(|(before, after)| before.means_until(&after));
    Ok(result)
}

/// CPU seconds the processes `pids` use from `start + warmup` for `duration` (a task that
/// samples at both ends).
fn cpu_over_window(
    pids: Vec<u32>,
    start: tokio::time::Instant,
    warmup: Duration,
    duration: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<f64>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(start + warmup).await;
        let before = procstat::cpu_seconds(&pids)?;
        tokio::time::sleep_until(start + warmup + duration).await;
        anyhow::Ok(procstat::cpu_seconds(&pids)? - before)
    })
}

/// Runs `spec.rounds` rounds at `clients` on the running systems (petkv, then etcd, per round).
async fn rounds(systems: &Systems, spec: &BenchSpec, clients: usize) -> anyhow::Result<Report> {
    let connections = spec.connections_for(clients);
    let w = Workload {
        mode: spec.mode,
        clients,
        keys: spec.key_space(),
        value_size: spec.value_size,
        warmup: spec.warmup,
        duration: spec.duration,
        rate: spec.rate,
    };
    let mut runs = Vec::new();
    for round in 1..=spec.rounds.max(1) {
        let header = (spec.mode, clients, connections, round);
        let r = match spec.via {
            Via::Native => {
                let targets = systems.petkv.connect(connections, spec.target).await?;
                measure_one(&systems.petkv, &targets, &w, header).await?
            }
            #[cfg(feature = "etcd")]
            Via::EtcdApi => {
                let targets = systems.petkv.connect_etcd_api(connections, spec.target).await?;
                measure_one(&systems.petkv, &targets, &w, header).await?
            }
            #[cfg(not(feature = "etcd"))]
            Via::EtcdApi => anyhow::bail!("--via etcd-api needs a petkv-harness built with the etcd feature"),
        };
        eprintln!("round {round}: petkv {} clients: {:.0} ops/s, p99 {:.2} ms", clients, r.ops_per_sec, r.p99_ms);
        runs.push(r);
        #[cfg(feature = "etcd")]
        if let Some(e) = &systems.etcd {
            let targets = e.connect(connections, spec.target).await?;
            let r = measure_one(e, &targets, &w, header).await?;
            eprintln!("round {round}: etcd {} clients: {:.0} ops/s, p99 {:.2} ms", clients, r.ops_per_sec, r.p99_ms);
            runs.push(r);
        }
    }
    let header = (spec.mode, clients, connections, w.keys, spec.value_size, spec.duration.as_secs_f64());
    Ok(Report::new(header, (spec.target, spec.rate), runs).via(spec.via))
}

/// Runs the bench: fresh systems, the rounds, then both systems stopped.
pub async fn run(spec: &BenchSpec) -> anyhow::Result<Report> {
    Ok(sweep(spec, &[spec.clients]).await?.remove(0))
}

/// Runs the bench at each client count in turn on the same systems (one report per count).
pub async fn sweep(spec: &BenchSpec, clients: &[usize]) -> anyhow::Result<Vec<Report>> {
    anyhow::ensure!(spec.mode != Mode::Watch, "--mode watch has its own report: run it with watch::run");
    anyhow::ensure!(!clients.is_empty() && clients.iter().all(|c| *c > 0), "client counts must be at least 1");
    let systems = Systems::start(spec).await?;
    let mut reports = Vec::new();
    let mut failed = None;
    for c in clients {
        match rounds(&systems, spec, *c).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                failed = Some(e.context(format!("bench at {c} clients")));
                break;
            }
        }
    }
    systems.stop().await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}
