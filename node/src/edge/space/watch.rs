//! The guard's background task: measures this node's volume every [`WATCH_EVERY`] and, while
//! this node leads, asks every other member how its volume is.
//!
//! Members are asked on the peer port (`ClusterInfo`, which carries each node's free bytes and
//! whether its volume is low). A member that does not answer counts as having room: it is down
//! or cut off, and receives no entries either way. The two loops run side by side, so a slow
//! member never delays the measurement of this node's own volume.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::guard::LowMember;
use super::probe;
use crate::node::Node;
use crate::raft::ServerState;

/// How often the volume is measured and, on the leader, the members are asked.
pub const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Runs until `stop` turns true.
pub async fn run(node: Arc<Node>, stop: watch::Receiver<bool>) {
    tokio::join!(watch_own(&node, stop.clone()), watch_members(&node, stop));
}

/// Sleeps one period; false once `stop` turned true (or its sender is gone).
async fn next_round(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(WATCH_EVERY) => !*stop.borrow(),
        changed = stop.changed() => changed.is_ok() && !*stop.borrow(),
    }
}

async fn watch_own(node: &Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        measure_own(node).await;
        if !next_round(&mut stop).await {
            return;
        }
    }
}

/// One measurement of this node's volume (statvfs runs on the blocking pool: a stuck network
/// filesystem must not stall the runtime).
pub async fn measure_own(node: &Node) {
    let dir = node.config.data_dir.clone();
    match tokio::task::spawn_blocking(move || probe::measure(&dir)).await {
        Ok(Ok(space)) => node.space.observe(space),
        Ok(Err(e)) => node.space.observe_error(&e),
        Err(e) => node.space.observe_error(&std::io::Error::other(e)),
    }
}

async fn watch_members(node: &Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        let low = low_members(node).await;
        node.space.set_low_members(low);
        if !next_round(&mut stop).await {
            return;
        }
    }
}

/// The other members whose volume is below its reserve, when this node leads (else none: a
/// follower forwards writes to the leader, which decides).
async fn low_members(node: &Node) -> Vec<LowMember> {
    let Some(m) = node.metrics() else { return Vec::new() };
    if m.state != ServerState::Leader {
        return Vec::new();
    }
    let me = m.id;
    let asks = m.membership_config.membership().nodes().filter(|(id, _)| **id != me).map(|(_, peer)| async move {
        let info = crate::pod::boot::cluster_info(&node.channels, &peer.peer_addr).await?;
        info.volume_low.then(|| LowMember {
            pod: format!("{}-{}", node.config.pod.set, peer.ordinal),
            free: info.volume_free_bytes,
            reserve: info.volume_reserve_bytes,
        })
    });
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}
