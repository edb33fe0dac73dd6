//! The leader's lease clock: when each lease expires, and the task that revokes expired ones.
//!
//! Only the leader keeps deadlines, in memory. A node that becomes leader (a new term) starts
//! every lease at a full TTL from that moment, so a leader change never expires a lease
//! early: whatever the old leader's clock said, the lease lives at least a TTL past the
//! change. A keep-alive renews a lease for its full TTL once the leader has confirmed with a
//! quorum that it still leads. An expired lease is revoked through Raft
//! ([`crate::store::command::Command::LeaseRevoke`]), so its keys disappear on every member at
//! one revision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::node::Node;
use crate::raft::ServerState;
use crate::store::command::Command;
use crate::store::state_machine::LeaseRecord;
use crate::support::sync::lock;

/// How often the leader looks for expired leases.
pub const EXPIRY_CHECK: Duration = Duration::from_millis(100);

/// Lease deadlines of the term this node leads in.
#[derive(Debug, Default)]
pub struct LeaseClock {
    state: Mutex<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    /// The term the deadlines belong to; none while not leading.
    term: Option<u64>,
    deadlines: HashMap<u64, Instant>,
}

impl LeaseClock {
    /// Renews lease `id` (of `ttl`) in `term`: it now expires a full TTL from `now`.
    pub fn renew(&self, term: u64, id: u64, ttl: Duration, now: Instant) {
        let mut state = lock(&self.state);
        state.enter(term);
        state.deadlines.insert(id, now + ttl);
    }

    /// How long lease `id` (of `ttl`) has left in `term`: a full TTL if this term's clock has
    /// not started it yet.
    pub fn remaining(&self, term: u64, id: u64, ttl: Duration, now: Instant) -> Duration {
        let mut state = lock(&self.state);
        state.enter(term);
        state.deadlines.get(&id).map_or(ttl, |d| d.saturating_duration_since(now))
    }

    /// Brings the clock to the store's leases in `term` (a lease it has not seen starts at a
    /// full TTL; a lease gone from the store is forgotten) and returns the expired ones.
    pub fn expired(&self, term: u64, leases: &[(u64, LeaseRecord)], now: Instant) -> Vec<u64> {
        let mut state = lock(&self.state);
        state.enter(term);
        state.deadlines.retain(|id, _| leases.iter().any(|(l, _)| l == id));
        for (id, record) in leases {
            state.deadlines.entry(*id).or_insert(now + Duration::from_secs(record.ttl_seconds));
        }
        let mut expired: Vec<u64> = state.deadlines.iter().filter(|(_, d)| **d <= now).map(|(id, _)| *id).collect();
        expired.sort_unstable();
        expired
    }

    /// This node no longer leads: its deadlines mean nothing.
    pub fn forget(&self) {
        let mut state = lock(&self.state);
        state.term = None;
        state.deadlines.clear();
    }
}

impl ClockState {
    /// Deadlines of another term are dropped: every lease starts again at a full TTL.
    fn enter(&mut self, term: u64) {
        if self.term != Some(term) {
            self.term = Some(term);
            self.deadlines.clear();
        }
    }
}

/// Revokes expired leases while this node leads; runs for the node's life.
pub async fn run_expiry(node: Arc<Node>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(metrics) = node.metrics() else { continue };
        if metrics.state != ServerState::Leader {
            node.lease_clock.forget();
            continue;
        }
        let sm = node.sm.clone();
        let leases = match tokio::task::spawn_blocking(move || sm.leases()).await {
            Ok(Ok(leases)) => leases,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the leases");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease read task failed");
                continue;
            }
        };
        let expired = node.lease_clock.expired(metrics.current_term, &leases, Instant::now());
        let Ok(raft) = node.raft() else { continue };
        for id in expired {
            match tokio::time::timeout(node.config.request_timeout, raft.client_write(Command::LeaseRevoke { id }))
                .await
            {
                Ok(Ok(_)) => tracing::info!(lease = id, "lease expired: revoked with its keys"),
                Ok(Err(e)) => tracing::warn!(lease = id, error = %e, "cannot revoke an expired lease; will retry"),
                Err(_) => tracing::warn!(lease = id, "revoking an expired lease timed out; will retry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: u64, ttl_seconds: u64) -> (u64, LeaseRecord) {
        (id, LeaseRecord { ttl_seconds })
    }

    #[test]
    fn a_new_term_starts_every_lease_at_a_full_ttl() {
        let clock = LeaseClock::default();
        let t0 = Instant::now();
        let leases = [lease(1, 10), lease(2, 10)];
        assert!(clock.expired(5, &leases, t0).is_empty(), "first seen: a full TTL");
        clock.renew(5, 2, Duration::from_secs(10), t0 + Duration::from_secs(8));
        assert_eq!(clock.expired(5, &leases, t0 + Duration::from_secs(10)), [1], "lease 2 was renewed");
        // A new leader (term 6) at t0 + 9 s: nothing expires before t0 + 19 s.
        assert!(clock.expired(6, &leases, t0 + Duration::from_secs(9)).is_empty());
        assert!(clock.expired(6, &leases, t0 + Duration::from_millis(18_999)).is_empty());
        assert_eq!(clock.expired(6, &leases, t0 + Duration::from_secs(19)), [1, 2]);
        let ttl = Duration::from_secs(10);
        assert_eq!(clock.remaining(7, 1, ttl, t0), ttl, "unknown in a new term: a full TTL");
    }

    #[test]
    fn leases_gone_from_the_store_are_forgotten() {
        let clock = LeaseClock::default();
        let t0 = Instant::now();
        clock.expired(1, &[lease(1, 1), lease(2, 1)], t0);
        assert_eq!(clock.expired(1, &[lease(2, 1)], t0 + Duration::from_secs(2)), [2]);
        clock.forget();
        assert_eq!(clock.expired(1, &[lease(2, 1)], t0 + Duration::from_secs(2)), Vec::<u64>::new());
    }
}
