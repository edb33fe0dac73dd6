//! What the search has linearized so far, and which configurations it has already visited.

use std::collections::HashMap;
use std::mem::size_of;

use super::bitset::Bitset;
use super::model::{KeyOperation, Register};

/// Roughly the most memory the visited configurations may take.
const MAX_VISITED_BYTES: usize = 512 << 20;

/// Where an operation's bit lives in a [`LinearizedSet`]: operations with a known outcome and
/// those with an unknown one are numbered separately.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Known(usize),
    Unknown(usize),
}

/// The set of operations linearized so far, kept as one bitset for the operations with a known
/// outcome and one for those with an unknown outcome, which [`Visited`] treats differently.
pub(super) struct LinearizedSet {
    slots: Vec<Slot>,
    known: Bitset,
    unknown: Bitset,
    known_left: usize,
}

impl LinearizedSet {
    /// The empty set, for the given operations.
    pub(super) fn new(operations: &[KeyOperation]) -> Self {
        let slots = number_slots(operations);
        let known_count = slots.iter().filter(|slot| matches!(slot, Slot::Known(_))).count();
        let unknown_count = slots.len() - known_count;
        LinearizedSet {
            slots,
            known: Bitset::new(known_count),
            unknown: Bitset::new(unknown_count),
            known_left: known_count,
        }
    }

    pub(super) fn insert(&mut self, operation: usize) {
        match self.slots[operation] {
            Slot::Known(bit) => {
                self.known.insert(bit);
                self.known_left -= 1;
            }
            Slot::Unknown(bit) => self.unknown.insert(bit),
        }
    }

    pub(super) fn remove(&mut self, operation: usize) {
        match self.slots[operation] {
            Slot::Known(bit) => {
                self.known.remove(bit);
                self.known_left += 1;
            }
            Slot::Unknown(bit) => self.unknown.remove(bit),
        }
    }

    pub(super) fn has_known_outcome(&self, operation: usize) -> bool {
        matches!(self.slots[operation], Slot::Known(_))
    }

    /// Whether every operation with a known outcome is linearized. The history is then
    /// linearizable: the operations with an unknown outcome left can take effect last, or never.
    pub(super) fn all_known(&self) -> bool {
        self.known_left == 0
    }
}

/// Numbers the operations with a known outcome and those with an unknown one separately.
fn number_slots(operations: &[KeyOperation]) -> Vec<Slot> {
    let (mut known, mut unknown) = (0, 0);
    let next = |counter: &mut usize| {
        *counter += 1;
        *counter - 1
    };
    operations
        .iter()
        .map(|operation| match operation.returned_ns {
            Some(_) => Slot::Known(next(&mut known)),
            None => Slot::Unknown(next(&mut unknown)),
        })
        .collect()
}

/// The configurations the search has entered, a configuration being a set of linearized
/// operations and the register after them.
///
/// Every configuration recorded here has been, or is being, explored, so entering it again is
/// pointless (Lowe). So is entering one that differs from a recorded one only by linearizing
/// more operations with an unknown outcome: whatever could follow it could follow the recorded
/// one, with those operations left out.
pub(super) struct Visited {
    /// For each set of linearized known operations and register, the minimal sets of linearized
    /// unknown operations recorded with them.
    configurations: HashMap<(Bitset, Register), Vec<Bitset>>,
    recorded: usize,
    max_recorded: usize,
}

impl Visited {
    pub(super) fn new(empty: &LinearizedSet) -> Self {
        let entry_bytes = size_of::<((Bitset, Register), Vec<Bitset>)>() + size_of::<u64>();
        let bytes_per_configuration =
            empty.known.heap_bytes() + entry_bytes + empty.unknown.heap_bytes() + size_of::<Bitset>();
        Visited {
            configurations: HashMap::new(),
            recorded: 0,
            max_recorded: MAX_VISITED_BYTES / bytes_per_configuration,
        }
    }

    /// Records the configuration unless a recorded one covers it. Returns whether it was
    /// recorded, that is whether it is worth exploring.
    pub(super) fn insert(&mut self, linearized: &LinearizedSet, register: Register) -> bool {
        let unknown_sets = self.configurations.entry((linearized.known.clone(), register)).or_default();
        if unknown_sets.iter().any(|recorded| recorded.is_subset_of(&linearized.unknown)) {
            return false;
        }
        let before = unknown_sets.len();
        unknown_sets.retain(|recorded| !linearized.unknown.is_subset_of(recorded));
        unknown_sets.push(linearized.unknown.clone());
        self.recorded = self.recorded + unknown_sets.len() - before;
        true
    }

    pub(super) fn is_full(&self) -> bool {
        self.recorded > self.max_recorded
    }
}
