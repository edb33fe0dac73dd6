//! Snapshots of the state machine: building one from a consistent cut of the tree, offering
//! the current one, and installing one received from the leader.
//!
//! A snapshot dumps the whole tree into a checksummed file ([`crate::store::snapshot`]).
//! Installing one fills a fresh `sm.<generation>` tree and flips the `active` pointer only once
//! that tree is complete and flushed; the current snapshot's record in the pointer tree names
//! its file, which is checked end to end at every start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use openraft::alias::SnapshotOf;
use openraft::storage::{RaftSnapshotBuilder, Snapshot};
use serde::{Deserialize, Serialize};

use super::records::{tree_name, ACTIVE, APPLIED, CURRENT_SNAPSHOT, MEMBERSHIP};
use super::StateMachine;
use crate::edge::metrics::SnapshotKind;
use crate::raft::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::store::faults::from_sled;
use crate::store::snapshot::{self, SnapshotFile};
use crate::store::write_back::Live;
use crate::store::{encode, io_err, StoreError};

/// Records per sled batch while installing a snapshot.
const INSTALL_BATCH: usize = 10_000;

/// The snapshot the state machine currently offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SnapshotRecord {
    pub(super) meta: SnapshotMeta,
    pub(super) file_name: String,
}

/// A consistent cut of the live tree for a snapshot or backup ([`StateMachine::take_cut`]):
/// the tree stays at the cut while this holds the write lock.
pub(super) struct Cut<'a> {
    pub(super) writing: MutexGuard<'a, ()>,
    pub(super) generation: u64,
    pub(super) tree: sled::Tree,
    pub(super) meta: SnapshotMeta,
}

impl StateMachine {
    /// Checks the current snapshot file end to end against its record: it was fsync'd before
    /// it was published, so a file that is missing, cut short, damaged or of another snapshot
    /// is corruption, whatever the shutdown was. Refused, never rebuilt.
    pub(super) fn verify_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        let path = self.inner.snapshot_dir.join(&record.file_name);
        let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), detail };
        let (meta, _) = snapshot::verify(&path).map_err(|e| {
            corrupt(format!("the current snapshot does not check out ({e}); refusing to start, not rebuilding it"))
        })?;
        if meta != record.meta {
            return Err(corrupt(format!(
                "the current snapshot holds {:?}, but the state machine recorded {:?}; refusing to start",
                meta.last_log_id, record.meta.last_log_id
            )));
        }
        Ok(())
    }

    /// Where the peer transport writes a snapshot while it is being received.
    pub fn incoming_snapshot_path(&self) -> PathBuf {
        let n = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        self.inner.snapshot_dir.join(format!("incoming-{}-{n}.tmp", std::process::id()))
    }

    /// The record of the snapshot currently offered, if any.
    pub(super) fn current_snapshot_record(&self) -> io::Result<Option<SnapshotRecord>> {
        Self::read(&self.inner.pointer, "snapshot record", CURRENT_SNAPSHOT)
    }

    /// Removes files of the snapshot dir that `select` picks, except `keep`.
    pub(super) fn remove_snapshot_files(&self, keep: Option<&str>, select: impl Fn(&str) -> bool) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.inner.snapshot_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if Some(name.as_str()) != keep && select(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes every applied record into the tree and keeps it there: the returned cut holds the
    /// write lock, so the background writer leaves the tree alone until the cut is dropped. The
    /// caller holds the apply lock, so the tree is the state at the applied index it records.
    pub(super) fn take_cut(&self) -> io::Result<Cut<'_>> {
        let writing = crate::support::sync::lock(&self.inner.write_lock);
        self.inner.write_through_locked()?;
        let (generation, tree) = {
            let live = self.inner.live();
            (live.generation, live.tree.clone())
        };
        let last_log_id: Option<LogId> = Self::read::<Option<LogId>>(&tree, "applied", APPLIED)?.flatten();
        let last_membership: StoredMembership = Self::read(&tree, "membership", MEMBERSHIP)?.unwrap_or_default();
        Ok(Cut { writing, generation, tree, meta: SnapshotMeta { last_log_id, last_membership } })
    }

    /// Writes every record of `tree` to the snapshot file at `path`; nothing may write the tree
    /// meanwhile. Returns the file and how many records it holds.
    pub(super) fn dump_tree(tree: &sled::Tree, path: &Path, meta: &SnapshotMeta) -> io::Result<(SnapshotFile, u64)> {
        let mut entries = 0u64;
        let records = tree.iter().map(|item| {
            entries += 1;
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| from_sled("snapshot read", e))
        });
        let file = snapshot::write(path, meta, records)?;
        Ok((file, entries))
    }

    /// Builds a snapshot without stopping the apply path for the length of the dump. Under the
    /// apply lock every applied write is put into the tree and the write lock is taken; then the
    /// apply lock is let go. While the tree is dumped, entries go on being applied into the
    /// in-memory layers (reads see them there), and the background writer waits for the write
    /// lock, so the tree stays at the cut. Only past [`write_back::MAX_UNFLUSHED_RECORDS`]
    /// unwritten records does an apply wait for the dump (back-pressure, as on a slow disk).
    ///
    /// The write lock is released before the apply lock is taken again to publish the snapshot
    /// (an apply holding the apply lock may be waiting for the write lock). An install that got
    /// in between replaced the tree with a newer state: this older snapshot is then dropped and
    /// not published; openraft, which only takes the meta, ignores a snapshot older than the
    /// one it has.
    pub(super) fn build_snapshot_blocking(&self) -> io::Result<SnapshotOf<TypeConfig, SnapshotFile>> {
        let n = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let cut = {
            let _applying = crate::support::sync::lock(&self.inner.apply_lock);
            self.take_cut()?
        };
        let applied = cut.meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let file_name = format!("snap-{applied:020}-{}-{n}.snap", std::process::id());
        let (file, entries) = Self::dump_tree(&cut.tree, &self.inner.snapshot_dir.join(&file_name), &cut.meta)?;
        // The write lock goes before the apply lock is taken again (an apply holding the apply
        // lock may be waiting for the write lock).
        let Cut { writing, generation, meta, .. } = cut;
        drop(writing);
        let _applying = crate::support::sync::lock(&self.inner.apply_lock);
        if self.inner.live().generation != generation {
            tracing::info!(applied, "a snapshot was installed while one was built: the older one is dropped");
            let _ = std::fs::remove_file(&file.path);
            return Ok(Snapshot { meta, snapshot: file });
        }
        self.publish_snapshot(&meta, &file_name, None)?;
        self.inner.metrics.record_snapshot(SnapshotKind::Built, file.len, entries);
        Ok(Snapshot { meta, snapshot: file })
    }

    /// Makes `file_name` the current snapshot (optionally flipping the active tree at the
    /// same time), durably, and removes older snapshot files.
    pub(super) fn publish_snapshot(
        &self,
        meta: &SnapshotMeta,
        file_name: &str,
        new_active: Option<u64>,
    ) -> io::Result<()> {
        // The state machine must be durable at least up to the snapshot before openraft may
        // purge the log behind it.
        self.flush_blocking("flush state machine")?;
        let record = SnapshotRecord { meta: meta.clone(), file_name: file_name.to_string() };
        let mut batch = sled::Batch::default();
        batch.insert(CURRENT_SNAPSHOT, encode(&record)?);
        if let Some(generation) = new_active {
            batch.insert(ACTIVE, &generation.to_be_bytes());
        }
        self.inner.pointer.apply_batch(batch).map_err(|e| from_sled("record snapshot", e))?;
        self.flush_blocking("flush snapshot record")?;
        // Only finished snapshots: a snapshot being received (`incoming-*`) stays.
        self.remove_snapshot_files(Some(file_name), |name| name.starts_with("snap-") && name.ends_with(".snap"))
    }

    pub(super) fn install_snapshot_blocking(&self, meta: &SnapshotMeta, file: &SnapshotFile) -> io::Result<()> {
        // Check the whole file before touching anything.
        let (file_meta, entries) = snapshot::verify(&file.path)?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot file is for {:?}, expected {:?}", file_meta.last_log_id, meta.last_log_id),
            ));
        }
        let _guard = crate::support::sync::lock(&self.inner.apply_lock);
        // No layer may reach the old tree while it is replaced; they are dropped with it.
        let _writing = crate::support::sync::lock(&self.inner.write_lock);
        let old_generation = self.inner.live().generation;
        let generation = old_generation + 1;
        let name = tree_name(generation);
        self.inner.db.drop_tree(name.as_bytes()).map_err(|e| from_sled("drop stale tree", e))?;
        let tree = self.inner.db.open_tree(name.as_bytes()).map_err(|e| from_sled("create tree", e))?;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        snapshot::read(&file.path, |k, v| {
            batch.insert(k, v);
            pending += 1;
            if pending == INSTALL_BATCH {
                tree.apply_batch(std::mem::take(&mut batch)).map_err(|e| from_sled("install", e))?;
                pending = 0;
            }
            Ok(())
        })?;
        batch.insert(APPLIED, encode(&meta.last_log_id)?);
        batch.insert(MEMBERSHIP, encode(&meta.last_membership)?);
        tree.apply_batch(batch).map_err(|e| from_sled("install", e))?;

        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let n = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let file_name = format!("snap-{index:020}-{}-{n}.snap", std::process::id());
        let dest = self.inner.snapshot_dir.join(&file_name);
        if file.path != dest {
            std::fs::rename(&file.path, &dest).or_else(|_| std::fs::copy(&file.path, &dest).map(|_| ()))?;
            crate::support::durable::sync_dir_of(&dest)?;
        }
        self.publish_snapshot(meta, &file_name, Some(generation))?;
        *self.inner.live_mut() = Live::new(generation, tree);
        self.inner.applied_index.store(index, Ordering::Relaxed);
        let revision = super::history::revision(&*self.inner.live())?;
        self.inner.revision.store(revision, Ordering::Relaxed);
        self.inner.compacted.store(super::history::compacted(&*self.inner.live())?, Ordering::Relaxed);
        let _ = self.inner.applied.send(super::history::Applied { revision, events: Vec::new().into() });
        self.inner.db.drop_tree(tree_name(old_generation).as_bytes()).map_err(|e| from_sled("drop old tree", e))?;
        self.inner.metrics.record_snapshot(SnapshotKind::Installed, file.len, entries);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let sm = self.clone();
        tokio::task::spawn_blocking(move || sm.build_snapshot_blocking().map_err(|e| sm.inner.faults.note(e)))
            .await
            .map_err(|e| io_err("snapshot task", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::applying_goes_on_during_a_dump;

    /// Entries go on being applied while a snapshot is dumped, and the snapshot is still an
    /// exact cut.
    #[test]
    fn applying_goes_on_while_a_snapshot_is_dumped_and_the_cut_stays_exact() {
        applying_goes_on_during_a_dump(|sm| {
            let snapshot = sm.build_snapshot_blocking().expect("build");
            (snapshot.meta, snapshot.snapshot.path)
        });
    }
}
