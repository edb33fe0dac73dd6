//! `restore`: is the restored state the state of the backup's point in the recorded history?
//!
//! The backup was taken while the workload wrote: the call began at `start_ns` and returned at
//! `end_ns` (on the workload's clock) with the store revision `cut` of the state it holds. The
//! store orders every write that changes a key by its revision (in log order), and every
//! acknowledged write's reply names it (the reply header's `revision`,
//! [`crate::checker::Served`]; a delete of an absent key changes nothing and names the revision
//! it followed). The restored state must be **the state after exactly the writes at a revision
//! ≤ `cut`**, and that prefix of the history must
//!
//! - include every write acknowledged before the backup began (completed before `start_ns`), and
//! - include no write invoked after the backup returned (invoked after `end_ns`).
//!
//! Writes acknowledged while the call ran may be in it or not, and so may writes whose outcome
//! the client never learned (they have no revision; an unknown write can explain a value only if
//! it was invoked before the backup returned). [`check`] verifies this from the history and the
//! restored keys (value and mod revision, which a restore keeps):
//!
//! 1. the cut lies inside the call: no write acknowledged before it began has a revision above
//!    `cut`, no acknowledged write invoked after it returned has a revision at or below `cut`;
//! 2. per key, the restored value is the one the last write at or below `cut` left: a restored
//!    `(value, mod revision)` was written by the put of that value at exactly that revision (or
//!    by a put of unknown outcome invoked before the backup returned), no acknowledged write of
//!    the key lies between its mod revision and `cut`, and the mod revision is `≤ cut`; an absent key's last
//!    acknowledged write at or below `cut` is a delete (or an unknown delete may have followed
//!    it); no key the workload never wrote appears;
//! 3. lost: each acknowledged-before-the-backup write that the restored state predates.
//!
//! Across keys this is one prefix (one revision for all keys), which per-key linearizability
//! cannot show. The experiment also checks it per key in time alone: the restored state is
//! appended to the history as a read of every key over `[start_ns, end_ns]`, which must be
//! linearizable ([`restored_as_reads`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checker::{Input, Operation, Outcome, Output};

/// A key's restored value and mod revision.
pub type RestoredState = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// The backup call on the workload's clock, and the store revision of the state it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackupPoint {
    pub start_ns: u64,
    pub end_ns: u64,
    pub cut: u64,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePoint {
    /// Writes acknowledged before the backup began: the restored state must contain them.
    pub acknowledged_before: usize,
    /// Writes acknowledged that overlapped the backup call: in it or not…
    pub acknowledged_during: usize,
    /// …and how many of them are (committed at an index ≤ the cut).
    pub during_included: usize,
    /// Acknowledged writes invoked after the backup returned: the restored state must not
    /// contain them.
    pub acknowledged_after: usize,
    /// Writes whose outcome is unknown (no index to place them by).
    pub unknown: usize,
    /// Keys in the restored state.
    pub restored_keys: usize,
    /// Acknowledged-before-the-backup writes the restored state predates, one line each.
    pub lost: Vec<String>,
    /// Every other way the restored state is not the state at the backup's point.
    pub failures: Vec<String>,
}

impl RestorePoint {
    pub fn holds(&self) -> bool {
        self.lost.is_empty() && self.failures.is_empty()
    }
}

/// One write of the history, as [`check`] sees it.
struct Write<'a> {
    op: &'a Operation,
    /// `Some(value)` for a put (or a compare-and-put that stored, or may have stored, `value`),
    /// `None` for a delete.
    put: Option<&'a [u8]>,
    /// The revision of an acknowledged write; `None` when the outcome is unknown.
    index: Option<u64>,
}

impl Write<'_> {
    fn describe(&self) -> String {
        let what = match self.put {
            Some(v) => format!("put {}", String::from_utf8_lossy(v)),
            None => "delete".to_string(),
        };
        let at = match self.index {
            Some(i) => format!("acknowledged at revision {i}"),
            None => "outcome unknown".to_string(),
        };
        format!("{what} (client {}, invoked at {:.3}s, {at})", self.op.client, self.op.invoked_ns as f64 / 1e9)
    }
}

/// The writes of `history`: acknowledged ones with their index, unknown ones without; compare-
/// and-puts that did not store, gets, and acknowledged writes without a reply header (counted
/// in `failures`: they cannot be placed) are left out.
fn writes<'a>(history: &'a [Operation], failures: &mut Vec<String>) -> Vec<Write<'a>> {
    let mut out = Vec::new();
    for op in history {
        let put = match (&op.input, &op.outcome) {
            (Input::Get, _) => continue,
            (Input::Put(v), _) => Some(v.as_slice()),
            (Input::Delete, _) => None,
            (Input::CompareAndPut { new, .. }, Outcome::Completed { output: Output::Cas(true), .. })
            | (Input::CompareAndPut { new, .. }, Outcome::Unknown) => Some(new.as_slice()),
            (Input::CompareAndPut { .. }, _) => continue,
        };
        let index = match (&op.outcome, &op.served) {
            (Outcome::Unknown, _) => None,
            (Outcome::Completed { .. }, Some(served)) => Some(served.revision),
            (Outcome::Completed { .. }, None) => {
                failures.push(format!(
                    "{}: an acknowledged write (client {}, invoked at {:.3}s) has no reply header to place it by",
                    String::from_utf8_lossy(&op.key),
                    op.client,
                    op.invoked_ns as f64 / 1e9
                ));
                continue;
            }
        };
        out.push(Write { op, put, index });
    }
    out
}

fn completed_at(op: &Operation) -> Option<u64> {
    match &op.outcome {
        Outcome::Completed { at_ns, .. } => Some(*at_ns),
        Outcome::Unknown => None,
    }
}

/// Checks `restored` against `history` and the backup's `point` (see the module doc).
pub fn check(history: &[Operation], point: BackupPoint, restored: &RestoredState) -> RestorePoint {
    let mut out = RestorePoint { restored_keys: restored.len(), ..Default::default() };
    let all = writes(history, &mut out.failures);
    let cut = point.cut;

    // 1. The cut lies inside the backup call.
    for w in &all {
        let Some(index) = w.index else {
            out.unknown += 1;
            continue;
        };
        let done = completed_at(w.op).unwrap_or(u64::MAX);
        let key = String::from_utf8_lossy(&w.op.key);
        if done < point.start_ns {
            out.acknowledged_before += 1;
            if index > cut {
                out.failures.push(format!(
                    "{key}: {} was acknowledged before the backup began, but the backup's revision is {cut}",
                    w.describe()
                ));
            }
        } else if w.op.invoked_ns > point.end_ns {
            out.acknowledged_after += 1;
            if index <= cut {
                out.failures.push(format!(
                    "{key}: {} was invoked after the backup returned, yet lies at or below the backup's revision {cut}",
                    w.describe()
                ));
            }
        } else {
            out.acknowledged_during += 1;
            out.during_included += usize::from(index <= cut);
        }
    }

    // 2. Per key, the state the last write at or below the cut left.
    let mut by_key: BTreeMap<&[u8], Vec<&Write>> = BTreeMap::new();
    for w in &all {
        by_key.entry(w.op.key.as_slice()).or_default().push(w);
    }
    for (key, (value, _)) in restored {
        if !by_key.contains_key(key.as_slice()) {
            out.failures.push(format!(
                "{}: restored with value {} but the workload never wrote this key",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ));
        }
    }
    for (key, ws) in &by_key {
        let name = String::from_utf8_lossy(key);
        // The last acknowledged write at or below the cut, by index.
        let last = ws.iter().filter(|w| w.index.is_some_and(|i| i <= cut)).max_by_key(|w| w.index);
        let unknown_delete_possible =
            ws.iter().any(|w| w.index.is_none() && w.put.is_none() && w.op.invoked_ns <= point.end_ns);
        match restored.get(*key) {
            Some((value, m)) => {
                let shown = String::from_utf8_lossy(value);
                if *m > cut {
                    out.failures.push(format!(
                        "{name}: restored with mod revision {m}, above the backup's revision {cut} (value {shown})"
                    ));
                }
                let Some(writer) = ws.iter().find(|w| w.put == Some(value.as_slice())) else {
                    out.failures.push(format!("{name}: restored value {shown} was never written"));
                    continue;
                };
                match writer.index {
                    Some(i) if i != *m => out.failures.push(format!(
                        "{name}: restored value {shown} with mod revision {m}, but it was written by {}",
                        writer.describe()
                    )),
                    Some(_) => {}
                    None if writer.op.invoked_ns > point.end_ns => out.failures.push(format!(
                        "{name}: restored value {shown} comes from a write invoked after the backup returned: {}",
                        writer.describe()
                    )),
                    None => {}
                }
                for w in ws.iter().filter(|w| w.index.is_some_and(|i| i > *m && i <= cut)) {
                    out.failures.push(format!(
                        "{name}: restored value {shown} (mod revision {m}) is older than the state at the backup's \
                         index {cut}: {} came after it",
                        w.describe()
                    ));
                }
            }
            None => {
                if let Some(last) = last.filter(|w| w.put.is_some()) {
                    if !unknown_delete_possible {
                        out.failures.push(format!(
                            "{name}: absent after the restore, but the last write at or below the backup's revision \
                             {cut} is {}",
                            last.describe()
                        ));
                    }
                }
            }
        }
        // 3. Lost: writes acknowledged before the backup began that the restored state predates.
        for w in ws.iter().filter(|w| w.index.is_some() && completed_at(w.op).is_some_and(|t| t < point.start_ns)) {
            let index = w.index.unwrap_or_default();
            let lost = match restored.get(*key) {
                Some((_, m)) => *m < index,
                None => {
                    w.put.is_some()
                        && !unknown_delete_possible
                        && !ws.iter().any(|d| d.put.is_none() && d.index.is_some_and(|i| i > index && i <= cut))
                }
            };
            if lost {
                let shown = match restored.get(*key) {
                    Some((v, m)) => format!("{} (mod revision {m})", String::from_utf8_lossy(v)),
                    None => "absent".to_string(),
                };
                out.lost.push(format!(
                    "{name}: {}, acknowledged before the backup began, is missing: the restored state holds {shown}",
                    w.describe()
                ));
            }
        }
    }
    out
}

/// Client id of the reads [`restored_as_reads`] appends.
pub const RESTORED_READER: u64 = u64::MAX - 1;

/// The restored state as one read of each of `keys` over the backup call: appended to the
/// history that ran before the backup, it must keep it linearizable (each key's restored
/// value is one it held at some instant while the backup ran).
pub fn restored_as_reads(keys: &[Vec<u8>], point: BackupPoint, restored: &RestoredState) -> Vec<Operation> {
    keys.iter()
        .map(|key| Operation {
            client: RESTORED_READER,
            key: key.clone(),
            input: Input::Get,
            invoked_ns: point.start_ns,
            outcome: Outcome::Completed {
                at_ns: point.end_ns,
                output: Output::Value(restored.get(key).map(|(v, _)| v.clone())),
            },
            served: None,
        })
        .collect()
}

/// The restored state as writes that completed at `at_ns` (a put of each restored value, a
/// delete of every other key of `keys`), by client `client`: the history of the restored
/// cluster starts from them, since the checker's registers start absent.
pub fn restored_as_writes(keys: &[Vec<u8>], restored: &RestoredState, at_ns: u64, client: u64) -> Vec<Operation> {
    keys.iter()
        .map(|key| Operation {
            client,
            key: key.clone(),
            input: match restored.get(key) {
                Some((v, _)) => Input::Put(v.clone()),
                None => Input::Delete,
            },
            invoked_ns: at_ns,
            outcome: Outcome::Completed { at_ns: at_ns + 1, output: Output::Ok },
            served: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Served;

    const K: &[u8] = b"key-0";

    fn write(input: Input, invoked: u64, done: Option<(u64, u64)>) -> Operation {
        Operation {
            client: 1,
            key: K.to_vec(),
            input,
            invoked_ns: invoked,
            outcome: match done {
                Some((at_ns, _)) => Outcome::Completed { at_ns, output: Output::Ok },
                None => Outcome::Unknown,
            },
            served: done.map(|(_, revision)| Served { node: 1, raft_index: revision, term: 1, revision }),
        }
    }

    fn put(v: &str, invoked: u64, done: Option<(u64, u64)>) -> Operation {
        write(Input::Put(v.as_bytes().to_vec()), invoked, done)
    }

    fn state(entries: &[(&str, u64)]) -> RestoredState {
        entries.iter().map(|(v, m)| (K.to_vec(), (v.as_bytes().to_vec(), *m))).collect()
    }

    /// Backup called over [100, 200] ns, holding the state at index 20.
    const POINT: BackupPoint = BackupPoint { start_ns: 100, end_ns: 200, cut: 20 };

    #[test]
    fn the_state_at_the_cut_holds() {
        // a before the backup (index 10), b during it (index 15, in the cut), c after (25).
        let h = vec![put("a", 1, Some((50, 10))), put("b", 120, Some((150, 15))), put("c", 300, Some((310, 25)))];
        let r = check(&h, POINT, &state(&[("b", 15)]));
        assert!(r.holds(), "{r:?}");
        assert_eq!(
            (r.acknowledged_before, r.acknowledged_during, r.during_included, r.acknowledged_after),
            (1, 1, 1, 1)
        );
        // b during the backup but not in the cut (index 21): a is the state.
        let h = vec![put("a", 1, Some((50, 10))), put("b", 120, Some((150, 21)))];
        assert!(check(&h, POINT, &state(&[("a", 10)])).holds());
    }

    #[test]
    fn a_write_acknowledged_before_the_backup_is_never_missing() {
        let h = vec![put("a", 1, Some((50, 10))), put("b", 60, Some((90, 12)))];
        let r = check(&h, POINT, &state(&[("a", 10)]));
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert!(r.lost[0].contains("put b"), "{r:?}");
        assert!(!r.failures.is_empty(), "also not the state at the cut: {r:?}");
        // Absent though a put was acknowledged before the backup.
        let r = check(&h[..1], POINT, &RestoredState::new());
        assert_eq!(r.lost.len(), 1, "{r:?}");
    }

    #[test]
    fn a_write_invoked_after_the_backup_returned_is_never_in_it() {
        // Acknowledged at an index at or below the cut: the cut is not inside the call.
        let h = vec![put("a", 1, Some((50, 10))), put("c", 300, Some((310, 18)))];
        let r = check(&h, POINT, &state(&[("c", 18)]));
        assert!(r.failures.iter().any(|f| f.contains("invoked after the backup returned")), "{r:?}");
        // An unknown put invoked after the backup returned cannot explain the restored value.
        let h = vec![put("a", 1, Some((50, 10))), put("u", 300, None)];
        let r = check(&h, POINT, &state(&[("u", 19)]));
        assert!(r.failures.iter().any(|f| f.contains("after the backup returned")), "{r:?}");
        // One invoked before may.
        let h = vec![put("a", 1, Some((50, 10))), put("u", 150, None)];
        assert!(check(&h, POINT, &state(&[("u", 19)])).holds());
    }

    #[test]
    fn the_cut_must_lie_inside_the_call() {
        let h = vec![put("a", 1, Some((50, 30)))];
        let r = check(&h, POINT, &state(&[("a", 30)]));
        assert!(r.failures.iter().any(|f| f.contains("acknowledged before the backup began")), "{r:?}");
        assert!(r.failures.iter().any(|f| f.contains("above the backup's revision")), "{r:?}");
    }

    #[test]
    fn values_mod_revisions_and_deletes_are_checked() {
        let h = vec![put("a", 1, Some((50, 10))), write(Input::Delete, 60, Some((70, 11)))];
        // Deleted before the backup: absent is right, a present value is a resurrection.
        assert!(check(&h, POINT, &RestoredState::new()).holds());
        let r = check(&h, POINT, &state(&[("a", 10)]));
        assert!(!r.holds(), "{r:?}");
        // A value with another mod revision than its write's.
        let r = check(&h[..1], POINT, &state(&[("a", 9)]));
        assert!(r.failures.iter().any(|f| f.contains("mod revision 9")), "{r:?}");
        // A value nobody wrote, a key nobody wrote.
        assert!(!check(&h[..1], POINT, &state(&[("zzz", 10)])).holds());
        let mut other = RestoredState::new();
        other.insert(b"key-9".to_vec(), (b"x".to_vec(), 5));
        assert!(!check(&h[..1], POINT, &other).holds());
        // An unknown delete invoked before the backup returned may explain an absent key.
        let h = vec![put("a", 1, Some((50, 10))), write(Input::Delete, 120, None)];
        assert!(check(&h, POINT, &RestoredState::new()).holds());
    }

    #[test]
    fn restored_state_as_operations() {
        let keys = vec![K.to_vec(), b"key-1".to_vec()];
        let restored = state(&[("a", 10)]);
        let reads = restored_as_reads(&keys, POINT, &restored);
        assert_eq!(reads.len(), 2);
        assert_eq!(reads[0].outcome, Outcome::Completed { at_ns: 200, output: Output::Value(Some(b"a".to_vec())) });
        assert_eq!(reads[1].outcome, Outcome::Completed { at_ns: 200, output: Output::Value(None) });
        let writes = restored_as_writes(&keys, &restored, 500, 7);
        assert_eq!(writes[0].input, Input::Put(b"a".to_vec()));
        assert_eq!(writes[1].input, Input::Delete);
        assert!(writes.iter().all(|w| w.client == 7 && w.invoked_ns == 500));
    }
}
