//! The start-up check of a pod's volume: does the identity record agree with the store?
//!
//! Two records say who a volume belongs to: `identity.json` (human-readable, checked against
//! the hostname before anything is opened) and the owner record inside the Raft store. The
//! owner record is written first, the identity record second, so:
//!
//! | identity.json | store owner | store has Raft state | verdict |
//! |---|---|---|---|
//! | present | same node | — | the volume is this node's: resume |
//! | present | other or none | — | refuse: the store was wiped or replaced under the identity |
//! | absent | — | yes | refuse: data without identity (foreign or damaged) |
//! | absent | present | no | a start-up stopped between the two writes: forget the unconfirmed owner, start empty |
//! | absent | absent | no | empty volume |

use std::path::Path;

use crate::pod::identity::{self, IdentityError, IdentityRecord, PodName};
use crate::store::{self, LogStore, StateMachine, StoreOwner};

/// What the volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeState {
    /// No identity: the start-up decision table applies.
    Empty,
    /// The volume belongs to this node.
    Owned(IdentityRecord),
}

/// Checks the identity record against the hostname before the store is opened (so a foreign
/// volume is left untouched). Returns the record, if any.
pub fn check_identity(data_dir: &Path, pod: &PodName) -> Result<Option<IdentityRecord>, IdentityError> {
    let record = identity::load(data_dir)?;
    if let Some(r) = &record {
        r.check_matches(pod, data_dir)?;
        if !store::exists(data_dir) {
            return Err(IdentityError::StoreMismatch {
                data_dir: data_dir.to_path_buf(),
                node_id: r.node_id,
                cluster_id: r.cluster_id.clone(),
                store: "is missing".into(),
            });
        }
    }
    Ok(record)
}

/// Checks the opened store against the identity record.
pub async fn check_store(
    data_dir: &Path,
    record: Option<IdentityRecord>,
    log: &LogStore,
    sm: &StateMachine,
) -> Result<VolumeState, IdentityError> {
    let unreadable =
        |e: std::io::Error| IdentityError::StoreUnreadable { data_dir: data_dir.to_path_buf(), detail: e.to_string() };
    let owner = log.owner().map_err(unreadable)?;
    let has_state = log.has_raft_state().map_err(unreadable)? || sm.has_state().map_err(unreadable)?;
    match (record, owner) {
        (Some(r), Some(o)) if o.node_id == r.node_id && o.cluster_id == r.cluster_id => Ok(VolumeState::Owned(r)),
        (Some(r), other) => Err(IdentityError::StoreMismatch {
            data_dir: data_dir.to_path_buf(),
            node_id: r.node_id,
            cluster_id: r.cluster_id,
            store: match other {
                Some(o) => format!("belongs to node {} of cluster {:?}", o.node_id, o.cluster_id),
                None => "has no owner record".into(),
            },
        }),
        (None, _) if has_state => Err(IdentityError::DataWithoutIdentity { data_dir: data_dir.to_path_buf() }),
        (None, Some(o)) => {
            tracing::warn!(node_id = o.node_id, "forgetting a node id allocated by a start-up that did not finish");
            log.clear_owner().await.map_err(unreadable)?;
            Ok(VolumeState::Empty)
        }
        (None, None) => Ok(VolumeState::Empty),
    }
}

/// Gives the volume an identity: the store's owner record first, then the identity record.
pub async fn claim(data_dir: &Path, log: &LogStore, record: &IdentityRecord) -> anyhow::Result<()> {
    log.set_owner(&StoreOwner { cluster_id: record.cluster_id.clone(), node_id: record.node_id }).await?;
    identity::save(data_dir, record)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::identity::parse_hostname;
    use crate::raft::node_id;
    use crate::store::StoreOptions;

    fn record(ordinal: u32, incarnation: u32) -> IdentityRecord {
        let pod = parse_hostname(&format!("petkv-{ordinal}")).expect("pod");
        IdentityRecord::new(&pod, "c1".into(), node_id(ordinal, incarnation))
    }

    #[tokio::test]
    async fn empty_volume_is_empty_and_a_claimed_one_is_owned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = store::open(dir.path(), &StoreOptions::default()).expect("open");
        assert_eq!(check_store(dir.path(), None, &log, &sm).await.expect("check"), VolumeState::Empty);
        let r = record(1, 1);
        claim(dir.path(), &log, &r).await.expect("claim");
        let loaded = check_identity(dir.path(), &r.pod()).expect("identity");
        assert_eq!(check_store(dir.path(), loaded, &log, &sm).await.expect("check"), VolumeState::Owned(r));
    }

    #[tokio::test]
    async fn a_wiped_store_under_a_surviving_identity_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = record(2, 1);
        {
            let (log, _sm) = store::open(dir.path(), &StoreOptions::default()).expect("open");
            claim(dir.path(), &log, &r).await.expect("claim");
        }
        std::fs::remove_dir_all(dir.path().join("sled")).expect("wipe sled");
        let err = check_identity(dir.path(), &r.pod()).expect_err("missing state machine");
        assert!(err.to_string().contains("is missing"), "{err}");
        std::fs::remove_dir_all(dir.path().join("raft-log")).expect("wipe the log");
        let err = check_identity(dir.path(), &r.pod()).expect_err("missing store");
        assert!(err.to_string().contains("is missing"), "{err}");
        // An empty store put back in its place is refused too.
        let (log, sm) = store::open(dir.path(), &StoreOptions::default()).expect("open");
        let err = check_store(dir.path(), Some(r), &log, &sm).await.expect_err("empty store");
        assert!(err.to_string().contains("no owner record"), "{err}");
    }

    #[tokio::test]
    async fn a_store_of_another_incarnation_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = store::open(dir.path(), &StoreOptions::default()).expect("open");
        claim(dir.path(), &log, &record(2, 1)).await.expect("claim");
        let err = check_store(dir.path(), Some(record(2, 2)), &log, &sm).await.expect_err("other incarnation");
        assert!(err.to_string().contains("belongs to node"), "{err}");
    }

    #[tokio::test]
    async fn an_unconfirmed_owner_is_forgotten_and_the_volume_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = store::open(dir.path(), &StoreOptions::default()).expect("open");
        log.set_owner(&StoreOwner { cluster_id: "c1".into(), node_id: node_id(1, 3) }).await.expect("owner");
        assert_eq!(check_store(dir.path(), None, &log, &sm).await.expect("check"), VolumeState::Empty);
        assert_eq!(log.owner().expect("read"), None);
    }
}
