//! `bench --scenario`: the fault and lifecycle measurements, each written once over
//! [`SystemUnderTest`] and run on petkv and, with `--compare etcd`, on etcd, alternating the
//! systems round by round:
//!
//! - `failover-kill` / `failover-term`: 16 clients write continuously; the leader gets kill -9
//!   (or SIGTERM); the figure is the longest stretch with no successful write that ends after
//!   the signal. The stopped member is started again and the cluster settles before the next
//!   round.
//! - `cold-start`: from no processes and empty data dirs, start 3 members and time until the
//!   first put is acknowledged.
//! - `restart-ready`: with N keys loaded, SIGTERM a follower, start it again and time until its
//!   readiness endpoint says ready and until it serves a local read of the last key written.
//! - `volume`: P puts over K keys; each member's data dir on disk after P/2 and after P puts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;

use super::report::{Metric, ScenarioReport, ScenarioRun};
use super::sut::{disk_usage, ExtraArgs, PetkvSystem, SystemUnderTest};
use super::workload::{self, key_of, KvTarget, Workload};
use super::{Compare, Mode, Target};

/// How long a cluster may take to elect a leader and settle (also after a restart).
const SETTLE: Duration = Duration::from_secs(60);
/// How long a SIGTERMed member gets before SIGKILL (the harness's pod grace period).
const GRACE: Duration = crate::cluster::DEFAULT_GRACE;
/// How long a restarted member may take to be ready and serve reads.
const RESTART_LIMIT: Duration = Duration::from_secs(300);
/// How often the lifecycle scenarios poll (their figures are this precise).
const POLL: Duration = Duration::from_millis(10);
const MIB: f64 = 1024.0 * 1024.0;

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// kill -9 the leader under continuous writes: the window with no successful write.
    FailoverKill,
    /// SIGTERM the leader under continuous writes: the window with no successful write.
    FailoverTerm,
    /// Start 3 members on empty data dirs: time to the first acknowledged put.
    ColdStart,
    /// SIGTERM a follower holding --restart-keys keys, start it: time until ready and serving.
    RestartReady,
    /// --puts puts over --keys keys: data dir size on disk at half and at all the puts.
    Volume,
    /// Memory per idle watcher (--watchers) and per lease (--leases).
    Footprint,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FailoverKill => "failover-kill",
            Scenario::FailoverTerm => "failover-term",
            Scenario::ColdStart => "cold-start",
            Scenario::RestartReady => "restart-ready",
            Scenario::Volume => "volume",
            Scenario::Footprint => "footprint",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    pub scenario: Scenario,
    /// Writing clients during a failover.
    pub clients: usize,
    /// Connections per system (default min(clients, 8)).
    pub connections: Option<usize>,
    /// Key space of the failover writes and of the volume puts.
    pub keys: u64,
    pub value_size: usize,
    /// Failover: writes before the signal.
    pub before: Duration,
    /// Failover: writes after the signal (the longest window it can see).
    pub after: Duration,
    /// restart-ready: keys loaded before the restarts.
    pub restart_keys: u64,
    /// volume: puts in all (sizes are taken at half and at all of them).
    pub puts: u64,
    /// Writes in flight for the volume puts and the restart-ready preload.
    pub writers: usize,
    pub compare: Option<Compare>,
    pub rounds: usize,
    pub target: Target,
    /// Extra flags for every member of each system.
    pub args: ExtraArgs,
    /// footprint: idle watchers opened.
    pub watchers: usize,
    /// footprint: leases granted.
    pub leases: u64,
}

impl Default for ScenarioSpec {
    fn default() -> Self {
        Self {
            scenario: Scenario::FailoverKill,
            clients: 16,
            connections: None,
            keys: 100_000,
            value_size: 100,
            before: Duration::from_secs(2),
            after: Duration::from_secs(10),
            restart_keys: 1_000_000,
            puts: 2_000_000,
            writers: 128,
            compare: None,
            rounds: 1,
            target: Target::Spread,
            args: ExtraArgs::default(),
            watchers: 10_000,
            leases: 10_000,
        }
    }
}

impl ScenarioSpec {
    fn connections(&self) -> usize {
        self.connections.unwrap_or(self.clients.min(8)).clamp(1, self.clients.max(1))
    }

    fn settings(&self) -> String {
        let v = self.value_size;
        match self.scenario {
            Scenario::FailoverKill | Scenario::FailoverTerm => format!(
                "{} clients / {} conns · {} keys · {v} B · signal after {}s, watch {}s",
                self.clients,
                self.connections(),
                self.keys,
                self.before.as_secs_f64(),
                self.after.as_secs_f64()
            ),
            Scenario::ColdStart => "3 members, empty data dirs".into(),
            Scenario::RestartReady => format!("{} keys · {v} B · SIGTERM a follower, start it", self.restart_keys),
            Scenario::Volume => {
                format!("{} puts over {} keys · {v} B · {} writers", self.puts, self.keys, self.writers)
            }
            Scenario::Footprint => format!(
                "{} idle watchers ({} per connection, watcher i on member i mod 3) · {} leases",
                self.watchers,
                super::footprint::PER_CONNECTION,
                self.leases
            ),
        }
    }

    fn value(&self) -> Arc<Vec<u8>> {
        Arc::new(vec![b'x'; self.value_size])
    }
}

/// Runs the scenario: `spec.rounds` rounds, petkv then etcd in each.
pub async fn run(spec: &ScenarioSpec) -> anyhow::Result<ScenarioReport> {
    if spec.compare.is_some() {
        super::ensure_etcd_available()?;
    }
    let parent = std::env::temp_dir();
    let mut notes = vec![spec.target.describe().to_string()];
    if !spec.args.petkv.is_empty() {
        notes.push(format!("petkv serve flags added: {}", spec.args.petkv.join(" ")));
    }
    let runs = match spec.scenario {
        Scenario::ColdStart | Scenario::Volume | Scenario::Footprint => fresh_rounds(spec, &parent).await?,
        Scenario::FailoverKill | Scenario::FailoverTerm | Scenario::RestartReady => {
            long_lived_rounds(spec, &parent).await?
        }
    };
    #[cfg(feature = "etcd")]
    if spec.compare.is_some() && matches!(spec.scenario, Scenario::Volume | Scenario::Footprint) {
        notes.push(super::etcd::EtcdCluster::flags_note(&spec.args.etcd));
    }
    if spec.scenario == Scenario::Volume {
        notes.push("sizes: allocated blocks × 512 of every file under each member's data dir (du)".into());
    }
    if matches!(spec.scenario, Scenario::FailoverKill | Scenario::FailoverTerm) {
        notes.push(
            "window: the longest stretch between consecutive successful writes (all clients) that ends after \
             the signal"
                .into(),
        );
    }
    Ok(ScenarioReport::new(spec.scenario.name(), spec.settings(), runs, notes))
}

/// Scenarios that start fresh systems in every round.
async fn fresh_rounds(spec: &ScenarioSpec, parent: &Path) -> anyhow::Result<Vec<ScenarioRun>> {
    let mut runs = Vec::new();
    for round in 1..=spec.rounds.max(1) {
        runs.push(fresh_round::<PetkvSystem>(spec, parent, round).await?);
        #[cfg(feature = "etcd")]
        if spec.compare == Some(Compare::Etcd) {
            runs.push(fresh_round::<super::sut::EtcdSystem>(spec, parent, round).await?);
        }
    }
    Ok(runs)
}

async fn fresh_round<S: SystemUnderTest>(
    spec: &ScenarioSpec,
    parent: &Path,
    round: usize,
) -> anyhow::Result<ScenarioRun> {
    let started = Instant::now();
    let mut s = S::launch(parent, &spec.args)?;
    let result = match spec.scenario {
        Scenario::ColdStart => cold_start(&mut s, spec, started).await,
        Scenario::Volume => volume(&mut s, spec).await,
        Scenario::Footprint => match s.wait_healthy(SETTLE).await {
            Ok(()) => super::footprint::measure(&s, spec.watchers, spec.leases, spec.value_size, spec.target).await,
            Err(e) => Err(e),
        },
        other => anyhow::bail!("{} does not start fresh systems", other.name()),
    };
    let system = s.system();
    s.shutdown().await?;
    let (metrics, notes) = result?;
    eprintln!("round {round}: {}: {}", system.name(), summary_line(&metrics));
    Ok(ScenarioRun { system, round, metrics, notes })
}

/// Scenarios on systems started once: their rounds fault and restore the same clusters.
async fn long_lived_rounds(spec: &ScenarioSpec, parent: &Path) -> anyhow::Result<Vec<ScenarioRun>> {
    let mut petkv = PetkvSystem::launch(parent, &spec.args)?;
    #[cfg(feature = "etcd")]
    let mut etcd = match spec.compare {
        Some(Compare::Etcd) => Some(super::sut::EtcdSystem::launch(parent, &spec.args)?),
        None => None,
    };
    let result = async {
        let mut runs = Vec::new();
        let last_key = prepare(&mut petkv, spec).await?;
        #[cfg(feature = "etcd")]
        if let Some(e) = &mut etcd {
            prepare(e, spec).await?;
        }
        for round in 1..=spec.rounds.max(1) {
            runs.push(long_lived_round(&mut petkv, spec, round, &last_key).await?);
            #[cfg(feature = "etcd")]
            if let Some(e) = &mut etcd {
                runs.push(long_lived_round(e, spec, round, &last_key).await?);
            }
        }
        anyhow::Ok(runs)
    }
    .await;
    #[cfg(feature = "etcd")]
    if let Some(e) = etcd {
        e.shutdown().await?;
    }
    petkv.shutdown().await?;
    result
}

/// Waits for the system to settle; for restart-ready, loads the keys. Returns the last key
/// written (the one restart-ready reads).
async fn prepare<S: SystemUnderTest>(s: &mut S, spec: &ScenarioSpec) -> anyhow::Result<String> {
    s.wait_healthy(SETTLE).await?;
    if spec.scenario != Scenario::RestartReady {
        return Ok(key_of(0));
    }
    let keys = spec.restart_keys.max(1);
    let t = Instant::now();
    let conns = s.connect(8, spec.target).await?;
    let retries = workload::put_range(&conns, 0..keys, keys, spec.value_size, spec.writers).await?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{}: loaded {keys} keys in {secs:.1} s ({:.0} puts/s, {retries} puts retried)",
        s.system().name(),
        keys as f64 / secs
    );
    Ok(key_of(keys - 1))
}

async fn long_lived_round<S: SystemUnderTest>(
    s: &mut S,
    spec: &ScenarioSpec,
    round: usize,
    last_key: &str,
) -> anyhow::Result<ScenarioRun> {
    let (metrics, notes) = match spec.scenario {
        Scenario::FailoverKill => failover(s, spec, Signal::SIGKILL).await?,
        Scenario::FailoverTerm => failover(s, spec, Signal::SIGTERM).await?,
        Scenario::RestartReady => restart_ready(s, round, last_key).await?,
        other => anyhow::bail!("{} starts fresh systems", other.name()),
    };
    eprintln!("round {round}: {}: {}", s.system().name(), summary_line(&metrics));
    Ok(ScenarioRun { system: s.system(), round, metrics, notes })
}

fn summary_line(metrics: &[Metric]) -> String {
    metrics.iter().map(|m| format!("{} {:.*}", m.name, m.decimals, m.value)).collect::<Vec<_>>().join(", ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type Figures = (Vec<Metric>, Vec<String>);

/// Writes from `spec.clients` clients; `sig` to the leader after `spec.before`; the longest
/// window without a successful write; the member started again and the cluster settled.
async fn failover<S: SystemUnderTest>(s: &mut S, spec: &ScenarioSpec, sig: Signal) -> anyhow::Result<Figures> {
    s.wait_healthy(SETTLE).await?;
    let victim = s.leader().await?;
    let term_before = s.term().await?;
    let conns = s.connect(spec.connections(), spec.target).await?;
    let w = Workload {
        mode: Mode::Put,
        clients: spec.clients,
        keys: spec.keys,
        value_size: spec.value_size,
        warmup: Duration::ZERO,
        duration: spec.before + spec.after,
        rate: None,
    };
    let started = Instant::now();
    let driver = tokio::spawn(async move { workload::drive_recorded(&conns, &w).await });
    tokio::time::sleep(spec.before).await;
    let fault_at = Instant::now();
    s.signal(victim, sig)?;
    s.wait_exit(victim, GRACE).await?;
    let exited_after = fault_at.elapsed();
    // When another member leads in a newer term (status polled every 10 ms): tells the
    // election's share of the window from the clients' retries.
    let mut elected_after = None;
    while elected_after.is_none() && fault_at.elapsed() < spec.after {
        if let Ok(leader) = s.leader().await {
            if leader != victim && s.term().await.is_ok_and(|t| t > term_before) {
                elected_after = Some((leader, fault_at.elapsed()));
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let outcome = driver.await??;
    let end = started + spec.before + spec.after;
    let (window, recovered) = workload::longest_gap_after(&outcome.success_times, fault_at, end);
    let term_after = s.term().await?;
    let mut notes = vec![format!(
        "{sig} to member {victim} (the leader); it exited after {:.0} ms; new leader: {}",
        ms(exited_after),
        elected_after.map_or("none seen".to_string(), |(l, _)| format!("member {l}"))
    )];
    if !recovered {
        notes.push(format!("no write succeeded within {:?} of the signal", spec.after));
    }
    notes.extend(outcome.sample_errors.iter().map(|e| format!("error: {e}")));
    // The next round starts healthy: the stopped member is back, ready, under one leader.
    let restarted = Instant::now();
    s.start(victim)?;
    let back = crate::wait::until(&format!("member {victim} to be ready again"), SETTLE, || async {
        s.ready(victim).await.then(|| restarted.elapsed())
    })
    .await?;
    s.wait_healthy(SETTLE).await?;
    let metrics = vec![
        Metric::new("window without a successful write ms", ms(window), 1),
        Metric::new("signalled member exited after ms", ms(exited_after), 1),
        Metric::new("new leader seen after ms", elected_after.map_or(ms(spec.after), |(_, d)| ms(d)), 1),
        Metric::new(
            "successful puts/s over the run",
            outcome.success_times.len() as f64 / ms(end - started) * 1000.0,
            0,
        ),
        Metric::count("failed puts", outcome.errors as f64),
        Metric::count("term +", term_after.saturating_sub(term_before) as f64),
        Metric::count("writes resumed (1 = yes)", f64::from(u8::from(recovered))),
        Metric::new("stopped member: start → ready again ms", ms(back), 0),
    ];
    Ok((metrics, notes))
}

/// From `started` (before the members were launched): retries a put every 10 ms until one is
/// acknowledged.
async fn cold_start<S: SystemUnderTest>(s: &mut S, spec: &ScenarioSpec, started: Instant) -> anyhow::Result<Figures> {
    let deadline = started + SETTLE;
    let value = spec.value();
    let mut attempts = 0u64;
    let mut last_error = String::new();
    let mut conns: Option<Vec<Arc<S::Target>>> = None;
    loop {
        if conns.is_none() {
            match s.connect(1, spec.target).await {
                Ok(c) => conns = Some(c),
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        if let Some(c) = &conns {
            attempts += 1;
            match c[0].put(key_of(0), value.clone()).await {
                Ok(()) => break,
                Err(e) => last_error = e,
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no put acknowledged within {SETTLE:?}: {last_error}");
        tokio::time::sleep(POLL).await;
    }
    let elapsed = started.elapsed();
    // Then every member serving under one leader (petkv's ordinal 0 bootstraps alone and
    // acknowledges the first put before the others have joined).
    s.wait_healthy(SETTLE).await?;
    let all_ready = started.elapsed();
    let mut notes = Vec::new();
    if !last_error.is_empty() {
        notes.push(format!("{attempts} put attempts; last failure before the first success: {last_error}"));
    }
    let metrics = vec![
        Metric::new("launch → first acknowledged put ms", ms(elapsed), 0),
        Metric::new("launch → all 3 members serving (polled every 50 ms) ms", ms(all_ready), 0),
    ];
    Ok((metrics, notes))
}

/// SIGTERM a follower (a different one each round where possible), start it again, and poll
/// its readiness and a local read of `last_key`.
async fn restart_ready<S: SystemUnderTest>(s: &mut S, round: usize, last_key: &str) -> anyhow::Result<Figures> {
    s.wait_healthy(SETTLE).await?;
    let leader = s.leader().await?;
    let followers: Vec<usize> = (0..s.members()).filter(|i| *i != leader).collect();
    anyhow::ensure!(!followers.is_empty(), "no follower to restart");
    let victim = followers[(round - 1) % followers.len()];
    let size = disk_usage(&s.data_dir(victim))? as f64 / MIB;
    let stop_at = Instant::now();
    s.signal(victim, Signal::SIGTERM)?;
    s.wait_exit(victim, GRACE).await?;
    let stopped_after = stop_at.elapsed();
    let started = Instant::now();
    s.start(victim)?;
    let (mut ready, mut reads) = (None, None);
    while ready.is_none() || reads.is_none() {
        if ready.is_none() && s.ready(victim).await {
            ready = Some(started.elapsed());
        }
        if reads.is_none() && s.reads(victim, last_key).await {
            reads = Some(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < RESTART_LIMIT,
            "member {victim} not ready ({ready:?}) or not serving {last_key} ({reads:?}) after {RESTART_LIMIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let (ready, reads) = (ready.unwrap_or_default(), reads.unwrap_or_default());
    let metrics = vec![
        Metric::new("start → ready ms", ms(ready), 0),
        Metric::new("start → serves a local read of the last key ms", ms(reads), 0),
        Metric::new("SIGTERM → exit ms", ms(stopped_after), 0),
        Metric::new("data dir of the restarted member MiB", size, 1),
    ];
    Ok((metrics, vec![format!("restarted member {victim} (a follower)")]))
}

/// `spec.puts` puts over `spec.keys` keys; the data dirs' sizes at half and at all of them.
async fn volume<S: SystemUnderTest>(s: &mut S, spec: &ScenarioSpec) -> anyhow::Result<Figures> {
    s.wait_healthy(SETTLE).await?;
    let conns = s.connect(8, spec.target).await?;
    let half = spec.puts / 2;
    let sizes = |s: &S| -> anyhow::Result<Vec<f64>> {
        (0..s.members()).map(|i| Ok(disk_usage(&s.data_dir(i))? as f64 / MIB)).collect()
    };
    let t = Instant::now();
    let mut retries = workload::put_range(&conns, 0..half, spec.keys, spec.value_size, spec.writers).await?;
    let at_half = sizes(s)?;
    retries += workload::put_range(&conns, half..spec.puts, spec.keys, spec.value_size, spec.writers).await?;
    let secs = t.elapsed().as_secs_f64();
    let at_end = sizes(s)?;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let list = |v: &[f64]| v.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" / ");
    let metrics = vec![
        Metric::new(format!("data dir MiB after {half} puts (largest member)"), max(&at_half), 1),
        Metric::new(format!("data dir MiB after {} puts (largest member)", spec.puts), max(&at_end), 1),
        Metric::new(
            "growth from half to all the puts ×",
            super::report::ratio(max(&at_end), max(&at_half)).unwrap_or(0.0),
            2,
        ),
        Metric::new("puts/s while writing", spec.puts as f64 / secs, 0),
        Metric::count("puts retried (failed or timed out)", retries as f64),
    ];
    let mut metrics = metrics;
    let mut notes = vec![format!(
        "per member MiB: after {half} puts {}; after {} puts {}",
        list(&at_half),
        spec.puts,
        list(&at_end)
    )];
    if let Some((revision, compacted)) = s.history().await {
        metrics.push(Metric::count("revisions of history retained", revision.saturating_sub(compacted) as f64));
        notes.push(format!("revision {revision}, history compacted before revision {compacted}"));
    }
    Ok((metrics, notes))
}
