//! What the Raft log carries and what applying it returns.
//!
//! These are domain types, not wire types: the gRPC layer converts `petkv.v1` requests into a
//! [`Command`] and a [`CommandResult`] back into a reply. They are serialized with serde into
//! the log (postcard), so changing them changes the on-disk format. Byte strings are
//! `serde_bytes`: postcard writes them exactly as it writes a `Vec<u8>` sequence (length, then
//! the bytes), only in one copy instead of byte by byte; the test below pins that.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one logical client write, so a retried write is applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId {
    /// Random per client process.
    pub client_id: u64,
    /// Increases by one for every new write of that client; a retry reuses it.
    pub sequence: u64,
}

/// A replicated state machine command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Write a key, optionally only if its mod revision matches (0 = absent).
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        if_mod_revision: Option<u64>,
        write_id: Option<WriteId>,
        /// The lease the key is attached to (0: none).
        lease: u64,
    },
    /// Delete a key, optionally only if its mod revision matches.
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        if_mod_revision: Option<u64>,
        write_id: Option<WriteId>,
    },
    /// Allocate a never-used node id for a pod ordinal (a new volume joining).
    AllocateNodeId { ordinal: u32 },
    /// Declare the set's replica count (a StatefulSet's `spec.replicas`).
    SetReplicas { replicas: u32 },
    /// Drop the history before `revision` (reads and watches of older revisions are refused
    /// from then on). Changes no key and takes no revision.
    Compact { revision: u64 },
    /// Compare, then run one list of operations or the other, as one entry (one revision).
    Txn(Txn),
    /// Grant a lease (`id` 0: the next free id) of `ttl_seconds`.
    LeaseGrant { id: u64, ttl_seconds: u64 },
    /// End a lease and delete its keys at one revision (revoked, or expired on the leader).
    LeaseRevoke { id: u64 },
}

/// A transaction: `success` runs when every comparison holds, `failure` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
    pub write_id: Option<WriteId>,
}

/// One comparison against a key as the transaction finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub target: CompareTarget,
    pub op: CompareOp,
}

/// What a comparison looks at, and the operand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(u64),
    /// `target` compared for every key of `[key, end)` (no end: every key from `key` on):
    /// etcd's compare with a range end. It holds when it holds for each key in the range; an
    /// empty range compares as an absent key. (Added last: older log entries never hold it.)
    InRange {
        end: Option<serde_bytes::ByteBuf>,
        target: Box<CompareTarget>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// The keys an operation covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRange {
    /// One key.
    Key(#[serde(with = "serde_bytes")] Vec<u8>),
    /// `[start, end)`; no end: to the last key.
    Span {
        #[serde(with = "serde_bytes")]
        start: Vec<u8>,
        end: Option<serde_bytes::ByteBuf>,
    },
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        lease: u64,
        prev_kv: bool,
    },
    Delete {
        range: KeyRange,
        prev_kv: bool,
    },
    Range {
        range: KeyRange,
        limit: usize,
    },
    /// A transaction inside the transaction (etcd's `request_txn`): its compares see the keys
    /// as the outer transaction found them, as etcd's do. (Added last: older log entries never
    /// hold it.)
    Txn(Box<Txn>),
}

/// What one operation of a transaction returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Put {
        prev: Option<KeyValue>,
    },
    Delete {
        deleted: u64,
        prev: Vec<KeyValue>,
    },
    Range {
        kvs: Vec<KeyValue>,
        more: bool,
    },
    /// A nested transaction's branch and its operations' results.
    Txn {
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
}

impl Command {
    /// The client write identity, if the command carries one.
    pub fn write_id(&self) -> Option<WriteId> {
        match self {
            Command::Put { write_id, .. } | Command::Delete { write_id, .. } => *write_id,
            Command::Txn(txn) => txn.write_id,
            Command::AllocateNodeId { .. }
            | Command::SetReplicas { .. }
            | Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. } => None,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put { key, value, if_mod_revision, .. } => write!(
                f,
                "put key={} value_len={} if_mod_revision={if_mod_revision:?}",
                String::from_utf8_lossy(key),
                value.len()
            ),
            Command::Delete { key, if_mod_revision, .. } => {
                write!(f, "delete key={} if_mod_revision={if_mod_revision:?}", String::from_utf8_lossy(key))
            }
            Command::Compact { revision } => write!(f, "compact revision={revision}"),
            Command::LeaseGrant { id, ttl_seconds } => write!(f, "lease-grant id={id} ttl={ttl_seconds}s"),
            Command::LeaseRevoke { id } => write!(f, "lease-revoke id={id}"),
            Command::Txn(txn) => write!(
                f,
                "txn compares={} success={} failure={}",
                txn.compares.len(),
                txn.success.len(),
                txn.failure.len()
            ),
            Command::AllocateNodeId { ordinal } => write!(f, "allocate-node-id ordinal={ordinal}"),
            Command::SetReplicas { replicas } => write!(f, "set-replicas {replicas}"),
        }
    }
}

/// A key with its value and versions, as the state machine stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
    /// Writes since creation; 1 for a new key.
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: u64,
}

/// A key together with its stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub stored: StoredValue,
}

/// What applying a command returned. Kept per client in the dedup table, so a retry gets the
/// original answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    /// Blank and membership entries.
    #[default]
    Nothing,
    Put {
        /// The index the command was applied at.
        index: u64,
        /// The store's revision after the command (the write's own when it wrote).
        revision: u64,
        succeeded: bool,
        /// The key after the write, or as it is when the compare failed.
        current: Option<KeyValue>,
    },
    Delete {
        index: u64,
        revision: u64,
        succeeded: bool,
        deleted: bool,
        previous: Option<KeyValue>,
    },
    NodeId {
        index: u64,
        node_id: u64,
    },
    Replicas {
        index: u64,
        replicas: u32,
    },
    /// The client already moved past this sequence number: the write was not applied now,
    /// and its original answer is no longer kept.
    StaleSequence {
        last_applied: u64,
    },
    /// The write id was already used for another command: nothing was applied now.
    WriteIdReused {
        sequence: u64,
    },
    /// The history before `compacted` is dropped (or already was); `revision` is the store's.
    Compacted {
        index: u64,
        revision: u64,
        compacted: u64,
    },
    /// A compaction refused: to a revision past the store's, or one already compacted.
    CompactRefused(RevisionError),
    Txn {
        index: u64,
        /// The transaction's revision when it changed a key, else the store's.
        revision: u64,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    LeaseGranted {
        index: u64,
        id: u64,
        ttl_seconds: u64,
    },
    LeaseRevoked {
        index: u64,
        revision: u64,
        deleted: u64,
    },
    /// Nothing was applied: a lease the command names does not exist, or (grant) does.
    LeaseRefused(LeaseError),
}

/// Why a lease command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {0} not found")]
    NotFound(u64),
    #[error("lease {0} already exists")]
    Exists(u64),
}

/// A revision a read, watch or compaction cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RevisionError {
    /// Its history was compacted away.
    #[error("revision {requested} has been compacted; the oldest revision kept is {compacted}")]
    Compacted { requested: u64, compacted: u64 },
    /// The store has not reached it.
    #[error("revision {requested} is a future revision; the current revision is {current}")]
    Future { requested: u64, current: u64 },
}

impl CommandResult {
    /// The Raft index the result reflects.
    pub fn index(&self) -> u64 {
        match self {
            CommandResult::Put { index, .. }
            | CommandResult::Delete { index, .. }
            | CommandResult::NodeId { index, .. }
            | CommandResult::Replicas { index, .. }
            | CommandResult::Compacted { index, .. }
            | CommandResult::Txn { index, .. }
            | CommandResult::LeaseGranted { index, .. }
            | CommandResult::LeaseRevoked { index, .. } => *index,
            CommandResult::Nothing
            | CommandResult::StaleSequence { .. }
            | CommandResult::WriteIdReused { .. }
            | CommandResult::CompactRefused(_)
            | CommandResult::LeaseRefused(_) => 0,
        }
    }
}
