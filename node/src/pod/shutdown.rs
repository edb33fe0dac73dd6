//! Graceful shutdown: what a node does between SIGTERM and exit.
//!
//! 1. Stop reporting ready, so Services stop sending it new clients.
//! 2. If it leads, hand leadership to the most caught-up voter (openraft `transfer_leader`)
//!    and wait, bounded, until another node leads. Clients then see a leader change without an
//!    election timeout's worth of unavailability.
//! 3. Stop accepting client requests and let in-flight ones finish.
//! 4. Stop Raft, flush storage, stop the peer port (streams a leader still holds open are
//!    dropped after a 500 ms drain: Raft is already stopped).
//!
//! All of it is bounded by the grace period; past it the node flushes and exits anyway. A
//! SIGKILL at any moment loses no acknowledged write: acknowledgement already waited for fsync.
//!
//! Which SIGTERM means "leave the cluster" is told by the declared replica count (`petkv
//! scale`, a StatefulSet's `spec.replicas`), not by the signal: a pod whose ordinal is at or
//! above it is being scaled away, so before exiting it hands leadership over (to a voter that
//! stays) and waits, bounded, until the leader's reconciler has removed it. Any other SIGTERM
//! (restart, rolling update, eviction) keeps the membership: the pod will be back. A preStop
//! hook that always removes the member would turn every restart into a membership change.

use std::sync::Arc;
use std::time::Duration;

use crate::raft::{ServerState, WatchReceiver};

use crate::node::Node;
use crate::raft::NodeId;

/// Longest wait for another node to take over leadership.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(3);

/// Waits for SIGTERM or SIGINT.
pub async fn signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Longest wait for the leader to remove a pod that is being scaled away.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The declared replica count: on Kubernetes, the StatefulSet's `spec.replicas` read now (a
/// pod gets SIGTERM as soon as the set shrinks, maybe before the leader's `SetReplicas` has
/// committed; a departing pod that took that for a restart would leave as a member and could
/// cost the quorum). Otherwise, or when the API does not answer, the count as the leader has
/// it (fresh: the local state machine may not have applied a scale that just committed),
/// falling back to the local copy.
async fn declared_replicas(node: &Node) -> Option<u32> {
    #[cfg(feature = "kube")]
    if let Some(kube) = &node.config.kube {
        if let Some(replicas) = kube.declared_by_the_set().await {
            return Some(replicas);
        }
    }
    let local = node.sm.declared_replicas().ok().flatten();
    let Some((leader, peer)) = node.leader() else { return local };
    if Some(leader) == node.node_id() {
        return local;
    }
    // Asked on the peer port, where nodes speak to each other (the client port may want
    // credentials this node has none of).
    let fresh = async {
        let info = crate::pod::boot::cluster_info(&node.channels, &peer.peer_addr).await?;
        (info.declared_replicas > 0).then_some(info.declared_replicas)
    };
    fresh.await.or(local)
}

/// True when the declared replica count says this pod is being scaled away.
pub async fn is_scaled_away(node: &Node) -> bool {
    declared_replicas(node).await.is_some_and(|r| node.config.pod.ordinal >= r)
}

/// The voter best placed to take over: the one with the highest replicated index among the
/// voters that stay in the set.
fn successor(node: &Node, declared: Option<u32>) -> Option<NodeId> {
    let m = node.metrics()?;
    let me = m.id;
    let voters: Vec<NodeId> = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|v| *v != me && declared.is_none_or(|r| crate::raft::ordinal_of(*v) < r))
        .collect();
    let replication = m.replication.as_ref()?;
    voters.into_iter().max_by_key(|v| replication.get(v).and_then(|l| l.as_ref()).map(|l| l.index).unwrap_or(0))
}

/// Hands leadership away if this node leads. Returns the new leader, if the hand-off happened.
pub async fn hand_off_leadership(node: &Arc<Node>) -> Option<NodeId> {
    let raft = node.raft().ok()?;
    let m = node.metrics()?;
    if m.state != ServerState::Leader {
        return None;
    }
    let to = successor(node, declared_replicas(node).await)?;
    tracing::info!(to, "handing leadership over before exiting");
    if let Err(e) = raft.trigger().transfer_leader(to).await {
        tracing::warn!(error = %e, "leadership transfer failed to start");
        return None;
    }
    let me = m.id;
    let mut watch = raft.metrics();
    let waited = tokio::time::timeout(HANDOFF_TIMEOUT, async {
        loop {
            let leader = watch.borrow_watched().current_leader;
            if leader.is_some_and(|l| l != me) {
                return leader;
            }
            if watch.changed().await.is_err() {
                return None;
            }
        }
    })
    .await;
    match waited {
        Ok(Some(new)) => {
            tracing::info!(new_leader = new, "leadership handed over");
            Some(new)
        }
        _ => {
            tracing::warn!("no other node took over leadership in time; exiting anyway");
            None
        }
    }
}

/// For a pod being scaled away: waits until the leader no longer lists it as a member.
pub async fn wait_until_removed(node: &Arc<Node>) {
    let Some(me) = node.node_id() else { return };
    tracing::info!(
        ordinal = node.config.pod.ordinal,
        "this pod is beyond the declared replica count: leaving the cluster before exiting"
    );
    let removed = tokio::time::timeout(LEAVE_TIMEOUT, async {
        while still_a_member(node, me).await != Some(false) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match removed {
        Ok(()) => tracing::info!("removed from the cluster"),
        Err(_) => tracing::warn!(?LEAVE_TIMEOUT, "not removed in time (no quorum?); exiting as a member"),
    }
}

/// Asks the leader (another node) whether `me` is still in its membership.
async fn still_a_member(node: &Node, me: NodeId) -> Option<bool> {
    let (leader, peer) = node.leader()?;
    if leader == me {
        return None;
    }
    let info = crate::pod::boot::cluster_info(&node.channels, &peer.peer_addr).await?;
    // No member ids: the leader has no membership to report yet, which is not "removed".
    (!info.member_ids.is_empty()).then(|| info.member_ids.contains(&me))
}

/// Stops Raft and flushes storage. Called last.
pub async fn stop_raft_and_flush(node: &Arc<Node>) {
    if let Ok(raft) = node.raft() {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
    if let Err(e) = node.sm.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
}
