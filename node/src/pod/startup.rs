//! The start-up decision: the "init container" step of every pod.
//!
//! | volume | a cluster answers | ordinal | action |
//! |---|---|---|---|
//! | has state | — | any | resume from the persisted Raft state; never initialize again |
//! | empty | yes | any | join: get a new node id from the leader, become a learner, catch up |
//! | empty | no (for 1 s, 4 probe rounds in a row) | 0 | bootstrap a one-member cluster (unless the set was bootstrapped before) |
//! | empty | no | 0, marker unreadable | wait and read the marker again (never bootstrap unsure) |
//! | empty | no | > 0 | wait for the primary, with back-off, saying what it waits for |
//!
//! The "set was bootstrapped" marker lives outside the pods' volumes (the harness state dir,
//! or the Kubernetes API), so a wiped `petkv-0` whose peers are all down waits instead of
//! starting a second cluster beside the first.

use std::time::{Duration, Instant};

/// What a node does at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupAction {
    /// The volume has an identity: start Raft from the persisted state.
    Resume,
    /// The volume is empty and a cluster answers: join it under a new node id.
    Join,
    /// The volume is empty, nobody answers, this is ordinal 0 of a set never bootstrapped.
    Bootstrap,
    /// The volume is empty and nobody answers: wait (and probe again).
    Wait(WaitReason),
}

/// Why a node waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// A replica waits for the primary (ordinal 0) to bootstrap the cluster.
    ForPrimary,
    /// Ordinal 0 with an empty volume, but the set was bootstrapped before: the cluster exists
    /// somewhere; starting a new one would split it.
    ForExistingCluster,
    /// Ordinal 0 with an empty volume, and the marker could not be read (for example the
    /// Kubernetes API is unreachable): bootstrapping now might start a second cluster.
    ForMarker,
}

/// What the node knows when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupFacts {
    pub volume_has_identity: bool,
    pub cluster_answers: bool,
    pub ordinal: u32,
    /// Whether the "set was bootstrapped" marker exists; `None` when it could not be read (or
    /// was not read because the decision does not depend on it).
    pub set_was_bootstrapped: Option<bool>,
}

impl StartupFacts {
    /// True when the decision depends on the marker: ordinal 0, empty volume, nobody answers.
    /// Otherwise the marker need not be read.
    pub fn needs_marker(volume_has_identity: bool, cluster_answers: bool, ordinal: u32) -> bool {
        !volume_has_identity && !cluster_answers && ordinal == 0
    }
}

/// The decision table, as a pure function.
pub fn decide(facts: StartupFacts) -> StartupAction {
    if facts.volume_has_identity {
        return StartupAction::Resume;
    }
    if facts.cluster_answers {
        return StartupAction::Join;
    }
    match (facts.ordinal, facts.set_was_bootstrapped) {
        (0, Some(false)) => StartupAction::Bootstrap,
        (0, Some(true)) => StartupAction::Wait(WaitReason::ForExistingCluster),
        (0, None) => StartupAction::Wait(WaitReason::ForMarker),
        _ => StartupAction::Wait(WaitReason::ForPrimary),
    }
}

/// Ordinal 0 bootstraps only after no cluster answered for this long, over at least
/// [`BOOTSTRAP_QUIET_ROUNDS`] probe rounds in a row: never on one failed probe, so a DNS blip
/// or a peer slow for a moment cannot start a second cluster beside a running one.
pub const BOOTSTRAP_QUIET: Duration = Duration::from_secs(1);
/// Fewest probe rounds in a row without an answer before a bootstrap.
pub const BOOTSTRAP_QUIET_ROUNDS: u32 = 4;

/// What one round of start-up probes found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeRound {
    /// A running cluster answered.
    ClusterAnswered,
    /// Names resolve and no cluster answered: evidence that none runs.
    NoCluster,
    /// No cluster answered, but this pod cannot even resolve its own name: no evidence.
    CannotTell,
}

/// How long, and for how many probe rounds in a row, no cluster has answered.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietWindow {
    since: Option<Instant>,
    rounds: u32,
}

impl QuietWindow {
    /// Records one probe round at `now`: any answer starts the window over, and so does a
    /// round that could not tell (name resolution failing: peers that do not resolve may well
    /// run a cluster).
    pub fn observe(&mut self, round: ProbeRound, now: Instant) {
        match round {
            ProbeRound::NoCluster => {
                self.since.get_or_insert(now);
                self.rounds += 1;
            }
            ProbeRound::ClusterAnswered | ProbeRound::CannotTell => *self = Self::default(),
        }
    }

    /// Rounds in a row without an answer.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// True once nobody answered for [`BOOTSTRAP_QUIET`] and [`BOOTSTRAP_QUIET_ROUNDS`] rounds.
    pub fn long_enough(&self, now: Instant) -> bool {
        self.since.is_some_and(|t| now.duration_since(t) >= BOOTSTRAP_QUIET) && self.rounds >= BOOTSTRAP_QUIET_ROUNDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_probe_is_not_enough_to_bootstrap_and_any_answer_starts_over() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = QuietWindow::default();
        assert!(!w.long_enough(at(0)));
        w.observe(ProbeRound::NoCluster, at(0));
        assert!(!w.long_enough(at(5_000)), "one round, however long ago, is one probe");
        for ms in [250, 500, 750] {
            w.observe(ProbeRound::NoCluster, at(ms));
        }
        assert!(!w.long_enough(at(900)), "four rounds but under the quiet period");
        assert!(w.long_enough(at(1_000)));
        // A cluster that answers once (the blip is over) starts the window over.
        w.observe(ProbeRound::ClusterAnswered, at(1_000));
        assert_eq!(w.rounds(), 0);
        assert!(!w.long_enough(at(10_000)));
    }

    #[test]
    fn rounds_while_names_do_not_resolve_are_no_evidence() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = QuietWindow::default();
        // A DNS outage of any length: never long enough.
        for ms in (0..10_000).step_by(250) {
            w.observe(ProbeRound::CannotTell, at(ms));
            assert!(!w.long_enough(at(ms)));
        }
        // Three quiet rounds, then one that cannot tell: the window starts over.
        for ms in [10_000, 10_250, 10_500] {
            w.observe(ProbeRound::NoCluster, at(ms));
        }
        w.observe(ProbeRound::CannotTell, at(10_750));
        w.observe(ProbeRound::NoCluster, at(11_000));
        assert!(!w.long_enough(at(12_000)), "{w:?}");
    }

    fn facts(
        volume_has_identity: bool,
        cluster_answers: bool,
        ordinal: u32,
        set_was_bootstrapped: bool,
    ) -> StartupFacts {
        StartupFacts { volume_has_identity, cluster_answers, ordinal, set_was_bootstrapped: Some(set_was_bootstrapped) }
    }

    #[test]
    fn volume_with_state_resumes_whatever_else_is_true() {
        for answers in [false, true] {
            for ordinal in [0, 1, 4] {
                for marker in [false, true] {
                    assert_eq!(decide(facts(true, answers, ordinal, marker)), StartupAction::Resume);
                }
            }
        }
    }

    #[test]
    fn empty_volume_joins_a_cluster_that_answers_even_as_ordinal_zero() {
        assert_eq!(decide(facts(false, true, 0, true)), StartupAction::Join);
        assert_eq!(decide(facts(false, true, 0, false)), StartupAction::Join);
        assert_eq!(decide(facts(false, true, 3, true)), StartupAction::Join);
    }

    #[test]
    fn first_start_of_ordinal_zero_bootstraps() {
        assert_eq!(decide(facts(false, false, 0, false)), StartupAction::Bootstrap);
    }

    #[test]
    fn wiped_ordinal_zero_of_a_bootstrapped_set_never_starts_a_second_cluster() {
        assert_eq!(decide(facts(false, false, 0, true)), StartupAction::Wait(WaitReason::ForExistingCluster));
    }

    #[test]
    fn ordinal_zero_that_cannot_read_the_marker_waits_instead_of_bootstrapping() {
        let unsure = StartupFacts { set_was_bootstrapped: None, ..facts(false, false, 0, false) };
        assert_eq!(decide(unsure), StartupAction::Wait(WaitReason::ForMarker));
        // The marker does not matter elsewhere, so not reading it changes nothing.
        assert_eq!(
            decide(StartupFacts { set_was_bootstrapped: None, ..facts(false, true, 0, false) }),
            StartupAction::Join
        );
        assert_eq!(
            decide(StartupFacts { set_was_bootstrapped: None, ..facts(false, false, 1, false) }),
            StartupAction::Wait(WaitReason::ForPrimary)
        );
        assert_eq!(
            decide(StartupFacts { set_was_bootstrapped: None, ..facts(true, false, 0, false) }),
            StartupAction::Resume
        );
    }

    #[test]
    fn the_marker_is_read_only_when_the_decision_depends_on_it() {
        assert!(StartupFacts::needs_marker(false, false, 0));
        assert!(!StartupFacts::needs_marker(true, false, 0));
        assert!(!StartupFacts::needs_marker(false, true, 0));
        assert!(!StartupFacts::needs_marker(false, false, 1));
    }

    #[test]
    fn replica_with_empty_volume_waits_for_the_primary() {
        assert_eq!(decide(facts(false, false, 1, false)), StartupAction::Wait(WaitReason::ForPrimary));
        assert_eq!(decide(facts(false, false, 2, true)), StartupAction::Wait(WaitReason::ForPrimary));
    }
}
