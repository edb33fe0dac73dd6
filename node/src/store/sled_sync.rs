//! Makes sled's files durable: what `sled::Db::flush` promises and what petkv needs differ.
//!
//! sled 0.34's `flush` writes its buffers and calls `sync_file_range` on the written range of
//! its log file (`db`). That starts and waits for write-back of those pages, but it is not an
//! fsync: it commits neither the file's metadata (a grown size) nor the disk's write cache, and
//! a filesystem that keeps data until fsync (LazyFS; FUSE) does not see it at all. Its only
//! fsync is a background thread every 500 ms. Values over a size threshold live in files under
//! `blobs/` that sled never fsyncs, and its `conf` file is written without one at every open.
//!
//! petkv needs the state machine durable at a few instants only (a snapshot is published and
//! the Raft log may then be purged behind it; a clean shutdown), so [`flush_durably`] follows
//! sled's flush with an fsync of every sled file and of its directories. Between those instants
//! nothing depends on sled's durability: the Raft log holds every applied entry, and a restart
//! re-applies what sled lost.

use std::fs::File;
use std::io;
use std::path::Path;

/// sled's flush, then an fsync of its log, its blobs, its config and their directories.
pub fn flush_durably(db: &sled::Db, dir: &Path) -> io::Result<()> {
    db.flush().map_err(|e| super::faults::from_sled("sled flush", e))?;
    sync_files(dir)
}

/// fsyncs every regular file directly in `dir` and in `dir/blobs`, then both directories.
pub fn sync_files(dir: &Path) -> io::Result<()> {
    let blobs = dir.join("blobs");
    for d in [dir, blobs.as_path()] {
        let entries = match std::fs::read_dir(d) {
            Ok(entries) => entries,
            // sled creates `blobs/` only for its first large value.
            Err(e) if e.kind() == io::ErrorKind::NotFound && d == blobs => continue,
            Err(e) => return Err(with_path(e, d)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, d))?;
            let path = entry.path();
            if !entry.file_type().map_err(|e| with_path(e, &path))?.is_file() {
                continue;
            }
            match File::open(&path).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                // sled removes blobs and old snapshots of its own while we walk.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(with_path(e, &path)),
            }
        }
        File::open(d).and_then(|f| f.sync_all()).map_err(|e| with_path(e, d))?;
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("fsync {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_a_database_with_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sled");
        let db = sled::Config::new().path(&path).open().expect("open");
        // Larger than sled's inline limit: stored in a file under blobs/.
        db.insert(b"big", vec![7u8; 512 * 1024]).expect("insert");
        db.insert(b"small", b"v".to_vec()).expect("insert");
        flush_durably(&db, &path).expect("flush durably");
        assert!(path.join("blobs").read_dir().expect("blobs dir").next().is_some(), "a blob was written");
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = sync_files(&missing).expect_err("no directory");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
