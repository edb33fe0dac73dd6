//! Helpers shared by the state machine's unit tests: a live tree in a temporary directory,
//! commands and entries, and applying them the way [`super::StateMachine::apply_run`] does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Instant;

use openraft::entry::RaftEntry;

use super::apply::Pending;
use super::records::{data_key, is_user_key_record, tree_name, APPLIED, DATA};
use super::sessions::{apply_command, session_key, Session};
use super::StateMachine;
use crate::raft::{self, LogId, SnapshotMeta, TypeConfig};
use crate::store::command::{Command, CommandResult, WriteId};
use crate::store::snapshot;
use crate::store::write_back::{self, Live};
use crate::store::{open, StoreOptions};

/// An empty live tree (generation 0) in a temporary directory.
pub fn live() -> (tempfile::TempDir, RwLock<Live>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new().temporary(true).path(dir.path().join("db")).open().expect("sled");
    let tree = db.open_tree(tree_name(0)).expect("tree");
    (dir, RwLock::new(Live::new(0, tree)))
}

pub fn put(key: &str, value: &str, if_mod_revision: Option<u64>, id: Option<(u64, u64)>) -> Command {
    put_bytes(key.as_bytes().to_vec(), value, if_mod_revision, id)
}

pub fn put_bytes(key: Vec<u8>, value: &str, if_mod_revision: Option<u64>, id: Option<(u64, u64)>) -> Command {
    Command::Put {
        key,
        value: value.into(),
        if_mod_revision,
        write_id: id.map(|(client_id, sequence)| WriteId { client_id, sequence }),
        lease: 0,
    }
}

pub fn entry(index: u64, cmd: Command) -> raft::Entry {
    raft::Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), cmd)
}

/// Puts of `key-<i>` for `count` indexes from `from`, each with a write id.
pub fn puts(from: u64, count: u64) -> Vec<raft::Entry> {
    (from..from + count).map(|i| entry(i, put(&format!("key-{i}"), "value", None, Some((i % 7, i))))).collect()
}

/// Applies one entry as a run of its own and hands its writes to the layers.
pub fn apply(live: &RwLock<Live>, index: u64, cmd: &Command) -> CommandResult {
    let mut pending = Pending::new(live);
    let result = StateMachine::apply_entry(&mut pending, &entry(index, cmd.clone())).expect("apply");
    let writes = pending.writes;
    live.write().expect("lock").absorb(writes);
    result
}

/// Applies `cmds` from index `first` on, in runs of `run` entries. After every third run
/// the layers are frozen and written to the tree, so records live in every layer: the
/// active one, the tree, and (between the two writes) the frozen one.
pub fn apply_in_runs(live: &RwLock<Live>, first: u64, cmds: &[Command], run: usize) -> Vec<CommandResult> {
    let mut results = Vec::new();
    for (n, chunk) in cmds.chunks(run.max(1)).enumerate() {
        let mut pending = Pending::new(live);
        for (i, cmd) in chunk.iter().enumerate() {
            let index = first + (n * run.max(1) + i) as u64;
            pending.start_entry();
            results.push(apply_command(&mut pending, index, cmd).expect("apply"));
        }
        let writes = pending.writes;
        let mut live = live.write().expect("lock");
        live.absorb(writes);
        if n % 3 == 1 {
            live.freeze();
        } else if n % 3 == 2 {
            if let Some(frozen) = live.frozen() {
                live.tree.apply_batch(write_back::to_batch(&frozen)).expect("batch");
                live.written(&frozen);
            }
        }
    }
    results
}

pub fn session_exists(live: &RwLock<Live>, client: u64) -> bool {
    live.read().expect("lock").read::<Session>("session", &session_key(client)).expect("read").is_some()
}

/// The version a successful put reports.
pub fn version(r: &CommandResult) -> u64 {
    match r {
        CommandResult::Put { current: Some(kv), .. } => kv.stored.version,
        other => panic!("not a put with a value: {other:?}"),
    }
}

/// Counts the user keys and reads `applied` straight from sled (what a crash leaves).
pub fn in_sled(dir: &Path) -> (u64, Option<LogId>) {
    // The background writer may still hold the database for a moment after the drop.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::Config::new().path(dir.join("sled")).open() {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "sled still open");
                std::thread::yield_now();
            }
            Err(e) => panic!("reopen raw: {e}"),
        }
    };
    let tree = db.open_tree(tree_name(0)).expect("tree");
    let keys = tree.scan_prefix([DATA]).count() as u64;
    let applied = StateMachine::read::<Option<LogId>>(&tree, "applied", APPLIED).expect("read").flatten();
    (keys, applied)
}

/// Checks that entries go on being applied while `dump` writes a cut of a 50,000-key state
/// machine to a file, and that the file is still an exact cut: it holds the keys of the entries
/// up to the index it records, and no later one. `dump` returns the cut's meta and its file.
pub fn applying_goes_on_during_a_dump(dump: impl FnOnce(&StateMachine) -> (SnapshotMeta, PathBuf) + Send) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
    let preloaded = 50_000u64;
    for first in (1..=preloaded).step_by(1000) {
        sm.apply_run(&puts(first, 1000)).expect("preload");
    }
    let dumping = AtomicBool::new(true);
    let mut next = preloaded + 1;
    let mut runs_during_dump = 0;
    let (meta, path) = std::thread::scope(|scope| {
        let dumper = scope.spawn(|| {
            let dumped = dump(&sm);
            dumping.store(false, Ordering::SeqCst);
            dumped
        });
        // Runs of 10 entries until the dump is done; with a dump that stopped the apply path,
        // at most the one run that waited for it would get in.
        while dumping.load(Ordering::SeqCst) {
            sm.apply_run(&puts(next, 10)).expect("apply during the dump");
            next += 10;
            runs_during_dump += 1;
        }
        dumper.join().expect("dump thread")
    });
    let cut = meta.last_log_id.expect("cut").index;
    assert!(cut >= preloaded, "the cut holds every entry applied before the dump: {cut}");
    // Runs applied after the cut was taken: while the 50,000 records were dumped. A dump
    // holding the apply path lets in only the run that waited for it (and whatever slips in
    // before the dump thread says it is done).
    let runs_after_cut = (next - 1 - cut) / 10;
    assert!(runs_after_cut >= 20, "entries were applied during the dump: {runs_after_cut} of {runs_during_dump} runs");
    let mut keys = std::collections::BTreeSet::new();
    snapshot::read(&path, |k, _| {
        if is_user_key_record(&k) {
            keys.insert(k);
        }
        Ok(())
    })
    .expect("read the dump");
    let expected: std::collections::BTreeSet<Vec<u8>> =
        (1..=cut).map(|i| data_key(format!("key-{i}").as_bytes())).collect();
    assert_eq!(keys, expected, "the dump is the state at index {cut}");
    assert_eq!(sm.applied_index(), next - 1);
    for i in [1, cut, cut + 1, next - 1] {
        assert!(sm.get(format!("key-{i}").as_bytes()).expect("get").is_some(), "key-{i} reads back");
    }
}
