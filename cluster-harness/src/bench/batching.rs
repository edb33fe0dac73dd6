//! How much petkv coalesced during a run, from the members' `petkv_raft_batch_entries`
//! histograms (`/metrics`): client writes merged into one log append on the leader, entries
//! per append, entries per state-machine apply; and how many applied runs had to write sled
//! themselves because its background writer fell behind. The figures are over the measured run
//! (the difference of the histograms' `_sum` and `_count` before and after it), summed over
//! the members. etcd reports no such figures; the bench prints them for petkv only.

use serde::Serialize;

/// One stage's `_sum` and `_count`, summed over the members.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub entries: f64,
    pub batches: f64,
}

/// The three stages' totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub client_writes: Totals,
    pub append: Totals,
    pub apply: Totals,
    /// Applied runs that wrote sled themselves (the background writer fell behind).
    pub write_throughs: f64,
}

/// Mean entries per batch over a run, per stage (None: no batch at that stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Means {
    pub client_writes_per_append: Option<f64>,
    pub entries_per_append: Option<f64>,
    pub entries_per_apply: Option<f64>,
    /// Applied runs over the run that waited for sled (state-machine back-pressure).
    pub write_throughs: f64,
}

impl Snapshot {
    /// Adds one member's `/metrics` text.
    pub fn add_scrape(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(count) = line.strip_prefix("petkv_state_machine_write_through_total ") {
                self.write_throughs += count.trim().parse::<f64>().unwrap_or(0.0);
                continue;
            }
            let Some(rest) = line.strip_prefix("petkv_raft_batch_entries_") else { continue };
            let Some((series, value)) = rest.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let totals = if series.contains("stage=\"client_writes\"") {
                &mut self.client_writes
            } else if series.contains("stage=\"append\"") {
                &mut self.append
            } else if series.contains("stage=\"apply\"") {
                &mut self.apply
            } else {
                continue;
            };
            if series.starts_with("sum{") {
                totals.entries += value;
            } else if series.starts_with("count{") {
                totals.batches += value;
            }
        }
    }

    /// The means between `self` (before) and `after`.
    pub fn means_until(&self, after: &Snapshot) -> Means {
        let mean = |before: Totals, after: Totals| {
            let batches = after.batches - before.batches;
            (batches > 0.0).then(|| (after.entries - before.entries) / batches)
        };
        Means {
            client_writes_per_append: mean(self.client_writes, after.client_writes),
            entries_per_append: mean(self.append, after.append),
            entries_per_apply: mean(self.apply, after.apply),
            write_throughs: after.write_throughs - self.write_throughs,
        }
    }
}

impl Means {
    /// Whether any stage had a batch (a read-only run has none).
    pub fn any(&self) -> bool {
        self.client_writes_per_append.is_some() || self.entries_per_append.is_some() || self.entries_per_apply.is_some()
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let f = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into());
        format!(
            "petkv batching (means over the run, all members): {} client writes per leader append, {} entries \
             per log append, {} entries per state-machine apply; {} applied runs waited for sled",
            f(self.client_writes_per_append),
            f(self.entries_per_append),
            f(self.entries_per_apply),
            self.write_throughs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# TYPE petkv_raft_batch_entries histogram
petkv_raft_batch_entries_sum{stage=\"client_writes\"} 100.0
petkv_raft_batch_entries_count{stage=\"client_writes\"} 10
petkv_raft_batch_entries_bucket{le=\"1.0\",stage=\"client_writes\"} 3
petkv_raft_batch_entries_sum{stage=\"append\"} 300.0
petkv_raft_batch_entries_count{stage=\"append\"} 20
petkv_raft_batch_entries_sum{stage=\"apply\"} 50.0
petkv_raft_batch_entries_count{stage=\"apply\"} 5
petkv_state_machine_write_through_total 2
petkv_raft_term 3
";

    #[test]
    fn means_are_differences_of_sums_over_counts() {
        let mut before = Snapshot::default();
        before.add_scrape(SCRAPE);
        let mut after = Snapshot::default();
        after.add_scrape(SCRAPE);
        after.add_scrape(&SCRAPE.replace("100.0", "400.0").replace(" 10\n", " 30\n"));
        let means = before.means_until(&after);
        assert_eq!(means.client_writes_per_append, Some(400.0 / 30.0));
        assert_eq!(means.entries_per_append, Some(15.0));
        assert_eq!(means.entries_per_apply, Some(10.0));
        assert_eq!(means.write_throughs, 2.0, "the second member's count");
        assert_eq!(before.means_until(&before), Means::default(), "no batch in between: no figure");
    }
}
