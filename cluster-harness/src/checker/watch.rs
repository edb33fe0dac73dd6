//! Watch streams checked against each other and against the recorded history, the guarantees
//! etcd documents for its watches:
//!
//! - **ordered**: a stream's revisions never go back;
//! - **unique**: no `(revision, key)` is delivered twice on a stream (resumptions included);
//! - **atomic**: all the events of one revision arrive in one response;
//! - **reliable**: no gap: every acknowledged put (and compare-and-put that stored) at a
//!   revision the stream covers is in it, with its value; and every stream from the same start
//!   is the same sequence of events (the streams are on different members);
//! - **explained**: every put event's value was written to that key by some write of the
//!   history (acknowledged at that revision, or of unknown outcome).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Input, Operation, Outcome, Output};

/// One event as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenEvent {
    pub revision: u64,
    pub key: Vec<u8>,
    /// The value put; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// What one watcher received: its responses' events, in order, and how many streams it used.
#[derive(Clone, Debug, Default)]
pub struct WatchLog {
    /// Where it began (the first revision it covers).
    pub from: u64,
    /// The last revision it is known to cover (its last response's).
    pub to: u64,
    pub responses: Vec<Vec<SeenEvent>>,
    pub streams: u64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WatchFindings {
    pub watchers: usize,
    /// Events each watcher received.
    pub events: Vec<usize>,
    /// Streams each watcher opened (more than one: it resumed).
    pub streams: Vec<u64>,
    /// Acknowledged writes the streams had to carry (per watcher, summed).
    pub acknowledged_checked: usize,
    pub failures: Vec<String>,
}

impl WatchFindings {
    pub fn holds(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks `logs` against each other and against `history`.
pub fn check(logs: &[WatchLog], history: &[Operation]) -> WatchFindings {
    let mut f = WatchFindings { watchers: logs.len(), ..Default::default() };
    let acknowledged: Vec<(u64, &[u8], &[u8])> = history
        .iter()
        .filter_map(|op| {
            let value = match (&op.input, &op.outcome) {
                (Input::Put(v), Outcome::Completed { output: Output::Ok, .. }) => v,
                (Input::CompareAndPut { new, .. }, Outcome::Completed { output: Output::Cas(true), .. }) => new,
                _ => return None,
            };
            Some((op.served?.revision, op.key.as_slice(), value.as_slice()))
        })
        .collect();
    let written: BTreeSet<(&[u8], &[u8])> = history
        .iter()
        .filter_map(|op| match &op.input {
            Input::Put(v) | Input::CompareAndPut { new: v, .. } => Some((op.key.as_slice(), v.as_slice())),
            _ => None,
        })
        .collect();
    for (w, log) in logs.iter().enumerate() {
        let name = format!("watcher {w}");
        if let Some(e) = &log.error {
            f.failures.push(format!("{name} stopped: {e}"));
        }
        let events: Vec<&SeenEvent> = log.responses.iter().flatten().collect();
        f.events.push(events.len());
        f.streams.push(log.streams);
        // Ordered and unique.
        let mut seen = BTreeSet::new();
        for pair in events.windows(2) {
            if pair[1].revision < pair[0].revision {
                f.failures.push(format!("{name}: revision {} after {}", pair[1].revision, pair[0].revision));
            }
        }
        for e in &events {
            if !seen.insert((e.revision, e.key.clone())) {
                f.failures.push(format!("{name}: {} at revision {} delivered twice", show(&e.key), e.revision));
            }
        }
        // Atomic: a revision's events in one response.
        let mut response_of: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, response) in log.responses.iter().enumerate() {
            for e in response {
                if let Some(first) = response_of.insert(e.revision, i) {
                    if first != i {
                        f.failures
                            .push(format!("{name}: revision {} split over responses {first} and {i}", e.revision));
                    }
                }
            }
        }
        // Reliable: every acknowledged write it covers is there, with its value.
        let by_revision_key: BTreeMap<(u64, &[u8]), Option<&[u8]>> =
            events.iter().map(|e| ((e.revision, e.key.as_slice()), e.value.as_deref())).collect();
        for (revision, key, value) in &acknowledged {
            if *revision < log.from || *revision > log.to {
                continue;
            }
            f.acknowledged_checked += 1;
            match by_revision_key.get(&(*revision, *key)) {
                Some(Some(v)) if v == value => {}
                other => f.failures.push(format!(
                    "{name}: the acknowledged put of {} to {} at revision {revision} is {}",
                    show(value),
                    show(key),
                    match other {
                        None => "missing".to_string(),
                        Some(None) => "a delete".to_string(),
                        Some(Some(v)) => format!("delivered with {}", show(v)),
                    }
                )),
            }
        }
        // Explained.
        for e in &events {
            if let Some(v) = &e.value {
                if !written.contains(&(e.key.as_slice(), v.as_slice())) {
                    f.failures.push(format!(
                        "{name}: {} = {} at revision {} was never written",
                        show(&e.key),
                        show(v),
                        e.revision
                    ));
                }
            }
        }
    }
    // The streams agree where they overlap.
    if let Some(first) = logs.first() {
        for (w, log) in logs.iter().enumerate().skip(1) {
            let (lo, hi) = (first.from.max(log.from), first.to.min(log.to));
            let part = |l: &WatchLog| -> Vec<SeenEvent> {
                l.responses.iter().flatten().filter(|e| e.revision >= lo && e.revision <= hi).cloned().collect()
            };
            if part(first) != part(log) {
                f.failures.push(format!("watchers 0 and {w} disagree on revisions {lo}..={hi}"));
            }
        }
    }
    f.failures.truncate(50);
    f
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Served;

    fn put(key: &str, value: &str, revision: u64) -> Operation {
        Operation {
            client: 1,
            key: key.into(),
            input: Input::Put(value.into()),
            invoked_ns: 0,
            outcome: Outcome::Completed { at_ns: 1, output: Output::Ok },
            served: Some(Served { node: 1, raft_index: revision, term: 1, revision }),
        }
    }

    fn ev(revision: u64, key: &str, value: Option<&str>) -> SeenEvent {
        SeenEvent { revision, key: key.into(), value: value.map(Into::into) }
    }

    fn log(responses: Vec<Vec<SeenEvent>>) -> WatchLog {
        WatchLog { from: 1, to: 3, responses, streams: 1, error: None }
    }

    #[test]
    fn good_streams_hold_and_each_fault_is_named() {
        let history = [put("a", "1", 1), put("b", "2", 2), put("a", "3", 3)];
        let good = vec![vec![ev(1, "a", Some("1"))], vec![ev(2, "b", Some("2")), ev(3, "a", Some("3"))]];
        assert!(check(&[log(good.clone()), log(good.clone())], &history).holds());
        let missing = vec![vec![ev(1, "a", Some("1")), ev(3, "a", Some("3"))]];
        assert!(check(&[log(missing)], &history).failures[0].contains("at revision 2 is missing"));
        let twice = vec![
            vec![ev(1, "a", Some("1"))],
            vec![ev(1, "a", Some("1")), ev(2, "b", Some("2")), ev(3, "a", Some("3"))],
        ];
        let f = check(&[log(twice)], &history);
        assert!(f.failures.iter().any(|m| m.contains("delivered twice")), "{f:?}");
        let split =
            vec![vec![ev(1, "a", Some("1")), ev(2, "b", Some("2"))], vec![ev(2, "c", None), ev(3, "a", Some("3"))]];
        assert!(check(&[log(split)], &history).failures.iter().any(|m| m.contains("split over")));
        let back = vec![vec![ev(2, "b", Some("2"))], vec![ev(1, "a", Some("1")), ev(3, "a", Some("3"))]];
        assert!(check(&[log(back)], &history).failures.iter().any(|m| m.contains("after")));
        let invented = vec![vec![ev(1, "a", Some("1")), ev(2, "b", Some("2")), ev(3, "a", Some("9"))]];
        assert!(check(&[log(invented)], &history).failures.iter().any(|m| m.contains("never written")));
        let other =
            vec![vec![ev(1, "a", Some("1"))], vec![ev(2, "b", Some("2")), ev(2, "x", None), ev(3, "a", Some("3"))]];
        assert!(check(&[log(good), log(other)], &history).failures.iter().any(|m| m.contains("disagree")));
    }
}
