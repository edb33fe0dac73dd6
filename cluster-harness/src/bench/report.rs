//! Results of a bench: one [`RunResult`] per system and round, medians per system, a side by
//! side table with ratios (petkv / etcd), and JSON. The scenarios ([`super::scenario`]) report
//! named figures per run in a [`ScenarioReport`], drawn by the same table code.

use comfy_table::{presets::UTF8_FULL, Cell, CellAlignment, Table};
use serde::Serialize;

use super::batching::Means;
use super::workload::Outcome;
use super::{Mode, System, Target, Via};
use crate::measure::median;

/// One measured run of one system.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub system: System,
    pub mode: Mode,
    pub clients: usize,
    pub connections: usize,
    pub round: usize,
    pub ops: u64,
    pub errors: u64,
    pub conflicts: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU seconds (user + system) of all the system's server processes during the window.
    pub cpu_seconds: f64,
    /// Peak resident memory (VmHWM) of each node, in MiB.
    pub peak_rss_mib: Vec<f64>,
    /// Raft term increments over the run (warm-up included): leader changes, or failed
    /// elections, that happened while the workload ran without faults.
    pub leader_changes: u64,
    pub sample_errors: Vec<String>,
    /// What petkv coalesced over the run (the warm-up included).
    pub batching: Option<Means>,
}

impl RunResult {
    /// Builds the result from the driver's outcome and the process figures.
    pub fn new(
        system: System,
        (mode, clients, connections, round): (Mode, usize, usize, usize),
        o: &Outcome,
        cpu_seconds: f64,
        peak_rss: &[u64],
        leader_changes: u64,
    ) -> Self {
        let ms = |q: f64| o.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let seconds = o.elapsed.as_secs_f64();
        Self {
            system,
            mode,
            clients,
            connections,
            round,
            ops: o.ops,
            errors: o.errors,
            conflicts: o.conflicts,
            seconds,
            ops_per_sec: if seconds > 0.0 { o.ops as f64 / seconds } else { 0.0 },
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            cpu_seconds,
            peak_rss_mib: peak_rss.iter().map(|b| *b as f64 / (1024.0 * 1024.0)).collect(),
            leader_changes,
            sample_errors: o.sample_errors.clone(),
            batching: None,
        }
    }
}

/// Medians of one system's rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub system: System,
    pub rounds: usize,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    pub conflicts: u64,
    pub cpu_seconds: f64,
    /// CPU milliseconds (cluster) per successful operation.
    pub cpu_ms_per_op: f64,
    /// Largest peak RSS of each node over the rounds, in MiB.
    pub peak_rss_mib: Vec<f64>,
    /// Term increments over all rounds.
    pub leader_changes: u64,
    /// Medians of the rounds' batch means (petkv only).
    pub batching: Option<Means>,
}

/// Medians over the runs of `system` (None if it has none).
pub fn summarize(system: System, runs: &[RunResult]) -> Option<Summary> {
    let mine: Vec<&RunResult> = runs.iter().filter(|r| r.system == system).collect();
    if mine.is_empty() {
        return None;
    }
    let med = |f: fn(&RunResult) -> f64| median(&mine.iter().map(|r| f(r)).collect::<Vec<_>>());
    let nodes = mine.iter().map(|r| r.peak_rss_mib.len()).max().unwrap_or(0);
    let ops_per_sec = med(|r| r.ops_per_sec);
    let cpu_seconds = med(|r| r.cpu_seconds);
    let seconds = med(|r| r.seconds);
    Some(Summary {
        system,
        rounds: mine.len(),
        ops_per_sec,
        p50_ms: med(|r| r.p50_ms),
        p99_ms: med(|r| r.p99_ms),
        p999_ms: med(|r| r.p999_ms),
        errors: mine.iter().map(|r| r.errors).sum(),
        conflicts: mine.iter().map(|r| r.conflicts).sum(),
        leader_changes: mine.iter().map(|r| r.leader_changes).sum(),
        cpu_seconds,
        cpu_ms_per_op: if ops_per_sec > 0.0 { cpu_seconds * 1000.0 / (ops_per_sec * seconds) } else { 0.0 },
        batching: median_batching(&mine),
        peak_rss_mib: (0..nodes)
            .map(|i| mine.iter().filter_map(|r| r.peak_rss_mib.get(i)).copied().fold(0.0, f64::max))
            .collect(),
    })
}

/// Medians of the runs' batch means, stage by stage (None: no run reported any).
fn median_batching(runs: &[&RunResult]) -> Option<Means> {
    let means: Vec<Means> = runs.iter().filter_map(|r| r.batching).collect();
    let med = |f: fn(&Means) -> Option<f64>| {
        let values: Vec<f64> = means.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(&values))
    };
    (!means.is_empty()).then(|| Means {
        client_writes_per_append: med(|m| m.client_writes_per_append),
        entries_per_append: med(|m| m.entries_per_append),
        entries_per_apply: med(|m| m.entries_per_apply),
        write_throughs: median(&means.iter().map(|m| m.write_throughs).collect::<Vec<_>>()),
    })
}

/// `a / b`, or None when b is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

/// The ratio cell: `1.23×`, or `–` without one.
fn ratio_cell(a: f64, b: f64, suffix: &str) -> String {
    ratio(a, b).map(|r| format!("{r:.2}×{suffix}")).unwrap_or_else(|| "–".into())
}

/// A side by side table: a header, then rows whose first cell names the figure and whose
/// other cells (one per system, then the ratio) are right-aligned.
fn side_by_side(header: Vec<String>, rows: Vec<Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL);
    t.set_header(header);
    for row in rows {
        let mut cells = row.into_iter();
        let mut out = vec![Cell::new(cells.next().unwrap_or_default())];
        out.extend(cells.map(|c| Cell::new(c).set_alignment(CellAlignment::Right)));
        t.add_row(out);
    }
    t
}

/// The whole bench: every run, and the medians per system.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub clients: usize,
    pub connections: usize,
    pub keys: u64,
    pub value_size: usize,
    pub duration_secs: f64,
    /// Where the connections went, the same for both systems.
    pub target: Target,
    /// The paced rate of all clients together (ops/s); `None`: closed loop.
    pub rate: Option<f64>,
    /// The API petkv was driven through.
    pub via: Via,
    pub runs: Vec<RunResult>,
    pub petkv: Option<Summary>,
    pub etcd: Option<Summary>,
}

impl Report {
    /// Summarizes the runs.
    pub fn new(
        header: (Mode, usize, usize, u64, usize, f64),
        (target, rate): (Target, Option<f64>),
        runs: Vec<RunResult>,
    ) -> Self {
        let (mode, clients, connections, keys, value_size, duration_secs) = header;
        Self {
            target,
            rate,
            via: Via::Native,
            mode,
            clients,
            connections,
            keys,
            value_size,
            duration_secs,
            petkv: summarize(System::Petkv, &runs),
            etcd: summarize(System::Etcd, &runs),
            runs,
        }
    }

    /// The same report, saying petkv was driven through `via`.
    pub fn via(self, via: Via) -> Self {
        Self { via, ..self }
    }

    /// The human table: one column per system, plus petkv/etcd when both ran.
    pub fn table(&self) -> String {
        let systems: Vec<&Summary> = [&self.petkv, &self.etcd].into_iter().flatten().collect();
        let pair = self.petkv.as_ref().zip(self.etcd.as_ref());
        let mut header = vec![format!(
            "{} · {} clients / {} conns · {} keys · {} B · {}s",
            self.mode.name(),
            self.clients,
            self.connections,
            self.keys,
            self.value_size,
            self.duration_secs
        )];
        header.extend(systems.iter().map(|s| format!("{} (median of {})", s.system.name(), s.rounds)));
        if pair.is_some() {
            header.push("petkv / etcd".into());
        }
        type Figure = (&'static str, fn(&Summary) -> f64, usize);
        let mut figures: Vec<Figure> = vec![
            ("ops/s", |s| s.ops_per_sec, 0),
            ("p50 ms", |s| s.p50_ms, 2),
            ("p99 ms", |s| s.p99_ms, 2),
            ("p99.9 ms", |s| s.p999_ms, 2),
            ("CPU s (cluster, window)", |s| s.cpu_seconds, 2),
            ("CPU ms per op", |s| s.cpu_ms_per_op, 3),
            ("errors (all rounds)", |s| s.errors as f64, 0),
            ("leader changes (term +, all rounds)", |s| s.leader_changes as f64, 0),
        ];
        if self.mode == Mode::Cas {
            figures.push(("cas conflicts (all rounds)", |s| s.conflicts as f64, 0));
        }
        let mut rows: Vec<Vec<String>> = figures
            .into_iter()
            .map(|(name, f, decimals)| {
                let mut row = vec![name.to_string()];
                row.extend(systems.iter().map(|s| format!("{:.*}", decimals, f(s))));
                if let Some((p, e)) = pair {
                    row.push(ratio_cell(f(p), f(e), ""));
                }
                row
            })
            .collect();
        let mut row = vec!["peak RSS per node MiB".to_string()];
        row.extend(
            systems.iter().map(|s| s.peak_rss_mib.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(" / ")),
        );
        if let Some((p, e)) = pair {
            let max = |s: &Summary| s.peak_rss_mib.iter().copied().fold(0.0, f64::max);
            row.push(ratio_cell(max(p), max(e), " (max)"));
        }
        rows.push(row);
        let mut out = side_by_side(header, rows).to_string();
        out.push_str(&format!("\n{}", self.target.describe()));
        if self.via != Via::Native {
            out.push_str(&format!("\n{}", self.via.describe()));
        }
        if let Some(batching) = self.petkv.as_ref().and_then(|s| s.batching).filter(Means::any) {
            out.push_str(&format!("\n{}", batching.describe()));
        }
        if let Some(rate) = self.rate {
            out.push_str(&format!("\nclients paced at {rate:.0} ops/s in all (open loop)"));
        }
        for r in &self.runs {
            for e in &r.sample_errors {
                out.push_str(&format!("\n{} round {}: error: {e}", r.system.name(), r.round));
            }
        }
        out
    }
}

/// One figure of a scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    /// Decimals shown in the table.
    #[serde(skip)]
    pub decimals: usize,
    /// Whether the table shows petkv / etcd for it (not for counts and flags).
    #[serde(skip)]
    pub ratio: bool,
}

impl Metric {
    pub fn new(name: impl Into<String>, value: f64, decimals: usize) -> Self {
        Self { name: name.into(), value, decimals, ratio: true }
    }

    /// A count or flag: no ratio in the table.
    pub fn count(name: impl Into<String>, value: f64) -> Self {
        Self { ratio: false, ..Self::new(name, value, 0) }
    }
}

/// One round of a scenario on one system.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRun {
    pub system: System,
    pub round: usize,
    pub metrics: Vec<Metric>,
    /// What happened that the figures do not say (which member was stopped, errors seen).
    pub notes: Vec<String>,
}

/// Every round of a scenario, and the median of each figure per system.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario's (or the watch mode's) name.
    pub scenario: String,
    /// The parameters, one line.
    pub settings: String,
    pub runs: Vec<ScenarioRun>,
    pub petkv: Option<Vec<Metric>>,
    pub etcd: Option<Vec<Metric>>,
    pub notes: Vec<String>,
}

/// Medians of each figure over the runs of `system`, in the order of its first run.
fn scenario_medians(system: System, runs: &[ScenarioRun]) -> Option<Vec<Metric>> {
    let mine: Vec<&ScenarioRun> = runs.iter().filter(|r| r.system == system).collect();
    let first = mine.first()?;
    Some(
        first
            .metrics
            .iter()
            .map(|m| {
                let values: Vec<f64> =
                    mine.iter().filter_map(|r| r.metrics.iter().find(|x| x.name == m.name)).map(|x| x.value).collect();
                Metric { value: median(&values), ..m.clone() }
            })
            .collect(),
    )
}

impl ScenarioReport {
    pub fn new(scenario: &str, settings: String, runs: Vec<ScenarioRun>, notes: Vec<String>) -> Self {
        Self {
            scenario: scenario.to_string(),
            settings,
            petkv: scenario_medians(System::Petkv, &runs),
            etcd: scenario_medians(System::Etcd, &runs),
            runs,
            notes,
        }
    }

    /// The median of one figure for one system.
    pub fn median(&self, system: System, name: &str) -> Option<f64> {
        let medians = match system {
            System::Petkv => &self.petkv,
            System::Etcd => &self.etcd,
        };
        medians.as_ref()?.iter().find(|m| m.name == name).map(|m| m.value)
    }

    /// The human table, as [`Report::table`]'s: a column per system, the ratio when both ran;
    /// then every run's notes and the report's.
    pub fn table(&self) -> String {
        let rounds = |s: System| self.runs.iter().filter(|r| r.system == s).count();
        let columns: Vec<(System, &Vec<Metric>)> = [(System::Petkv, &self.petkv), (System::Etcd, &self.etcd)]
            .into_iter()
            .filter_map(|(s, m)| Some((s, m.as_ref()?)))
            .collect();
        let pair = self.petkv.as_ref().zip(self.etcd.as_ref());
        let mut header = vec![format!("{} · {}", self.scenario, self.settings)];
        header.extend(columns.iter().map(|(s, _)| format!("{} (median of {})", s.name(), rounds(*s))));
        if pair.is_some() {
            header.push("petkv / etcd".into());
        }
        let names: Vec<&Metric> = columns.first().map(|(_, m)| m.iter().collect()).unwrap_or_default();
        let rows =
            names
                .iter()
                .map(|m| {
                    let value = |ms: &Vec<Metric>| ms.iter().find(|x| x.name == m.name).map(|x| x.value);
                    let mut row = vec![m.name.clone()];
                    row.extend(columns.iter().map(|(_, ms)| {
                        value(ms).map(|v| format!("{:.*}", m.decimals, v)).unwrap_or_else(|| "–".into())
                    }));
                    if let Some((p, e)) = pair {
                        row.push(match (value(p), value(e)) {
                            (Some(a), Some(b)) if m.ratio => ratio_cell(a, b, ""),
                            _ => "–".into(),
                        });
                    }
                    row
                })
                .collect();
        let mut out = side_by_side(header, rows).to_string();
        for r in &self.runs {
            for n in &r.notes {
                out.push_str(&format!("\n{} round {}: {n}", r.system.name(), r.round));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(system: System, round: usize, ops_per_sec: f64, p99_ms: f64) -> RunResult {
        RunResult {
            system,
            mode: Mode::Put,
            clients: 1,
            connections: 1,
            round,
            ops: (ops_per_sec * 10.0) as u64,
            errors: 1,
            conflicts: 0,
            seconds: 10.0,
            ops_per_sec,
            p50_ms: 1.0,
            p99_ms,
            p999_ms: 2.0 * p99_ms,
            cpu_seconds: 5.0,
            peak_rss_mib: vec![10.0 * round as f64, 20.0],
            leader_changes: 0,
            sample_errors: vec![],
            batching: None,
        }
    }

    #[test]
    fn medians_per_system_and_ratios() {
        let runs = vec![
            run(System::Petkv, 1, 1000.0, 3.0),
            run(System::Etcd, 1, 800.0, 2.0),
            run(System::Petkv, 2, 3000.0, 1.0),
            run(System::Etcd, 2, 900.0, 4.0),
            run(System::Petkv, 3, 2000.0, 2.0),
            run(System::Etcd, 3, 1000.0, 3.0),
        ];
        let report = Report::new((Mode::Put, 1, 1, 100, 100, 10.0), (Target::Spread, None), runs);
        let p = report.petkv.as_ref().unwrap();
        let e = report.etcd.as_ref().unwrap();
        assert_eq!((p.ops_per_sec, p.p99_ms, p.rounds, p.errors), (2000.0, 2.0, 3, 3));
        assert_eq!((e.ops_per_sec, e.p99_ms), (900.0, 3.0));
        assert_eq!(p.peak_rss_mib, vec![30.0, 20.0]);
        // 5 CPU s over 2000 ops/s × 10 s = 0.25 ms per op.
        assert!((p.cpu_ms_per_op - 0.25).abs() < 1e-9);
        assert!((ratio(p.ops_per_sec, e.ops_per_sec).unwrap() - 2000.0 / 900.0).abs() < 1e-9);
        assert_eq!(ratio(1.0, 0.0), None);
        let table = report.table();
        assert!(table.contains("2.22×"), "{table}");
        assert!(table.contains("leader changes"), "{table}");
        assert!(table.contains("endpoints: spread over all members"), "{table}");
    }

    #[test]
    fn scenario_medians_and_ratios() {
        let run = |system, round, window: f64| ScenarioRun {
            system,
            round,
            metrics: vec![Metric::new("window ms", window, 1), Metric::new("errors", 0.0, 0)],
            notes: vec![format!("stopped m{round}")],
        };
        let runs = vec![
            run(System::Petkv, 1, 300.0),
            run(System::Etcd, 1, 1000.0),
            run(System::Petkv, 2, 100.0),
            run(System::Etcd, 2, 1200.0),
            run(System::Petkv, 3, 200.0),
            run(System::Etcd, 3, 1100.0),
        ];
        let report = ScenarioReport::new("failover-kill", "test".into(), runs, vec!["n".into()]);
        assert_eq!(report.median(System::Petkv, "window ms"), Some(200.0));
        assert_eq!(report.median(System::Etcd, "window ms"), Some(1100.0));
        let table = report.table();
        assert!(table.contains("0.18×") && table.contains("200.0") && table.contains("stopped m2"), "{table}");
        assert!(table.contains("note: n"), "{table}");
    }
}
