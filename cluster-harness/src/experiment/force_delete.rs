//! `force-delete` (pod mode): a pod on an unreachable node is force-deleted while its process
//! still runs, and the StatefulSet's replacement, with the same name and a copy of the volume,
//! starts next to it ([`Cluster::force_delete`]).
//!
//! 1. The target (`--target follower|leader`) is force-deleted: its process runs on in its
//!    namespace at its old address (the zombie), still connected to its peers; the replacement
//!    starts at a new address on a crash-consistent copy of the volume, and the pod's name
//!    resolves to it everywhere but in the zombie's own hosts file.
//! 2. The zombie runs for `--zombie-secs` under the workload, then is killed if it has not
//!    exited by itself (the node comes back and its kubelet kills it).
//! 3. Throughout, every process, the zombie included (at its old address), is polled for its
//!    role, term and leader: two processes that claim leadership of one term, or two leaders
//!    named for one term, fail the run (Raft allows one leader per term; two processes with one
//!    node id are two leaders even under one id). The usual checks follow: linearizable history,
//!    no lost acknowledged write, every member's digest equal after the zombie is gone, one
//!    cluster, identities.
//! 4. The report says whether the zombie exited by itself, with what status, how long after the
//!    replacement started and what it logged about it, and when the replacement became ready.
//!    None of that is part of the verdict, which is about safety.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use petkv_client::pb::v1::NodeStatus;
use petkv_client::Client;
use serde::Serialize;

use super::faults::Faults;
use super::{ExperimentSpec, SETTLE};
use crate::Cluster;

/// What a fenced process logs when it learns that a newer process with its identity exists.
pub const REPLACED_LINE: &str = "was replaced by a newer process";
/// How often every process is asked for its role, term and leader.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Budget of one status call (a stopped or dead process must not hold up the others).
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the processes are still polled once the zombie is gone and the replacement ready.
const POLL_AFTER: Duration = Duration::from_secs(2);
/// Changes of (role, term, leader) kept per process for the report.
const MAX_CHANGES: usize = 40;

/// Which pod `force-delete` force-deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForceDeleteTarget {
    /// A follower.
    #[default]
    Follower,
    /// The leader: the zombie is a leader that does not know it was replaced.
    Leader,
}

/// What `force-delete` saw of the zombie and the replacement.
#[derive(Debug, Clone, Serialize)]
pub struct ZombieReport {
    pub pod: String,
    pub target: ForceDeleteTarget,
    /// The role and node id of the pod when it was force-deleted.
    pub role: String,
    pub node_id: u64,
    /// The zombie's address (kept) and the replacement's.
    pub zombie_ip: String,
    pub replacement_ip: String,
    /// The copy of the volume the replacement started on, and how long the zombie was stopped
    /// for it.
    pub image_files: u64,
    pub image_bytes: u64,
    pub image_stopped_ms: u64,
    /// How long the zombie was allowed to run.
    pub zombie_for_ms: u64,
    /// The zombie exited before it was killed.
    pub exited_by_itself: bool,
    /// Its exit status (`killed by the harness` when it did not exit by itself).
    pub exit_status: String,
    pub exit_code: Option<i32>,
    /// When it exited, counted from the replacement's start.
    pub exited_after_ms: Option<u64>,
    /// Its log lines that say it was replaced ([`REPLACED_LINE`]), and its last lines.
    pub replaced_lines: Vec<String>,
    pub log_tail: Vec<String>,
    /// It left a `replaced` file in its volume.
    pub replaced_file: bool,
    /// Its applied index as last polled before the replacement started, and as last polled
    /// while it ran: entries it applied after it had been replaced.
    pub zombie_applied_before: u64,
    pub zombie_applied_last: u64,
    /// When the replacement was first ready, counted from its start, and whether the zombie
    /// still ran then.
    pub replacement_ready_after_ms: Option<u64>,
    pub replacement_ready_while_zombie_ran: bool,
    pub leadership: Leadership,
}

impl ZombieReport {
    /// One line for the run's summary: how the zombie ended.
    pub fn ending(&self) -> String {
        match (self.exited_by_itself, self.exited_after_ms) {
            (true, Some(ms)) => format!(
                "the zombie exited by itself ({}) {:.1} s after the replacement started",
                self.exit_status,
                ms as f64 / 1000.0
            ),
            (true, None) => {
                format!("the zombie exited by itself ({}) before the replacement started", self.exit_status)
            }
            (false, _) => {
                format!("the zombie did NOT exit by itself (killed after {:.0} s)", self.zombie_for_ms as f64 / 1000.0)
            }
        }
    }
}

/// The report's rows for `force-delete`.
pub(super) fn rows(z: &ZombieReport) -> Vec<(&'static str, String)> {
    let l = &z.leadership;
    let secs = |ms: u64| format!("{:.2} s", ms as f64 / 1000.0);
    vec![
        (
            "force-deleted",
            format!(
                "{} ({}, node {}): zombie at {}, replacement at {} on a copy ({} files, {} KiB; zombie stopped {} ms)",
                z.pod,
                z.role,
                petkv::raft::node_label("petkv", z.node_id),
                z.zombie_ip,
                z.replacement_ip,
                z.image_files,
                z.image_bytes / 1024,
                z.image_stopped_ms
            ),
        ),
        (
            "one leader per term (every process polled, the zombie too)",
            if l.conflicts.is_empty() {
                format!("yes ({} polls, terms {}–{})", l.polls, l.terms.0, l.terms.1)
            } else {
                format!("NO: {}", l.conflicts.join("; "))
            },
        ),
        (
            "zombie exited by itself",
            match (z.exited_by_itself, z.exited_after_ms) {
                (true, Some(ms)) => format!("yes: {}, {} after the replacement started", z.exit_status, secs(ms)),
                (true, None) => format!("yes: {}", z.exit_status),
                (false, _) => format!("no: killed after {} ({})", secs(z.zombie_for_ms), z.exit_status),
            },
        ),
        (
            "zombie logged",
            if z.replaced_lines.is_empty() {
                format!("nothing with {REPLACED_LINE:?}")
            } else {
                z.replaced_lines.join("\n")
            },
        ),
        ("zombie left a `replaced` file", if z.replaced_file { "yes".into() } else { "no".into() }),
        (
            "zombie's applied index (replaced → last seen)",
            format!(
                "{} → {}{}",
                z.zombie_applied_before,
                z.zombie_applied_last,
                if z.zombie_applied_last > z.zombie_applied_before { " (it kept applying entries)" } else { "" }
            ),
        ),
        (
            "replacement ready",
            match z.replacement_ready_after_ms {
                Some(ms) if z.replacement_ready_while_zombie_ran => {
                    format!("{} after its start, while the zombie still ran", secs(ms))
                }
                Some(ms) => format!("{} after its start", secs(ms)),
                None => "never".into(),
            },
        ),
    ]
}

/// The leadership every process reported, term by term.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leadership {
    /// Polling rounds, and the status answers they got.
    pub polls: u64,
    pub answers: u64,
    /// Terms seen, lowest and highest.
    pub terms: (u64, u64),
    /// Each term with a leader: the processes that claimed it, and the leaders named for it.
    pub leaders: Vec<String>,
    /// Terms with two claimants or two named leaders: the check's failures.
    pub conflicts: Vec<String>,
    /// Each process's changes of (role, term, leader), as polled, with the time since the
    /// workload started.
    pub changes: Vec<String>,
}

/// A process: a pod's ordinal and which of its processes (0: the one started first, which
/// becomes the zombie; 1: the replacement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    ordinal: u32,
    generation: u32,
}

/// What the poller saw.
#[derive(Default)]
struct Seen {
    polls: u64,
    answers: u64,
    /// term → processes that said they lead it.
    claims: BTreeMap<u64, BTreeSet<Proc>>,
    /// term → leader node id → processes that named it (a claimant names itself).
    named: BTreeMap<u64, BTreeMap<u64, BTreeSet<Proc>>>,
    last: BTreeMap<Proc, (String, u64, u64)>,
    applied: BTreeMap<Proc, u64>,
    changes: BTreeMap<Proc, Vec<String>>,
}

impl Seen {
    /// One polling round's answers, `at` seconds after the workload started.
    fn record(&mut self, answers: Vec<(Proc, NodeStatus)>, at: f64) {
        self.polls += 1;
        for (proc, st) in answers {
            self.answers += 1;
            if st.role == "leader" {
                self.claims.entry(st.term).or_default().insert(proc);
                self.named.entry(st.term).or_default().entry(st.node_id).or_default().insert(proc);
            } else if st.leader_id != 0 {
                self.named.entry(st.term).or_default().entry(st.leader_id).or_default().insert(proc);
            }
            self.applied.insert(proc, st.applied_index);
            let now = (st.role.clone(), st.term, st.leader_id);
            if self.last.get(&proc) != Some(&now) {
                let leader =
                    if st.leader_id == 0 { "none".to_string() } else { petkv::raft::node_label("petkv", st.leader_id) };
                let changes = self.changes.entry(proc).or_default();
                if changes.len() < MAX_CHANGES {
                    changes.push(format!(
                        "{at:.2}s {} term {} leader {leader} applied {}",
                        st.role, st.term, st.applied_index
                    ));
                }
                self.last.insert(proc, now);
            }
        }
    }
}

impl Seen {
    /// The leaders of each term, as claimed and as named, and the terms with more than one.
    fn leadership(&self, name: impl Fn(Proc) -> String) -> Leadership {
        let mut out = Leadership { polls: self.polls, answers: self.answers, ..Default::default() };
        let terms: Vec<u64> = self.last.values().map(|(_, t, _)| *t).chain(self.named.keys().copied()).collect();
        out.terms = (terms.iter().copied().min().unwrap_or(0), terms.iter().copied().max().unwrap_or(0));
        for (term, named) in &self.named {
            let claimants: Vec<String> =
                self.claims.get(term).map(|c| c.iter().map(|p| name(*p)).collect()).unwrap_or_default();
            let leaders: Vec<String> = named
                .iter()
                .map(|(id, by)| {
                    let by: Vec<String> = by.iter().map(|p| name(*p)).collect();
                    format!("{} (named by {})", petkv::raft::node_label("petkv", *id), by.join(", "))
                })
                .collect();
            out.leaders.push(format!(
                "term {term}: {}; claimed by {}",
                leaders.join(" and "),
                if claimants.is_empty() { "no process seen leading".to_string() } else { claimants.join(", ") }
            ));
            if claimants.len() > 1 {
                out.conflicts.push(format!(
                    "term {term}: {} processes claim to lead it: {}",
                    claimants.len(),
                    claimants.join(", ")
                ));
            }
            if named.len() > 1 {
                out.conflicts.push(format!(
                    "term {term}: {} different leaders: {}",
                    named.len(),
                    leaders.join(" and ")
                ));
            }
        }
        for (proc, changes) in &self.changes {
            for c in changes {
                out.changes.push(format!("{}: {c}", name(*proc)));
            }
        }
        out
    }
}

/// The processes to poll, each with a client for its own address.
type Targets = Arc<Mutex<Vec<(Proc, Arc<Client>)>>>;

/// Polls every process for (role, term, leader) until stopped.
struct Poller {
    targets: Targets,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(started: Instant) -> Self {
        let targets: Targets = Arc::default();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(poll(targets.clone(), seen.clone(), stop.clone(), started));
        Self { targets, seen, stop, task }
    }

    fn add(&self, proc: Proc, client: Client) {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).push((proc, Arc::new(client)));
    }

    fn remove(&self, proc: Proc) {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).retain(|(p, _)| *p != proc);
    }

    fn applied(&self, proc: Proc) -> u64 {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).applied.get(&proc).copied().unwrap_or(0)
    }

    async fn finish(self, name: impl Fn(Proc) -> String) -> Leadership {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        seen.leadership(name)
    }
}

async fn poll(targets: Targets, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>, started: Instant) {
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        let now: Vec<(Proc, Arc<Client>)> = targets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut calls = tokio::task::JoinSet::new();
        for (proc, client) in now {
            calls.spawn(async move { (proc, tokio::time::timeout(POLL_TIMEOUT, client.status_of_first()).await) });
        }
        let mut answers = Vec::new();
        while let Some(done) = calls.join_next().await {
            if let Ok((proc, Ok(Ok(status)))) = done {
                answers.push((proc, status));
            }
        }
        seen.lock().unwrap_or_else(|p| p.into_inner()).record(answers, started.elapsed().as_secs_f64());
        tokio::time::sleep(POLL_EVERY.saturating_sub(round.elapsed())).await;
    }
}

/// The `force-delete` schedule.
pub(super) async fn run(spec: &ExperimentSpec, cluster: &mut Cluster, faults: &mut Faults) -> anyhow::Result<()> {
    let leader = cluster.wait_healthy(SETTLE).await?;
    let target = match spec.force_delete_target {
        ForceDeleteTarget::Leader => leader,
        ForceDeleteTarget::Follower => (leader + 1) % 3,
    };
    let poller = Poller::start(faults.started);
    for o in cluster.ordinals() {
        poller.add(Proc { ordinal: o, generation: 0 }, cluster.client_for(&[cluster.client_addr(o)], POLL_TIMEOUT)?);
    }
    let zombie_proc = Proc { ordinal: target, generation: 0 };
    let replacement_proc = Proc { ordinal: target, generation: 1 };
    let name = move |p: Proc| match p {
        p if p == zombie_proc => format!("petkv-{target} (zombie)"),
        p if p == replacement_proc => format!("petkv-{target} (replacement)"),
        p => format!("petkv-{}", p.ordinal),
    };
    let offsets: Vec<(u32, u64)> =
        cluster.ordinals().into_iter().map(|o| (o, cluster.pod(o).map(|p| p.log_len()).unwrap_or(0))).collect();
    // The schedule runs to its end, and the poller is stopped, whatever fails half-way.
    let mut report = None;
    let outcome = schedule(spec, cluster, faults, &poller, target, &mut report).await;
    // A member whose Raft panicked stays up but serves nothing: name the cause (the
    // replacement's log is a new file).
    for (o, offset) in offsets {
        let Ok(pod) = cluster.pod(o) else { continue };
        let panics = panics(&pod.log_since(if o == target { 0 } else { offset }));
        if !panics.is_empty() {
            let who = if o == target { format!("petkv-{o} (replacement)") } else { format!("petkv-{o}") };
            faults.failed_checks.push(format!("{who} panicked:\n{}", panics.join("\n")));
        }
    }
    let leadership = poller.finish(name).await;
    if leadership.conflicts.is_empty() {
        faults.notes.push(format!(
            "one leader per term: {} polls of every process (the zombie included), {} answers, terms {}–{}",
            leadership.polls, leadership.answers, leadership.terms.0, leadership.terms.1
        ));
    } else {
        faults.failed_checks.push(format!(
            "two leaders in one term (every process polled, the zombie at its old address):\n{}\nleaders by term:\n{}\n\
             what each process reported:\n{}",
            leadership.conflicts.join("\n"),
            leadership.leaders.join("\n"),
            leadership.changes.join("\n")
        ));
    }
    if let Some(mut r) = report {
        r.leadership = leadership;
        faults.notes.push(r.ending());
        faults.zombie = Some(r);
    }
    outcome
}

async fn schedule(
    spec: &ExperimentSpec,
    cluster: &mut Cluster,
    faults: &mut Faults,
    poller: &Poller,
    target: u32,
    report: &mut Option<ZombieReport>,
) -> anyhow::Result<()> {
    let zombie_proc = Proc { ordinal: target, generation: 0 };
    let before = cluster.status(target).await.with_context(|| format!("the status of petkv-{target}"))?;
    // Let the poller see every process once before the fault.
    tokio::time::sleep(POLL_EVERY * 4).await;
    let applied_before = poller.applied(zombie_proc);
    let mut zombie = cluster.force_delete(target)?;
    faults.mark(format!(
        "petkv-{target} ({}) force-deleted: its process runs on at {} (the zombie); its volume copied under \
         SIGSTOP ({} files, {} KiB, stopped {} ms)",
        before.role,
        zombie.ip,
        zombie.image.files,
        zombie.image.bytes / 1024,
        zombie.image.stopped_for.as_millis()
    ));
    let replacement_ip = cluster.ip(target);
    poller.add(
        Proc { ordinal: target, generation: 1 },
        cluster.client_for(&[cluster.client_addr(target)], POLL_TIMEOUT)?,
    );
    cluster.start(target)?;
    let started = Instant::now();
    faults.mark(format!(
        "replacement petkv-{target} started at {replacement_ip} on the copy; every hosts file but the zombie's names it"
    ));
    let mut r = ZombieReport {
        pod: format!("petkv-{target}"),
        target: spec.force_delete_target,
        role: before.role.clone(),
        node_id: before.node_id,
        zombie_ip: zombie.ip.clone(),
        replacement_ip,
        image_files: zombie.image.files,
        image_bytes: zombie.image.bytes,
        image_stopped_ms: zombie.image.stopped_for.as_millis() as u64,
        zombie_for_ms: spec.zombie_for.as_millis() as u64,
        exited_by_itself: false,
        exit_status: String::new(),
        exit_code: None,
        exited_after_ms: None,
        replaced_lines: Vec::new(),
        log_tail: Vec::new(),
        replaced_file: false,
        zombie_applied_before: applied_before,
        zombie_applied_last: applied_before,
        replacement_ready_after_ms: None,
        replacement_ready_while_zombie_ran: false,
        leadership: Leadership::default(),
    };
    let outcome = zombie_window(spec, cluster, faults, poller, &mut zombie, started, &mut r).await;
    // The zombie is gone whatever happened (dropping it kills it too).
    if !r.exited_by_itself && !zombie_exited(&mut zombie, started, faults, &mut r) {
        r.zombie_applied_last = r.zombie_applied_last.max(poller.applied(zombie_proc));
        zombie.kill().await?;
        r.exit_status = "killed by the harness".into();
        faults.mark(format!(
            "the zombie was killed {:.1} s after the replacement started (its node is back): it had not exited by itself",
            started.elapsed().as_secs_f64()
        ));
    }
    poller.remove(zombie_proc);
    r.replaced_lines = zombie.logged(REPLACED_LINE);
    let zombie_panics = panics(&zombie.pod.log_since(0));
    if !zombie_panics.is_empty() {
        faults.notes.push(format!("the zombie panicked:\n{}", zombie_panics.join("\n")));
    }
    r.log_tail = zombie.pod.log_tail(8).lines().map(str::to_string).collect();
    r.replaced_file = zombie.volume.join("replaced").exists();
    *report = Some(r);
    outcome?;
    let r = report.as_mut().expect("set above");
    if r.replacement_ready_after_ms.is_none() {
        wait_ready(cluster, target, SETTLE).await?;
        r.replacement_ready_after_ms = Some(started.elapsed().as_millis() as u64);
        faults.mark(format!("replacement petkv-{target} ready (only after the zombie was gone)"));
    }
    cluster.wait_healthy(SETTLE).await?;
    tokio::time::sleep(POLL_AFTER).await;
    Ok(())
}

/// The zombie's time: until `spec.zombie_for` has passed since the replacement started, watch
/// whether the zombie exits by itself and when the replacement is ready.
async fn zombie_window(
    spec: &ExperimentSpec,
    cluster: &mut Cluster,
    faults: &mut Faults,
    poller: &Poller,
    zombie: &mut crate::cluster::Zombie,
    started: Instant,
    r: &mut ZombieReport,
) -> anyhow::Result<()> {
    let zombie_proc = Proc { ordinal: zombie.ordinal, generation: 0 };
    let target = zombie.ordinal;
    while started.elapsed() < spec.zombie_for {
        if !r.exited_by_itself {
            r.zombie_applied_last = r.zombie_applied_last.max(poller.applied(zombie_proc));
            zombie_exited(zombie, started, faults, r);
        }
        if r.replacement_ready_after_ms.is_none() {
            if let Some(status) = cluster.pod_mut(target)?.reap() {
                bail!(
                    "the replacement petkv-{target} exited ({status}) instead of starting; its log ends:\n{}",
                    cluster.pod(target)?.log_tail(20)
                );
            }
            if cluster.status(target).await.is_ok_and(|s| s.ready) {
                let after = started.elapsed();
                r.replacement_ready_after_ms = Some(after.as_millis() as u64);
                r.replacement_ready_while_zombie_ran = !r.exited_by_itself;
                faults.mark(format!(
                    "replacement petkv-{target} ready {:.2} s after its start{}",
                    after.as_secs_f64(),
                    if r.exited_by_itself { "" } else { ", while the zombie still runs" }
                ));
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok(())
}

/// True when the zombie has exited by itself; records when and how.
fn zombie_exited(
    zombie: &mut crate::cluster::Zombie,
    started: Instant,
    faults: &mut Faults,
    r: &mut ZombieReport,
) -> bool {
    let Some(status) = zombie.exited() else { return false };
    let after = started.elapsed();
    r.exited_by_itself = true;
    r.exit_status = status.to_string();
    r.exit_code = status.code();
    r.exited_after_ms = Some(after.as_millis() as u64);
    faults.mark(format!(
        "the zombie exited by itself ({status}) {:.2} s after the replacement started",
        after.as_secs_f64()
    ));
    true
}

/// Each panic in a log: the line that says where, and the message after it.
fn panics(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            out.push(lines[i..lines.len().min(i + 2)].join(" "));
        }
    }
    out
}

/// Waits until a pod is ready; fails at once, with its log, if it exits.
async fn wait_ready(cluster: &mut Cluster, ordinal: u32, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = cluster.pod_mut(ordinal)?.reap() {
            bail!("petkv-{ordinal} exited ({status}); its log ends:\n{}", cluster.pod(ordinal)?.log_tail(20));
        }
        if cluster.status(ordinal).await.is_ok_and(|s| s.ready) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "petkv-{ordinal} was not ready {timeout:?} after the zombie was gone; its log ends:\n{}",
                cluster.pod(ordinal)?.log_tail(20)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZOMBIE: Proc = Proc { ordinal: 1, generation: 0 };
    const REPLACEMENT: Proc = Proc { ordinal: 1, generation: 1 };
    const P0: Proc = Proc { ordinal: 0, generation: 0 };
    const P2: Proc = Proc { ordinal: 2, generation: 0 };

    fn status(role: &str, node_id: u64, term: u64, leader_id: u64) -> NodeStatus {
        NodeStatus { role: role.into(), node_id, term, leader_id, ..Default::default() }
    }

    fn name(p: Proc) -> String {
        match p {
            ZOMBIE => "petkv-1 (zombie)".into(),
            REPLACEMENT => "petkv-1 (replacement)".into(),
            p => format!("petkv-{}", p.ordinal),
        }
    }

    #[test]
    fn one_leader_per_term_passes() {
        let mut seen = Seen::default();
        seen.record(vec![(P0, status("leader", 1, 1, 1)), (ZOMBIE, status("follower", 7, 1, 1))], 0.1);
        seen.record(vec![(REPLACEMENT, status("follower", 7, 1, 0)), (P2, status("follower", 9, 1, 1))], 0.2);
        seen.record(vec![(REPLACEMENT, status("leader", 7, 2, 7)), (P0, status("follower", 1, 2, 7))], 0.3);
        let l = seen.leadership(name);
        assert!(l.conflicts.is_empty(), "{l:?}");
        assert_eq!(l.terms, (1, 2));
        assert_eq!(l.leaders.len(), 2, "{l:?}");
    }

    /// The zombie and its replacement share a node id: both leading one term is two leaders.
    #[test]
    fn two_processes_with_one_id_leading_one_term_fail() {
        let mut seen = Seen::default();
        seen.record(vec![(ZOMBIE, status("leader", 7, 3, 7))], 0.1);
        seen.record(vec![(REPLACEMENT, status("leader", 7, 3, 7))], 0.2);
        let l = seen.leadership(name);
        assert_eq!(l.conflicts.len(), 1, "{l:?}");
        assert!(l.conflicts[0].contains("zombie") && l.conflicts[0].contains("replacement"), "{l:?}");
    }

    #[test]
    fn two_leaders_named_for_one_term_fail() {
        let mut seen = Seen::default();
        seen.record(vec![(P0, status("follower", 1, 4, 7)), (P2, status("follower", 9, 4, 1))], 0.1);
        let l = seen.leadership(name);
        assert_eq!(l.conflicts.len(), 1, "{l:?}");
        assert!(l.conflicts[0].contains("2 different leaders"), "{l:?}");
    }

    #[test]
    fn panics_are_found_with_their_message() {
        let log = "a\nthread 'tokio-rt-worker' (1) panicked at src/x.rs:1:2:\nfollower log reversion\nb\n";
        assert_eq!(panics(log), vec!["thread 'tokio-rt-worker' (1) panicked at src/x.rs:1:2: follower log reversion"]);
        assert!(panics("all fine\n").is_empty());
    }
}
