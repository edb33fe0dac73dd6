//! `petkv-harness`: a StatefulSet on one machine.
//!
//! `up` runs the set in the foreground (it is the controller); the other commands can be used
//! from a second terminal on the same `--state-dir` while it runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use petkv_harness::control::{self, Policy};
use petkv_harness::controller::{self, UpOptions};
use petkv_harness::experiment::{self, ExperimentSpec, PowerLossTarget, Volumes};
use petkv_harness::measure::{self, MeasureSpec};
use petkv_harness::Mode;

/// Default state dir of `up` and the commands that steer it.
const DEFAULT_STATE_DIR: &str = ".petkv-harness";

#[derive(Debug, Parser)]
#[command(name = "petkv-harness", version, about = "Run petkv as a StatefulSet on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct StateDir {
    /// Where volumes (data-petkv-N), logs and control files live.
    #[arg(long, env = "PETKV_HARNESS_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start 3 pods, kill, restart, wipe, scale and restart them, and verify identity and data.
    Demo {
        /// Keep the pods' volumes and logs here (default: a temporary dir, removed afterwards).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run the set in the foreground with a live status view; Ctrl-C stops it in order.
    Up {
        #[command(flatten)]
        dir: StateDir,
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        /// Ordinals below this vote; the others are read replicas.
        #[arg(long, default_value_t = 3)]
        voters: u32,
        /// StatefulSet podManagementPolicy.
        #[arg(long, value_enum, default_value_t = Policy::Parallel)]
        policy: Policy,
        /// process, pod (network namespaces; root), or auto (pod where available).
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// persistentVolumeClaimRetentionPolicy.whenScaled: delete the volumes of pods removed
        /// by a scale-down (default: retain them).
        #[arg(long)]
        delete_volumes_when_scaled: bool,
        /// TLS on every pod's client and peer ports: a CA and per-pod certificates are issued
        /// into <state-dir>/tls (as `petkv certs` does); the harness talks TLS too. Add
        /// `-- --tls-client-auth` to require client certificates (<state-dir>/tls/client.pem).
        #[arg(long)]
        tls: bool,
        /// Authentication on every pod's client port: a tokens file with an admin token (the
        /// harness's own) and a write and a read token (printed at start) is written into
        /// <state-dir>/auth/tokens; send one with `petkv --token-file` or PETKV_TOKEN.
        #[arg(long)]
        auth: bool,
        /// Serve etcd's v3 API on every pod too (`--etcd-listen`, port 7382 of its address),
        /// for etcdctl and etcd client libraries; the endpoints are printed at start.
        #[arg(long)]
        etcd: bool,
        /// Extra `petkv serve` flags for every pod (after `--`).
        #[arg(last = true)]
        serve_args: Vec<String>,
    },
    /// Status of every pod of a running `up`, each asked for its own status.
    Status {
        #[command(flatten)]
        dir: StateDir,
    },
    /// Scale the set (the cluster is told the declared count, as Kubernetes would). 0 stops
    /// every pod, highest ordinal first, keeping volumes and membership (whenScaled: Retain);
    /// scaling back starts the same cluster again.
    Scale {
        replicas: u32,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Send a signal to a pod's process (default KILL); a pod that dies is recreated.
    Kill {
        pod: String,
        #[arg(long, default_value = "KILL")]
        signal: String,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Delete a pod (SIGTERM); the controller recreates it with the same name and volume.
    DeletePod {
        pod: String,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Delete a pod and its volume (PVC); it is recreated with an empty volume.
    DeleteVolume {
        pod: String,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Cut pods off the network (pod mode): each named pod is isolated from every other pod and
    /// from clients until `heal`.
    Partition {
        /// Pods to isolate, each alone.
        #[arg(required_unless_present = "groups")]
        pods: Vec<String>,
        /// Or split the set into groups, e.g. `2,3,4/0,1`: pods reach only their own group;
        /// the first group keeps the clients.
        #[arg(long, conflicts_with = "pods")]
        groups: Option<String>,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Reconnect every partitioned pod.
    Heal {
        #[command(flatten)]
        dir: StateDir,
    },
    /// Restart every pod, highest ordinal first, each after the previous is ready again.
    RollingRestart {
        #[command(flatten)]
        dir: StateDir,
    },
    /// Delete the StatefulSet (kubectl delete statefulset, whenDeleted: Retain): every pod
    /// gets SIGTERM at once; volumes and the bootstrap marker are kept. `apply` creates it again.
    DeleteSet {
        #[command(flatten)]
        dir: StateDir,
    },
    /// Create a deleted set again (kubectl apply): its pods, at the count it had, on their
    /// kept volumes; the same cluster resumes.
    Apply {
        #[command(flatten)]
        dir: StateDir,
    },
    /// Stop the set (volumes are kept unless --delete-volumes).
    Down {
        #[arg(long)]
        delete_volumes: bool,
        #[command(flatten)]
        dir: StateDir,
    },
    /// Inject a fault under a recorded concurrent workload; check linearizability, convergence
    /// and identity; save a report (JSON) and a timeline (SVG).
    Experiment {
        #[arg(value_enum)]
        name: petkv_harness::experiment::Experiment,
        /// Run it this many times (a summary of all runs is printed at the end).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Where reports and timelines go.
        #[arg(long, default_value = "experiment-reports")]
        out: PathBuf,
        /// Also print each report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 6)]
        clients: usize,
        /// Seconds of workload before the fault and after it healed.
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
        /// process, pod (network namespaces; root), or auto (pod where available).
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// power-loss: whose power is cut (mid-snapshot: a member just as it writes a snapshot);
        /// force-delete: leader or follower (default follower).
        #[arg(long, value_enum)]
        target: Option<PowerLossTarget>,
        /// power-loss, failover-fast: faults per run.
        #[arg(long, default_value_t = 3)]
        cycles: usize,
        /// The pods' volumes: plain directories, or LazyFS mounts (unsynced data stays in
        /// LazyFS's cache until fsync: a slower disk, and power loss can be simulated).
        #[arg(long, value_enum, default_value_t = Volumes::Plain)]
        volumes: Volumes,
        /// Every kill -9 the experiment does is a power loss of that pod (implies --volumes lazyfs).
        #[arg(long)]
        power_loss: bool,
        /// Extra `petkv serve` flag for every pod (repeatable), e.g. --node-arg=--snapshot-every=500.
        #[arg(long = "node-arg", allow_hyphen_values = true)]
        node_args: Vec<String>,
        /// crash-loop: seconds the follower keeps failing at start.
        #[arg(long, default_value_t = 60)]
        crash_loop_secs: u64,
        /// crash-loop: cap of the restart back-off in seconds (10 s doubling; the kubelet's cap
        /// is 300).
        #[arg(long, default_value_t = 300)]
        backoff_cap_secs: u64,
        /// dns-blip: delete the bootstrap marker file too.
        #[arg(long)]
        delete_marker: bool,
        /// force-delete: seconds the zombie runs next to its replacement before it is killed
        /// (unless it exits by itself).
        #[arg(long, default_value_t = 20)]
        zombie_secs: u64,
        /// Watchers beside the workload (one per member, resuming across members), whose
        /// streams are checked against the history afterwards; `watch` runs at least 3.
        #[arg(long, default_value_t = 0)]
        watchers: usize,
        /// The recorded workload's API: petkv's own (native), or etcd's v3 API on every pod's
        /// etcd port with the etcd-client crate (etcd-api; needs the etcd feature), so the
        /// linearizability check covers the etcd port.
        #[arg(long, value_enum, default_value_t = petkv_harness::bench::Via::Native)]
        via: petkv_harness::bench::Via,
    },
    /// Measure failover (kill -9 the leader), single-client put latency and N-client throughput.
    Measure {
        #[arg(long, default_value_t = 5)]
        failover_runs: usize,
        #[arg(long, default_value_t = 2000)]
        latency_puts: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        throughput_secs: u64,
    },
    /// Closed-loop benchmark: C clients over a few connections for a duration; ops/s, latency
    /// percentiles, CPU and peak RSS; `--compare etcd` runs the same workload on etcd.
    Bench(BenchArgs),
    /// Flood one node of a fresh 3-pod set (idle connections, oversized requests, a burst of
    /// concurrent streams) while a normal client does puts and gets; latency before and
    /// during, errors, the node's RSS and what it refused.
    Flood(FloodArgs),
}

#[derive(Debug, clap::Args)]
struct FloodArgs {
    /// Ordinal of the pod to flood (default: the leader).
    #[arg(long)]
    target: Option<u32>,
    /// Idle HTTP/2 connections to hold open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Clients sending oversized puts in a loop.
    #[arg(long, default_value_t = 4)]
    oversized_senders: usize,
    /// Size of each oversized value (default: 2 MiB, over the 1 MiB + 68 KiB default limit).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    oversized_bytes: usize,
    /// Connections of the burst.
    #[arg(long, default_value_t = 2)]
    burst_connections: usize,
    /// Concurrent gets on each burst connection.
    #[arg(long, default_value_t = 512)]
    burst_streams: usize,
    /// Seconds of the baseline and of the measured flood.
    #[arg(long, default_value_t = 10)]
    phase_secs: u64,
    /// Extra `petkv serve` flag for every pod (repeatable), e.g. --node-arg=--max-client-connections=500.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

async fn flood(args: FloodArgs) -> anyhow::Result<bool> {
    use petkv_harness::flood::{self, FloodSpec};
    // Each idle connection is a file descriptor here and in the node.
    let limit = petkv::edge::limits::nofile::raise_to_hard().context("raising the open-file limit")?;
    let needed = (args.connections + 256) as u64;
    anyhow::ensure!(
        limit.now >= needed,
        "the open-file limit is {} and {} connections need about {needed}; raise the hard limit (ulimit -Hn)",
        limit.now,
        args.connections
    );
    let spec = FloodSpec {
        target: args.target,
        connections: args.connections,
        oversized_senders: args.oversized_senders,
        oversized_bytes: args.oversized_bytes,
        burst_connections: args.burst_connections,
        burst_streams: args.burst_streams,
        phase: Duration::from_secs(args.phase_secs),
        node_args: args.node_args,
    };
    let report = flood::run(&spec).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(report.still_serves)
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[arg(long, value_enum, default_value_t = BenchMode::Put)]
    mode: BenchMode,
    /// Instead of a --mode workload, a fault or lifecycle scenario: failover-kill and
    /// failover-term (signal the leader under --clients writers; the window with no successful
    /// write), cold-start, restart-ready (--restart-keys), volume (--puts over --keys).
    #[arg(long, value_enum, conflicts_with = "sweep")]
    scenario: Option<petkv_harness::bench::scenario::Scenario>,
    /// restart-ready: keys loaded before a follower is restarted.
    #[arg(long, default_value_t = 1_000_000)]
    restart_keys: u64,
    /// volume: puts in all, over --keys keys (sizes are taken at half and at all of them).
    #[arg(long, default_value_t = 2_000_000)]
    puts: u64,
    /// volume and the restart-ready preload: writes in flight.
    #[arg(long, default_value_t = 128)]
    writers: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Connections per system, shared round-robin by the clients (default: min(clients, 8)).
    #[arg(long)]
    connections: Option<usize>,
    /// Size of the key space (also of the failover writes and the volume puts).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Keys written before a reading mode, which then reads those (default: all of --keys).
    #[arg(long)]
    preload: Option<u64>,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Measured seconds (failover scenarios: seconds of writes after the signal).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Warm-up seconds (failover scenarios: seconds of writes before the signal).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Run the identical workload on a 3-member etcd (feature `etcd`), alternating by round.
    #[arg(long, value_enum)]
    compare: Option<petkv_harness::bench::Compare>,
    /// Rounds per system; medians are reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print the report(s) as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Run at several client counts, e.g. `clients=1,4,16,64,256`, and draw an SVG.
    #[arg(long)]
    sweep: Option<String>,
    /// Where the sweep's picture goes.
    #[arg(long, default_value = "bench-sweep.svg")]
    svg: PathBuf,
    /// Which members the connections go to, the same policy for both systems: spread over
    /// every member, or the leader only.
    #[arg(long, value_enum, default_value_t = petkv_harness::bench::Target::Spread)]
    target: petkv_harness::bench::Target,
    /// --mode watch: watchers of every bench key (watcher i on member i mod 3); --scenario
    /// footprint: idle watchers opened.
    #[arg(long, default_value_t = 16)]
    watchers: usize,
    /// Operations per second over all clients, each pacing its share (default: closed loop,
    /// as fast as answers come): compares latencies at one load.
    #[arg(long)]
    rate: Option<f64>,
    /// --scenario footprint: leases granted.
    #[arg(long, default_value_t = 10_000)]
    leases: u64,
    /// A flag for every petkv member's `petkv serve`, e.g. --petkv-arg=--history-retention=0
    /// (repeatable).
    #[arg(long = "petkv-arg", allow_hyphen_values = true)]
    petkv_args: Vec<String>,
    /// A flag for every etcd member, e.g. --etcd-arg=--auto-compaction-mode=revision
    /// (repeatable).
    #[arg(long = "etcd-arg", allow_hyphen_values = true)]
    etcd_args: Vec<String>,
    /// Drive petkv through its own API (native) or through its etcd v3 port with the same
    /// etcd-client as etcd (etcd-api; needs the etcd feature), to compare the very same client.
    #[arg(long, value_enum, default_value_t = petkv_harness::bench::Via::Native)]
    via: petkv_harness::bench::Via,
}

impl BenchArgs {
    fn extra_args(&self) -> petkv_harness::bench::sut::ExtraArgs {
        petkv_harness::bench::sut::ExtraArgs { petkv: self.petkv_args.clone(), etcd: self.etcd_args.clone() }
    }
}

type BenchMode = petkv_harness::bench::Mode;

async fn scenario(args: &BenchArgs, scenario: petkv_harness::bench::scenario::Scenario) -> anyhow::Result<bool> {
    use petkv_harness::bench::scenario::{self, ScenarioSpec};
    let spec = ScenarioSpec {
        scenario,
        clients: args.clients,
        connections: args.connections,
        keys: args.keys,
        value_size: args.value_size,
        before: Duration::from_secs(args.warmup_secs),
        after: Duration::from_secs(args.duration_secs),
        restart_keys: args.restart_keys,
        puts: args.puts,
        writers: args.writers,
        compare: args.compare,
        rounds: args.rounds,
        target: args.target,
        args: args.extra_args(),
        watchers: args.watchers,
        leases: args.leases,
    };
    let report = scenario::run(&spec).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(true)
}

async fn bench(args: BenchArgs) -> anyhow::Result<bool> {
    use petkv_harness::bench::{self, sweep, BenchSpec};
    if let Some(s) = args.scenario {
        return scenario(&args, s).await;
    }
    let spec = BenchSpec {
        mode: args.mode,
        clients: args.clients,
        connections: args.connections,
        keys: args.keys,
        preload: args.preload,
        value_size: args.value_size,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        compare: args.compare,
        rounds: args.rounds,
        target: args.target,
        watchers: args.watchers,
        rate: args.rate,
        args: args.extra_args(),
        via: args.via,
    };
    if spec.mode == bench::Mode::Watch {
        anyhow::ensure!(spec.via == bench::Via::Native, "--mode watch drives petkv through its own API only");
        anyhow::ensure!(args.sweep.is_none(), "--mode watch takes no --sweep");
        let report = bench::watch::run(&spec).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("{}", report.table());
        }
        return Ok(true);
    }
    let reports = match &args.sweep {
        Some(list) => bench::sweep(&spec, &sweep::parse(list)?).await?,
        None => vec![bench::run(&spec).await?],
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!("{}", r.table());
        }
    }
    if args.sweep.is_some() {
        let title = format!(
            "{} · {} B values · {} s per point · median of {} round(s)",
            spec.mode.name(),
            spec.value_size,
            args.duration_secs,
            spec.rounds
        );
        std::fs::write(&args.svg, sweep::svg(&title, &reports))
            .with_context(|| format!("write {}", args.svg.display()))?;
        eprintln!("sweep picture: {}", args.svg.display());
    }
    Ok(reports.iter().flat_map(|r| &r.runs).all(|r| r.errors == 0))
}

fn signal_pod(dir: &Path, pod: &str, signal: Signal) -> anyhow::Result<()> {
    let running = control::running_controller(dir)?;
    let ordinal = control::parse_pod(&running.set, pod)?;
    let p = running.pods.get(&ordinal).with_context(|| format!("{pod} is not part of the set"))?;
    let pid = p.pid.with_context(|| format!("{} is not running", p.name))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .with_context(|| format!("send {signal} to {} (pid {pid})", p.name))?;
    println!("sent {signal} to {} (pid {pid})", p.name);
    Ok(())
}

fn parse_signal(name: &str) -> anyhow::Result<Signal> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<Signal>().with_context(|| format!("unknown signal {name:?} (try KILL, TERM, STOP, CONT)"))
}

async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Demo { state_dir } => {
            let r = petkv_harness::demo::run_fresh(state_dir.as_deref()).await?;
            Ok(r.identity_ok && r.data_ok)
        }
        Command::Up {
            dir,
            replicas,
            voters,
            policy,
            mode,
            delete_volumes_when_scaled,
            tls,
            auth,
            etcd,
            serve_args,
        } => {
            let options = UpOptions {
                replicas,
                voters,
                policy,
                extra_args: serve_args,
                mode,
                delete_volumes_when_scaled,
                tls,
                auth,
                etcd,
            };
            controller::up(&dir.state_dir, options).await?;
            Ok(true)
        }
        Command::Status { dir } => {
            let running = control::running_controller(&dir.state_dir)?;
            let (tls, token) = (running.client_tls()?, running.admin_token()?);
            println!("{}", controller::status_table(&running.pods, tls.as_ref(), token.as_deref()).await);
            match control::read_desired(&dir.state_dir)? {
                Some(d) if d.deleted => println!("the set is deleted (delete-set); `apply` creates it again"),
                Some(d) if d.replicas == 0 => println!("the set is scaled to 0; `scale N` starts it again"),
                _ => {}
            }
            Ok(true)
        }
        Command::Scale { replicas, dir } => {
            if control::read_desired(&dir.state_dir)?.is_some_and(|d| d.deleted) {
                anyhow::bail!("the set is deleted (delete-set): `apply` creates it again before it can be scaled");
            }
            control::request(&dir.state_dir, |d| d.replicas = replicas)?;
            println!("asked for {replicas} pods");
            Ok(true)
        }
        Command::DeleteSet { dir } => {
            let d = control::request(&dir.state_dir, |d| d.deleted = true)?;
            println!(
                "asked to delete the set ({} pods): they stop, their volumes and the bootstrap marker stay; \
                 `apply` creates it again",
                d.replicas
            );
            Ok(true)
        }
        Command::Apply { dir } => {
            let was_deleted = control::read_desired(&dir.state_dir)?.is_some_and(|d| d.deleted);
            let d = control::request(&dir.state_dir, |d| d.deleted = false)?;
            if was_deleted {
                println!("asked to create the set again with {} pods, on their volumes", d.replicas);
            } else {
                println!("the set exists ({} pods); nothing to apply", d.replicas);
            }
            Ok(true)
        }
        Command::Kill { pod, signal, dir } => {
            signal_pod(&dir.state_dir, &pod, parse_signal(&signal)?)?;
            Ok(true)
        }
        Command::DeletePod { pod, dir } => {
            signal_pod(&dir.state_dir, &pod, Signal::SIGTERM)?;
            Ok(true)
        }
        Command::DeleteVolume { pod, dir } => {
            let running = control::running_controller(&dir.state_dir)?;
            let ordinal = control::parse_pod(&running.set, &pod)?;
            control::request(&dir.state_dir, |d| *d.wipe_requests.entry(ordinal).or_default() += 1)?;
            println!("asked to delete {pod} with its volume");
            Ok(true)
        }
        Command::Partition { groups: Some(spec), dir, .. } => {
            let running = control::running_controller(&dir.state_dir)?;
            let groups = spec
                .split('/')
                .map(|g| g.split(',').map(|p| control::parse_pod(&running.set, p.trim())).collect())
                .collect::<anyhow::Result<Vec<Vec<u32>>>>()?;
            anyhow::ensure!(groups.len() >= 2, "a split needs at least two groups, like 2,3,4/0,1");
            control::request(&dir.state_dir, |d| d.groups = groups)?;
            println!("asked to split the set into {spec}");
            Ok(true)
        }
        Command::Partition { pods, groups: None, dir } => {
            let running = control::running_controller(&dir.state_dir)?;
            let ordinals =
                pods.iter().map(|p| control::parse_pod(&running.set, p)).collect::<anyhow::Result<Vec<_>>>()?;
            control::request(&dir.state_dir, |d| d.isolated.extend(ordinals))?;
            println!("asked to cut {} off the network", pods.join(", "));
            Ok(true)
        }
        Command::Heal { dir } => {
            control::request(&dir.state_dir, |d| {
                d.isolated.clear();
                d.groups.clear();
            })?;
            println!("asked to reconnect every pod");
            Ok(true)
        }
        Command::RollingRestart { dir } => {
            control::request(&dir.state_dir, |d| d.restart_requests += 1)?;
            println!("asked for a rolling restart");
            Ok(true)
        }
        Command::Down { delete_volumes, dir } => {
            control::request(&dir.state_dir, |d| {
                d.stop = true;
                d.delete_volumes = delete_volumes;
            })?;
            println!("asked the set to stop{}", if delete_volumes { " and delete its volumes" } else { "" });
            Ok(true)
        }
        Command::Experiment {
            name,
            runs,
            out,
            json,
            clients,
            settle_secs,
            mode,
            target,
            cycles,
            volumes,
            power_loss,
            node_args,
            crash_loop_secs,
            backoff_cap_secs,
            delete_marker,
            zombie_secs,
            watchers,
            via,
        } => {
            use petkv_harness::experiment::{Experiment, ForceDeleteTarget};
            anyhow::ensure!(
                target.is_none() || matches!(name, Experiment::PowerLoss | Experiment::ForceDelete),
                "--target is an option of the power-loss and force-delete experiments"
            );
            let force_delete_target = match target {
                Some(PowerLossTarget::Leader) if name == Experiment::ForceDelete => ForceDeleteTarget::Leader,
                Some(PowerLossTarget::Follower) | None => ForceDeleteTarget::Follower,
                Some(other) if name == Experiment::ForceDelete => {
                    anyhow::bail!("force-delete --target is leader or follower, not {other:?}")
                }
                Some(_) => ForceDeleteTarget::default(),
            };
            anyhow::ensure!(cycles >= 1, "--cycles must be at least 1");
            let spec = ExperimentSpec {
                mode,
                warmup: Duration::from_secs(settle_secs),
                cooldown: Duration::from_secs(settle_secs),
                workload: petkv_harness::workload::WorkloadSpec {
                    clients,
                    api: match via {
                        petkv_harness::bench::Via::Native => petkv_harness::workload::WorkloadApi::Native,
                        petkv_harness::bench::Via::EtcdApi => petkv_harness::workload::WorkloadApi::Etcd,
                    },
                    ..Default::default()
                },
                out_dir: out,
                target: target.unwrap_or_default(),
                cycles,
                volumes,
                power_loss,
                extra_args: node_args,
                crash_loop_for: Duration::from_secs(crash_loop_secs),
                crash_loop_backoff_cap: Duration::from_secs(backoff_cap_secs.max(1)),
                delete_marker,
                force_delete_target,
                zombie_for: Duration::from_secs(zombie_secs),
                watchers,
                ..Default::default()
            };
            let mut reports = Vec::new();
            let mut errors = 0;
            let mut lines = Vec::new();
            for run in 1..=runs {
                println!("run {run}/{runs}");
                let report = match experiment::run(name, &spec).await {
                    Ok(report) => report,
                    Err(e) if e.downcast_ref::<petkv_harness::lazyfs::Unavailable>().is_some() => {
                        println!("skipped: {e:#}");
                        return Ok(true);
                    }
                    Err(e) => {
                        println!("run {run}/{runs}: ERROR: {e:#}");
                        lines.push(format!("run {run}/{runs}: ERROR: {e:#}"));
                        errors += 1;
                        continue;
                    }
                };
                experiment::print(&report);
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
                let line = format!("run {run}/{runs}: {}", report.summary_line());
                println!("{line}");
                lines.push(line);
                reports.push(report);
            }
            let mut windows: Vec<u64> = reports.iter().map(|r| r.unavailability_ms).collect();
            windows.sort_unstable();
            let passed = reports.iter().filter(|r| r.passed()).count();
            let acknowledged: usize = reports.iter().map(|r| r.acknowledged_writes).sum();
            let lost: usize = reports.iter().map(|r| r.lost_writes.len()).sum();
            let divergent: usize = reports.iter().map(|r| r.convergence.divergent.len()).sum();
            let divergent_runs = reports.iter().filter(|r| !r.members_converged).count();
            let not_started = reports.iter().filter(|r| !r.all_started).count();
            let summary = serde_json::json!({
                "experiment": name,
                "target": match name {
                    Experiment::PowerLoss => serde_json::to_value(spec.target)?,
                    Experiment::ForceDelete => serde_json::to_value(spec.force_delete_target)?,
                    _ => serde_json::Value::Null,
                },
                "volumes": if spec.needs_lazyfs(name) { Volumes::Lazyfs } else { Volumes::Plain },
                "runs": runs,
                "passed": passed,
                "errors": errors,
                "acknowledged_writes": acknowledged,
                "lost_writes": lost,
                "divergent_members": divergent,
                "runs_not_converged": divergent_runs,
                "runs_with_a_member_not_started": not_started,
                "unavailability_ms_median": windows.get(windows.len() / 2),
                "unavailability_ms_worst": windows.last(),
                "linearizability_violations": reports.iter().map(|r| r.violations.len()).sum::<usize>(),
                "unknown_outcomes": reports.iter().map(|r| r.unknown_outcome).sum::<usize>(),
            });
            println!("summary: {}", serde_json::to_string_pretty(&summary)?);
            if runs > 1 {
                for line in &lines {
                    println!("{line}");
                }
            }
            println!(
                "total: {passed}/{runs} runs passed; {acknowledged} acknowledged writes, {lost} lost, \
                 {divergent} divergent member(s) in {divergent_runs} run(s), {not_started} run(s) with a member \
                 that did not start again, {errors} run(s) ended in an error"
            );
            Ok(passed == runs)
        }
        Command::Measure { failover_runs, latency_puts, clients, throughput_secs } => {
            let spec = MeasureSpec {
                failover_runs,
                latency_puts,
                clients,
                throughput_for: Duration::from_secs(throughput_secs),
            };
            let m = measure::run(&spec).await?;
            println!(
                "\nsummary: failover median {:?} over {} runs (worst {:?}); put p50 {:?}, p99 {:?}; {} clients: {:.0} puts/s",
                measure::median(&m.failover_windows),
                m.failover_windows.len(),
                m.failover_windows.iter().max().copied().unwrap_or_default(),
                m.put_latency_p50,
                m.put_latency_p99,
                m.clients,
                m.throughput_ops
            );
            Ok(true)
        }
        Command::Bench(args) => bench(args).await,
        Command::Flood(args) => flood(args).await,
    }
}

/// Resolves with the name of the first SIGINT or SIGTERM this process gets.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        // Without handlers the signals keep their default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command;
    // `up` stops its set in order on a signal itself. Every other command holds what it started
    // (pods in their own process groups, an etcd cluster) inside `run`'s future: dropping that
    // future on SIGINT or SIGTERM kills them, where dying of the signal left them running.
    let outcome = if matches!(command, Command::Up { .. }) {
        run(command).await
    } else {
        tokio::select! {
            outcome = run(command) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("{signal}: stopped, with everything this command started")),
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("petkv-harness: {e:#}");
            ExitCode::FAILURE
        }
    }
}
