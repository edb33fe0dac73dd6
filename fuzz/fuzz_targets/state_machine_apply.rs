//! The state machine's apply of arbitrary command sequences, in arbitrary runs (openraft hands
//! entries over in runs, each applied as one sled batch with a `Pending` overlay), against a
//! fresh store in a temporary directory, checked against a model written from the spec:
//!
//! - every result equals the model's (versions count writes, create/mod indexes, compare on
//!   mod_index, node-id incarnations, the declared replica count);
//! - a repeated `(client, sequence)` returns the original answer and applies nothing; the same
//!   write id on another command is refused (`WriteIdReused`); an older sequence is stale;
//! - afterwards the key count equals the number of keys, and a get of every key and a full
//!   scan equal the model; the applied index is the last entry's.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use openraft::entry::RaftEntry;
use petkv::raft::{self, Entry, TypeConfig};
use petkv::store::command::{Command, CommandResult, KeyValue, StoredValue, WriteId};
use petkv::store::{self, StoreOptions};

#[derive(Arbitrary, Debug)]
enum Op {
    Put {
        key: u8,
        value: u8,
        cas: Option<u8>,
        id: Option<(u8, u8)>,
    },
    Delete {
        key: u8,
        cas: Option<u8>,
        id: Option<(u8, u8)>,
    },
    /// Sends the n-th earlier command again (a client retry).
    Retry(u8),
    AllocateNodeId(u8),
    SetReplicas(u16),
    /// Ends the current run: the next entries go to the tree in a new batch.
    EndRun,
}

fn key(k: u8) -> Vec<u8> {
    match k {
        // Keys the API would refuse still reach the state machine through the log unchanged.
        250 => Vec::new(),
        251 => vec![0xff; 3],
        252 => vec![0],
        _ => vec![b'k', b'0' + k % 8],
    }
}

/// The spec of the state machine, independent of sled.
#[derive(Default)]
struct Model {
    kv: BTreeMap<Vec<u8>, StoredValue>,
    /// client -> (last sequence, its command, its result)
    sessions: HashMap<u64, (u64, Command, CommandResult)>,
    incarnations: HashMap<u32, u32>,
    replicas: Option<u32>,
}

impl Model {
    fn cas_of(&self, key: &[u8], cas: Option<u8>) -> Option<u64> {
        // Even bytes compare against the key's real mod index (so compares succeed too).
        cas.map(|c| if c % 2 == 0 { self.kv.get(key).map(|s| s.mod_index).unwrap_or(0) } else { u64::from(c / 2) })
    }

    fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        if let Some(WriteId { client_id, sequence }) = cmd.write_id() {
            if let Some((last, first, result)) = self.sessions.get(&client_id) {
                if sequence == *last {
                    if first != cmd {
                        // The same write id on another command: refused, nothing applied.
                        return CommandResult::WriteIdReused { sequence };
                    }
                    // The original answer; a successful put answers with the value it carries.
                    return match (result.clone(), cmd) {
                        (
                            CommandResult::Put { index, succeeded: true, current: Some(mut kv) },
                            Command::Put { value, .. },
                        ) => {
                            kv.stored.value = value.clone();
                            CommandResult::Put { index, succeeded: true, current: Some(kv) }
                        }
                        (other, _) => other,
                    };
                }
                if sequence < *last {
                    return CommandResult::StaleSequence { last_applied: *last };
                }
            }
            let result = self.execute(index, cmd);
            self.sessions.insert(client_id, (sequence, cmd.clone(), result.clone()));
            return result;
        }
        self.execute(index, cmd)
    }

    fn execute(&mut self, index: u64, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Put { key, value, if_mod_index, .. } => {
                let current = self.kv.get(key).cloned();
                if let Some(expected) = if_mod_index {
                    if current.as_ref().map(|c| c.mod_index).unwrap_or(0) != *expected {
                        let current = current.map(|stored| KeyValue { key: key.clone(), stored });
                        return CommandResult::Put { index, succeeded: false, current };
                    }
                }
                let stored = StoredValue {
                    value: value.clone(),
                    create_index: current.as_ref().map(|c| c.create_index).unwrap_or(index),
                    mod_index: index,
                    version: current.as_ref().map(|c| c.version + 1).unwrap_or(1),
                };
                self.kv.insert(key.clone(), stored.clone());
                CommandResult::Put { index, succeeded: true, current: Some(KeyValue { key: key.clone(), stored }) }
            }
            Command::Delete { key, if_mod_index, .. } => {
                let current = self.kv.get(key).cloned();
                let previous = current.clone().map(|stored| KeyValue { key: key.clone(), stored });
                if let Some(expected) = if_mod_index {
                    if current.as_ref().map(|c| c.mod_index).unwrap_or(0) != *expected {
                        return CommandResult::Delete { index, succeeded: false, deleted: false, previous };
                    }
                }
                self.kv.remove(key);
                CommandResult::Delete { index, succeeded: true, deleted: current.is_some(), previous }
            }
            Command::AllocateNodeId { ordinal } => {
                let next = self.incarnations.get(ordinal).copied().unwrap_or(0) + 1;
                self.incarnations.insert(*ordinal, next);
                CommandResult::NodeId { index, node_id: raft::node_id(*ordinal, next) }
            }
            Command::SetReplicas { replicas } => {
                self.replicas = Some(*replicas);
                CommandResult::Replicas { index, replicas: *replicas }
            }
        }
    }
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), cmd)
}

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 256 {
        return;
    }
    // A fresh store per input; on tmpfs its fsyncs cost nothing.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
    let (_log, sm) = store::open(dir.path(), &StoreOptions { cache_bytes: 1 << 20, metrics: None }).expect("open");
    let mut model = Model::default();
    let mut sent: Vec<Command> = Vec::new();
    let mut run: Vec<Entry> = Vec::new();
    let mut expected: Vec<CommandResult> = Vec::new();
    let mut index = 0u64;
    let flush = |run: &mut Vec<Entry>, expected: &mut Vec<CommandResult>| {
        if run.is_empty() {
            return;
        }
        let results = sm.apply_run(run).expect("apply");
        assert_eq!(&results, expected, "commands {:?}", run.iter().map(|e| e.payload.clone()).collect::<Vec<_>>());
        run.clear();
        expected.clear();
    };
    for op in ops {
        let cmd = match op {
            Op::Put { key: k, value, cas, id } => Command::Put {
                key: key(k),
                value: vec![value],
                if_mod_index: model.cas_of(&key(k), cas),
                write_id: id.map(|(c, s)| WriteId { client_id: u64::from(c % 4), sequence: u64::from(s % 16) }),
            },
            Op::Delete { key: k, cas, id } => Command::Delete {
                key: key(k),
                if_mod_index: model.cas_of(&key(k), cas),
                write_id: id.map(|(c, s)| WriteId { client_id: u64::from(c % 4), sequence: u64::from(s % 16) }),
            },
            Op::Retry(n) if !sent.is_empty() => sent[usize::from(n) % sent.len()].clone(),
            Op::Retry(_) => continue,
            Op::AllocateNodeId(o) => Command::AllocateNodeId { ordinal: u32::from(o % 4) },
            Op::SetReplicas(r) => Command::SetReplicas { replicas: u32::from(r) },
            Op::EndRun => {
                flush(&mut run, &mut expected);
                continue;
            }
        };
        index += 1;
        expected.push(model.apply(index, &cmd));
        run.push(entry(index, cmd.clone()));
        sent.push(cmd);
    }
    flush(&mut run, &mut expected);

    assert_eq!(sm.key_count().expect("count"), model.kv.len() as u64, "key count");
    for (k, stored) in &model.kv {
        assert_eq!(sm.get(k).expect("get").map(|kv| kv.stored), Some(stored.clone()), "key {k:?}");
    }
    let page = sm.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).expect("scan");
    let scanned: Vec<_> = page.kvs.into_iter().map(|kv| (kv.key, kv.stored)).collect();
    assert_eq!(scanned, model.kv.into_iter().collect::<Vec<_>>(), "full scan");
    assert_eq!(sm.declared_replicas().expect("replicas"), model.replicas);
    assert_eq!(sm.applied().expect("applied").map(|l| l.index), (index > 0).then_some(index));
});
