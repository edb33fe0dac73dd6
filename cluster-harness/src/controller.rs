//! `petkv-harness up`: the StatefulSet controller (and kubelet) of the local set.
//!
//! It starts the pods under the chosen pod management policy, then loops until Ctrl-C or
//! `down`: it applies what `desired.json` asks (scale, also to 0 and back, wipe a volume, rolling
//! restart, delete the set and apply it again), recreates
//! any pod whose process died (same name, same volume, with back-off if it keeps dying, like
//! CrashLoopBackOff), writes `running.json`, and shows a live status table.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::control::{self, Desired, Policy, Running, RunningPod};
use crate::{Cluster, ClusterSpec};

const TICK: Duration = Duration::from_millis(250);
const VIEW_EVERY: Duration = Duration::from_secs(1);
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A pod that dies within this long of starting is restarted with growing back-off.
const CRASH_WINDOW: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub replicas: u32,
    pub voters: u32,
    pub policy: Policy,
    pub extra_args: Vec<String>,
    pub mode: crate::Mode,
    pub delete_volumes_when_scaled: bool,
    /// TLS on every pod's ports (certificates in `<state dir>/tls`).
    pub tls: bool,
    /// Authentication on every pod's client port (tokens in `<state dir>/auth/tokens`).
    pub auth: bool,
    /// etcd's v3 API on every pod ([`crate::cluster::ETCD_PORT`]).
    pub etcd: bool,
}

#[derive(Debug, Default)]
struct PodLife {
    started: Option<Instant>,
    restarts: u32,
    not_before: Option<Instant>,
}

/// What the controller has already acted on.
#[derive(Debug, Default)]
struct Handled {
    restart_requests: u64,
    wipe_requests: BTreeMap<u32, u64>,
    isolated: std::collections::BTreeSet<u32>,
    groups: Vec<Vec<u32>>,
    /// The set is scaled to 0 (`scale 0`): every pod stopped, volumes and membership kept.
    at_zero: bool,
    /// The set is deleted (`delete-set`) until `apply`.
    deleted: bool,
}

/// SIGINT and SIGTERM, caught from the start: either stops the set in order (a signal that
/// came while the pods were being created is handled once the loop runs).
fn stop_signals() -> anyhow::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
}

/// Runs the controller in the foreground until Ctrl-C (or SIGTERM) or `down`.
pub async fn up(state_dir: &Path, options: UpOptions) -> anyhow::Result<()> {
    let (mut interrupt, mut terminate) = stop_signals()?;
    let spec = ClusterSpec {
        replicas: options.replicas,
        voters: options.voters,
        extra_args: options.extra_args.clone(),
        mode: options.mode,
        delete_volumes_when_scaled: options.delete_volumes_when_scaled,
        tls: options.tls,
        auth: options.auth,
        etcd: options.etcd,
        ..Default::default()
    };
    let mut cluster = Cluster::in_dir(spec, state_dir)?;
    if options.etcd {
        let endpoints: Vec<String> = (0..options.replicas).map(|o| cluster.etcd_addr(o)).collect();
        println!("etcd's v3 API on every pod: etcdctl --endpoints {}", endpoints.join(","));
    }
    if let Some(auth) = cluster.auth() {
        println!("authentication on: tokens in {}", auth.file().display());
        println!("  write: PETKV_TOKEN={}", auth.write);
        println!("  read:  PETKV_TOKEN={}", auth.read);
        println!("  (the harness uses the admin token in that file)");
    }
    let previous = control::read_desired(state_dir)?.unwrap_or_default();
    let desired =
        Desired { replicas: options.replicas, stop: false, delete_volumes: false, deleted: false, ..previous };
    control::write_desired(state_dir, &desired)?;
    let mut handled = Handled {
        restart_requests: desired.restart_requests,
        wipe_requests: desired.wipe_requests.clone(),
        isolated: Default::default(),
        groups: Vec::new(),
        at_zero: false,
        deleted: false,
    };
    let mut lives: BTreeMap<u32, PodLife> = BTreeMap::new();
    println!(
        "petkv-harness up: {} pods, {} voters, podManagementPolicy {:?}, {} mode, state in {}",
        options.replicas,
        options.voters,
        options.policy,
        if cluster.is_pod_mode() { "pod (network namespaces)" } else { "process (loopback)" },
        state_dir.display()
    );
    publish(&mut cluster, options.policy)?;
    create_pods(&mut cluster, options.policy, 0..options.replicas, &mut lives).await?;
    let mut declared = false;
    let mut last_view = Instant::now() - VIEW_EVERY;
    loop {
        tokio::select! {
            signal = async { tokio::select! { _ = interrupt.recv() => "Ctrl-C", _ = terminate.recv() => "SIGTERM" } } => {
                println!("{signal}: stopping the set, highest ordinal first (volumes kept)");
                cluster.down().await?;
                return Ok(());
            }
            _ = tokio::time::sleep(TICK) => {}
        }
        if !declared {
            // The cluster learns its declared size once it has a leader.
            declared = cluster.client()?.scale(cluster.spec.replicas).await.is_ok();
        }
        let desired = control::read_desired(state_dir)?.unwrap_or_default();
        if desired.stop {
            println!("down: stopping the set, highest ordinal first");
            cluster.down().await?;
            if desired.delete_volumes {
                for o in 0..desired.replicas.max(cluster.spec.replicas) {
                    let _ = std::fs::remove_dir_all(cluster.volume(o));
                }
                let _ = std::fs::remove_file(state_dir.join("bootstrapped"));
                println!("volumes deleted");
            }
            let _ = std::fs::remove_file(state_dir.join(control::RUNNING_FILE));
            return Ok(());
        }
        apply_desired(&mut cluster, options.policy, &desired, &mut handled, &mut lives).await?;
        restart_dead_pods(&mut cluster, &mut lives)?;
        publish(&mut cluster, options.policy)?;
        if last_view.elapsed() >= VIEW_EVERY {
            show(&cluster).await;
            last_view = Instant::now();
        }
    }
}

async fn create_pods(
    cluster: &mut Cluster,
    policy: Policy,
    ordinals: std::ops::Range<u32>,
    lives: &mut BTreeMap<u32, PodLife>,
) -> anyhow::Result<()> {
    for o in ordinals {
        cluster.start(o)?;
        lives.entry(o).or_default().started = Some(Instant::now());
        if policy == Policy::OrderedReady {
            println!("OrderedReady: waiting for petkv-{o} to be ready before the next pod");
            cluster.wait_member(o, READY_TIMEOUT).await?;
        }
    }
    Ok(())
}

async fn apply_desired(
    cluster: &mut Cluster,
    policy: Policy,
    desired: &Desired,
    handled: &mut Handled,
    lives: &mut BTreeMap<u32, PodLife>,
) -> anyhow::Result<()> {
    set_lifecycle(cluster, policy, desired, handled, lives).await?;
    let runs = !handled.deleted && !handled.at_zero;
    let current = cluster.spec.replicas;
    if runs && desired.replicas != current && desired.replicas >= 1 {
        println!("scale: {current} → {} pods", desired.replicas);
        if policy == Policy::Parallel || desired.replicas < current {
            cluster.scale(desired.replicas).await?;
            for o in current..desired.replicas {
                lives.entry(o).or_default().started = Some(Instant::now());
            }
        } else {
            for n in current + 1..=desired.replicas {
                cluster.scale(n).await?;
                lives.entry(n - 1).or_default().started = Some(Instant::now());
                cluster.wait_member(n - 1, READY_TIMEOUT).await?;
            }
        }
    }
    for (ordinal, count) in &desired.wipe_requests {
        if handled.wipe_requests.get(ordinal) == Some(count) {
            continue;
        }
        handled.wipe_requests.insert(*ordinal, *count);
        if cluster.pod(*ordinal).is_err() {
            continue;
        }
        if !runs {
            println!("delete-volume: petkv-{ordinal}'s volume deleted; the set has no pods now (it gets an empty one)");
            cluster.wipe_volume(*ordinal)?;
            continue;
        }
        println!("delete-volume: petkv-{ordinal} is deleted, its volume wiped, and it is recreated");
        cluster.terminate(*ordinal).await?;
        cluster.wipe_volume(*ordinal)?;
        cluster.start(*ordinal)?;
        lives.entry(*ordinal).or_default().started = Some(Instant::now());
    }
    if desired.isolated != handled.isolated {
        for o in desired.isolated.difference(&handled.isolated) {
            match cluster.isolate(*o) {
                Ok(()) => println!("partition: petkv-{o} cut off the network"),
                Err(e) => println!("partition of petkv-{o} refused: {e:#}"),
            }
        }
        for o in handled.isolated.difference(&desired.isolated) {
            match cluster.heal(*o) {
                Ok(()) => println!("heal: petkv-{o} reconnected"),
                Err(e) => println!("heal of petkv-{o} failed: {e:#}"),
            }
        }
        handled.isolated = desired.isolated.clone();
    }
    if desired.groups != handled.groups {
        if !handled.groups.is_empty() {
            cluster.join_sides()?;
            println!("heal: the set is whole again");
        }
        if !desired.groups.is_empty() {
            match cluster.split(&desired.groups) {
                Ok(()) => println!("partition: the set is split into {:?}", desired.groups),
                Err(e) => println!("partition refused: {e:#}"),
            }
        }
        handled.groups = desired.groups.clone();
    }
    if desired.restart_requests != handled.restart_requests && !runs {
        handled.restart_requests = desired.restart_requests;
        println!("rolling restart: the set has no pods; nothing to restart");
    }
    if desired.restart_requests != handled.restart_requests {
        handled.restart_requests = desired.restart_requests;
        println!("rolling restart: highest ordinal first, each waiting for readiness");
        for o in cluster.ordinals().into_iter().rev() {
            cluster.terminate(o).await?;
            cluster.start(o)?;
            lives.entry(o).or_default().started = Some(Instant::now());
            cluster.wait_member(o, READY_TIMEOUT).await?;
            println!("  petkv-{o} restarted and ready");
        }
    }
    Ok(())
}

/// `scale 0` and back, as `kubectl scale` does with `whenScaled: Retain` ([`Cluster::scale`]
/// with 0: every pod SIGTERM, highest ordinal first, volumes and membership kept), and
/// `delete-set` then `apply`, as `kubectl delete statefulset` with `whenDeleted: Retain` and
/// `kubectl apply` do: every pod SIGTERM at once ([`Cluster::delete_all_pods`]), volumes and
/// the bootstrap marker (which has no owner) kept; then the set's pods created again on their
/// volumes, at the count the set had.
async fn set_lifecycle(
    cluster: &mut Cluster,
    policy: Policy,
    desired: &Desired,
    handled: &mut Handled,
    lives: &mut BTreeMap<u32, PodLife>,
) -> anyhow::Result<()> {
    let was_down = handled.deleted || handled.at_zero;
    if desired.deleted && !handled.deleted {
        println!(
            "delete-set: every pod gets SIGTERM at once (kubectl delete statefulset); volumes and the bootstrap \
             marker are kept (whenDeleted: Retain)"
        );
        for (o, status) in cluster.delete_all_pods().await? {
            let how = status.map(|s| s.to_string()).unwrap_or_else(|| "not running, or killed after its grace".into());
            println!("  petkv-{o}: {how}");
        }
        handled.deleted = true;
    }
    if desired.replicas == 0 && !handled.at_zero {
        println!(
            "scale: {} → 0 pods: SIGTERM to each, highest ordinal first; volumes and membership kept \
             (whenScaled: Retain)",
            cluster.spec.replicas
        );
        cluster.scale(0).await?;
        if cluster.spec.delete_volumes_when_scaled {
            // whenScaled: Delete removes the claim of every ordinal at or above the new count.
            for o in cluster.ordinals() {
                cluster.wipe_volume(o)?;
            }
            println!(
                "  whenScaled: Delete: every volume deleted; the bootstrap marker stays, so petkv-0 will wait for \
                 the cluster that is gone"
            );
        }
        handled.at_zero = true;
    }
    if handled.deleted || handled.at_zero {
        // Nothing runs: nothing is recreated.
        for life in lives.values_mut() {
            life.not_before = None;
        }
    }
    let applied = !desired.deleted && handled.deleted;
    if applied {
        handled.deleted = false;
    }
    if !desired.deleted && desired.replicas >= 1 {
        handled.at_zero = false;
    }
    if applied && handled.at_zero {
        println!("apply: the set is created again with 0 pods (scale it to start them)");
    }
    if was_down && !handled.deleted && !handled.at_zero {
        let n = cluster.spec.replicas;
        if applied {
            println!("apply: the set is created again with its {n} pods, each on its kept volume");
        } else {
            println!("scale: 0 → {n} pods, each on its kept volume");
        }
        create_pods(cluster, policy, 0..n, lives).await?;
        if desired.replicas != n {
            // The cluster must have a leader before it is told another size.
            cluster.wait_healthy(READY_TIMEOUT).await?;
        }
    }
    Ok(())
}

fn restart_dead_pods(cluster: &mut Cluster, lives: &mut BTreeMap<u32, PodLife>) -> anyhow::Result<()> {
    for o in cluster.ordinals() {
        let life = lives.entry(o).or_default();
        if let Some(status) = cluster.pod_mut(o)?.reap() {
            // A process killed by a signal was deleted, not crashed: recreate it at once. One
            // that exits with an error soon after starting is crash-looping: back off.
            let failed = status.code().is_some_and(|c| c != 0);
            let crashed = failed && life.started.is_some_and(|s| s.elapsed() < CRASH_WINDOW);
            life.restarts += 1;
            let backoff =
                if crashed { Duration::from_secs(1 << life.restarts.min(5)).min(MAX_BACKOFF) } else { Duration::ZERO };
            println!("petkv-{o} exited ({status}); recreating it with the same name and volume in {backoff:?}");
            life.not_before = Some(Instant::now() + backoff);
        }
        if let Some(at) = life.not_before {
            if Instant::now() >= at {
                life.not_before = None;
                cluster.start(o)?;
                life.started = Some(Instant::now());
            }
        }
    }
    Ok(())
}

fn publish(cluster: &mut Cluster, policy: Policy) -> anyhow::Result<()> {
    let mut pods = BTreeMap::new();
    for o in cluster.ordinals() {
        let addr = cluster.client_addr(o);
        let http_addr = cluster.http_addr(o);
        let volume = cluster.volume(o).display().to_string();
        let pod = cluster.pod_mut(o)?;
        let pid = if pod.is_running() { pod.pid() } else { None };
        pods.insert(o, RunningPod { name: pod.name(), pid, client_addr: addr, http_addr, volume });
    }
    let running = Running {
        controller_pid: std::process::id(),
        set: cluster.spec.set.clone(),
        policy,
        pods,
        tls_dir: cluster.tls().map(|t| t.dir().to_path_buf()),
        auth_dir: cluster.auth().map(|_| cluster.state_dir().to_path_buf()),
    };
    control::write_running(cluster.state_dir(), &running)
}

/// How long `status_table` waits for each pod.
const PROBE: Duration = Duration::from_millis(500);

/// A status table of the set: one row per pod, each pod asked for its own status. `token`:
/// the admin token when the set runs with authentication.
pub async fn status_table(
    pods: &BTreeMap<u32, RunningPod>,
    tls: Option<&petkv_client::tls::ClientTls>,
    token: Option<&str>,
) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["pod", "pid", "role", "node id", "leader", "term", "applied", "keys", "ready"]);
    for (o, pod) in pods {
        let status = async {
            let client = petkv_client::Client::with_tls(std::slice::from_ref(&pod.client_addr), PROBE, tls)?;
            let client = match token {
                Some(token) => client.with_token(token)?,
                None => client,
            };
            client.status_of_first().await
        }
        .await;
        let pid = pod.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        match status {
            Ok(s) => {
                let ready = s.ready;
                let id = |id: u64| if id == 0 { "-".to_string() } else { petkv::raft::node_label(&s.set_name, id) };
                t.add_row(vec![
                    pod.name.clone(),
                    pid,
                    s.role.clone(),
                    id(s.node_id),
                    id(s.leader_id),
                    s.term.to_string(),
                    s.applied_index.to_string(),
                    s.key_count.to_string(),
                    if ready { "yes".into() } else { "no".into() },
                ]);
            }
            Err(_) => {
                let role = if pod.pid.is_some() { "not answering" } else { "not running" };
                t.add_row(vec![
                    format!("petkv-{o}"),
                    pid,
                    role.into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "no".into(),
                ]);
            }
        }
    }
    t
}

async fn show(cluster: &Cluster) {
    let Ok(Some(running)) = control::read_running(cluster.state_dir()) else { return };
    let token = cluster.auth().map(|a| a.admin.as_str());
    let table = status_table(&running.pods, cluster.client_tls(), token).await;
    if std::io::stdout().is_terminal() {
        print!("\x1b[2J\x1b[H");
    }
    println!("{table}");
}
