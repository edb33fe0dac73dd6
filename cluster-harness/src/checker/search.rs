//! The search for a linearization of one key: Wing & Gong's backtracking with Lowe's
//! memoization, and the refinements for operations with an unknown outcome described in the
//! module documentation.

use std::collections::HashSet;
use std::time::Instant;

use super::bitset::Bitset;
use super::events::{Event, EventList, UnknownList};
use super::linearized::{LinearizedSet, Visited};
use super::model::{Action, KeyOperation, Register};

/// How many search steps pass between looks at the clock.
const STEPS_BETWEEN_CLOCK_CHECKS: u64 = 1024;

/// How a search ended. Operations are positions in the slice given to [`search`].
pub(super) enum SearchResult {
    Linearizable,
    /// There is no linearization.
    Stuck(Stuck),
    /// The search gave up before finding out.
    Exhausted(Limit),
}

/// Where a search that found no linearization got furthest.
pub(super) struct Stuck {
    /// The longest sequence of operations linearized, in order.
    pub linearized: Vec<usize>,
    /// What the register held after them.
    pub register: Register,
    /// The operations with a known outcome that could have come next, none of which could be
    /// placed.
    pub unplaceable: Vec<usize>,
}

/// The limit that made a search give up.
#[derive(Clone, Copy, Debug)]
pub(super) enum Limit {
    Time,
    Memory,
}

/// Searches for a linearization of `operations`, giving up at `deadline`.
pub(super) fn search(operations: &[KeyOperation], deadline: Option<Instant>) -> SearchResult {
    Search::new(operations).run(deadline)
}

/// Where the search is. For each configuration, it first walks the candidates with a known
/// outcome, then those with an unknown outcome.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At this node of the event list.
    Known(usize),
    /// At this node of the list of unknown operations; those invoked after `until_ns`, when the
    /// first operation still to be linearized returned, are not candidates.
    Unknown { node: usize, until_ns: u64 },
}

/// A linearized operation, and what the register held before it, for backtracking.
struct Placement {
    operation: usize,
    register_before: Register,
}

/// The state of one search.
struct Search<'a> {
    operations: &'a [KeyOperation],
    /// The events of the operations with a known outcome not linearized yet.
    events: EventList,
    /// The operations with an unknown outcome not linearized yet.
    unknowns: UnknownList,
    /// The values some compare-and-put with an unknown outcome expects.
    expected_by_unknowns: HashSet<Register>,
    register: Register,
    /// The operations linearized so far, as a set and in order.
    linearized: LinearizedSet,
    placements: Vec<Placement>,
    /// The longest order of operations linearized so far, and the register after it.
    longest: Vec<usize>,
    longest_register: Register,
    visited: Visited,
}

impl<'a> Search<'a> {
    fn new(operations: &'a [KeyOperation]) -> Self {
        let linearized = LinearizedSet::new(operations);
        let expected_by_unknowns = operations
            .iter()
            .filter_map(|operation| match operation.action {
                Action::CompareAndPut { expected, succeeded: None, .. } => Some(expected),
                Action::Write(_) | Action::Read(_) | Action::CompareAndPut { .. } => None,
            })
            .collect();
        Search {
            operations,
            events: EventList::new(operations),
            unknowns: UnknownList::new(operations),
            expected_by_unknowns,
            register: None,
            visited: Visited::new(&linearized),
            linearized,
            placements: Vec::new(),
            longest: Vec::new(),
            longest_register: None,
        }
    }

    fn run(mut self, deadline: Option<Instant>) -> SearchResult {
        let mut cursor = self.start();
        let mut steps: u64 = 0;
        while !self.linearized.all_known() {
            if steps.is_multiple_of(STEPS_BETWEEN_CLOCK_CHECKS)
                && deadline.is_some_and(|deadline| Instant::now() >= deadline)
            {
                return SearchResult::Exhausted(Limit::Time);
            }
            if self.visited.is_full() {
                return SearchResult::Exhausted(Limit::Memory);
            }
            steps += 1;
            let next = match cursor {
                Cursor::Known(node) => self.step_known(node),
                Cursor::Unknown { node, until_ns } => self.step_unknown(node, until_ns),
            };
            cursor = match next {
                Some(cursor) => cursor,
                None => return SearchResult::Stuck(self.stuck()),
            };
        }
        SearchResult::Linearizable
    }

    /// The cursor at the first candidate.
    fn start(&self) -> Cursor {
        Cursor::Known(self.events.first())
    }

    /// Tries the event at `node` and returns where to go next, or `None` if the search has
    /// nothing left to try.
    fn step_known(&mut self, node: usize) -> Option<Cursor> {
        match self.events.event(node) {
            Event::Call(operation) if self.try_linearize(operation) => Some(self.start()),
            Event::Call(_) => Some(Cursor::Known(self.events.after(node))),
            Event::Return(_) if self.unknowns.is_empty() => self.backtrack(),
            Event::Return(operation) => {
                Some(Cursor::Unknown { node: self.unknowns.first(), until_ns: self.returned_ns(operation) })
            }
        }
    }

    /// Tries the unknown operation at `node` and returns where to go next, or `None` if the
    /// search has nothing left to try.
    fn step_unknown(&mut self, node: usize, until_ns: u64) -> Option<Cursor> {
        let candidate = self.unknowns.operation(node).filter(|&operation| self.invoked_ns(operation) <= until_ns);
        let Some(operation) = candidate else { return self.backtrack() };
        let worth_trying = self.unknowns.is_first_of_its_twins(operation) && self.is_needed_next(operation);
        if worth_trying && self.try_linearize(operation) {
            return Some(self.start());
        }
        Some(Cursor::Unknown { node: self.unknowns.after(node), until_ns })
    }

    /// Whether linearizing the unknown `operation` next would let some candidate be linearized
    /// right after it that could not be without it. Placing it anywhere else is pointless: a
    /// linearization that does can be rearranged into one that doesn't, by moving the unknown
    /// operation later or leaving it out.
    fn is_needed_next(&self, operation: usize) -> bool {
        let before = self.register;
        let Some(after) = self.operations[operation].action.apply(before) else { return false };
        let needs_it = |candidate: usize| self.operations[candidate].action.needs_change(before, after);
        after != before && (self.expected_by_unknowns.contains(&after) || self.events.candidates().any(needs_it))
    }

    /// Linearizes `operation` next if the model accepts it and the configuration it leads to is
    /// worth exploring. Returns whether it did.
    fn try_linearize(&mut self, operation: usize) -> bool {
        let Some(register_after) = self.operations[operation].action.apply(self.register) else { return false };
        self.linearized.insert(operation);
        if !self.visited.insert(&self.linearized, register_after) {
            self.linearized.remove(operation);
            return false;
        }
        self.placements.push(Placement { operation, register_before: self.register });
        self.register = register_after;
        if self.linearized.has_known_outcome(operation) {
            self.events.unlink_operation(operation);
        } else {
            self.unknowns.unlink_operation(operation);
        }
        self.remember_if_longest();
        true
    }

    /// Undoes the latest linearization. Returns where to go on from, the candidate after the
    /// undone operation, or `None` if nothing is linearized.
    fn backtrack(&mut self) -> Option<Cursor> {
        let Placement { operation, register_before } = self.placements.pop()?;
        self.linearized.remove(operation);
        self.register = register_before;
        if self.linearized.has_known_outcome(operation) {
            self.events.relink_operation(operation);
            return Some(Cursor::Known(self.events.after_call_of(operation)));
        }
        self.unknowns.relink_operation(operation);
        let until_ns = self.events.first_to_return().map_or(u64::MAX, |first| self.returned_ns(first));
        Some(Cursor::Unknown { node: self.unknowns.after_operation(operation), until_ns })
    }

    fn invoked_ns(&self, operation: usize) -> u64 {
        self.operations[operation].invoked_ns
    }

    /// When `operation`, which has a known outcome, returned.
    fn returned_ns(&self, operation: usize) -> u64 {
        self.operations[operation].returned_ns.unwrap_or(u64::MAX)
    }

    fn remember_if_longest(&mut self) {
        if self.placements.len() > self.longest.len() {
            self.longest = self.placements.iter().map(|placement| placement.operation).collect();
            self.longest_register = self.register;
        }
    }

    fn stuck(self) -> Stuck {
        let mut linearized = Bitset::new(self.operations.len());
        self.longest.iter().for_each(|&operation| linearized.insert(operation));
        let unplaceable = self.events.candidates_after(&linearized);
        Stuck { linearized: self.longest, register: self.longest_register, unplaceable }
    }
}
