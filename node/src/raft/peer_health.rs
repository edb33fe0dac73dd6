//! Whether each peer's Raft port answers, and what that decides: how long replication waits
//! before the next attempt, and what the node logs and counts about it.
//!
//! openraft's own back-off is consumed only while a replication stream polls its requests, so
//! a peer that refuses the connection (its process is dead: a container restarting in its pod,
//! a crash loop) made the leader retry at once, thousands of times a second, each retry logged.
//! Here every failed attempt to reach a peer is counted per address; the next attempt to open
//! a replication stream to it first waits a delay that grows with the run of failures (100 ms
//! to 1 s). Logging is one line when a peer becomes unreachable, one every [`LOG_EVERY`] while it
//! stays so (with the count), and one when it answers again; the metric
//! `peer_unreachable_attempts` counts every failed attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::edge::metrics::Metrics;

/// While a peer stays unreachable, a reminder is logged this often.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// The first retry after a failure waits this long; each further failure adds as much.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// A run of failed attempts to reach one peer.
#[derive(Debug, Clone, Copy)]
struct Outage {
    failures: u64,
    since: Instant,
    last_logged: Instant,
}

/// What the caller should log after recording an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Nothing,
    /// The first failure of a run.
    BecameUnreachable,
    /// Still failing; `failures` attempts so far in this run.
    StillUnreachable {
        failures: u64,
        for_: Duration,
    },
    /// Answered again after `failures` failed attempts.
    Reachable {
        failures: u64,
        after: Duration,
    },
}

/// The reachability of every peer address this node sends Raft messages to.
#[derive(Clone, Default)]
pub struct PeerHealth {
    outages: Arc<Mutex<HashMap<String, Outage>>>,
    metrics: Option<Arc<Metrics>>,
}

impl PeerHealth {
    /// Failed attempts are counted in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { outages: Arc::default(), metrics: Some(metrics) }
    }

    /// How long to wait before the next attempt to `addr` (zero while it answers).
    pub fn delay(&self, addr: &str) -> Duration {
        self.lock().get(addr).map_or(Duration::ZERO, |o| delay_after(o.failures))
    }

    /// Records a failed attempt at `now`; says whether to log.
    pub fn failed(&self, addr: &str, now: Instant) -> Report {
        if let Some(m) = &self.metrics {
            m.record_peer_unreachable(addr);
        }
        let mut outages = self.lock();
        match outages.get_mut(addr) {
            None => {
                outages.insert(addr.to_string(), Outage { failures: 1, since: now, last_logged: now });
                Report::BecameUnreachable
            }
            Some(o) => {
                o.failures += 1;
                if now.duration_since(o.last_logged) >= LOG_EVERY {
                    o.last_logged = now;
                    Report::StillUnreachable { failures: o.failures, for_: now.duration_since(o.since) }
                } else {
                    Report::Nothing
                }
            }
        }
    }

    /// Records a successful attempt at `now`; says whether to log.
    pub fn succeeded(&self, addr: &str, now: Instant) -> Report {
        // The common case (no outage) costs a map lookup and no allocation.
        match self.lock().remove(addr) {
            Some(o) => Report::Reachable { failures: o.failures, after: now.duration_since(o.since) },
            None => Report::Nothing,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outage>> {
        crate::support::sync::lock(&self.outages)
    }
}

/// The wait after `failures` failed attempts in a row: 100 ms more per failure, at most 1 s.
fn delay_after(failures: u64) -> Duration {
    let steps = u32::try_from(failures).unwrap_or(u32::MAX);
    FIRST_DELAY.saturating_mul(steps).min(MAX_DELAY)
}

/// Logs what `report` says about the peer `target` at `addr`.
pub fn log(report: &Report, target: u64, addr: &str, error: &dyn std::fmt::Display) {
    match report {
        Report::Nothing => {}
        Report::BecameUnreachable => {
            tracing::warn!(target, %addr, %error, "peer unreachable; retrying with back-off (100 ms to 1 s)")
        }
        Report::StillUnreachable { failures, for_ } => {
            tracing::warn!(target, %addr, %error, failures, "peer still unreachable after {:.0?}", for_)
        }
        Report::Reachable { failures, after } => {
            tracing::info!(target, %addr, failures, "peer reachable again after {:.1?}", after)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_with_the_run_of_failures_and_is_capped() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(1), Duration::from_millis(100));
        assert_eq!(delay_after(5), Duration::from_millis(500));
        assert_eq!(delay_after(10_000), MAX_DELAY);
        assert_eq!(delay_after(u64::MAX), MAX_DELAY);
    }

    #[test]
    fn an_outage_is_logged_when_it_starts_every_interval_and_when_it_ends() {
        let h = PeerHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.delay("a:1"), Duration::ZERO);
        assert_eq!(h.failed("a:1", t0), Report::BecameUnreachable);
        // Thousands of failures within the interval: nothing more to log.
        for i in 1..5_000u64 {
            assert_eq!(h.failed("a:1", t0 + Duration::from_micros(i)), Report::Nothing);
        }
        assert_eq!(h.delay("a:1"), MAX_DELAY);
        assert_eq!(h.delay("b:1"), Duration::ZERO, "other peers are not affected");
        let later = t0 + LOG_EVERY;
        assert_eq!(h.failed("a:1", later), Report::StillUnreachable { failures: 5_001, for_: LOG_EVERY });
        assert_eq!(h.failed("a:1", later + Duration::from_secs(1)), Report::Nothing);
        let back = later + Duration::from_secs(2);
        assert_eq!(h.succeeded("a:1", back), Report::Reachable { failures: 5_002, after: back - t0 });
        assert_eq!(h.delay("a:1"), Duration::ZERO);
        assert_eq!(h.succeeded("a:1", back), Report::Nothing);
    }
}
