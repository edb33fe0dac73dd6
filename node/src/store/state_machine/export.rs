//! Backups out of and restores into the state machine: a consistent cut written to a file for
//! `petkv backup`, and a backup of another cluster installed as this one's state.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::records::REVISION;
use super::StateMachine;
use crate::raft::SnapshotMeta;
use crate::store::io_err;
use crate::store::snapshot;

/// A consistent cut written for a backup.
pub struct Export {
    /// The cut's applied log id and membership.
    pub meta: SnapshotMeta,
    /// The store revision of the cut.
    pub revision: u64,
    /// The file; removed when this drops.
    pub file: tempfile::TempPath,
}

impl StateMachine {
    /// Writes a consistent cut of the state machine (at its current applied index) to a new
    /// file in the snapshot dir, for a backup; the file is not offered to Raft and is removed
    /// when the returned handle drops (and at the next start, if the process dies first).
    ///
    /// Like a snapshot build, only taking the cut waits for the apply path: entries go on being
    /// applied into the in-memory layers while the tree is dumped.
    pub async fn export(&self) -> io::Result<Export> {
        let sm = self.clone();
        tokio::task::spawn_blocking(move || {
            let n = sm.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let path = sm.inner.snapshot_dir.join(format!("backup-{}-{n}.snap", std::process::id()));
            let cut = {
                let _applying = crate::support::sync::lock(&sm.inner.apply_lock);
                sm.take_cut()?
            };
            let revision = StateMachine::read::<u64>(&cut.tree, "revision", REVISION)?.unwrap_or(0);
            let (file, _) = StateMachine::dump_tree(&cut.tree, &path, &cut.meta)?;
            Ok(Export { meta: cut.meta, revision, file: tempfile::TempPath::try_from_path(file.path)? })
        })
        .await
        .map_err(|e| io_err("backup task", e))?
    }

    /// Installs a backup taken from another cluster as this state machine's state at
    /// `meta.last_log_id`, with `meta.last_membership` replacing the membership the backup
    /// recorded (a restored cluster starts with its own members). The file is checked whole
    /// first; it becomes the current snapshot, relabelled with `meta`.
    pub async fn install_restored(&self, backup: &Path, meta: SnapshotMeta) -> io::Result<()> {
        let sm = self.clone();
        let backup = backup.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let n = sm.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
            let relabelled = sm.inner.snapshot_dir.join(format!("restore-{}-{n}.snap", std::process::id()));
            let file = snapshot::relabel(&backup, &relabelled, &meta)?;
            sm.install_snapshot_blocking(&meta, &file)
        })
        .await
        .map_err(|e| io_err("restore task", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::applying_goes_on_during_a_dump;

    /// A backup does not stop writes for the length of its dump, and is still an exact cut.
    #[test]
    fn applying_goes_on_while_a_backup_is_dumped_and_the_cut_stays_exact() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        applying_goes_on_during_a_dump(|sm| {
            let export = runtime.block_on(sm.export()).expect("export");
            // Kept for the check: the handle would remove the file when dropped.
            (export.meta, export.file.keep().expect("keep the backup file"))
        });
    }
}
