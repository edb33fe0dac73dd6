//! The Raft type configuration: who a node is, what it replicates, what applying returns.
//!
//! A node id names one incarnation of one volume: the pod ordinal in the high 32 bits and an
//! incarnation number, allocated by the cluster and never reused, in the low 32 bits. A pod
//! whose volume was wiped rejoins under a new id, so an empty log never votes under an id that
//! already voted (which could elect two leaders in one term).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::command::{Command, CommandResult};

/// A Raft node id: `ordinal << 32 | incarnation`.
pub type NodeId = u64;

/// Builds a node id from an ordinal and an incarnation number.
pub fn node_id(ordinal: u32, incarnation: u32) -> NodeId {
    (u64::from(ordinal) << 32) | u64::from(incarnation)
}

/// The ordinal (pod number) a node id belongs to.
pub fn ordinal_of(id: NodeId) -> u32 {
    (id >> 32) as u32
}

/// The incarnation part of a node id.
pub fn incarnation_of(id: NodeId) -> u32 {
    (id & 0xffff_ffff) as u32
}

/// A node id as people read it: `petkv-2#1` is incarnation 1 of pod `petkv-2`.
pub fn node_label(set: &str, id: NodeId) -> String {
    format!("{set}-{}#{}", ordinal_of(id), incarnation_of(id))
}

/// Where a member can be reached. Stored in the Raft membership, so every member knows every
/// other member's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// The pod ordinal, duplicated from the id for readability of the membership.
    pub ordinal: u32,
    /// `host:port` of the public gRPC API (used to forward client requests to the leader).
    pub client_addr: String,
    /// `host:port` of the peer gRPC transport (Raft RPCs).
    pub peer_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ordinal {} (client {}, peer {})", self.ordinal, self.client_addr, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// petkv's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = PeerNode,
);

/// The Raft handle with petkv's state machine.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
/// A log id of this configuration.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote of this configuration.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// The stored membership of this configuration.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Membership of this configuration.
pub type Membership = openraft::Membership<NodeId, PeerNode>;
/// Raft metrics of this configuration.
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// The term of a vote.
pub fn vote_term(vote: &Vote) -> u64 {
    use openraft::vote::RaftLeaderId;
    vote.leader_id().term()
}

/// The term of the leader that proposed the entry at `log_id`.
pub fn log_id_term(log_id: &LogId) -> u64 {
    use openraft::vote::RaftLeaderId;
    log_id.committed_leader_id().term()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_packs_ordinal_and_incarnation() {
        let id = node_id(2, 7);
        assert_eq!(ordinal_of(id), 2);
        assert_eq!(incarnation_of(id), 7);
        assert_ne!(node_id(2, 7), node_id(2, 8));
        assert_ne!(node_id(1, 7), node_id(2, 7));
        assert_eq!(node_label("petkv", node_id(2, 7)), "petkv-2#7");
    }
}
