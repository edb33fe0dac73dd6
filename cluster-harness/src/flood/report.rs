//! The figures of one `flood` run: a human table and JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::Table;
use serde::Serialize;

/// Error messages kept per phase.
pub const SAMPLE_ERRORS: usize = 5;

/// The normal client over one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub ops: u64,
    pub errors: u64,
    #[serde(with = "millis", rename = "p50_ms")]
    pub p50: Duration,
    #[serde(with = "millis", rename = "p99_ms")]
    pub p99: Duration,
    #[serde(with = "millis", rename = "max_ms")]
    pub max: Duration,
    pub sample_errors: Vec<String>,
}

/// What the node counted in its `/metrics` (client port).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NodeCounts {
    pub open_connections: u64,
    pub refused_connections: u64,
    pub shed_requests: u64,
    pub oversized_requests: u64,
}

impl NodeCounts {
    /// The counters' growth since `earlier` (the open-connection gauge as it is now).
    pub fn since(&self, earlier: &NodeCounts) -> NodeCounts {
        NodeCounts {
            open_connections: self.open_connections,
            refused_connections: self.refused_connections.saturating_sub(earlier.refused_connections),
            shed_requests: self.shed_requests.saturating_sub(earlier.shed_requests),
            oversized_requests: self.oversized_requests.saturating_sub(earlier.oversized_requests),
        }
    }
}

/// One flood run.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    pub target: String,
    /// Idle connections asked for, not made at all, and closed by the server at once.
    pub connections: usize,
    pub connections_failed: usize,
    #[serde(with = "millis", rename = "connections_opened_in_ms")]
    pub connections_opened_in: Duration,
    pub idle_closed_by_server: usize,
    pub oversized_bytes: usize,
    /// Answers to the oversized puts, by status code.
    pub oversized: BTreeMap<String, u64>,
    /// Concurrent streams of the burst, and its answers by status code.
    pub burst_streams: usize,
    pub burst: BTreeMap<String, u64>,
    pub before: Phase,
    pub during: Phase,
    pub rss_before: u64,
    pub peak_rss_during: u64,
    /// The target's VmHWM after the flood (its peak since it started).
    pub hwm_after: u64,
    /// The node's counters during the flood (open connections: the gauge at its end).
    pub node: NodeCounts,
    pub open_connections_during: u64,
    /// A put after the flood succeeded.
    pub still_serves: bool,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn codes(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().map(|(code, n)| format!("{code} {n}")).collect::<Vec<_>>().join(", ")
}

impl FloodReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut t = Table::new();
        t.set_header(vec!["", "before the flood", "during the flood"]);
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        t.add_row(vec!["normal client ops (put/get)".into(), self.before.ops.to_string(), self.during.ops.to_string()]);
        t.add_row(vec!["normal client p50".into(), ms(self.before.p50), ms(self.during.p50)]);
        t.add_row(vec!["normal client p99".into(), ms(self.before.p99), ms(self.during.p99)]);
        t.add_row(vec!["normal client max".into(), ms(self.before.max), ms(self.during.max)]);
        t.add_row(vec!["normal client errors".into(), self.before.errors.to_string(), self.during.errors.to_string()]);
        t.add_row(vec!["target RSS (now / peak during)".into(), mib(self.rss_before), mib(self.peak_rss_during)]);
        let mut flood = Table::new();
        flood.set_header(vec!["flood", "figure"]);
        flood.add_row(vec![
            format!("idle connections asked for ({})", self.connections),
            format!(
                "made {} in {} ms; {} could not connect; {} closed by the node at once",
                self.connections - self.connections_failed,
                self.connections_opened_in.as_millis(),
                self.connections_failed,
                self.idle_closed_by_server
            ),
        ]);
        flood.add_row(vec![
            "node: open client connections (end of flood)".into(),
            self.node.open_connections.to_string(),
        ]);
        flood.add_row(vec!["node: connections refused".into(), self.node.refused_connections.to_string()]);
        flood.add_row(vec![format!("oversized puts ({} B values)", self.oversized_bytes), codes(&self.oversized)]);
        flood.add_row(vec!["node: oversized requests refused".into(), self.node.oversized_requests.to_string()]);
        flood.add_row(vec![format!("burst of {} concurrent gets", self.burst_streams), codes(&self.burst)]);
        flood.add_row(vec!["node: requests shed (RESOURCE_EXHAUSTED)".into(), self.node.shed_requests.to_string()]);
        flood.add_row(vec!["target VmHWM after the flood".into(), mib(self.hwm_after)]);
        flood.add_row(vec!["a put after the flood", if self.still_serves { "OK" } else { "FAILED" }]);
        let mut out = format!("flood of {}\n{t}\n{flood}", self.target);
        for (phase, p) in [("before", &self.before), ("during", &self.during)] {
            for e in &p.sample_errors {
                out.push_str(&format!("\nnormal client error {phase}: {e}"));
            }
        }
        out
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}
