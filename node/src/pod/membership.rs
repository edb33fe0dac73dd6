//! The membership reconciler: the one place that changes the Raft membership.
//!
//! It runs on every node and acts only on the leader, one change at a time, each bounded by a
//! timeout (a change that cannot reach quorum is reported, not retried in a tight loop). Each
//! tick it compares the membership with what the set should look like and makes at most one
//! change:
//!
//! 1. **Promote** a learner whose ordinal is below `--voters` once it has caught up with the
//!    leader's log. If an older incarnation of the same ordinal is a voter (the pod's volume
//!    was wiped and it rejoined under a new id), the promotion replaces it in the same joint
//!    change, so the number of voters never grows past the set's.
//! 2. **Remove stale incarnations**: a member whose ordinal has a newer incarnation in the
//!    membership is removed (a wiped read replica, or a voter already replaced).
//! 3. **Follow the declared replica count** (`petkv scale N`, a StatefulSet's `spec.replicas`):
//!    members whose ordinal is at or above it are removed, highest ordinal first, one per
//!    change. A leader whose own ordinal is out of the set first hands leadership to a voter
//!    that stays. The last voter is never removed. Scaling below a quorum of the current
//!    voters is therefore staged: each step is one joint-consensus change that needs a quorum
//!    of the configuration it leaves and of the one it enters; a step that cannot get it is
//!    reported (an error naming the voters it needs) and retried with back-off, and the cluster
//!    keeps serving in its current configuration meanwhile. The departing pods stay until
//!    they are removed ([`crate::pod::shutdown`]); among them, the one furthest behind (already
//!    gone) is removed first, so one departing voter that left early does not stall the rest.
//!
//! Joins only ever add learners ([`crate::raft::service`]); everything else happens here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::raft::{ChangeMembers, RaftInstant, ServerState};

use crate::node::Node;
use crate::raft::{ordinal_of, Membership, NodeId, RaftMetrics};

/// How often the leader reconciles.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);
/// Bound on one membership change.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a change fails, the same change waits at least this long before it is tried again,
/// doubling up to [`MAX_RETRY_PAUSE`]; each failure is logged.
pub const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);
/// A learner within this many entries of the leader's last log counts as caught up.
pub const CAUGHT_UP_LAG: u64 = 100;

/// One membership change the reconciler wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Make `learner` a voter; `replaces` are older incarnations of its ordinal that stop voting.
    Promote { learner: NodeId, replaces: BTreeSet<NodeId>, voters: BTreeSet<NodeId> },
    /// Remove members superseded by a newer incarnation of their ordinal.
    RemoveStale { ids: BTreeSet<NodeId> },
    /// Remove a member whose ordinal is at or above the declared replica count; `voters` is
    /// the voter set afterwards.
    RemoveOutOfSet { id: NodeId, voters: BTreeSet<NodeId> },
    /// The leader itself is out of the set: hand leadership to `to` first.
    HandOff { to: NodeId },
}

/// What the reconciler looks at.
#[derive(Debug, Clone)]
pub struct ClusterView<'a> {
    pub membership: &'a Membership,
    /// Last log index known replicated to each member (the leader's own last log for itself).
    pub matched: &'a BTreeMap<NodeId, u64>,
    pub leader: NodeId,
    pub leader_last_log: u64,
    /// `--voters`: ordinals below it vote.
    pub voters_wanted: u32,
    /// The declared replica count, if any.
    pub declared_replicas: Option<u32>,
    /// Members the leader has not heard from lately (no heartbeat acknowledgement within
    /// [`unresponsive_after`]): probably gone.
    pub unresponsive: &'a BTreeSet<NodeId>,
}

/// Decides the next change.
pub fn next_change(view: &ClusterView<'_>) -> Option<MembershipChange> {
    let ClusterView { membership, matched, leader, leader_last_log, voters_wanted, declared_replicas, unresponsive } =
        *view;
    if membership.get_joint_config().len() > 1 {
        return None; // a change is in flight
    }
    let in_set = |id: NodeId| declared_replicas.is_none_or(|r| ordinal_of(id) < r);
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    let newest = |ordinal: u32| members.iter().copied().filter(|id| ordinal_of(*id) == ordinal).max();

    for learner in membership.learner_ids() {
        let ordinal = ordinal_of(learner);
        if ordinal >= voters_wanted || newest(ordinal) != Some(learner) || !in_set(learner) {
            continue;
        }
        let caught_up = matched.get(&learner).is_some_and(|m| m + CAUGHT_UP_LAG >= leader_last_log);
        if !caught_up {
            continue;
        }
        let replaces: BTreeSet<NodeId> = voters.iter().copied().filter(|v| ordinal_of(*v) == ordinal).collect();
        let mut new_voters: BTreeSet<NodeId> = voters.difference(&replaces).copied().collect();
        new_voters.insert(learner);
        return Some(MembershipChange::Promote { learner, replaces, voters: new_voters });
    }

    let stale: BTreeSet<NodeId> = members.iter().copied().filter(|id| newest(ordinal_of(*id)) != Some(*id)).collect();
    // A stale voter is only removed by a promotion (above): removing it alone would shrink
    // the quorum before its replacement has caught up.
    let stale_learners: BTreeSet<NodeId> = stale.difference(&voters).copied().collect();
    if !stale_learners.is_empty() {
        return Some(MembershipChange::RemoveStale { ids: stale_learners });
    }

    // Which out-of-set member goes first: one the leader no longer hears from, then the one
    // furthest behind (a departing pod that is already gone stops replicating), then the
    // highest ordinal. Removing a gone voter first
    // keeps the later steps possible: scaling 3 voters to 1 with pod 1 already gone, removing
    // pod 2 first would need pod 1 in the new configuration {0, 1} and never commit, while
    // removing pod 1 first needs only pods 0 and 2, and then {0, 2} → {0} needs pod 2, which
    // waits to be removed before it exits ([`crate::pod::shutdown`]).
    let out_of_set = members.iter().copied().filter(|id| !in_set(*id)).max_by_key(|id| {
        let behind = std::cmp::Reverse(matched.get(id).copied().unwrap_or(0));
        (unresponsive.contains(id), behind, ordinal_of(*id), *id)
    })?;
    if out_of_set == leader {
        let to = voters
            .iter()
            .copied()
            .filter(|v| *v != leader && in_set(*v))
            .max_by_key(|v| matched.get(v).copied().unwrap_or(0))?;
        return Some(MembershipChange::HandOff { to });
    }
    let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != out_of_set).collect();
    if remaining.is_empty() {
        return None;
    }
    Some(MembershipChange::RemoveOutOfSet { id: out_of_set, voters: remaining })
}

/// A member whose last heartbeat acknowledgement is older than this counts as unresponsive:
/// two maximum election timeouts (heartbeats go every `--heartbeat-ms`).
pub fn unresponsive_after(election_timeout_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_ms * 4)
}

/// Members other than the leader whose heartbeat acknowledgement is missing or older than
/// `bound` (the leader's view; empty on a follower).
fn unresponsive(m: &RaftMetrics, bound: Duration) -> BTreeSet<NodeId> {
    let Some(heartbeats) = m.heartbeat.as_ref() else { return BTreeSet::new() };
    heartbeats
        .iter()
        .filter(|(id, acked)| **id != m.id && acked.as_ref().is_none_or(|t| t.elapsed() > bound))
        .map(|(id, _)| *id)
        .collect()
}

fn matched_indexes(m: &RaftMetrics) -> BTreeMap<NodeId, u64> {
    let mut matched: BTreeMap<NodeId, u64> = m
        .replication
        .as_ref()
        .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index).unwrap_or(0))).collect())
        .unwrap_or_default();
    matched.insert(m.id, m.last_log_index.unwrap_or(0));
    matched
}

/// Runs the reconciler until the node shuts down.
pub async fn run(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last change that failed, when it may be tried again, and the pause after that.
    let mut failed: Option<(MembershipChange, tokio::time::Instant, Duration)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (Ok(raft), Some(m)) = (node.raft(), node.metrics()) else { continue };
        if m.state != ServerState::Leader {
            continue;
        }
        let membership = m.membership_config.membership().clone();
        let matched = matched_indexes(&m);
        let unresponsive = unresponsive(&m, unresponsive_after(node.config.raft.election_timeout_ms));
        let view = ClusterView {
            membership: &membership,
            matched: &matched,
            leader: m.id,
            leader_last_log: m.last_log_index.unwrap_or(0),
            voters_wanted: node.config.voters,
            declared_replicas: node.sm.declared_replicas().ok().flatten(),
            unresponsive: &unresponsive,
        };
        let view_declared = view.declared_replicas;
        let Some(change) = next_change(&view) else { continue };
        if let Some((last, retry_at, _)) = &failed {
            if *last == change && tokio::time::Instant::now() < *retry_at {
                continue;
            }
        }
        tracing::info!(?change, "changing membership");
        let request = match &change {
            MembershipChange::Promote { voters, .. } => ChangeMembers::ReplaceAllVoters(voters.clone()),
            MembershipChange::RemoveStale { ids } => ChangeMembers::RemoveNodes(ids.clone()),
            MembershipChange::RemoveOutOfSet { voters, .. } if voters.len() < membership.voter_ids().count() => {
                ChangeMembers::ReplaceAllVoters(voters.clone())
            }
            MembershipChange::RemoveOutOfSet { id, .. } => ChangeMembers::RemoveNodes([*id].into()),
            MembershipChange::HandOff { to } => {
                tracing::info!(to, "this leader is out of the declared set: handing leadership over");
                if let Err(e) = raft.trigger().transfer_leader(*to).await {
                    tracing::warn!(error = %e, "leadership hand-off failed to start");
                }
                continue;
            }
        };
        let error = match tokio::time::timeout(CHANGE_TIMEOUT, raft.change_membership(request, false)).await {
            Ok(Ok(_)) => {
                tracing::info!(?change, "membership changed");
                failed = None;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CHANGE_TIMEOUT:?} (no quorum?)"),
        };
        let pause = match &failed {
            Some((last, _, pause)) if *last == change => (*pause * 2).min(MAX_RETRY_PAUSE),
            _ => FIRST_RETRY_PAUSE,
        };
        match &change {
            MembershipChange::RemoveOutOfSet { id, voters } => {
                let current: BTreeSet<NodeId> = membership.voter_ids().collect();
                tracing::error!(
                    node_id = id,
                    ordinal = ordinal_of(*id),
                    declared_replicas = ?view_declared,
                    ?current,
                    after = ?voters,
                    %error,
                    retry_in = ?pause,
                    "scale-down stalled: removing a member beyond the declared replica count did not commit. It \
                     needs a quorum of the current voters and of the voters after it; a departing pod probably \
                     exited before it was removed. Until enough of these voters answer, the cluster cannot \
                     commit: scale the set back up (kubectl scale, petkv scale) so the pods return, then scale \
                     down again"
                );
            }
            _ => tracing::warn!(?change, %error, retry_in = ?pause, "membership change failed"),
        }
        failed = Some((change, tokio::time::Instant::now() + pause, pause));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{node_id, PeerNode};

    fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let nodes: BTreeMap<NodeId, PeerNode> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, PeerNode { ordinal: ordinal_of(*id), ..Default::default() }))
            .collect();
        Membership::new(vec![voters.iter().copied().collect()], nodes).expect("valid membership")
    }

    fn all_matched(ids: &[NodeId], at: u64) -> BTreeMap<NodeId, u64> {
        ids.iter().map(|id| (*id, at)).collect()
    }

    fn next_change(
        m: &Membership,
        matched: &BTreeMap<NodeId, u64>,
        last: u64,
        voters: u32,
    ) -> Option<MembershipChange> {
        declared(m, matched, last, voters, None)
    }

    fn declared(
        m: &Membership,
        matched: &BTreeMap<NodeId, u64>,
        last: u64,
        voters: u32,
        replicas: Option<u32>,
    ) -> Option<MembershipChange> {
        let leader = node_id(0, 1);
        super::next_change(&ClusterView {
            membership: m,
            matched,
            leader,
            leader_last_log: last,
            voters_wanted: voters,
            declared_replicas: replicas,
            unresponsive: &BTreeSet::new(),
        })
    }

    #[test]
    fn caught_up_learner_below_voters_is_promoted() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let m = membership(&[a, b], &[c]);
        let change = next_change(&m, &all_matched(&[a, b, c], 500), 500, 3);
        assert_eq!(
            change,
            Some(MembershipChange::Promote { learner: c, replaces: BTreeSet::new(), voters: [a, b, c].into() })
        );
    }

    #[test]
    fn lagging_learner_waits() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let m = membership(&[a, b], &[c]);
        let mut matched = all_matched(&[a, b], 5_000);
        matched.insert(c, 10);
        assert_eq!(next_change(&m, &matched, 5_000, 3), None);
    }

    #[test]
    fn read_replica_at_or_above_voters_stays_a_learner() {
        let (a, b, c, d) = (node_id(0, 1), node_id(1, 1), node_id(2, 1), node_id(3, 1));
        let m = membership(&[a, b, c], &[d]);
        assert_eq!(next_change(&m, &all_matched(&[a, b, c, d], 9), 9, 3), None);
    }

    #[test]
    fn wiped_voter_rejoining_replaces_its_old_incarnation_once_caught_up() {
        let (a, b, old, new) = (node_id(0, 1), node_id(1, 1), node_id(2, 1), node_id(2, 2));
        let m = membership(&[a, b, old], &[new]);
        let change = next_change(&m, &all_matched(&[a, b, new], 50), 50, 3);
        assert_eq!(
            change,
            Some(MembershipChange::Promote { learner: new, replaces: [old].into(), voters: [a, b, new].into() })
        );
    }

    #[test]
    fn stale_voter_is_not_removed_before_its_replacement_caught_up() {
        let (a, b, old, new) = (node_id(0, 1), node_id(1, 1), node_id(2, 1), node_id(2, 2));
        let m = membership(&[a, b, old], &[new]);
        let mut matched = all_matched(&[a, b], 5_000);
        matched.insert(new, 0);
        assert_eq!(next_change(&m, &matched, 5_000, 3), None);
    }

    #[test]
    fn wiped_read_replica_removes_its_old_incarnation() {
        let (a, b, c, old, new) = (node_id(0, 1), node_id(1, 1), node_id(2, 1), node_id(3, 1), node_id(3, 2));
        let m = membership(&[a, b, c], &[old, new]);
        assert_eq!(
            next_change(&m, &all_matched(&[a, b, c, new], 9), 9, 3),
            Some(MembershipChange::RemoveStale { ids: [old].into() })
        );
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let (a, b, c, d, e) = (node_id(0, 1), node_id(1, 1), node_id(2, 1), node_id(3, 1), node_id(4, 1));
        let m = membership(&[a, b, c], &[d, e]);
        let all = all_matched(&[a, b, c, d, e], 9);
        assert_eq!(
            declared(&m, &all, 9, 3, Some(3)),
            Some(MembershipChange::RemoveOutOfSet { id: e, voters: [a, b, c].into() })
        );
        let m = membership(&[a, b, c], &[]);
        assert_eq!(declared(&m, &all, 9, 3, Some(3)), None, "nothing to do at the declared size");
        assert_eq!(
            declared(&m, &all, 9, 3, Some(1)),
            Some(MembershipChange::RemoveOutOfSet { id: c, voters: [a, b].into() })
        );
    }

    #[test]
    fn a_departing_voter_that_is_already_gone_is_removed_first() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let m = membership(&[a, b, c], &[]);
        // 3 → 1: pod 1 stopped replicating (it exited early), pod 2 still runs.
        let mut matched = all_matched(&[a, c], 20);
        matched.insert(b, 12);
        assert_eq!(
            declared(&m, &matched, 20, 3, Some(1)),
            Some(MembershipChange::RemoveOutOfSet { id: b, voters: [a, c].into() }),
            "{{0,1,2}} → {{0,2}} needs only pods 0 and 2; {{0,1,2}} → {{0,1}} would need the gone pod 1"
        );
        let m = membership(&[a, c], &[]);
        assert_eq!(
            declared(&m, &all_matched(&[a, c], 21), 21, 3, Some(1)),
            Some(MembershipChange::RemoveOutOfSet { id: c, voters: [a].into() })
        );
    }

    #[test]
    fn a_departing_voter_the_leader_no_longer_hears_from_is_removed_first_even_when_caught_up() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let m = membership(&[a, b, c], &[]);
        // Pod 1 acknowledged everything up to now, then exited.
        let matched = all_matched(&[a, b, c], 20);
        let view = ClusterView {
            membership: &m,
            matched: &matched,
            leader: a,
            leader_last_log: 20,
            voters_wanted: 3,
            declared_replicas: Some(1),
            unresponsive: &[b].into(),
        };
        assert_eq!(super::next_change(&view), Some(MembershipChange::RemoveOutOfSet { id: b, voters: [a, c].into() }));
    }

    #[test]
    fn learners_beyond_the_declared_count_are_not_promoted() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let m = membership(&[a, b], &[c]);
        assert_eq!(
            declared(&m, &all_matched(&[a, b, c], 9), 9, 3, Some(2)),
            Some(MembershipChange::RemoveOutOfSet { id: c, voters: [a, b].into() })
        );
    }

    #[test]
    fn a_leader_out_of_the_set_hands_off_before_it_is_removed() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let m = membership(&[a, b, c], &[]);
        let mut matched = all_matched(&[a, b, c], 9);
        matched.insert(b, 8);
        let view = ClusterView {
            membership: &m,
            matched: &matched,
            leader: c,
            leader_last_log: 9,
            voters_wanted: 3,
            declared_replicas: Some(2),
            unresponsive: &BTreeSet::new(),
        };
        assert_eq!(super::next_change(&view), Some(MembershipChange::HandOff { to: a }));
    }

    #[test]
    fn the_last_voter_is_never_removed() {
        let a = node_id(0, 1);
        let m = membership(&[a], &[]);
        let view = ClusterView {
            membership: &m,
            matched: &all_matched(&[a], 1),
            leader: node_id(9, 9),
            leader_last_log: 1,
            voters_wanted: 3,
            declared_replicas: Some(0),
            unresponsive: &BTreeSet::new(),
        };
        assert_eq!(super::next_change(&view), None);
    }

    #[test]
    fn nothing_changes_during_a_joint_configuration() {
        let (a, b, c) = (node_id(0, 1), node_id(1, 1), node_id(2, 1));
        let nodes: BTreeMap<NodeId, PeerNode> = [a, b, c].iter().map(|id| (*id, PeerNode::default())).collect();
        let joint = Membership::new(vec![[a, b].into(), [a, b, c].into()], nodes).expect("valid membership");
        assert_eq!(next_change(&joint, &all_matched(&[a, b, c], 1), 1, 3), None);
    }
}
