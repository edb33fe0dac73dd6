//! Acknowledged writes missing from the final state: a count beside the linearizability
//! verdict, for reports.
//!
//! After the workload stops, every key is read once more ([`crate::workload::final_reads`]).
//! An acknowledged write `W` is *lost* when that final read returns a state that provably
//! came before `W`: the value of a put that had completed before `W` was invoked (every put
//! writes a value of its own, so nothing written later can bring it back), or "absent" when
//! every delete of the key had completed before `W` was invoked (and `W` is a put). A write
//! lost and later overwritten does not show here; the linearizability check finds it when a
//! read saw the gap.

use std::collections::BTreeMap;

use super::{Input, Operation, Outcome, Output};

/// What [`lost_writes`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostWrites {
    /// Puts and deletes the workload saw acknowledged (final reads excluded).
    pub acknowledged: usize,
    /// Acknowledged writes missing from the final state, one line each.
    pub lost: Vec<String>,
    /// Final values that no put ever wrote.
    pub unexplained: Vec<String>,
}

/// Counts the acknowledged writes the final reads (operations of `final_client`) do not show.
pub fn lost_writes(history: &[Operation], final_client: u64) -> LostWrites {
    let mut out = LostWrites::default();
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let done = |op: &Operation| match &op.outcome {
        Outcome::Completed { at_ns, .. } => Some(*at_ns),
        Outcome::Unknown => None,
    };
    for (key, ops) in by_key {
        let name = String::from_utf8_lossy(key);
        let writes: Vec<&Operation> =
            ops.iter().copied().filter(|o| o.client != final_client && !matches!(o.input, Input::Get)).collect();
        out.acknowledged += writes.iter().filter(|w| done(w).is_some()).count();
        // The last final read that got an answer.
        let Some(final_value) = ops
            .iter()
            .filter(|o| o.client == final_client)
            .filter_map(|o| match &o.outcome {
                Outcome::Completed { output: Output::Value(v), .. } => Some(v.clone()),
                _ => None,
            })
            .next_back()
        else {
            continue;
        };
        for w in writes.iter().filter(|w| done(w).is_some()) {
            let before_w = |op: &Operation| done(op).is_some_and(|t| t < w.invoked_ns);
            let lost = match &final_value {
                Some(v) => {
                    let writer = writes.iter().find(|p| matches!(&p.input, Input::Put(x) if x == v));
                    writer.is_some_and(|p| before_w(p))
                }
                None => {
                    matches!(w.input, Input::Put(_))
                        && writes.iter().filter(|d| matches!(d.input, Input::Delete)).all(|d| before_w(d))
                }
            };
            if lost {
                let what = match &w.input {
                    Input::Put(v) => format!("put {}", String::from_utf8_lossy(v)),
                    _ => "delete".to_string(),
                };
                let shown = match &final_value {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None => "absent".into(),
                };
                out.lost.push(format!(
                    "{name}: acknowledged {what} (client {}, invoked at {:.3}s) is missing: the final read saw {shown}",
                    w.client,
                    w.invoked_ns as f64 / 1e9
                ));
            }
        }
        if let Some(v) = &final_value {
            if !writes.iter().any(|p| matches!(&p.input, Input::Put(x) if x == v)) {
                out.unexplained.push(format!("{name}: final value {} was never written", String::from_utf8_lossy(v)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINAL: u64 = u64::MAX;

    fn op(client: u64, input: Input, invoked: u64, done: Option<u64>) -> Operation {
        let output = if matches!(input, Input::Get) { Output::Value(None) } else { Output::Ok };
        Operation {
            client,
            key: b"k".to_vec(),
            input,
            invoked_ns: invoked,
            outcome: match done {
                Some(at_ns) => Outcome::Completed { at_ns, output },
                None => Outcome::Unknown,
            },
            served: None,
        }
    }

    fn read(value: Option<&str>, at: u64) -> Operation {
        Operation {
            client: FINAL,
            key: b"k".to_vec(),
            input: Input::Get,
            invoked_ns: at,
            outcome: Outcome::Completed { at_ns: at + 1, output: Output::Value(value.map(|v| v.as_bytes().to_vec())) },
            served: None,
        }
    }

    fn put(v: &str) -> Input {
        Input::Put(v.as_bytes().to_vec())
    }

    #[test]
    fn a_later_acknowledged_put_missing_from_the_final_state_is_lost() {
        let h = vec![op(1, put("a"), 0, Some(10)), op(2, put("b"), 20, Some(30)), read(Some("a"), 100)];
        let l = lost_writes(&h, FINAL);
        assert_eq!(l.acknowledged, 2);
        assert_eq!(l.lost.len(), 1, "{:?}", l.lost);
        assert!(l.lost[0].contains("put b"));
    }

    #[test]
    fn concurrent_or_unknown_writes_are_not_counted() {
        // b overlaps a: either order is possible.
        let h = vec![op(1, put("a"), 0, Some(30)), op(2, put("b"), 20, Some(40)), read(Some("a"), 100)];
        assert!(lost_writes(&h, FINAL).lost.is_empty());
        // The final value came from an unknown put: it may have taken effect last.
        let h = vec![op(1, put("a"), 0, None), op(2, put("b"), 20, Some(30)), read(Some("a"), 100)];
        assert!(lost_writes(&h, FINAL).lost.is_empty());
        assert_eq!(lost_writes(&h, FINAL).acknowledged, 1);
        // An unknown delete may have taken effect after the put.
        let h = vec![op(1, put("a"), 0, Some(10)), op(2, Input::Delete, 5, None), read(None, 100)];
        assert!(lost_writes(&h, FINAL).lost.is_empty());
    }

    #[test]
    fn a_put_lost_to_absence_is_found() {
        let h = vec![op(1, Input::Delete, 0, Some(5)), op(2, put("a"), 10, Some(20)), read(None, 100)];
        assert_eq!(lost_writes(&h, FINAL).lost.len(), 1);
        // Never deleted, never read back.
        let h = vec![op(2, put("a"), 10, Some(20)), read(None, 100)];
        assert_eq!(lost_writes(&h, FINAL).lost.len(), 1);
        let h = vec![op(2, put("a"), 10, Some(20)), read(Some("a"), 100)];
        assert_eq!(lost_writes(&h, FINAL), LostWrites { acknowledged: 1, ..Default::default() });
        let h = vec![read(Some("zz"), 100)];
        assert_eq!(lost_writes(&h, FINAL).unexplained.len(), 1);
    }
}
