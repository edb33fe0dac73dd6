//! Reads of the local state machine: one key or a range, now or at a past revision.
//!
//! A read holds the live read lock for its whole length, so it sees one applied state: the
//! keys and the history at the same revision.

use std::collections::BTreeMap;
use std::io;
use std::iter::Peekable;
use std::ops::{Bound, RangeBounds};

use super::history::{self, RevisionedEvent};
use super::records::{data_key, DATA};
use super::StateMachine;
use crate::store::command::{KeyValue, RevisionError, StoredValue};
use crate::store::decode;
use crate::store::write_back::{Live, Merged};

/// A page of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub kvs: Vec<KeyValue>,
    /// True when keys remain in the range after the last one returned.
    pub more: bool,
}

/// A read's answer and the store revision it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRevision<T> {
    pub value: T,
    pub revision: u64,
}

impl StateMachine {
    /// Reads one key from the local state machine.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<KeyValue>> {
        Ok(self
            .inner
            .live()
            .read::<StoredValue>("value", &data_key(key))?
            .map(|stored| KeyValue { key: key.to_vec(), stored }))
    }

    /// Reads one key as it was at revision `at` (`None`: now).
    pub fn get_at(
        &self,
        key: &[u8],
        at: Option<u64>,
    ) -> io::Result<Result<AtRevision<Option<KeyValue>>, RevisionError>> {
        let page = self.scan_at(Bound::Included(key.to_vec()), Bound::Included(key.to_vec()), 1, at)?;
        Ok(page.map(|p| AtRevision { value: p.value.kvs.into_iter().next(), revision: p.revision }))
    }

    /// Reads up to `limit` keys in `[start, end)` order from the local state machine.
    pub fn scan(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, limit: usize) -> io::Result<ScanPage> {
        scan_live(&self.inner.live(), start, end, limit, None)
    }

    /// Reads up to `limit` keys of a range as they were at revision `at` (`None`: now).
    pub fn scan_at(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
        at: Option<u64>,
    ) -> io::Result<Result<AtRevision<ScanPage>, RevisionError>> {
        let live = self.inner.live();
        let revision = history::revision(&*live)?;
        let past = match at {
            Some(at) if at < revision => {
                if let Err(e) = history::check_readable(&live, at)? {
                    return Ok(Err(e));
                }
                let range = (start.clone(), end.clone());
                Some(history::values_at(&live, at, |k| range.contains(&k.to_vec()))?)
            }
            Some(at) if at > revision => return Ok(Err(RevisionError::Future { requested: at, current: revision })),
            _ => None,
        };
        let page = scan_live(&live, start, end, limit, past)?;
        Ok(Ok(AtRevision { value: page, revision: at.unwrap_or(revision).min(revision) }))
    }

    /// The store's revision: that of the last change applied (0 before the first).
    pub fn revision(&self) -> io::Result<u64> {
        history::revision(&*self.inner.live())
    }

    /// The revision before which the history is dropped (0: nothing dropped), without a
    /// storage read.
    pub fn compacted(&self) -> u64 {
        self.inner.compacted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The changes from revision `from` on, oldest first: whole revisions, about `max_bytes` of
    /// them (at least one revision), or the error that says why they are not kept.
    pub fn events_from(&self, from: u64, max_bytes: usize) -> io::Result<Result<Vec<RevisionedEvent>, RevisionError>> {
        let live = self.inner.live();
        let compacted = history::compacted(&*live)?;
        if from < compacted {
            return Ok(Err(RevisionError::Compacted { requested: from, compacted }));
        }
        Ok(Ok(history::events_from(&live, from.max(1), max_bytes)?))
    }
}

/// Reads up to `limit` keys of `[start, end)`; with `past`, keys it names take its value
/// instead (`None`: absent then), as a read at a past revision needs.
pub(super) fn scan_live(
    live: &Live,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    limit: usize,
    past: Option<BTreeMap<Vec<u8>, Option<StoredValue>>>,
) -> io::Result<ScanPage> {
    let lower = match start {
        Bound::Included(k) => Bound::Included(data_key(&k)),
        Bound::Excluded(k) => Bound::Excluded(data_key(&k)),
        Bound::Unbounded => Bound::Included(vec![DATA]),
    };
    let upper = match end {
        Bound::Included(k) => Bound::Included(data_key(&k)),
        Bound::Excluded(k) => Bound::Excluded(data_key(&k)),
        Bound::Unbounded => Bound::Excluded(vec![DATA + 1]),
    };
    let current = Merged::new(live.layers(&lower, &upper)).map(|item| {
        let (k, v) = item?;
        Ok((k[1..].to_vec(), Some(decode::<StoredValue>("value", &v)?)))
    });
    let mut kvs = Vec::new();
    let mut more = false;
    let past = past.unwrap_or_default();
    for item in Overlaid::new(current, past.into_iter().map(Ok)) {
        let (key, value) = item?;
        let Some(stored) = value else { continue };
        if kvs.len() == limit {
            more = true;
            break;
        }
        kvs.push(KeyValue { key, stored });
    }
    Ok(ScanPage { kvs, more })
}

type Record = (Vec<u8>, Option<StoredValue>);

/// Two key-ordered sources merged into one; on equal keys the `over` record wins.
struct Overlaid<A: Iterator, B: Iterator> {
    under: Peekable<A>,
    over: Peekable<B>,
}

impl<A, B> Overlaid<A, B>
where
    A: Iterator<Item = io::Result<Record>>,
    B: Iterator<Item = io::Result<Record>>,
{
    fn new(under: A, over: B) -> Self {
        Self { under: under.peekable(), over: over.peekable() }
    }
}

impl<A, B> Iterator for Overlaid<A, B>
where
    A: Iterator<Item = io::Result<Record>>,
    B: Iterator<Item = io::Result<Record>>,
{
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.under.peek(), self.over.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) | (Some(_), None) => std::cmp::Ordering::Less,
            (_, Some(Err(_))) | (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => a.cmp(b),
        };
        match order {
            std::cmp::Ordering::Less => self.under.next(),
            std::cmp::Ordering::Greater => self.over.next(),
            std::cmp::Ordering::Equal => {
                self.under.next();
                self.over.next()
            }
        }
    }
}

#[cfg(test)]
mod properties {
    //! Scans with paging against an ordered-map model (proptest).

    use proptest::prelude::*;

    use super::super::test_support::{apply_in_runs, live, put_bytes};
    use super::*;
    use crate::api::validation::Limits;
    use crate::store::command::Command;
    use petkv_client::pb::v1::ScanRequest;

    /// Short keys over a small alphabet (with 0x00 and 0xff, the edges of prefix arithmetic),
    /// so random sets and bounds overlap.
    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0x00u8, b'a', b'b', b'c', 0xff]), 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn paged_scans_return_exactly_the_model_range_once(
            keys in prop::collection::btree_set(small_key().prop_filter("non-empty", |k| !k.is_empty()), 0..24),
            prefix in small_key(),
            start in small_key(),
            end in small_key(),
            use_prefix: bool,
            limit in 0u32..6,
        ) {
            let (_dir, t) = live();
            let cmds: Vec<Command> = keys.iter().map(|k| put_bytes(k.clone(), "v", None, None)).collect();
            apply_in_runs(&t, 1, &cmds, 7);
            let mut req = if use_prefix {
                ScanRequest { prefix: prefix.clone().into(), limit, ..Default::default() }
            } else {
                ScanRequest { start_key: start.clone().into(), end_key: end.clone().into(), limit, ..Default::default() }
            };
            let limits = Limits { max_scan_limit: 5, ..Limits::default() };
            let in_range = |k: &Vec<u8>| {
                if use_prefix {
                    k.starts_with(&prefix)
                } else {
                    *k >= start && (end.is_empty() || *k < end)
                }
            };
            let Ok(first) = limits.scan(&req) else {
                // Refused only for what validation refuses: an empty or inverted range.
                prop_assert!(limit > 5 || (!use_prefix && !end.is_empty() && start >= end));
                return Ok(());
            };
            let mut seen = Vec::new();
            let mut plan = first;
            for _ in 0..=keys.len() {
                let page = scan_live(&t.read().expect("lock"), plan.start.clone(), plan.end.clone(), plan.limit, None).expect("scan");
                prop_assert!(page.kvs.len() <= plan.limit);
                seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
                match (page.more, page.kvs.last()) {
                    (true, Some(last)) => {
                        req.page_token = last.key.clone().into();
                        plan = limits.scan(&req).expect("a returned token continues the same scan");
                    }
                    _ => break,
                }
            }
            let model: Vec<Vec<u8>> = keys.iter().filter(|k| in_range(k)).cloned().collect();
            prop_assert_eq!(seen, model);
        }
    }
}
