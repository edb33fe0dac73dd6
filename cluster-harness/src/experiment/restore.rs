//! `petkv-harness experiment restore`: backup, destroy, restore, verify.
//!
//! 1. A 3-pod set runs the recorded workload; `petkv backup` (the CLI, as the CronJob runs it)
//!    takes a backup through the cluster while the writes go on; its call is timed on the
//!    workload's clock and its Raft index read from its output. The workload writes on for a
//!    while (writes the restore will not hold), then stops; its history is checked.
//! 2. Refusals: `petkv restore --if-empty` pointed at petkv-0's volume of the running set, then
//!    (with and without `--if-empty`) of the stopped set, must fail and change nothing: the
//!    running set's digests and cluster id are the same after it, the stopped volume's files are
//!    byte for byte the same, and the set started again serves the same digest.
//! 3. Destroy, as `deploy/README.md` says: `kubectl delete statefulset` (every pod SIGTERM at
//!    once), then every volume deleted (`kubectl delete pvc`). The bootstrap marker stays (it
//!    names the old cluster).
//! 4. Restore, as the README says: `petkv restore --from FILE --data-dir <volume> --hostname
//!    petkv-N --if-empty` on every pod's volume (what the restore overlay's init container
//!    runs: it stages the backup on petkv-0 and does nothing elsewhere), then the set applied
//!    at 3 pods: petkv-0 restores (no bootstrap line), petkv-1 and petkv-2 join with empty
//!    volumes. Checked: a new cluster id on every pod and in the marker, three voters, and the
//!    restored state is the state of the backup's point in the history ([`restore_point`]).
//! 5. The workload runs on the restored cluster, from the restored state (values of its own);
//!    that history must be linearizable and its writes lie above the backup's index.
//!
//! Then the usual checks: every member's digest at one index, stale reads agree, identities,
//! and one cluster (the new id) everywhere; a report with a `restore` section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use petkv_client::pb::v1::{Consistency, ScanRequest};
use serde::Serialize;

use super::checks::{self, not_ready, same_cluster};
use super::faults::{log_offsets, logged_since, members, none_logged, wait_back, Faults, BOOTSTRAP_LINE};
use super::restore_point::{self, BackupPoint, RestorePoint, RestoredState};
use super::{
    longest_gap, show_progress, start_set, unix_seconds, Experiment, ExperimentSpec, Report, Volumes, CONVERGE, SETTLE,
};
use crate::checker::{self, Operation, Outcome, Verdict};
use crate::workload::{self, Recorded, Workload, WorkloadSpec};
use crate::{digest, timeline, Cluster, ClusterSpec};

/// What petkv-0 logs when it turns a staged backup into a new cluster.
const RESTORE_LINE: &str = "restoring a backup as a new one-member cluster";
/// Values the workload writes on the restored cluster start with this: no value written before
/// the restore does, so every value read names its write.
const RESTORED_PREFIX: &str = "r-";
/// Client id of the restored state (as writes) at the head of the restored cluster's history.
const RESTORED_WRITER: u64 = u64::MAX - 2;
/// How long one `petkv backup` or `petkv restore` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What `restore` found besides the usual checks (the report's `restore` section).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreFindings {
    /// The backup: its Raft index, user keys, CRC-32, and how long `petkv backup` took.
    pub backup_index: u64,
    pub backup_keys: u64,
    pub backup_checksum: String,
    pub backup_ms: u64,
    pub old_cluster_id: String,
    /// The restored cluster's id (empty if it never came up).
    pub new_cluster_id: String,
    /// The restored state checked against the history of the old cluster (`None`: the restore
    /// failed before it could be read).
    pub point: Option<RestorePoint>,
    /// `petkv restore --if-empty` on petkv-0's volume of the running set: refused, nothing
    /// changed, the set serves the same data.
    pub refused_running: bool,
    /// `petkv restore` with and without `--if-empty` on the stopped set's volume: refused, the
    /// volume's files unchanged, the set started again serves the same data.
    pub refused_stopped: bool,
}

/// The report table's rows for the `restore` section.
pub(super) fn rows(r: &RestoreFindings) -> Vec<(&'static str, String)> {
    let yes = |ok: bool| if ok { "yes".to_string() } else { "NO".to_string() };
    let point = match &r.point {
        None => "not checked: the restore failed".to_string(),
        Some(p) => format!(
            "{} ({} acknowledged before the backup, all kept: {}; {} during it, {} in it; {} after it, none in it: {})",
            yes(p.holds()),
            p.acknowledged_before,
            yes(p.lost.is_empty()),
            p.acknowledged_during,
            p.during_included,
            p.acknowledged_after,
            yes(!p.failures.iter().any(|f| f.contains("after the backup returned")))
        ),
    };
    vec![
        (
            "backup",
            format!(
                "raft index {}, {} keys, crc32 {}, {} ms under the workload",
                r.backup_index, r.backup_keys, r.backup_checksum, r.backup_ms
            ),
        ),
        ("cluster id before / after the restore", format!("{} / {}", r.old_cluster_id, r.new_cluster_id)),
        ("restored state = the backup's point", point),
        ("restore refused on the running set", yes(r.refused_running)),
        ("restore refused on the stopped set", yes(r.refused_stopped)),
    ]
}

/// What `petkv backup --output json` said.
struct Backup {
    index: u64,
    /// The store revision of the cut.
    revision: u64,
    keys: u64,
    checksum: String,
}

/// Runs `petkv ARGS`, within [`COMMAND_TIMEOUT`].
async fn petkv(binary: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let run = tokio::process::Command::new(binary).args(args).kill_on_drop(true).output();
    tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .with_context(|| format!("petkv {} did not finish within {COMMAND_TIMEOUT:?}", args.join(" ")))?
        .with_context(|| format!("run {}", binary.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// `petkv backup --endpoints … --out FILE --output json`.
async fn take_backup(binary: &Path, endpoints: &[String], file: &Path) -> anyhow::Result<Backup> {
    let (endpoints, out) = (endpoints.join(","), file.display().to_string());
    let args = ["backup", "--endpoints", &endpoints, "--out", &out, "--output", "json"];
    let output = petkv(binary, &args).await?;
    if !output.status.success() {
        bail!("petkv backup failed ({}): {}", output.status, text(&output.stderr));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("petkv backup printed no JSON: {}", text(&output.stdout)))?;
    let b = &json["backup"];
    Ok(Backup {
        index: b["raft_index"].as_u64().context("no raft_index in petkv backup's output")?,
        revision: b["revision"].as_u64().context("no revision in petkv backup's output")?,
        keys: b["keys"].as_u64().unwrap_or(0),
        checksum: b["checksum"].as_str().unwrap_or("").to_string(),
    })
}

/// `petkv restore --from FILE --data-dir <pod's volume> --hostname <pod> [--if-empty]`.
async fn restore_cmd(
    binary: &Path,
    file: &Path,
    cluster: &Cluster,
    ordinal: u32,
    if_empty: bool,
) -> anyhow::Result<std::process::Output> {
    let (from, dir) = (file.display().to_string(), cluster.volume(ordinal).display().to_string());
    let pod = format!("{}-{ordinal}", cluster.spec.set);
    let mut args = vec!["restore", "--from", &from, "--data-dir", &dir, "--hostname", &pod];
    if if_empty {
        args.push("--if-empty");
    }
    petkv(binary, &args).await
}

/// Every file under `dir` with its bytes.
fn files_of(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.insert(path.clone(), std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out).with_context(|| format!("read {}", dir.display()))?;
    Ok(out)
}

/// The digest every member agrees on (its first 16 hex digits) and the index, or why not.
async fn agreed_digest(cluster: &Cluster) -> Result<(String, u64), String> {
    let c = digest::compare(cluster, CONVERGE).await;
    match (c.digests_equal, c.members.first()) {
        (true, Some(m)) => Ok((m.digest.clone(), c.applied_index)),
        _ => Err(format!("members do not agree on a digest: {c:?}")),
    }
}

/// Nothing was staged on petkv-0's volume and no restore was recorded there.
fn nothing_staged(cluster: &Cluster) -> Result<(), String> {
    let volume = cluster.volume(0);
    if petkv::recovery::restore::is_staged(&volume) {
        return Err(format!("a backup was staged on {}", volume.display()));
    }
    if volume.join(petkv::recovery::restore::RESTORED_FROM_FILE).exists() {
        return Err(format!("{} has a {} file", volume.display(), petkv::recovery::restore::RESTORED_FROM_FILE));
    }
    Ok(())
}

/// Fails unless `output` is a refusal; its message goes to the notes.
fn refused(what: &str, output: &std::process::Output, faults: &mut Faults) -> Result<(), String> {
    if output.status.success() {
        return Err(format!("{what} succeeded: {}", text(&output.stdout)));
    }
    faults.notes.push(format!("{what} refused ({}): {}", output.status, text(&output.stderr)));
    Ok(())
}

/// `petkv restore --if-empty` on petkv-0's volume while the set runs: refused, the volume's
/// identity unchanged, nothing staged, and the set serves the same data in the same cluster.
async fn refuse_running(
    binary: &Path,
    file: &Path,
    cluster: &Cluster,
    cluster_id: &str,
    faults: &mut Faults,
) -> anyhow::Result<Result<(), String>> {
    let (digest, index) = match agreed_digest(cluster).await {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("before the refusal: {e}"))),
    };
    let identity = cluster.volume(0).join(petkv::pod::identity::IDENTITY_FILE);
    let identity_before = std::fs::read(&identity).with_context(|| format!("read {}", identity.display()))?;
    let output = restore_cmd(binary, file, cluster, 0, true).await?;
    faults.mark("petkv restore --if-empty on petkv-0's volume of the running set");
    let outcome = async {
        refused("petkv restore --if-empty on the running set's petkv-0", &output, faults)?;
        nothing_staged(cluster)?;
        if std::fs::read(&identity).ok() != Some(identity_before) {
            return Err(format!("{} changed", identity.display()));
        }
        let (after, at) = agreed_digest(cluster).await.map_err(|e| format!("after the refusal: {e}"))?;
        if (after.as_str(), at) != (digest.as_str(), index) {
            return Err(format!("the set served digest {digest} at index {index} before, {after} at {at} after"));
        }
        let others = same_cluster(cluster, cluster_id).await.map_err(|e| format!("{e:#}"))?;
        if !others.is_empty() {
            return Err(format!("after the refusal: {others:?}"));
        }
        faults.notes.push(format!(
            "the running set still serves the same data after the refused restore: digest {digest} at index {index}, \
             cluster {cluster_id}"
        ));
        Ok(())
    }
    .await;
    Ok(outcome)
}

/// The set stopped (`kubectl scale --replicas=0`, volumes kept): `petkv restore` with and
/// without `--if-empty` on petkv-0's volume refused and every file of it unchanged; the set
/// started again serves `digest`.
async fn refuse_stopped(
    binary: &Path,
    file: &Path,
    cluster: &mut Cluster,
    cluster_id: &str,
    faults: &mut Faults,
) -> anyhow::Result<Result<(), String>> {
    let (digest, _) = match agreed_digest(cluster).await {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("before the set was stopped: {e}"))),
    };
    cluster.scale(0).await?;
    faults.mark("set stopped (scale 0, volumes kept)");
    let files = files_of(&cluster.volume(0))?;
    let mut outcome = Ok(());
    for if_empty in [true, false] {
        let output = restore_cmd(binary, file, cluster, 0, if_empty).await?;
        let what = format!("petkv restore{} on the stopped set's petkv-0", if if_empty { " --if-empty" } else { "" });
        outcome = outcome.and_then(|()| refused(&what, &output, faults));
    }
    faults.mark("petkv restore (with and without --if-empty) on petkv-0's volume of the stopped set");
    if files_of(&cluster.volume(0))? != files {
        outcome = outcome.and(Err("the stopped set's petkv-0 volume changed".to_string()));
    }
    outcome = outcome.and_then(|()| nothing_staged(cluster));
    cluster.scale(3).await?;
    for o in cluster.ordinals() {
        wait_back(cluster, o).await?;
    }
    cluster.wait_healthy(SETTLE).await?;
    faults.mark("set started again (scale 3)");
    if outcome.is_ok() {
        outcome = match agreed_digest(cluster).await {
            Ok((after, _)) if after == digest => {
                faults.notes.push(format!(
                    "the stopped set's volume was left byte for byte as it was; started again, it serves digest {after}"
                ));
                Ok(())
            }
            Ok((after, _)) => Err(format!("the set served digest {digest} before it was stopped, {after} after")),
            Err(e) => Err(format!("after the set started again: {e}")),
        };
    }
    if outcome.is_ok() {
        let others = same_cluster(cluster, cluster_id).await?;
        if !others.is_empty() {
            outcome = Err(format!("after the set started again: {others:?}"));
        }
    }
    Ok(outcome)
}

/// Every key, value and mod revision of the cluster (a linearizable scan).
async fn read_state(cluster: &Cluster) -> anyhow::Result<RestoredState> {
    let client = cluster.client()?;
    let mut state = RestoredState::new();
    let mut token = Vec::new();
    loop {
        let page = client
            .scan(ScanRequest {
                limit: 1000,
                page_token: token.clone().into(),
                consistency: Consistency::Linearizable as i32,
                ..Default::default()
            })
            .await?;
        for kv in &page.kvs {
            state.insert(kv.key.to_vec(), (kv.value.to_vec(), kv.mod_revision));
        }
        if page.next_page_token.is_empty() {
            return Ok(state);
        }
        token = page.next_page_token.to_vec();
    }
}

/// The set after the restore: its cluster id, and its state before any new write (with when
/// it was read, on the workload's clock).
struct Restored {
    cluster_id: String,
    state: RestoredState,
    read_ns: u64,
}

/// Steps 3 and 4 (destroy and restore) and their checks.
async fn destroy_and_restore(
    binary: &Path,
    file: &Path,
    backup: &Backup,
    cluster: &mut Cluster,
    old_id: &str,
    faults: &mut Faults,
) -> anyhow::Result<Restored> {
    let marker_path = cluster.bootstrap_marker();
    let marker = || std::fs::read_to_string(&marker_path).ok().map(|s| s.trim().to_string());
    let exits = cluster.delete_all_pods().await?;
    faults.mark("kubectl delete statefulset: every pod SIGTERM at once");
    for (o, status) in exits {
        if !status.is_some_and(|s| s.success()) {
            faults.notes.push(format!("petkv-{o} did not exit cleanly at SIGTERM: {status:?}"));
        }
    }
    for o in cluster.ordinals() {
        cluster.wipe_volume(o)?;
    }
    faults.mark("kubectl delete pvc: every volume deleted (the bootstrap marker stays)");
    match marker() {
        Some(id) if id == old_id => faults.notes.push(format!("with the volumes deleted the marker still names {id}")),
        other => faults.failed_checks.push(format!(
            "the bootstrap marker {} should still name the old cluster {old_id} after the volumes were deleted: {other:?}",
            marker_path.display()
        )),
    }

    // The restore overlay's init container, on every pod: ordinal 0 stages, the others do nothing.
    for o in cluster.ordinals() {
        let output = restore_cmd(binary, file, cluster, o, true).await?;
        if !output.status.success() {
            bail!("petkv restore --if-empty on petkv-{o}'s empty volume failed: {}", text(&output.stderr));
        }
        let staged = petkv::recovery::restore::is_staged(&cluster.volume(o));
        if staged != (o == 0) {
            bail!("petkv restore on petkv-{o}: staged {staged}; it says: {}", text(&output.stdout));
        }
        if o == 0 {
            faults.notes.push(format!("petkv restore on petkv-0: {}", text(&output.stdout).replace('\n', " | ")));
        }
    }
    faults.mark(format!("petkv restore --if-empty on every pod's volume: staged on petkv-0 (index {})", backup.index));
    let offsets = log_offsets(cluster);
    cluster.start_all()?;
    faults.mark("set applied at 3 pods: petkv-0 restores, petkv-1 and petkv-2 join with empty volumes");
    for o in cluster.ordinals() {
        wait_back(cluster, o).await?;
    }
    cluster.wait_healthy(SETTLE).await?;
    let state = read_state(cluster).await.context("reading the restored state")?;
    let read_ns = faults.started.elapsed().as_nanos() as u64;
    let cluster_id = cluster.status(0).await.context("the status of petkv-0")?.cluster_id;
    faults.mark(format!("restored cluster {cluster_id} healthy, {} keys", state.len()));

    // A new cluster, named by the marker; petkv-0 restored, nobody bootstrapped.
    if cluster_id == old_id || cluster_id.is_empty() {
        faults.failed_checks.push(format!("the restored set reports cluster {cluster_id:?}, the old one was {old_id}"));
    }
    match marker() {
        Some(id) if id == cluster_id => faults.notes.push(format!("the bootstrap marker names the new cluster {id}")),
        other => faults.failed_checks.push(format!(
            "the bootstrap marker {} should name the restored cluster {cluster_id}: {other:?}",
            marker_path.display()
        )),
    }
    none_logged(faults, &format!("{BOOTSTRAP_LINE:?}"), logged_since(cluster, &offsets, BOOTSTRAP_LINE));
    let restoring = logged_since(cluster, &offsets, RESTORE_LINE);
    if restoring.len() != 1 || !restoring[0].starts_with("petkv-0:") {
        faults.failed_checks.push(format!("exactly one {RESTORE_LINE:?} line, by petkv-0, expected: {restoring:?}"));
    }
    let m = members(cluster).await?;
    let ordinals: Vec<u32> = m.iter().map(|(id, _)| petkv::raft::ordinal_of(*id)).collect();
    let petkv0 = petkv::raft::node_id(0, 1);
    if ordinals != [0, 1, 2] || !m.iter().all(|(_, voter)| *voter) || m[0].0 != petkv0 {
        faults.failed_checks.push(format!(
            "the restored cluster should have three voters, petkv-0 as {}: {m:?} (node id, voter)",
            petkv::raft::node_label(&cluster.spec.set, petkv0)
        ));
    } else {
        let labels: Vec<String> = m.iter().map(|(id, _)| petkv::raft::node_label(&cluster.spec.set, *id)).collect();
        faults.notes.push(format!("restored cluster {cluster_id}: voters {}", labels.join(", ")));
    }
    if state.len() as u64 != backup.keys {
        faults.failed_checks.push(format!(
            "the backup holds {} keys, the restored cluster {}",
            backup.keys,
            state.len()
        ));
    }
    Ok(Restored { cluster_id, state, read_ns })
}

/// [`show_progress`] of the second workload, with times on the first one's clock (the marks').
async fn progress_since(workload: Arc<Workload>, since: std::time::Instant) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ops, unknown) = workload.progress();
        println!(
            "  {:>6.2}s  {ops} operations recorded on the restored cluster ({}/s, {unknown} with unknown outcome)",
            since.elapsed().as_secs_f64(),
            ops - last
        );
        last = ops;
    }
}

/// Moves a history recorded on a clock that started `offset_ns` later onto the first clock.
fn shift(recorded: &mut Recorded, offset_ns: u64) {
    for op in &mut recorded.history {
        op.invoked_ns += offset_ns;
        if let Outcome::Completed { at_ns, .. } = &mut op.outcome {
            *at_ns += offset_ns;
        }
    }
    for t in recorded.successes_ns.iter_mut().chain(recorded.write_successes_ns.iter_mut()) {
        *t += offset_ns;
    }
}

/// The verdict of one history, with its violations prefixed by `phase`.
fn verdict(
    history: &[Operation],
    budget: Duration,
    phase: &str,
    violations: &mut Vec<String>,
) -> anyhow::Result<Verdict> {
    let check = checker::check(history, budget).context("the recorded history is malformed")?;
    for k in check.keys.iter().filter(|k| k.verdict != Verdict::Linearizable) {
        violations.push(format!(
            "{phase}: {}: {:?} {}",
            String::from_utf8_lossy(&k.key),
            k.verdict,
            k.explanation.clone().unwrap_or_default()
        ));
    }
    Ok(check.verdict)
}

/// Runs the `restore` experiment on a fresh set.
pub(super) async fn run(spec: &ExperimentSpec) -> anyhow::Result<Report> {
    let experiment = Experiment::Restore;
    let lazyfs = spec.needs_lazyfs(experiment);
    if lazyfs {
        crate::lazyfs::probe()?;
    }
    let mut cluster = Cluster::new(ClusterSpec {
        mode: spec.mode,
        lazyfs,
        extra_args: spec.extra_args.clone(),
        ..Default::default()
    })?;
    let (old_id, endpoints) = start_set(&mut cluster, lazyfs).await?;
    let binary = crate::binary::petkv_binary()?;
    let backups = cluster.state_dir().join("backups");
    std::fs::create_dir_all(&backups).with_context(|| format!("create {}", backups.display()))?;
    let file = backups.join("petkv.snap");
    println!(
        "experiment Restore: 3 pods, {} clients on {} keys; backup, destroy, restore, verify",
        spec.workload.clients, spec.workload.keys
    );
    let workload_spec = WorkloadSpec {
        tls: cluster.client_tls().cloned(),
        token: cluster.auth().map(|a| a.write.clone()),
        ..spec.workload.clone()
    };
    let keys: Vec<Vec<u8>> = (0..workload_spec.keys).map(|k| format!("key-{k}").into_bytes()).collect();

    // 1. The workload, and a backup while it writes.
    let workload = Arc::new(Workload::start(&endpoints, &workload_spec).await?);
    let mut faults = Faults::for_workload(&workload);
    let progress = tokio::spawn(show_progress(workload.clone()));
    tokio::time::sleep(spec.warmup).await;
    faults.mark("petkv backup started (the workload writes on)");
    let start_ns = workload.now_ns();
    let backup = take_backup(&binary, &endpoints, &file).await;
    let end_ns = workload.now_ns();
    if let Ok(b) = &backup {
        faults.mark(format!("backup returned: index {}, {} keys, crc32 {}", b.index, b.keys, b.checksum));
        tokio::time::sleep(spec.cooldown).await;
    }
    progress.abort();
    let _ = progress.await;
    let workload =
        Arc::try_unwrap(workload).map_err(|_| anyhow::anyhow!("the progress display still holds the workload"))?;
    let started = workload.started;
    let mut before = workload.stop().await;
    let backup = backup?;
    let point = BackupPoint { start_ns, end_ns, cut: backup.revision };
    workload::final_reads(&endpoints, &workload_spec, &mut before, started).await;
    let before_end_ns = started.elapsed().as_nanos() as u64;
    faults.mark("workload stopped (writes after the backup may be missing from the restore)");

    // 2. Refusals, on the running set and on the stopped set.
    let running = refuse_running(&binary, &file, &cluster, &old_id, &mut faults).await?;
    let stopped = refuse_stopped(&binary, &file, &mut cluster, &old_id, &mut faults).await?;
    for (what, outcome) in [("running", &running), ("stopped", &stopped)] {
        if let Err(e) = outcome {
            faults.failed_checks.push(format!("a restore pointed at the {what} set: {e}"));
        }
    }

    // 3 and 4. Destroy and restore; a failure here is the run's FAIL, and it checks what it can.
    let mut fault_errors = Vec::new();
    let restored = match destroy_and_restore(&binary, &file, &backup, &mut cluster, &old_id, &mut faults).await {
        Ok(r) => Some(r),
        Err(e) => {
            faults.mark("the restore failed");
            println!("  restore failed: {e:#}");
            fault_errors.push(format!("{e:#}"));
            fault_errors.extend(not_ready(&mut cluster).await);
            None
        }
    };

    // 5. The workload on the restored cluster, from the restored state.
    let mut after = Recorded::default();
    let mut after_window = (0, 0);
    let mut seeds = Vec::new();
    if let Some(r) = &restored {
        let spec_after = WorkloadSpec { value_prefix: RESTORED_PREFIX.into(), ..workload_spec.clone() };
        let workload = Arc::new(Workload::start(&endpoints, &spec_after).await?);
        let offset_ns = workload.started.duration_since(faults.started).as_nanos() as u64;
        faults.mark("workload resumed on the restored cluster");
        let progress = tokio::spawn(progress_since(workload.clone(), faults.started));
        tokio::time::sleep(spec.warmup + spec.cooldown).await;
        progress.abort();
        let _ = progress.await;
        let workload =
            Arc::try_unwrap(workload).map_err(|_| anyhow::anyhow!("the progress display still holds the workload"))?;
        let started = workload.started;
        after = workload.stop().await;
        workload::final_reads(&endpoints, &spec_after, &mut after, started).await;
        let duration = started.elapsed().as_nanos() as u64;
        shift(&mut after, offset_ns);
        after_window = (offset_ns, offset_ns + duration);
        faults.mark("workload stopped");
        seeds = restore_point::restored_as_writes(&keys, &r.state, r.read_ns, RESTORED_WRITER);
        let low: Vec<String> = after
            .history
            .iter()
            .filter(|op| !matches!(op.input, checker::Input::Get))
            .filter_map(|op| op.served.filter(|s| s.raft_index <= backup.index))
            .map(|s| format!("index {} (term {})", s.raft_index, s.term))
            .collect();
        if !low.is_empty() {
            faults.failed_checks.push(format!(
                "writes on the restored cluster must lie above the backup's index {}: {low:?}",
                backup.index
            ));
        }
    }

    // The verdicts: the old cluster's history, the restored state as a read during the backup,
    // and the restored cluster's history from the restored state.
    let mut violations = Vec::new();
    let mut verdicts = vec![verdict(&before.history, spec.check_budget, "before the restore", &mut violations)?];
    let mut findings = RestoreFindings {
        backup_index: backup.index,
        backup_keys: backup.keys,
        backup_checksum: backup.checksum.clone(),
        backup_ms: (end_ns - start_ns) / 1_000_000,
        old_cluster_id: old_id.clone(),
        refused_running: running.is_ok(),
        refused_stopped: stopped.is_ok(),
        ..Default::default()
    };
    let mut lost = checker::lost_writes(&before.history, workload::FINAL_READER);
    let mut lost_lines = lost.lost.clone();
    let mut acknowledged = lost.acknowledged;
    for u in &lost.unexplained {
        faults.notes.push(format!("final read before the restore: {u}"));
    }
    if let Some(r) = &restored {
        findings.new_cluster_id = r.cluster_id.clone();
        let p = restore_point::check(&before.history, point, &r.state);
        faults.notes.push(format!(
            "restored state vs the history: {} writes acknowledged before the backup began (must be in it), {} during \
             it ({} in it), {} invoked after it returned (must not be), {} of unknown outcome; {} keys restored",
            p.acknowledged_before,
            p.acknowledged_during,
            p.during_included,
            p.acknowledged_after,
            p.unknown,
            p.restored_keys
        ));
        lost_lines.extend(p.lost.iter().map(|l| format!("by the restore: {l}")));
        for f in &p.failures {
            faults.failed_checks.push(format!("the restored state is not the backup's point: {f}"));
        }
        findings.point = Some(p);
        let mut as_read = before.history.clone();
        as_read.extend(restore_point::restored_as_reads(&keys, point, &r.state));
        verdicts.push(verdict(
            &as_read,
            spec.check_budget,
            "the restored state as a read during the backup",
            &mut violations,
        )?);
        let mut from_restored = seeds.clone();
        from_restored.extend(after.history.iter().cloned());
        verdicts.push(verdict(&from_restored, spec.check_budget, "on the restored cluster", &mut violations)?);
        lost = checker::lost_writes(&from_restored, workload::FINAL_READER);
        lost_lines.extend(lost.lost.iter().map(|l| format!("on the restored cluster: {l}")));
        acknowledged += lost.acknowledged.saturating_sub(seeds.len());
        for u in &lost.unexplained {
            faults.notes.push(format!("final read on the restored cluster: {u}"));
        }
    }
    let linearizability = if verdicts.contains(&Verdict::NotLinearizable) {
        "NOT linearizable"
    } else if verdicts.contains(&Verdict::Inconclusive) {
        "inconclusive (check budget exhausted)"
    } else {
        "linearizable"
    }
    .to_string();

    // Convergence, identity and one cluster, on the restored set.
    let cluster_id = match &restored {
        Some(r) => r.cluster_id.clone(),
        // The restore failed half-way: whatever petkv-0 reports now.
        None => cluster.status(0).await.map(|s| s.cluster_id).unwrap_or_default(),
    };
    if findings.new_cluster_id.is_empty() && cluster_id != old_id {
        findings.new_cluster_id = cluster_id.clone();
    }
    let checks::MemberChecks { convergence, reads_agree, identity_kept, one_cluster } =
        checks::members(&cluster, &spec.workload, &cluster_id, &mut faults.notes).await;
    let one_cluster = one_cluster && !cluster_id.is_empty() && cluster_id != old_id;
    cluster.down().await?;

    // The longest time without a successful write while a workload ran: from the backup's start
    // to the end of the first workload, and on the restored cluster (between them the set was
    // down on purpose).
    let unavailability_ns =
        longest_gap(&before.write_successes_ns, start_ns, before_end_ns).max(if restored.is_some() {
            longest_gap(&after.write_successes_ns, after_window.0, after_window.1)
        } else {
            0
        });
    let duration_ns = faults.started.elapsed().as_nanos() as u64;
    let mut successes = before.successes_ns.clone();
    successes.extend(&after.successes_ns);
    std::fs::create_dir_all(&spec.out_dir).with_context(|| format!("create {}", spec.out_dir.display()))?;
    let stem = format!("restore-{}-{:04x}", unix_seconds(), rand::random::<u16>());
    let svg_path = spec.out_dir.join(format!("{stem}.svg"));
    let json_path = spec.out_dir.join(format!("{stem}.json"));
    let title = "petkv experiment Restore: successful operations per 100 ms";
    std::fs::write(&svg_path, timeline::svg(title, &successes, duration_ns, &faults.marks))?;
    let report = Report {
        experiment,
        target: None,
        volumes: if lazyfs { Volumes::Lazyfs } else { Volumes::Plain },
        power_loss: spec.power_loss,
        duration_ms: duration_ns / 1_000_000,
        operations: before.history.len() + after.history.len(),
        successful: successes.len(),
        unknown_outcome: before.unknown_outcomes + after.unknown_outcomes,
        failed: before.failed + after.failed,
        linearizability,
        violations,
        acknowledged_writes: acknowledged,
        lost_writes: lost_lines,
        unavailability_ms: unavailability_ns / 1_000_000,
        members_converged: convergence.digests_equal && reads_agree,
        convergence,
        reads_agree,
        identity_kept,
        all_started: fault_errors.is_empty(),
        fault_errors,
        cluster_id,
        one_cluster,
        failed_checks: faults.failed_checks,
        leader_load: None,
        delete_marker: false,
        faults: faults.marks.iter().map(|(t, l)| (*t as f64 / 1e9, l.clone())).collect(),
        notes: faults.notes,
        report_json: json_path.display().to_string(),
        timeline_svg: svg_path.display().to_string(),
        restore: Some(findings),
        zombie: None,
        watch: None,
        lease: None,
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}
