//! A fixed-size set of small numbers.

use std::mem::size_of;

/// A set of numbers below the capacity it was made with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Bitset(Box<[u64]>);

impl Bitset {
    pub(super) fn new(capacity: usize) -> Self {
        Bitset(vec![0; capacity.div_ceil(64)].into_boxed_slice())
    }

    pub(super) fn insert(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    pub(super) fn remove(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    pub(super) fn contains(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    pub(super) fn is_subset_of(&self, other: &Bitset) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(mine, theirs)| mine & !theirs == 0)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.0.len() * size_of::<u64>()
    }
}
