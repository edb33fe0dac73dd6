//! The layout of the state machine's sled trees: which record lives under which key.
//!
//! The active tree (`sm.<generation>`) holds user keys under the [`DATA`] prefix, the history
//! of changes under [`HISTORY`] (by revision), dedup sessions under [`SESSION`], node-id
//! allocations under [`INCARNATION`], and bookkeeping under `m…` keys. The pointer tree (`sm_pointer`) names the active generation and the current
//! snapshot. User keys sort after one prefix byte, so a scan of user keys is a range of the
//! tree and bookkeeping never reads as a user key.

pub(super) const DATA: u8 = b'd';
pub(super) const SESSION: u8 = b's';
pub(super) const INCARNATION: u8 = b'i';
pub(super) const HISTORY: u8 = b'h';
/// Leases: `l<id>` → the lease; `a<id><key>` → a key attached to it.
pub(super) const LEASE: u8 = b'l';
pub(super) const ATTACHED: u8 = b'a';
pub(super) const APPLIED: &[u8] = b"mapplied";
pub(super) const MEMBERSHIP: &[u8] = b"mmembership";
pub(super) const KEY_COUNT: &[u8] = b"mkeys";
pub(super) const DECLARED_REPLICAS: &[u8] = b"mreplicas";
/// The store's revision ([`super::history`]).
pub(super) const REVISION: &[u8] = b"mrevision";
/// The revision before which the history is dropped.
pub(super) const COMPACTED: &[u8] = b"mcompacted";
/// The last lease id the store picked.
pub(super) const LAST_LEASE_ID: &[u8] = b"mleaseid";

/// Pointer-tree key of the active generation.
pub(super) const ACTIVE: &[u8] = b"active";
/// Pointer-tree key of the current snapshot's record.
pub(super) const CURRENT_SNAPSHOT: &[u8] = b"snapshot";

/// The sled tree of one generation of the state (a snapshot install fills the next one).
pub(super) fn tree_name(generation: u64) -> String {
    format!("sm.{generation}")
}

/// True when a record of a snapshot or backup is a user key (not Raft or session bookkeeping).
pub fn is_user_key_record(record_key: &[u8]) -> bool {
    record_key.first() == Some(&DATA)
}

/// The store revision a snapshot or backup holds, if `record_key` is the record that keeps it.
pub fn revision_of_record(record_key: &[u8], value: &[u8]) -> Option<u64> {
    (record_key == REVISION).then(|| crate::store::decode::<u64>("revision", value).ok()).flatten()
}

pub(super) fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

pub(super) fn prefixed(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(id);
    k
}

/// The history key of the `sub`-th change at `revision`: in revision order, then sub order.
pub(super) fn history_key(revision: u64, sub: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(HISTORY);
    k.extend_from_slice(&revision.to_be_bytes());
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

/// The record of lease `id`.
pub(super) fn lease_key(id: u64) -> Vec<u8> {
    prefixed(LEASE, &id.to_be_bytes())
}

/// The record that attaches `key` to lease `id`; every key of a lease shares the prefix
/// `attached_key(id, b"")`.
pub(super) fn attached_key(id: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(ATTACHED);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The revision of a history key.
pub(super) fn history_revision(key: &[u8]) -> std::io::Result<u64> {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .filter(|_| key.len() == 13 && key[0] == HISTORY)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "damaged history key"))
}

/// Where a record can be read: the live tree under its unwritten layers, or a run's pending
/// writes over those.
pub(super) trait Records {
    fn read<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> std::io::Result<Option<T>>;
}

impl Records for crate::store::write_back::Live {
    fn read<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> std::io::Result<Option<T>> {
        crate::store::write_back::Live::read(self, what, key)
    }
}

impl Records for super::apply::Pending<'_> {
    fn read<T: serde::de::DeserializeOwned>(&self, what: &str, key: &[u8]) -> std::io::Result<Option<T>> {
        super::apply::Pending::read(self, what, key)
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn data_keys_round_trip_and_keep_the_order_of_user_keys(a in prop::collection::vec(any::<u8>(), 0..8), b in prop::collection::vec(any::<u8>(), 0..8)) {
            let (ka, kb) = (data_key(&a), data_key(&b));
            prop_assert_eq!(&ka[1..], a.as_slice());
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert!(is_user_key_record(&ka));
            for meta in [APPLIED, MEMBERSHIP, KEY_COUNT, DECLARED_REPLICAS, REVISION, COMPACTED] {
                prop_assert!(!is_user_key_record(meta), "bookkeeping never reads as a user key");
            }
            prop_assert!(!is_user_key_record(&prefixed(SESSION, &a)));
        }

        #[test]
        fn history_keys_sort_by_revision_then_sub(r1: u64, s1: u32, r2: u64, s2: u32) {
            let (a, b) = (history_key(r1, s1), history_key(r2, s2));
            prop_assert_eq!(a.cmp(&b), (r1, s1).cmp(&(r2, s2)));
            prop_assert_eq!(history_revision(&a).expect("revision"), r1);
            prop_assert!(!is_user_key_record(&a));
        }
    }
}
