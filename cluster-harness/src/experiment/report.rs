//! What an experiment found: the [`Report`] saved as JSON, its verdict ([`Report::passed`]) and
//! one-line summary, and [`print()`], the table (a row per check, then a row per member).

use serde::Serialize;

use super::{Experiment, PowerLossTarget, Volumes};
use crate::digest::Convergence;

/// What an experiment found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub experiment: Experiment,
    /// `power-loss`: whose power was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<PowerLossTarget>,
    pub volumes: Volumes,
    /// Every kill -9 was a power loss.
    pub power_loss: bool,
    pub duration_ms: u64,
    pub operations: usize,
    pub successful: usize,
    pub unknown_outcome: usize,
    pub failed: usize,
    pub linearizability: String,
    pub violations: Vec<String>,
    /// Puts and deletes acknowledged to the workload.
    pub acknowledged_writes: usize,
    /// Acknowledged writes the final reads do not show
    /// ([`checker::lost_writes`](crate::checker::lost_writes)).
    pub lost_writes: Vec<String>,
    /// Longest time without a successful write, from the first fault on.
    pub unavailability_ms: u64,
    /// Every member's digest at one applied index (the per-member rows).
    pub convergence: Convergence,
    /// Stale reads of every key on every member agree with a linearizable read.
    pub reads_agree: bool,
    /// `convergence.digests_equal && reads_agree`.
    pub members_converged: bool,
    pub identity_kept: bool,
    /// Every pod that was stopped started again (and the set became healthy).
    pub all_started: bool,
    /// What went wrong in the fault schedule, with the log tails of pods that did not start.
    pub fault_errors: Vec<String>,
    /// The cluster id every pod reported before the fault.
    pub cluster_id: String,
    /// Every pod reports that cluster id afterwards: no second cluster was started.
    pub one_cluster: bool,
    /// The experiment's own checks that failed (a bootstrap line in a log, a member that left,
    /// a lost marker, a leader that worked too hard…), each with its evidence.
    pub failed_checks: Vec<String>,
    /// `crash-loop`: what the leader spent while the follower was down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_load: Option<LeaderLoad>,
    /// `dns-blip`: the bootstrap marker file was deleted too.
    pub delete_marker: bool,
    pub faults: Vec<(f64, String)>,
    pub notes: Vec<String>,
    pub report_json: String,
    pub timeline_svg: String,
    /// `restore`: the backup, the cluster ids, the restored state against the history, the
    /// refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<super::RestoreFindings>,
    /// `force-delete`: the zombie and its replacement, and every process's leadership by term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zombie: Option<super::ZombieReport>,
    /// With watchers: their streams checked against the history and each other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::checker::watch::WatchFindings>,
    /// `lease`: the lease holder's keep-alives, reads and the key's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<super::lease_holder::LeaseFindings>,
}

/// The leader's CPU and log rate while a follower is down (`crash-loop`). The budget applies to
/// the quiet part of the window, with the workload paused, so it measures what the down
/// follower costs the leader; the numbers with the workload running are for information.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderLoad {
    pub leader: u32,
    /// How many times the follower was started and failed at once.
    pub failed_starts: usize,
    /// The whole time the follower was down, and the part of it with the workload paused.
    pub down_s: f64,
    pub quiet_s: f64,
    /// Share of one core used by the leader's processes, and its log's new lines per second,
    /// with the workload paused.
    pub cpu_percent: f64,
    pub log_lines_per_s: f64,
    /// The same with the workload running (the first part of the window).
    pub busy_cpu_percent: f64,
    pub busy_log_lines_per_s: f64,
    pub max_cpu_percent: f64,
    pub max_log_lines_per_s: f64,
}

impl LeaderLoad {
    pub fn within_budget(&self) -> bool {
        self.cpu_percent <= self.max_cpu_percent && self.log_lines_per_s <= self.max_log_lines_per_s
    }
}

impl Report {
    /// True when nothing was lost, nothing was stale, every member holds the same state,
    /// every pod started again, and identities held.
    pub fn passed(&self) -> bool {
        self.linearizability == "linearizable"
            && self.lost_writes.is_empty()
            && self.members_converged
            && self.identity_kept
            && self.all_started
            && self.one_cluster
            && self.failed_checks.is_empty()
            && self.leader_load.as_ref().is_none_or(LeaderLoad::within_budget)
            && self.watch.as_ref().is_none_or(|w| w.holds())
            && self.lease.as_ref().is_none_or(|l| l.holds())
    }

    /// One line: verdict, acknowledged and lost writes, digests.
    pub fn summary_line(&self) -> String {
        let c = &self.convergence;
        let digests = if c.digests_equal {
            let d = c.members.first().map(|m| m.digest.as_str()).unwrap_or("");
            format!("{} digests equal ({d}) at index {}", c.members.len(), c.applied_index)
        } else {
            format!("digests DIFFER or missing (members {:?})", c.divergent)
        };
        format!(
            "{}: {}, {} acknowledged writes, {} lost, {}{}{}{}{}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.linearizability,
            self.acknowledged_writes,
            self.lost_writes.len(),
            digests,
            if self.reads_agree { "" } else { ", reads DISAGREE" },
            if self.all_started { "" } else { ", a member did NOT start again" },
            if self.one_cluster { "" } else { ", a SECOND CLUSTER (cluster ids differ)" },
            if self.failed_checks.is_empty() {
                String::new()
            } else {
                format!(", {} check(s) FAILED", self.failed_checks.len())
            },
        ) + &self.zombie.as_ref().map(|z| format!("; {}", z.ending())).unwrap_or_default()
            + &self
                .watch
                .as_ref()
                .map(|w| {
                    format!(
                        "; {} watchers, {} events each, {} failure(s)",
                        w.watchers,
                        w.events.first().copied().unwrap_or(0),
                        w.failures.len()
                    )
                })
                .unwrap_or_default()
            + &self
                .lease
                .as_ref()
                .map(|l| {
                    format!(
                        "; lease held through {} keep-alives, gone {} ms after the last, {} failure(s)",
                        l.keep_alives_acknowledged,
                        l.gone_after_ms.map_or("never".to_string(), |ms| ms.to_string()),
                        l.failures.len()
                    )
                })
                .unwrap_or_default()
    }
}

/// Prints a report as a table, with a row per member.
pub fn print(report: &Report) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let name = match report.target {
        Some(target) => format!("{:?} --target {target:?}", report.experiment),
        None if report.delete_marker => format!("{:?} --delete-marker", report.experiment),
        None if report.zombie.is_some() => {
            format!(
                "{:?} --target {:?}",
                report.experiment,
                report.zombie.as_ref().map(|z| z.target).unwrap_or_default()
            )
        }
        None => format!("{:?}", report.experiment),
    };
    t.set_header(vec!["experiment", &name]);
    let c = &report.convergence;
    let mut rows: Vec<(&str, String)> = vec![
        ("volumes", format!("{:?}{}", report.volumes, if report.power_loss { ", kill -9 = power loss" } else { "" })),
        ("operations recorded", report.operations.to_string()),
        ("successful", report.successful.to_string()),
        ("outcome unknown", report.unknown_outcome.to_string()),
        ("failed (not applied)", report.failed.to_string()),
        ("acknowledged writes", report.acknowledged_writes.to_string()),
        ("acknowledged writes lost", report.lost_writes.len().to_string()),
        ("linearizability", report.linearizability.clone()),
        ("longest time without a successful write", format!("{} ms", report.unavailability_ms)),
        ("digests equal", format!("{} (at applied index {})", c.digests_equal, c.applied_index)),
        ("reads agree", report.reads_agree.to_string()),
        ("members converged", report.members_converged.to_string()),
        ("every member started again", report.all_started.to_string()),
        ("identity kept", report.identity_kept.to_string()),
        ("one cluster (same cluster id on every pod)", format!("{} ({})", report.one_cluster, report.cluster_id)),
        (
            "experiment checks",
            if report.failed_checks.is_empty() {
                "pass".into()
            } else {
                format!("{} FAILED", report.failed_checks.len())
            },
        ),
    ];
    if let Some(l) = &report.leader_load {
        rows.push((
            "follower down / workload paused",
            format!("{:.1} s / {:.1} s, {} failed starts", l.down_s, l.quiet_s, l.failed_starts),
        ));
        rows.push((
            "leader CPU, workload paused",
            format!("{:.1}% of a core (max {:.0}%)", l.cpu_percent, l.max_cpu_percent),
        ));
        rows.push((
            "leader log, workload paused",
            format!("{:.2} lines/s (max {:.0})", l.log_lines_per_s, l.max_log_lines_per_s),
        ));
        rows.push((
            "leader CPU / log, workload running",
            format!("{:.1}% of a core, {:.2} lines/s", l.busy_cpu_percent, l.busy_log_lines_per_s),
        ));
    }
    if let Some(r) = &report.restore {
        rows.extend(super::restore::rows(r));
    }
    if let Some(z) = &report.zombie {
        rows.extend(super::force_delete::rows(z));
    }
    rows.push(("timeline", report.timeline_svg.clone()));
    rows.push(("report", report.report_json.clone()));
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    println!("{t}");
    let mut m = comfy_table::Table::new();
    m.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    m.set_header(vec!["pod", "node id", "applied index", "keys", "digest"]);
    for row in &c.members {
        let digest = match &row.error {
            Some(e) => format!("— {e}"),
            None if c.divergent.contains(&row.ordinal) => format!("{} DIFFERS", row.digest),
            None => row.digest.clone(),
        };
        m.add_row(vec![
            format!("petkv-{}", row.ordinal),
            row.node.clone(),
            row.applied_index.to_string(),
            row.key_count.to_string(),
            digest,
        ]);
    }
    println!("{m}");
    for v in &report.violations {
        println!("violation: {v}");
    }
    for l in &report.lost_writes {
        println!("lost: {l}");
    }
    for e in &report.fault_errors {
        println!("fault schedule: {e}");
    }
    for c in &report.failed_checks {
        println!("check FAILED: {c}");
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    println!("verdict: {}", if report.passed() { "PASS" } else { "FAIL" });
}
