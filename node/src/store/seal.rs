//! The clean-shutdown seal: a record that the store's files are exactly as a clean shutdown
//! left them, checked at the next start before either storage engine opens a file.
//!
//! Neither engine can tell damage from an interrupted write, and both "recover" on their own:
//! raft-log drops a record cut short at the end of its last chunk (and a zero-filled tail),
//! and sled's recovery stops at the first message whose checksum fails, rolling the database
//! back to the state before it and rewriting the file. After a crash that is right (the lost
//! tail was never acknowledged; the state machine is re-applied from the Raft log). After a
//! clean shutdown nothing may be missing, so the same recovery would hide damage.
//!
//! So when `petkv serve` has stopped cleanly and closed its store, it writes
//! `<data-dir>/store-seal.json`: the length and CRC-32 of every file under `raft-log/`,
//! `sled/` and `snapshots/`. At the next start [`check_and_break`] compares every file with
//! it: a file that is missing, extra, shorter, longer or different refuses the start, naming
//! the file, with nothing opened or changed. When all match, the seal is removed (durably)
//! before anything is opened, and the Raft log is opened strictly: a record cut short is then
//! corruption, not a torn write. Without a seal (the node crashed, or was killed) the engines'
//! own crash recovery applies, as before.
//!
//! The cost is reading the store once at a clean shutdown and once at the next start.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The seal's file name in the data dir.
pub const SEAL_FILE: &str = "store-seal.json";
/// The directories of the data dir the seal covers: everything the store writes.
const SEALED_DIRS: [&str; 3] = ["raft-log", "sled", "snapshots"];
/// raft-log's directory lock: created at every open, its content means nothing.
const RAFT_LOG_LOCK: &str = "raft-log/LOCK";
const FORMAT: u32 = 1;

/// Why a seal could not be written. The node still stopped cleanly; its next start simply
/// falls back to crash recovery.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the store in {0} is still open (its lock is held); not sealing it")]
    InUse(PathBuf),
    #[error("cannot seal the store at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One file as the clean shutdown left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSeal {
    len: u64,
    crc32: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seal {
    format: u32,
    /// Path relative to the data dir (`/`-separated) -> what it held.
    files: BTreeMap<String, FileSeal>,
    /// CRC-32 of the compact JSON of `files`.
    checksum: String,
}

fn checksum_of(files: &BTreeMap<String, FileSeal>) -> String {
    // A map of strings and integers always serializes.
    format!("{:08x}", crc32fast::hash(&serde_json::to_vec(files).unwrap_or_default()))
}

/// Every file of the store under `data_dir`, relative path -> absolute path.
fn store_files(data_dir: &Path) -> io::Result<BTreeMap<String, PathBuf>> {
    fn walk(data_dir: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                walk(data_dir, &path, out)?;
            } else {
                let rel = path.strip_prefix(data_dir).map_err(io::Error::other)?;
                let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                if rel != RAFT_LOG_LOCK {
                    out.insert(rel, path);
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    for dir in SEALED_DIRS {
        walk(data_dir, &data_dir.join(dir), &mut out)?;
    }
    Ok(out)
}

fn seal_of(path: &Path) -> io::Result<FileSeal> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    // What the seal describes must be what a power loss leaves: the engines' last writes at
    // close (sled's, raft-log's) may not have been fsync'd yet.
    file.sync_all()?;
    Ok(FileSeal { len, crc32: format!("{:08x}", hasher.finalize()) })
}

/// How often [`lock_closed_store`] tries the locks again while the engines finish closing.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Takes the store's two locks (raft-log's directory lock and sled's lock on its `db` file):
/// held by anyone, the store is still open and its files may still change. The engines
/// release them a moment after their last handle is dropped (sled's background threads finish
/// on their own), so a held lock is tried again until `wait` has passed.
fn lock_closed_store(data_dir: &Path, wait: Duration) -> Result<Vec<File>, SealError> {
    let deadline = Instant::now() + wait;
    let mut held = Vec::new();
    for lock in [data_dir.join(RAFT_LOG_LOCK), data_dir.join("sled").join("db")] {
        let file = File::open(&lock).map_err(|source| SealError::Io { path: lock.clone(), source })?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(LOCK_RETRY),
                Err(fs::TryLockError::WouldBlock) => return Err(SealError::InUse(data_dir.to_path_buf())),
                Err(fs::TryLockError::Error(source)) => return Err(SealError::Io { path: lock, source }),
            }
        }
        held.push(file);
    }
    Ok(held)
}

/// Seals the (closed) store under `data_dir` after a clean shutdown; returns how many files
/// the seal covers. Fails without writing anything if the store is still open after `wait`.
pub fn seal(data_dir: &Path, wait: Duration) -> Result<usize, SealError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SealError::Io { path, source }
    };
    let _locks = lock_closed_store(data_dir, wait)?;
    let mut files = BTreeMap::new();
    for (rel, path) in store_files(data_dir).map_err(io_at(data_dir))? {
        files.insert(rel, seal_of(&path).map_err(io_at(&path))?);
    }
    let count = files.len();
    let seal = Seal { format: FORMAT, checksum: checksum_of(&files), files };
    let path = data_dir.join(SEAL_FILE);
    let bytes = serde_json::to_vec_pretty(&seal).map_err(|e| SealError::Io { path: path.clone(), source: e.into() })?;
    crate::support::durable::write_atomically(&path, &bytes).map_err(io_at(&path))?;
    Ok(count)
}

/// At start, before the store is opened: checks the seal a clean shutdown left, if any, and
/// removes it once every file matches. Returns whether the store was sealed (then the Raft log
/// must open strictly). A mismatch refuses the start naming the file; nothing is changed.
pub fn check_and_break(data_dir: &Path) -> Result<bool, StoreError> {
    let path = data_dir.join(SEAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    let corrupt = |path: PathBuf, detail: String| StoreError::Corrupt { path, detail };
    let seal: Seal = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(path.clone(), format!("the clean-shutdown seal does not parse: {e}")))?;
    if seal.format != FORMAT || seal.checksum != checksum_of(&seal.files) {
        return Err(corrupt(path, "the clean-shutdown seal is damaged (format or checksum)".into()));
    }
    let present = store_files(data_dir).map_err(|source| StoreError::Io { path: data_dir.to_path_buf(), source })?;
    for rel in seal.files.keys() {
        if !present.contains_key(rel) {
            return Err(corrupt(
                data_dir.join(rel),
                "the file is missing: it existed at the last clean shutdown (store-seal.json); \
                 refusing to start, nothing was opened or changed"
                    .into(),
            ));
        }
    }
    for (rel, file) in &present {
        let Some(sealed) = seal.files.get(rel) else {
            return Err(corrupt(
                file.clone(),
                "the file appeared after the last clean shutdown (not in store-seal.json); \
                 refusing to start, nothing was opened or changed"
                    .into(),
            ));
        };
        let now = seal_of(file).map_err(|source| StoreError::Io { path: file.clone(), source })?;
        if now != *sealed {
            return Err(corrupt(
                file.clone(),
                format!(
                    "the file changed since the last clean shutdown: {} bytes with CRC-32 {}, but the seal \
                     (store-seal.json) recorded {} bytes with CRC-32 {}; the store is damaged, refusing to \
                     start (nothing was opened, repaired or dropped)",
                    now.len, now.crc32, sealed.len, sealed.crc32
                ),
            ));
        }
    }
    // From here on the store will be opened and written: the seal no longer describes it.
    crate::support::durable::remove(&path).map_err(|source| StoreError::Io { path, source })?;
    Ok(true)
}
