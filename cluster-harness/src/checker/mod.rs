//! A linearizability checker for key-value histories.
//!
//! A history is what the clients saw while the cluster ran: for every operation, which client
//! issued it, on which key, what it asked for, when it was invoked, and when it completed and with
//! what result. The history is *linearizable* if every operation can be given one instant between
//! its invocation and its completion, its linearization point, such that applying the operations
//! one at a time in the order of those points to a single copy of the data produces exactly the
//! outputs the clients saw. That is petkv's promise: whatever nodes crash and whatever the network
//! does, the store behaves like one copy of the data.
//!
//! # The model
//!
//! Every key is a register that holds a value or nothing (the key is absent); it starts absent.
//! A put makes it hold its value, a delete makes it absent, and a get returns what it holds. A
//! compare-and-put succeeds if and only if the register holds exactly what it expected (absent
//! included), in which case it stores its new value; when it fails the register is unchanged.
//!
//! # Keys are checked independently
//!
//! Linearizability is local (Herlihy & Wing; Horn & Kroening call this P-compositionality): a
//! history is linearizable if and only if the subhistory of each key is. [`check`] therefore splits
//! the history by key and searches each key on its own. Many small searches are far cheaper than
//! one large one, and a violation is pinned to the key where it happened.
//!
//! # The search
//!
//! The search is Wing & Gong's, with Lowe's memoization, as in Anish Athalye's Porcupine. Every
//! operation becomes a call event and a return event, and all events are sorted by time into one
//! list. The operations that may be linearized next are those whose call comes before the first
//! return still in the list: an operation cannot be placed after one that had already completed
//! when it was invoked. The search walks these candidates in order and tries each against the
//! model. If the model accepts the candidate's output in the current state, the candidate is
//! linearized: both its events leave the list, the register takes its new value, and the walk
//! starts again from the head of the list. If the walk reaches a return event instead, the
//! operation that event belongs to cannot be placed before it completed, so the search
//! backtracks: it puts the most recently linearized operation back, restores the register, and
//! tries the candidate after that one. The history is linearizable when the list becomes empty,
//! and not linearizable when there is nothing left to backtrack.
//!
//! Lowe's observation makes this practical: two paths that linearized the same set of operations
//! and left the register holding the same value have the same future. The search remembers every
//! (set of linearized operations, register) pair it reaches, the set as a bitset, and never enters
//! a pair twice, so its cost is bounded by the number of distinct pairs rather than the number of
//! orders. Taking an operation's two events out of the list and putting them back when
//! backtracking are constant-time unlinking and relinking in a doubly linked list (Knuth's
//! dancing links). Values are replaced by small numbers before the search so that a register
//! state is cheap to copy, compare and hash.
//!
//! # Operations with an unknown outcome
//!
//! A client that timed out does not know whether its operation took effect. As in Porcupine and
//! Jepsen, such an operation is recorded with [`Outcome::Unknown`]: its return is at +infinity and
//! its output is unconstrained. It may be linearized anywhere after its invocation, or not at all,
//! which is the same as last. Left as it is, every unknown operation is a candidate from its
//! invocation to the end of the search, and the search would try it at every step and remember
//! configurations for each subset of them it has placed. The search is therefore refined, each
//! refinement keeping the verdict exact:
//!
//! - Unknown gets are dropped: they change nothing and, with no output, constrain nothing.
//! - The history is linearizable as soon as every operation with a known outcome is linearized;
//!   unknown operations left over never took effect. Unknown operations are kept in a list of
//!   their own, apart from the events, so walking the candidates does not step over them.
//! - At each step the candidates with a known outcome are tried before the unknown ones.
//! - An unknown operation is only placed where it is needed: when some candidate could be
//!   linearized right after it and not without it (a get returning the value it writes, a
//!   compare-and-put that failed because the register held what it expected, and so on). Any
//!   linearization can be rearranged into one of that shape by moving unknown operations later or
//!   leaving them out.
//! - Unknown puts and deletes that write the same value, or each a value that nothing else writes
//!   or mentions, are interchangeable: of those already invoked, only the earliest not yet placed
//!   is tried.
//! - A configuration is not entered if a remembered one has the same register, the same known
//!   operations linearized and a subset of the unknown ones: everything that could follow it could
//!   follow the remembered one, with the extra unknown operations left out.
//!
//! //! Operations known not to have happened, such as requests rejected before they were sent or
//! answered with an error that guarantees no effect, must simply be left out of the history: the
//! checker would otherwise require them to have taken effect. An operation that failed in a way
//! that might have applied it must be recorded as [`Outcome::Unknown`], never left out.
//!
//! # Time
//!
//! Times are nanoseconds on any clock the whole history shares, such as the harness's monotonic
//! clock. Two operations whose intervals touch, one completing at the very nanosecond the other is
//! invoked, count as concurrent (calls sort before returns at equal times), which errs on the side
//! of accepting the history.
//!
//! # Budget
//!
//! The search is exponential in the worst case. A linearizable history is usually checked
//! quickly, since the search finds a linearization with little backtracking. A violation makes it
//! rule out every alternative first, which is cheap when few operations are concurrent but grows
//! fast with the number of unknown operations on the key before the violation; keeping each key's
//! history to a few hundred operations keeps it cheap. [`check`] takes a time budget for the whole
//! history: a key whose search has not finished when the budget runs out, and every key after it,
//! is reported [`Verdict::Inconclusive`] rather than hanging the test. The memoization cache has a
//! size limit that bounds memory use in the same way.
//!
//! # Explanations
//!
//! For a key that is not linearizable, the report gives the longest sequence of operations the
//! search managed to linearize, what the register held after it, and the operations that were the
//! candidates to come next, none of which could be placed. The culprit, a stale read for
//! instance, is usually among those candidates; but the prefix is only the longest the search
//! found, and the choice that really went wrong may lie inside it.
//!
//! # Layout
//!
//! - `model`: the register, and one key's operations in the form the search works on.
//! - `events`: the operations not linearized yet, as linked lists in time order.
//! - `linearized`: the set of linearized operations and the configurations already visited.
//! - `search`: the search itself.
//! - `explain`: descriptions of operations, reports and violations.
//! - `lost`: acknowledged writes missing from the final reads, counted for reports.

mod bitset;
mod events;
mod explain;
mod linearized;
mod lost;
mod model;
mod search;
#[cfg(test)]
mod tests;
pub mod watch;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use lost::{lost_writes, LostWrites};
use model::KeyHistory;
use search::{Limit, SearchResult};

/// One operation as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it. Used only in explanations: each client's operations are
    /// expected not to overlap, but nothing depends on it.
    pub client: u64,
    /// The key it applies to.
    pub key: Vec<u8>,
    /// What the client asked for.
    pub input: Input,
    /// When the client sent the request, in nanoseconds on the history's clock.
    pub invoked_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Which node answered, at which Raft index and term (from the reply's header), when the
    /// client got an answer. Not used by the check; explanations show it, so a violation names
    /// the node and the state it answered from.
    pub served: Option<Served>,
}

/// Where an answer came from: a reply header's `served_by`, `raft_index`, `term` and
/// `revision` (a write's own revision when it changed a key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    pub node: u64,
    pub raft_index: u64,
    pub term: u64,
    pub revision: u64,
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Store a value. Output: [`Output::Ok`].
    Put(Vec<u8>),
    /// Make the key absent. Output: [`Output::Ok`].
    Delete,
    /// Read the value. Output: [`Output::Value`], `None` if the key is absent.
    Get,
    /// Store `new` if and only if the key holds `expected` (`None`: is absent).
    /// Output: [`Output::Cas`], whether it stored `new`.
    CompareAndPut { expected: Option<Vec<u8>>, new: Vec<u8> },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client got an answer at `at_ns`.
    Completed { at_ns: u64, output: Output },
    /// The client gave up (a timeout, a dropped connection): the operation may or may not have
    /// taken effect, at any time after its invocation.
    Unknown,
}

/// The answer to an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A put or delete took effect.
    Ok,
    /// What a get read: `None` if the key was absent.
    Value(Option<Vec<u8>>),
    /// Whether a compare-and-put stored its new value.
    Cas(bool),
}

/// The result of checking a history or one key of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The budget ran out (in time or memory) before the search finished.
    Inconclusive,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Not linearizable if any key is not; otherwise inconclusive if any key is; otherwise
    /// linearizable.
    pub verdict: Verdict,
    /// One report per key, ordered by key.
    pub keys: Vec<KeyReport>,
}

/// The result of checking one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    pub key: Vec<u8>,
    /// How many operations the history has on this key.
    pub operations: usize,
    pub verdict: Verdict,
    /// Why the key is not linearizable, or why the check was inconclusive, for people.
    pub explanation: Option<String>,
    /// For a key that is not linearizable: where the search got stuck, for programs.
    pub violation: Option<Violation>,
}

/// Where the search for a linearization of one key got stuck. Operations are given as indices
/// into the history passed to [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The longest sequence of operations the search could linearize, in linearization order.
    /// Operations with an unknown outcome appear only where the search placed them.
    pub linearized: Vec<usize>,
    /// What the register held after `linearized`.
    pub register: Option<Vec<u8>>,
    /// The operations with a known outcome that could have come next, none of which could be
    /// placed, in invocation order.
    pub unplaceable: Vec<usize>,
}

/// A history that cannot have been recorded correctly. These are bugs in the recording, not in
/// the store, so they are errors rather than verdicts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("operation #{index} completed at {completed_ns} ns, before it was invoked at {invoked_ns} ns")]
    CompletedBeforeInvoked { index: usize, invoked_ns: u64, completed_ns: u64 },
    #[error("operation #{index} is a {input} but its output is {output}")]
    OutputDoesNotFitInput { index: usize, input: &'static str, output: &'static str },
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// The report for `key`, if the history has operations on it.
    pub fn key(&self, key: &[u8]) -> Option<&KeyReport> {
        self.keys.iter().find(|report| report.key == key)
    }
}

/// Checks whether `history` is linearizable, spending at most about `budget` searching.
///
/// The order of `history` does not matter. Errors only if the history is malformed: an
/// operation that completed before it was invoked, or an output of the wrong kind for its input.
pub fn check(history: &[Operation], budget: Duration) -> Result<Report, HistoryError> {
    let deadline = Instant::now().checked_add(budget);
    let keys: Vec<KeyReport> = split_by_key(history)?
        .into_iter()
        .map(|(key, key_history)| check_key(history, key, key_history, deadline))
        .collect();
    Ok(Report { verdict: overall_verdict(&keys), keys })
}

/// Splits the history into one [`KeyHistory`] per key, validating every operation.
fn split_by_key(history: &[Operation]) -> Result<BTreeMap<&[u8], KeyHistory<'_>>, HistoryError> {
    let mut keys: BTreeMap<&[u8], KeyHistory<'_>> = BTreeMap::new();
    for (index, operation) in history.iter().enumerate() {
        keys.entry(&operation.key).or_default().record(index, operation)?;
    }
    Ok(keys)
}

/// Searches for a linearization of one key and turns the result into its report.
fn check_key(history: &[Operation], key: &[u8], key_history: KeyHistory<'_>, deadline: Option<Instant>) -> KeyReport {
    let report = |verdict, explanation, violation| KeyReport {
        key: key.to_vec(),
        operations: key_history.recorded,
        verdict,
        explanation,
        violation,
    };
    match search::search(&key_history.operations, deadline) {
        SearchResult::Linearizable => report(Verdict::Linearizable, None, None),
        SearchResult::Exhausted(limit) => report(Verdict::Inconclusive, Some(describe_limit(limit)), None),
        SearchResult::Stuck(stuck) => {
            let violation = Violation {
                linearized: key_history.history_indices(&stuck.linearized),
                register: key_history.values.bytes_of(stuck.register),
                unplaceable: key_history.history_indices(&stuck.unplaceable),
            };
            let explanation = explain::violation(history, &violation);
            report(Verdict::NotLinearizable, Some(explanation), Some(violation))
        }
    }
}

fn describe_limit(limit: Limit) -> String {
    match limit {
        Limit::Time => "the time budget ran out before the search finished".to_string(),
        Limit::Memory => "the memoization cache reached its size limit before the search finished".to_string(),
    }
}

fn overall_verdict(keys: &[KeyReport]) -> Verdict {
    let any = |verdict| keys.iter().any(|key| key.verdict == verdict);
    if any(Verdict::NotLinearizable) {
        Verdict::NotLinearizable
    } else if any(Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Linearizable
    }
}
