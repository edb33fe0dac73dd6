//! The register model, and one key's history in the form the search works on.

use std::collections::{HashMap, HashSet};

use super::{HistoryError, Input, Operation, Outcome, Output};

/// A value of one key's history as a number: equal numbers stand for equal byte strings.
pub(super) type ValueId = usize;

/// What the register holds: a value, or `None` when the key is absent.
pub(super) type Register = Option<ValueId>;

/// What an operation does to the register and what it saw, with values replaced by numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// A put (`Some`) or a delete (`None`), whether or not its outcome is known.
    Write(Register),
    /// A completed get that returned this. Gets with an unknown outcome are never recorded.
    Read(Register),
    /// A compare-and-put; `succeeded` is `None` when its outcome is unknown.
    CompareAndPut { expected: Register, new: ValueId, succeeded: Option<bool> },
}

impl Action {
    /// Applies the action at its linearization point, when the register holds `register`.
    /// Returns what the register holds afterwards, or `None` if the output the client saw is
    /// impossible from that state.
    pub(super) fn apply(self, register: Register) -> Option<Register> {
        match self {
            Action::Write(value) => Some(value),
            Action::Read(seen) => (seen == register).then_some(register),
            Action::CompareAndPut { expected, new, succeeded } => {
                let stores = register == expected;
                if succeeded.is_some_and(|succeeded| succeeded != stores) {
                    return None;
                }
                Some(if stores { Some(new) } else { register })
            }
        }
    }

    /// Whether this action, taking place right after a write changed the register from `before`
    /// to `after`, needed that write: it would be impossible without it, or, for a
    /// compare-and-put with an unknown outcome, it stores only thanks to it.
    pub(super) fn needs_change(self, before: Register, after: Register) -> bool {
        match self {
            Action::CompareAndPut { expected, succeeded: None, .. } => expected == after && expected != before,
            Action::Write(_) | Action::Read(_) | Action::CompareAndPut { .. } => {
                self.apply(before).is_none() && self.apply(after).is_some()
            }
        }
    }

    /// What the register may hold after this action if it may change it: `None` for reads and
    /// for compare-and-puts known to have failed.
    fn may_write(self) -> Option<Register> {
        match self {
            Action::Write(value) => Some(value),
            Action::CompareAndPut { new, succeeded: Some(true) | None, .. } => Some(Some(new)),
            Action::Read(_) | Action::CompareAndPut { succeeded: Some(false), .. } => None,
        }
    }

    /// The value this action's output refers to: what a get returned or what a compare-and-put
    /// expected.
    fn mentions(self) -> Option<Register> {
        match self {
            Action::Write(_) => None,
            Action::Read(seen) => Some(seen),
            Action::CompareAndPut { expected, .. } => Some(expected),
        }
    }
}

/// An operation of one key, ready for the search.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyOperation {
    /// Its index in the whole history.
    pub history_index: usize,
    pub invoked_ns: u64,
    /// `None` when its outcome is unknown: it returns at +infinity.
    pub returned_ns: Option<u64>,
    pub action: Action,
}

/// What makes unknown writes interchangeable (see [`interchangeable_writes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Twins {
    /// Puts or deletes with an unknown outcome that write this.
    SameValue(Register),
    /// Puts with an unknown outcome whose values nothing else writes or mentions.
    Unmentioned,
}

/// For each operation, the class of interchangeable unknown writes it belongs to, if any.
///
/// Puts and deletes with an unknown outcome are interchangeable when they write the same value,
/// or when each writes a value that no other operation writes and no get or compare-and-put
/// mentions: in a linearization, exchanging two of them that were both invoked before the first
/// one's place gives a linearization too, since no operation can tell their values apart.
pub(super) fn interchangeable_writes(operations: &[KeyOperation]) -> Vec<Option<Twins>> {
    let mentioned: HashSet<Register> = operations.iter().filter_map(|operation| operation.action.mentions()).collect();
    let mut writers: HashMap<Register, usize> = HashMap::new();
    for value in operations.iter().filter_map(|operation| operation.action.may_write()) {
        *writers.entry(value).or_default() += 1;
    }
    let is_unmentioned =
        |value: Register| value.is_some() && !mentioned.contains(&value) && writers.get(&value) == Some(&1);
    operations
        .iter()
        .map(|operation| match (operation.returned_ns, operation.action) {
            (None, Action::Write(value)) if is_unmentioned(value) => Some(Twins::Unmentioned),
            (None, Action::Write(value)) => Some(Twins::SameValue(value)),
            _ => None,
        })
        .collect()
}

/// The operations of one key, and the values they mention.
#[derive(Default)]
pub(super) struct KeyHistory<'h> {
    /// How many operations of the history are on this key, including those the search skips.
    pub recorded: usize,
    /// The operations the search must linearize.
    pub operations: Vec<KeyOperation>,
    pub values: Values<'h>,
}

impl<'h> KeyHistory<'h> {
    /// Adds the history's operation `index`, after checking that it is well-formed.
    pub(super) fn record(&mut self, index: usize, operation: &'h Operation) -> Result<(), HistoryError> {
        self.recorded += 1;
        let returned_ns = returned_ns(index, operation)?;
        if let Some(action) = self.action(index, operation)? {
            let invoked_ns = operation.invoked_ns;
            self.operations.push(KeyOperation { history_index: index, invoked_ns, returned_ns, action });
        }
        Ok(())
    }

    /// The operation's action, or `None` for a get with an unknown outcome, which constrains
    /// nothing and changes nothing.
    fn action(&mut self, index: usize, operation: &'h Operation) -> Result<Option<Action>, HistoryError> {
        let output = match &operation.outcome {
            Outcome::Completed { output, .. } => Some(output),
            Outcome::Unknown => None,
        };
        let values = &mut self.values;
        let action = match (&operation.input, output) {
            (Input::Get, None) => return Ok(None),
            (Input::Get, Some(Output::Value(seen))) => Action::Read(values.register(seen.as_deref())),
            (Input::Put(value), None | Some(Output::Ok)) => Action::Write(Some(values.id(value))),
            (Input::Delete, None | Some(Output::Ok)) => Action::Write(None),
            (Input::CompareAndPut { expected, new }, None) => values.compare_and_put(expected, new, None),
            (Input::CompareAndPut { expected, new }, Some(Output::Cas(succeeded))) => {
                values.compare_and_put(expected, new, Some(*succeeded))
            }
            (input, Some(output)) => {
                return Err(HistoryError::OutputDoesNotFitInput { index, input: input.kind(), output: output.kind() })
            }
        };
        Ok(Some(action))
    }

    /// The history indices of the operations at `positions` in [`Self::operations`].
    pub(super) fn history_indices(&self, positions: &[usize]) -> Vec<usize> {
        positions.iter().filter_map(|&position| self.operations.get(position)).map(|op| op.history_index).collect()
    }
}

/// When the operation returned, `None` for never, after checking it did not return before it
/// was invoked.
fn returned_ns(index: usize, operation: &Operation) -> Result<Option<u64>, HistoryError> {
    match operation.outcome {
        Outcome::Unknown => Ok(None),
        Outcome::Completed { at_ns, .. } if at_ns < operation.invoked_ns => {
            Err(HistoryError::CompletedBeforeInvoked { index, invoked_ns: operation.invoked_ns, completed_ns: at_ns })
        }
        Outcome::Completed { at_ns, .. } => Ok(Some(at_ns)),
    }
}

/// The distinct values of one key's history, numbered in order of first appearance.
#[derive(Default)]
pub(super) struct Values<'h> {
    ids: HashMap<&'h [u8], ValueId>,
    bytes: Vec<&'h [u8]>,
}

impl<'h> Values<'h> {
    fn id(&mut self, value: &'h [u8]) -> ValueId {
        let bytes = &mut self.bytes;
        *self.ids.entry(value).or_insert_with(|| {
            bytes.push(value);
            bytes.len() - 1
        })
    }

    fn register(&mut self, value: Option<&'h [u8]>) -> Register {
        value.map(|value| self.id(value))
    }

    fn compare_and_put(&mut self, expected: &'h Option<Vec<u8>>, new: &'h [u8], succeeded: Option<bool>) -> Action {
        Action::CompareAndPut { expected: self.register(expected.as_deref()), new: self.id(new), succeeded }
    }

    /// The bytes the register holds.
    pub(super) fn bytes_of(&self, register: Register) -> Option<Vec<u8>> {
        register.and_then(|id| self.bytes.get(id)).map(|bytes| bytes.to_vec())
    }
}
