//! Deduplication of retried writes: one session per client.
//!
//! A write may carry a write id `(client_id, sequence)`. The tree remembers each client's last
//! sequence, its result and a fingerprint of its command; the same write id again (a retry
//! after a timeout or a leader change) is answered with the remembered result and applies
//! nothing, an older sequence is refused, and the same id on another command is refused as a
//! client bug. Sessions older than [`SESSION_RETENTION`] entries are swept when the entry at
//! every multiple of [`SESSION_SWEEP_EVERY`] is applied: the same on every replica.

use std::io;

use serde::{Deserialize, Serialize};

use super::apply::{execute, Pending};
use super::records::{prefixed, SESSION};
use crate::store::command::{Command, CommandResult, WriteId};
use crate::store::{decode, encode};

/// A client's dedup record is kept at least this many log entries after its last write
/// (deterministic on every replica, unlike wall-clock time). At 50k writes/s that is 20 s,
/// longer than any client retries the same write.
pub const SESSION_RETENTION: u64 = 1_000_000;
/// Sessions are swept when the entry whose index is a multiple of this is applied, so a
/// session lives between [`SESSION_RETENTION`] and this many entries more.
pub const SESSION_SWEEP_EVERY: u64 = 65_536;

/// The last write of one client, for deduplication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Session {
    sequence: u64,
    /// Log index of that write (drives expiry).
    index: u64,
    /// Its result; the value of a successful put is elided (the retry carries it).
    result: CommandResult,
    /// CRC-32 of the command's encoding: a retry must be that same command.
    command: u32,
}

impl Session {
    pub(super) fn decode(bytes: &[u8]) -> io::Result<Session> {
        decode::<Session>("session", bytes)
    }
}

/// What identifies a command for its write id: the same id on another command is a client bug.
fn fingerprint(cmd: &Command) -> io::Result<u32> {
    Ok(crc32fast::hash(&encode(cmd)?))
}

/// Drops the value of a successful put before the result is remembered.
fn elide_put_value(result: &CommandResult) -> CommandResult {
    let mut result = result.clone();
    if let CommandResult::Put { succeeded: true, current: Some(kv), .. } = &mut result {
        kv.stored.value = Vec::new();
    }
    result
}

/// Puts back the value of a successful put from the retried command.
fn restore_put_value(mut result: CommandResult, cmd: &Command) -> CommandResult {
    if let (CommandResult::Put { succeeded: true, current: Some(kv), .. }, Command::Put { value, .. }) =
        (&mut result, cmd)
    {
        kv.stored.value = value.clone();
    }
    result
}

/// The session key of a client.
pub(super) fn session_key(client_id: u64) -> Vec<u8> {
    prefixed(SESSION, &client_id.to_be_bytes())
}

/// Applies one command into `pending` through its client's session; returns what the client
/// is told.
pub(super) fn apply_command(pending: &mut Pending<'_>, index: u64, cmd: &Command) -> io::Result<CommandResult> {
    let Some(WriteId { client_id, sequence }) = cmd.write_id() else {
        return execute(pending, index, cmd);
    };
    let key = session_key(client_id);
    let previous = pending.read_session(&key)?;
    let command = fingerprint(cmd)?;
    if let Some(session) = &previous {
        if sequence == session.sequence {
            // Found by the fuzz target `state_machine_apply`: the same write id on another
            // command was answered with the first command's result (a delete got a put's
            // answer; a put with another value got its own value back, not the stored one).
            if session.command != command {
                return Ok(CommandResult::WriteIdReused { sequence });
            }
            return Ok(restore_put_value(session.result.clone(), cmd));
        }
        if sequence < session.sequence {
            return Ok(CommandResult::StaleSequence { last_applied: session.sequence });
        }
    }
    let result = execute(pending, index, cmd)?;
    pending.insert(&key, encode(&Session { sequence, index, result: elide_put_value(&result), command })?);
    Ok(result)
}

/// Removes the sessions whose last write is more than [`SESSION_RETENTION`] entries before
/// `index`.
pub(super) fn sweep_sessions(pending: &mut Pending<'_>, index: u64) -> io::Result<()> {
    let Some(horizon) = index.checked_sub(SESSION_RETENTION) else { return Ok(()) };
    for (key, value) in pending.records_with_prefix(SESSION)? {
        let session = Session::decode(&value)?;
        if session.index < horizon {
            pending.remove(&key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{apply, live, put, session_exists, version};
    use super::*;
    use crate::store::command::StoredValue;
    use crate::store::state_machine::records::data_key;

    #[test]
    fn a_retried_write_returns_its_original_answer_and_applies_nothing() {
        let (_d, t) = live();
        let cmd = put("k", "value", None, Some((9, 1)));
        let first = apply(&t, 10, &cmd);
        let retry = apply(&t, 11, &cmd);
        assert_eq!(first, retry, "same answer, value included");
        assert_eq!(version(&retry), 1, "applied once");
        let stale = apply(&t, 12, &put("k", "old", None, Some((9, 0))));
        assert_eq!(stale, CommandResult::StaleSequence { last_applied: 1 });
        assert_eq!(version(&apply(&t, 13, &put("k", "next", None, Some((9, 2))))), 2);
    }

    #[test]
    fn a_write_id_reused_for_another_command_is_refused_and_applies_nothing() {
        // fuzz/artifacts/state_machine_apply/crash-360a7684…: a put, then a delete with the
        // same write id, got the put's answer (with the value elided).
        let (_d, t) = live();
        let first = apply(&t, 1, &put("k", "v1", None, Some((9, 1))));
        let delete = Command::Delete {
            key: b"k".to_vec(),
            if_mod_revision: None,
            write_id: Some(WriteId { client_id: 9, sequence: 1 }),
        };
        assert_eq!(apply(&t, 2, &delete), CommandResult::WriteIdReused { sequence: 1 });
        assert_eq!(apply(&t, 3, &put("k", "v2", None, Some((9, 1)))), CommandResult::WriteIdReused { sequence: 1 });
        assert_eq!(apply(&t, 4, &put("other", "v1", None, Some((9, 1)))), CommandResult::WriteIdReused { sequence: 1 });
        let kv = t.read().expect("lock").read::<StoredValue>("value", &data_key(b"k")).expect("read").expect("kept");
        assert_eq!((kv.value.as_slice(), kv.version), (b"v1".as_slice(), 1), "nothing was applied");
        assert_eq!(apply(&t, 5, &put("k", "v1", None, Some((9, 1)))), first, "the true retry still gets its answer");
    }

    /// The first sweep that sees a write at index 1 as older than the retention window.
    const FIRST_EXPIRING_SWEEP: u64 = SESSION_RETENTION.div_ceil(SESSION_SWEEP_EVERY) * SESSION_SWEEP_EVERY;

    #[test]
    fn sessions_expire_at_the_first_sweep_after_the_retention_window() {
        let (_d, t) = live();
        let old = put("a", "1", None, Some((1, 1)));
        apply(&t, 1, &old);
        apply(&t, FIRST_EXPIRING_SWEEP - SESSION_SWEEP_EVERY, &put("b", "1", None, Some((2, 1))));
        assert!(session_exists(&t, 1), "the sweep before the window ends keeps client 1");
        apply(&t, FIRST_EXPIRING_SWEEP, &put("c", "1", None, Some((3, 1))));
        assert!(!session_exists(&t, 1), "client 1 expired");
        assert!(session_exists(&t, 2) && session_exists(&t, 3), "later clients kept");
        // After expiry the same write id is a new write (the retention window bounds retries).
        assert_eq!(version(&apply(&t, FIRST_EXPIRING_SWEEP + 1, &old)), 2);
    }

    #[test]
    fn a_sweep_keeps_a_session_renewed_inside_the_window() {
        let (_d, t) = live();
        apply(&t, 1, &put("a", "1", None, Some((1, 1))));
        apply(&t, FIRST_EXPIRING_SWEEP - 1, &put("a", "2", None, Some((1, 2))));
        apply(&t, FIRST_EXPIRING_SWEEP, &put("b", "1", None, Some((2, 1))));
        assert!(session_exists(&t, 1), "client 1 renewed, kept");
    }
}

#[cfg(test)]
mod properties {
    //! The dedup table under interleaved retries, against a model (proptest).

    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::super::records::data_key;
    use super::super::test_support::{apply_in_runs, live, put_bytes};
    use crate::store::command::{Command, CommandResult, StoredValue};

    fn put(key: Vec<u8>, id: Option<(u64, u64)>) -> Command {
        put_bytes(key, "v", None, id)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn each_client_write_applies_once_and_older_sequences_are_refused(
            ops in prop::collection::vec((0u64..3, 0u64..6, 0u8..3), 1..40),
            run in 1usize..8,
        ) {
            let (_dir, t) = live();
            let cmds: Vec<Command> = ops.iter().map(|(c, s, k)| put(vec![b'k', *k], Some((*c, *s)))).collect();
            let results = apply_in_runs(&t, 1, &cmds, run);
            let mut last: HashMap<u64, u64> = HashMap::new();
            // (client, sequence) -> (key, answer) of the write that used it first.
            let mut first_answer: HashMap<(u64, u64), (u8, CommandResult)> = HashMap::new();
            let mut applied_per_key: BTreeMap<u8, u64> = BTreeMap::new();
            for ((client, seq, key), result) in ops.iter().zip(&results) {
                match last.get(client) {
                    Some(l) if seq < l => {
                        prop_assert_eq!(result, &CommandResult::StaleSequence { last_applied: *l });
                    }
                    Some(l) if seq == l => {
                        let (first_key, answer) = &first_answer[&(*client, *seq)];
                        if first_key == key {
                            prop_assert_eq!(result, answer, "a retry gets the original answer");
                        } else {
                            prop_assert_eq!(result, &CommandResult::WriteIdReused { sequence: *seq }, "another command on a used id");
                        }
                    }
                    _ => {
                        let version = applied_per_key.entry(*key).or_default();
                        *version += 1;
                        let got = match result {
                            CommandResult::Put { succeeded: true, current: Some(kv), .. } => kv.stored.version,
                            other => return Err(TestCaseError::fail(format!("a new write was not applied: {other:?}"))),
                        };
                        prop_assert_eq!(got, *version, "each new (client, sequence) is one more version");
                        last.insert(*client, *seq);
                        first_answer.insert((*client, *seq), (*key, result.clone()));
                    }
                }
            }
            for (key, versions) in applied_per_key {
                let stored = t.read().expect("lock").read::<StoredValue>("value", &data_key(&[b'k', key])).expect("read");
                prop_assert_eq!(stored.map(|s| s.version), Some(versions));
            }
        }
    }
}
