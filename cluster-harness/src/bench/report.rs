//! Results of a bench: one [`RunResult`] per system and round, medians per system, a side by
//! side table with ratios (petkv / etcd), and JSON.

use comfy_table::{presets::UTF8_FULL, Cell, CellAlignment, Table};
use serde::Serialize;

use super::workload::Outcome;
use super::{Mode, System};
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
    pub sample_errors: Vec<String>,
}

impl RunResult {
    /// Builds the result from the driver's outcome and the process figures.
    pub fn new(
        system: System,
        (mode, clients, connections, round): (Mode, usize, usize, usize),
        o: &Outcome,
        cpu_seconds: f64,
        peak_rss: &[u64],
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
            sample_errors: o.sample_errors.clone(),
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
        cpu_seconds,
        cpu_ms_per_op: if ops_per_sec > 0.0 { cpu_seconds * 1000.0 / (ops_per_sec * seconds) } else { 0.0 },
        peak_rss_mib: (0..nodes)
            .map(|i| mine.iter().filter_map(|r| r.peak_rss_mib.get(i)).copied().fold(0.0, f64::max))
            .collect(),
    })
}

/// `a / b`, or None when b is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
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
    pub runs: Vec<RunResult>,
    pub petkv: Option<Summary>,
    pub etcd: Option<Summary>,
}

impl Report {
    /// Summarizes the runs.
    pub fn new(header: (Mode, usize, usize, u64, usize, f64), runs: Vec<RunResult>) -> Self {
        let (mode, clients, connections, keys, value_size, duration_secs) = header;
        Self {
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

    /// The human table: one column per system, plus petkv/etcd when both ran.
    pub fn table(&self) -> String {
        let systems: Vec<&Summary> = [&self.petkv, &self.etcd].into_iter().flatten().collect();
        let both = self.petkv.is_some() && self.etcd.is_some();
        let mut t = Table::new();
        t.load_preset(UTF8_FULL);
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
        if both {
            header.push("petkv / etcd".into());
        }
        t.set_header(header);
        type Row = (&'static str, fn(&Summary) -> f64, usize);
        let rows: [Row; 7] = [
            ("ops/s", |s| s.ops_per_sec, 0),
            ("p50 ms", |s| s.p50_ms, 2),
            ("p99 ms", |s| s.p99_ms, 2),
            ("p99.9 ms", |s| s.p999_ms, 2),
            ("CPU s (cluster, window)", |s| s.cpu_seconds, 2),
            ("CPU ms per op", |s| s.cpu_ms_per_op, 3),
            ("errors (all rounds)", |s| s.errors as f64, 0),
        ];
        for (name, f, decimals) in rows {
            let mut row = vec![Cell::new(name)];
            row.extend(
                systems.iter().map(|s| Cell::new(format!("{:.*}", decimals, f(s))).set_alignment(CellAlignment::Right)),
            );
            if let (true, Some(p), Some(e)) = (both, &self.petkv, &self.etcd) {
                let r = ratio(f(p), f(e)).map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into());
                row.push(Cell::new(r).set_alignment(CellAlignment::Right));
            }
            t.add_row(row);
        }
        if self.mode == Mode::Cas {
            let mut row = vec![Cell::new("cas conflicts (all rounds)")];
            row.extend(systems.iter().map(|s| Cell::new(s.conflicts).set_alignment(CellAlignment::Right)));
            t.add_row(row);
        }
        let mut row = vec![Cell::new("peak RSS per node MiB")];
        row.extend(systems.iter().map(|s| {
            Cell::new(s.peak_rss_mib.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(" / "))
                .set_alignment(CellAlignment::Right)
        }));
        if let (true, Some(p), Some(e)) = (both, &self.petkv, &self.etcd) {
            let max = |s: &Summary| s.peak_rss_mib.iter().copied().fold(0.0, f64::max);
            let r = ratio(max(p), max(e)).map(|r| format!("{r:.2}× (max)")).unwrap_or_else(|| "–".into());
            row.push(Cell::new(r).set_alignment(CellAlignment::Right));
        }
        t.add_row(row);
        let mut out = t.to_string();
        for r in &self.runs {
            for e in &r.sample_errors {
                out.push_str(&format!("\n{} round {}: error: {e}", r.system.name(), r.round));
            }
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
            sample_errors: vec![],
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
        let report = Report::new((Mode::Put, 1, 1, 100, 100, 10.0), runs);
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
    }
}
