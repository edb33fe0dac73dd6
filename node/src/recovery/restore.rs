//! Restoring a backup: a new one-member cluster that starts out holding the backup's data.
//!
//! Two steps, so the same commands work in an init container, the harness and by hand:
//!
//! 1. [`stage`] (`petkv restore --from FILE`) checks the backup end to end and copies it onto
//!    ordinal 0's empty volume as `restore.snap`. It does nothing on other ordinals (they join
//!    the restored primary with empty volumes) and refuses a volume that has state, saying
//!    what to do (a set still running, say). With `--if-empty` it leaves alone only a volume
//!    whose cluster was restored from this very backup (`restored-from` holds its checksum),
//!    so a restarted pod never restores twice.
//! 2. [`finish`], at the node's start (`petkv serve`), when ordinal 0 finds a staged backup:
//!    refuses if a cluster already answers on the peers (a restore would start a second cluster
//!    beside it); otherwise claims the volume under a new cluster id, installs the backup as the
//!    state machine at the backup's Raft index with a membership of this node alone, records a
//!    vote one term past the backup's last entry, records the "set was bootstrapped" marker and
//!    removes the staged file. Raft then starts as if from a snapshot: the log continues after
//!    the backup's index, so the indexes of restored keys stay below every new write's.
//!
//! Crash safety: the staged file is removed last. A node that stops halfway finds the staged
//! file again next time, with or without an identity, and runs the same steps again (each is
//! idempotent; the state-machine install swaps trees atomically).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::node::Node;
use crate::pod::identity::{self, IdentityRecord, PodName};
use crate::raft::{self, Membership, SnapshotMeta, StoredMembership};
use crate::recovery::backup::{self, BackupSummary};
use crate::store::{self, StoreOptions};

/// The staged backup on the volume.
pub const STAGED_FILE: &str = "restore.snap";
/// Which backup a volume's cluster was restored from (its checksum), written when a restore
/// finishes: `--if-empty` leaves only such a volume alone.
pub const RESTORED_FROM_FILE: &str = "restored-from";

/// Where a staged backup lives on a volume.
pub fn staged_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STAGED_FILE)
}

/// True when ordinal 0's volume holds a backup waiting to become the cluster's state.
pub fn is_staged(data_dir: &Path) -> bool {
    staged_path(data_dir).exists()
}

/// What [`stage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    /// The backup is on the volume; the next `petkv serve` of ordinal 0 restores it.
    Staged(BackupSummary),
    /// Not ordinal 0: this pod joins the restored primary with an empty volume.
    NotPrimary,
    /// `--if-empty`, and the volume already holds the cluster restored from this very backup
    /// (a restarted pod): left alone.
    AlreadyRestored(String),
}

/// Checks `backup` and stages it on `data_dir` for `pod` (see the module doc).
pub fn stage(backup: &Path, data_dir: &Path, pod: &PodName, if_empty: bool) -> anyhow::Result<StageOutcome> {
    // A snapshot saved through the etcd port (etcdctl snapshot save) holds the backup inside.
    let unwrapped = super::etcd_snapshot::unwrap(backup)
        .with_context(|| format!("reading {} as an etcd snapshot of a petkv backup", backup.display()))?;
    let backup = unwrapped.as_ref().map_or(backup, |file| file.path());
    let summary = backup::inspect(backup)?;
    if pod.ordinal != 0 {
        return Ok(StageOutcome::NotPrimary);
    }
    if let Some(record) = identity::load(data_dir)? {
        let what = format!("node {} of cluster {:?}", raft::node_label(&pod.set, record.node_id), record.cluster_id);
        if if_empty && restored_from(data_dir)?.as_deref() == Some(summary.checksum.as_str()) {
            return Ok(StageOutcome::AlreadyRestored(what));
        }
        bail!(
            "volume {} has state ({what}){}; a restore starts a new cluster on an empty volume, so it \
             refuses to touch this one. Is the set still running? Stop it and delete its volumes first \
             (kubectl delete statefulset petkv; kubectl delete pvc -l app.kubernetes.io/component=node; \
             deploy/README.md, \"Backups and restore\"), then restore again",
            data_dir.display(),
            if if_empty { ", which was not restored from this backup" } else { "" }
        );
    }
    if store::exists(data_dir) {
        // No identity but a store: refuse data the node itself would refuse, rather than mix.
        let (log, sm) = store::open(data_dir, &StoreOptions::default())
            .with_context(|| format!("opening the store in {} (is a node running on it?)", data_dir.display()))?;
        if log.has_raft_state()? || sm.has_state()? {
            bail!(
                "volume {} holds Raft data without an identity record; refusing to restore over it",
                data_dir.display()
            );
        }
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let dest = staged_path(data_dir);
    let tmp = dest.with_extension("partial");
    std::fs::copy(backup, &tmp).with_context(|| format!("copy {} to {}", backup.display(), tmp.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("rename into {}", dest.display()))?;
    crate::support::durable::sync_dir_of(&dest).context("fsync the data dir")?;
    Ok(StageOutcome::Staged(BackupSummary { path: dest, ..summary }))
}

/// The checksum of the backup this volume's cluster was restored from, if it was.
fn restored_from(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(RESTORED_FROM_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Turns the staged backup into this node's state (see the module doc). `identity` is what the
/// volume held: `None` on the first attempt, the identity of an attempt that stopped halfway
/// otherwise. Returns the identity to start Raft with.
pub async fn finish(node: &Arc<Node>, identity: Option<IdentityRecord>) -> anyhow::Result<IdentityRecord> {
    let config = &node.config;
    let staged = staged_path(&config.data_dir);
    let (summary, last) = {
        let staged = staged.clone();
        tokio::task::spawn_blocking(move || backup::inspect_cut(&staged))
            .await
            .context("checking the staged backup")??
    };
    let record = match identity {
        Some(record) => {
            tracing::warn!(cluster_id = %record.cluster_id, "finishing a restore that stopped halfway");
            record
        }
        None => {
            if let Some(found) = crate::pod::boot::probe(&node.channels, &config.peers, &config.pod).await {
                bail!(
                    "a cluster ({}) answers at {}: restoring here would start a second cluster beside it. \
                     Stop the set and delete its volumes first, or remove {} to join the running cluster instead",
                    found.info.cluster_id,
                    found.via,
                    staged.display()
                );
            }
            let record = IdentityRecord::new(&config.pod, identity::new_cluster_id(), raft::node_id(0, 1));
            crate::pod::volume::claim(&config.data_dir, &node.log, &record).await?;
            record
        }
    };
    tracing::info!(
        backup_index = summary.raft_index,
        keys = summary.keys,
        cluster_id = %record.cluster_id,
        "restoring a backup as a new one-member cluster"
    );
    let me = record.node_id;
    let members = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node.peer_node())]))
        .context("building the restored cluster's membership")?;
    let meta = SnapshotMeta { last_log_id: Some(last), last_membership: StoredMembership::new(Some(last), members) };
    node.sm.install_restored(&staged, meta).await.context("installing the backup into the state machine")?;
    node.log.seed_vote_after(&last, me).await.context("recording the vote")?;
    config
        .bootstrap_marker
        .replace(&record.cluster_id)
        .await
        .context("recording the restored cluster in the bootstrap marker")?;
    let restored_from = config.data_dir.join(RESTORED_FROM_FILE);
    crate::support::durable::write_atomically(&restored_from, format!("{}\n", summary.checksum).as_bytes())
        .with_context(|| format!("write {}", restored_from.display()))?;
    crate::support::durable::remove(&staged).with_context(|| format!("remove {}", staged.display()))?;
    tracing::info!(index = last.index, "restore finished; starting Raft from the restored state");
    Ok(record)
}
