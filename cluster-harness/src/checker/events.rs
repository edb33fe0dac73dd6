//! The operations not linearized yet, as lists the search can take operations out of and put
//! back in constant time.

use std::collections::HashMap;

use super::bitset::Bitset;
use super::model::{interchangeable_writes, KeyOperation, Twins};

/// A doubly linked list of the nodes `1..=len`, in order, from which nodes can be unlinked and
/// then relinked in the reverse order in constant time (Knuth's dancing links). Node 0 is the
/// head and node `len + 1` the end.
struct Links {
    next: Vec<usize>,
    previous: Vec<usize>,
}

/// The node before the first of a [`Links`].
const HEAD: usize = 0;

impl Links {
    fn new(len: usize) -> Self {
        let end = len + 1;
        Links {
            next: (0..=end).map(|node| (node + 1).min(end)).collect(),
            previous: (0..=end).map(|node| node.saturating_sub(1)).collect(),
        }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn after(&self, node: usize) -> usize {
        self.next[node]
    }

    fn is_end(&self, node: usize) -> bool {
        node == self.next.len() - 1
    }

    /// Takes `node` out of the list, leaving its own links as they were so it can be relinked.
    fn unlink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        self.previous[next] = previous;
    }

    fn relink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        self.previous[next] = node;
    }
}

/// A call or return event of the operation at the given position.
#[derive(Clone, Copy, Debug)]
pub(super) enum Event {
    Call(usize),
    Return(usize),
}

/// The call and return events of the operations with a known outcome that are not linearized
/// yet, in time order: when an operation is linearized both its events leave the list, and they
/// come back when the search backtracks. Node `i + 1` holds event `i` of `in_time_order`.
pub(super) struct EventList {
    in_time_order: Vec<Event>,
    links: Links,
    call_nodes: Vec<usize>,
    return_nodes: Vec<usize>,
}

impl EventList {
    pub(super) fn new(operations: &[KeyOperation]) -> Self {
        let in_time_order = events_in_time_order(operations);
        let mut call_nodes = vec![HEAD; operations.len()];
        let mut return_nodes = vec![HEAD; operations.len()];
        for (node, event) in (1..).zip(&in_time_order) {
            match *event {
                Event::Call(operation) => call_nodes[operation] = node,
                Event::Return(operation) => return_nodes[operation] = node,
            }
        }
        EventList { links: Links::new(in_time_order.len()), in_time_order, call_nodes, return_nodes }
    }

    pub(super) fn first(&self) -> usize {
        self.links.first()
    }

    pub(super) fn after(&self, node: usize) -> usize {
        self.links.after(node)
    }

    /// The event at a node other than the head and the end.
    pub(super) fn event(&self, node: usize) -> Event {
        self.in_time_order[node - 1]
    }

    /// The node after the call of `operation`, which must be in the list.
    pub(super) fn after_call_of(&self, operation: usize) -> usize {
        self.links.after(self.call_nodes[operation])
    }

    pub(super) fn unlink_operation(&mut self, operation: usize) {
        self.links.unlink(self.call_nodes[operation]);
        self.links.unlink(self.return_nodes[operation]);
    }

    /// Undoes [`Self::unlink_operation`]; operations must be relinked in the reverse order of
    /// their unlinking.
    pub(super) fn relink_operation(&mut self, operation: usize) {
        self.links.relink(self.return_nodes[operation]);
        self.links.relink(self.call_nodes[operation]);
    }

    /// The operations that may be linearized next: those whose call precedes the first return
    /// still in the list.
    pub(super) fn candidates(&self) -> impl Iterator<Item = usize> + '_ {
        let mut node = self.first();
        std::iter::from_fn(move || match self.links.is_end(node) {
            true => None,
            false => match self.event(node) {
                Event::Call(operation) => {
                    node = self.after(node);
                    Some(operation)
                }
                Event::Return(_) => None,
            },
        })
    }

    /// The operation whose return is the first still in the list.
    pub(super) fn first_to_return(&self) -> Option<usize> {
        let mut node = self.first();
        while !self.links.is_end(node) {
            match self.event(node) {
                Event::Call(_) => node = self.after(node),
                Event::Return(operation) => return Some(operation),
            }
        }
        None
    }

    /// The operations that could come right after those in `linearized`: the others whose call
    /// precedes the first return among them.
    pub(super) fn candidates_after(&self, linearized: &Bitset) -> Vec<usize> {
        let mut candidates = Vec::new();
        for event in &self.in_time_order {
            match *event {
                Event::Call(operation) if !linearized.contains(operation) => candidates.push(operation),
                Event::Return(operation) if !linearized.contains(operation) => break,
                Event::Call(_) | Event::Return(_) => {}
            }
        }
        candidates
    }
}

/// The events of the operations with a known outcome sorted by time, calls before returns at
/// equal times, so that operations whose intervals touch count as concurrent.
fn events_in_time_order(operations: &[KeyOperation]) -> Vec<Event> {
    let mut timed: Vec<(u64, u8, Event)> = Vec::new();
    for (position, operation) in operations.iter().enumerate() {
        if let Some(returned_ns) = operation.returned_ns {
            timed.push((operation.invoked_ns, 0, Event::Call(position)));
            timed.push((returned_ns, 1, Event::Return(position)));
        }
    }
    timed.sort_by_key(|&(time, calls_first, _)| (time, calls_first));
    timed.into_iter().map(|(_, _, event)| event).collect()
}

/// The operations with an unknown outcome that are not linearized yet, in order of invocation.
/// Node `i + 1` holds operation `by_invocation[i]`.
///
/// Of interchangeable unknown writes (see [`interchangeable_writes`]) only the earliest invoked
/// one not linearized yet is worth trying: the linearized ones of each class are always the
/// earliest invoked, so the list counts them per class.
pub(super) struct UnknownList {
    by_invocation: Vec<usize>,
    links: Links,
    nodes: Vec<usize>,
    /// For each operation, its class of interchangeable writes and its rank in the class by
    /// invocation.
    twin_ranks: Vec<Option<(usize, usize)>>,
    /// For each class of interchangeable writes, how many are linearized.
    linearized_twins: Vec<usize>,
}

impl UnknownList {
    pub(super) fn new(operations: &[KeyOperation]) -> Self {
        let mut by_invocation: Vec<usize> =
            (0..operations.len()).filter(|&position| operations[position].returned_ns.is_none()).collect();
        by_invocation.sort_by_key(|&position| operations[position].invoked_ns);
        let mut nodes = vec![HEAD; operations.len()];
        for (node, &operation) in (1..).zip(&by_invocation) {
            nodes[operation] = node;
        }
        let (twin_ranks, classes) = rank_twins(operations, &by_invocation);
        UnknownList {
            links: Links::new(by_invocation.len()),
            by_invocation,
            nodes,
            twin_ranks,
            linearized_twins: vec![0; classes],
        }
    }

    pub(super) fn first(&self) -> usize {
        self.links.first()
    }

    pub(super) fn after(&self, node: usize) -> usize {
        self.links.after(node)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.links.is_end(self.first())
    }

    /// The operation at `node`, `None` at the end.
    pub(super) fn operation(&self, node: usize) -> Option<usize> {
        if self.links.is_end(node) {
            return None;
        }
        node.checked_sub(1).and_then(|index| self.by_invocation.get(index)).copied()
    }

    /// Whether `operation` is worth trying: no interchangeable write invoked before it is still
    /// to be linearized.
    pub(super) fn is_first_of_its_twins(&self, operation: usize) -> bool {
        self.twin_ranks[operation].is_none_or(|(class, rank)| self.linearized_twins[class] == rank)
    }

    /// The node after `operation`, which must be in the list.
    pub(super) fn after_operation(&self, operation: usize) -> usize {
        self.links.after(self.nodes[operation])
    }

    pub(super) fn unlink_operation(&mut self, operation: usize) {
        self.links.unlink(self.nodes[operation]);
        if let Some((class, _)) = self.twin_ranks[operation] {
            self.linearized_twins[class] += 1;
        }
    }

    /// Undoes [`Self::unlink_operation`], in the reverse order of unlinking.
    pub(super) fn relink_operation(&mut self, operation: usize) {
        self.links.relink(self.nodes[operation]);
        if let Some((class, _)) = self.twin_ranks[operation] {
            self.linearized_twins[class] -= 1;
        }
    }
}

/// For each operation, its class of interchangeable writes and its rank in it, given the unknown
/// operations in order of invocation; and how many classes there are.
fn rank_twins(operations: &[KeyOperation], by_invocation: &[usize]) -> (Vec<Option<(usize, usize)>>, usize) {
    let twins = interchangeable_writes(operations);
    let mut classes: HashMap<Twins, (usize, usize)> = HashMap::new();
    let mut ranks = vec![None; operations.len()];
    for &operation in by_invocation {
        if let Some(twin) = twins[operation] {
            let class_count = classes.len();
            let (class, members) = classes.entry(twin).or_insert((class_count, 0));
            ranks[operation] = Some((*class, *members));
            *members += 1;
        }
    }
    (ranks, classes.len())
}
