//! Leases in the replicated state: which leases exist, with what TTL, and which keys each
//! holds. Granting, revoking (which deletes every key of the lease at one revision) and
//! attaching keys are applied like any entry, so every member agrees; *when* a lease expires
//! is decided by the leader's clock (`api::lease`), which then proposes its revocation.

use std::io;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::apply::Pending;
use super::records::{attached_key, lease_key, ATTACHED, LAST_LEASE_ID, LEASE};
use super::StateMachine;
use crate::store::command::{CommandResult, LeaseError, StoredValue};
use crate::store::{decode, encode};

/// A lease as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl_seconds: u64,
}

impl Pending<'_> {
    /// Whether lease `id` exists as this run sees it.
    pub(super) fn lease_exists(&self, id: u64) -> io::Result<bool> {
        Ok(self.read::<LeaseRecord>("lease", &lease_key(id))?.is_some())
    }

    pub(super) fn lease_grant(&mut self, index: u64, id: u64, ttl_seconds: u64) -> io::Result<CommandResult> {
        let last: u64 = self.read("last lease id", LAST_LEASE_ID)?.unwrap_or(0);
        let id = if id == 0 { last + 1 } else { id };
        if self.lease_exists(id)? {
            return Ok(CommandResult::LeaseRefused(LeaseError::Exists(id)));
        }
        self.insert(&lease_key(id), encode(&LeaseRecord { ttl_seconds })?);
        self.insert(LAST_LEASE_ID, encode(&last.max(id))?);
        Ok(CommandResult::LeaseGranted { index, id, ttl_seconds })
    }

    /// Ends lease `id`: deletes every key still attached to it (at the entry's revision).
    pub(super) fn lease_revoke(&mut self, index: u64, id: u64) -> io::Result<CommandResult> {
        if !self.lease_exists(id)? {
            return Ok(CommandResult::LeaseRefused(LeaseError::NotFound(id)));
        }
        let prefix = attached_key(id, b"");
        let upper = match id.checked_add(1) {
            Some(next) => Bound::Excluded(attached_key(next, b"")),
            None => Bound::Excluded(vec![ATTACHED + 1]),
        };
        let mut deleted = 0;
        for (record, _) in self.records_in(Bound::Included(prefix.clone()), upper)? {
            let key = &record[prefix.len()..];
            if let Some(current) = self.value(key)?.filter(|c| c.lease == id) {
                self.delete_key(key, current)?;
                deleted += 1;
            }
            self.remove(&record);
        }
        self.remove(&lease_key(id));
        Ok(CommandResult::LeaseRevoked { index, revision: self.revision()?, deleted })
    }

    /// Moves `key`'s attachment from the lease of `current` (if any) to `lease` (if any).
    pub(super) fn attach(&mut self, key: &[u8], current: Option<&StoredValue>, lease: u64) -> io::Result<()> {
        let old = current.map_or(0, |c| c.lease);
        if old != 0 && old != lease {
            self.remove(&attached_key(old, key));
        }
        if lease != 0 && old != lease {
            self.insert(&attached_key(lease, key), Vec::new());
        }
        Ok(())
    }
}

impl StateMachine {
    /// Every lease, by id.
    pub fn leases(&self) -> io::Result<Vec<(u64, LeaseRecord)>> {
        let live = self.inner.live();
        let lower = Bound::Included(vec![LEASE]);
        let upper = Bound::Excluded(vec![LEASE + 1]);
        crate::store::write_back::Merged::new(live.layers(&lower, &upper))
            .map(|item| {
                let (k, v) = item?;
                let id = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged lease record key"))?;
                Ok((id, decode::<LeaseRecord>("lease", &v)?))
            })
            .collect()
    }

    /// Lease `id`, if it exists.
    pub fn lease(&self, id: u64) -> io::Result<Option<LeaseRecord>> {
        self.inner.live().read("lease", &lease_key(id))
    }

    /// The keys attached to lease `id`.
    pub fn lease_keys(&self, id: u64) -> io::Result<Vec<Vec<u8>>> {
        let live = self.inner.live();
        let prefix = attached_key(id, b"");
        let upper = match id.checked_add(1) {
            Some(next) => Bound::Excluded(attached_key(next, b"")),
            None => Bound::Excluded(vec![ATTACHED + 1]),
        };
        crate::store::write_back::Merged::new(live.layers(&Bound::Included(prefix.clone()), &upper))
            .map(|item| item.map(|(k, _)| k[prefix.len()..].to_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::command::{Command, CommandResult, LeaseError};
    use crate::store::state_machine::test_support::entry;
    use crate::store::state_machine::StateMachine;
    use crate::store::{open, StoreOptions};

    fn put(key: &str, lease: u64) -> Command {
        Command::Put { key: key.into(), value: b"v".to_vec(), if_mod_revision: None, write_id: None, lease }
    }

    fn run(sm: &StateMachine, first: u64, cmds: Vec<Command>) -> Vec<CommandResult> {
        let entries: Vec<_> = cmds.into_iter().enumerate().map(|(i, c)| entry(first + i as u64, c)).collect();
        sm.apply_run(&entries).expect("apply")
    }

    #[test]
    fn a_revoked_lease_takes_exactly_its_keys_at_one_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_log, sm) = open(dir.path(), &StoreOptions::default()).expect("open");
        let granted = run(
            &sm,
            1,
            vec![Command::LeaseGrant { id: 0, ttl_seconds: 5 }, Command::LeaseGrant { id: 0, ttl_seconds: 9 }],
        );
        assert_eq!(
            granted,
            [
                CommandResult::LeaseGranted { index: 1, id: 1, ttl_seconds: 5 },
                CommandResult::LeaseGranted { index: 2, id: 2, ttl_seconds: 9 }
            ]
        );
        let refused = run(&sm, 3, vec![Command::LeaseGrant { id: 2, ttl_seconds: 1 }, put("x", 7)]);
        assert_eq!(
            refused,
            [CommandResult::LeaseRefused(LeaseError::Exists(2)), CommandResult::LeaseRefused(LeaseError::NotFound(7))]
        );
        run(
            &sm,
            5,
            vec![
                put("a", 1),
                put("b", 1),
                put("c", 1),
                put("moved", 1),
                put("moved", 2),
                put("freed", 1),
                put("freed", 0),
                put("gone", 1),
                Command::Delete { key: b"gone".to_vec(), if_mod_revision: None, write_id: None },
            ],
        );
        assert_eq!(sm.lease_keys(1).expect("keys"), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(sm.lease_keys(2).expect("keys"), [b"moved".to_vec()]);
        let before = sm.current_revision();
        let revoked = run(&sm, 20, vec![Command::LeaseRevoke { id: 1 }]);
        assert_eq!(revoked, [CommandResult::LeaseRevoked { index: 20, revision: before + 1, deleted: 3 }]);
        let events = sm.events_from(before + 1, usize::MAX).expect("read").expect("kept");
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.revision == before + 1 && e.event.after.is_none()));
        for (key, kept) in [("a", false), ("moved", true), ("freed", true)] {
            assert_eq!(sm.get(key.as_bytes()).expect("get").is_some(), kept, "{key}");
        }
        assert!(sm.lease(1).expect("lease").is_none());
        assert_eq!(sm.leases().expect("leases").iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
        assert_eq!(
            run(&sm, 21, vec![Command::LeaseRevoke { id: 1 }]),
            [CommandResult::LeaseRefused(LeaseError::NotFound(1))]
        );
    }
}
