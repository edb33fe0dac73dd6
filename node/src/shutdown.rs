//! Graceful shutdown: what a node does between SIGTERM and exit.
//!
//! 1. Stop reporting ready, so Services stop sending it new clients.
//! 2. If it leads, hand leadership to the most caught-up voter (openraft `transfer_leader`)
//!    and wait, bounded, until another node leads. Clients then see a leader change without an
//!    election timeout's worth of unavailability.
//! 3. Stop accepting client requests and let in-flight ones finish.
//! 4. Stop Raft, stop the peer port, flush sled.
//!
//! All of it is bounded by the grace period; past it the node flushes and exits anyway. A
//! SIGKILL at any moment loses no acknowledged write: acknowledgement already waited for fsync.
//!
//! Today every SIGTERM is treated as a restart: the node keeps its membership. Leaving the
//! cluster on a scale-down (telling a scale-down from a restart by the declared replica count)
//! comes with the harness and Kubernetes work.

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

/// The voter best placed to take over: the one with the highest replicated index.
fn successor(node: &Node) -> Option<NodeId> {
    let m = node.metrics()?;
    let me = m.id;
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != me).collect();
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
    let to = successor(node)?;
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
