//! Carrying out the start-up decision ([`crate::pod::startup`]) against real peers.
//!
//! - [`probe`] asks every other pod's peer port whether it belongs to a running cluster.
//! - [`establish`] loops until the node runs Raft: it resumes from the volume, joins an
//!   answering cluster under a newly allocated node id, bootstraps (ordinal 0 of a new set),
//!   or waits with back-off, saying what it waits for.
//! - [`ensure_member`] makes sure a node with an identity is in the membership (a node that
//!   crashed between writing its identity and joining finishes joining here).
//!
//! The "set was bootstrapped" marker ([`crate::pod::marker`]) is read only when the decision
//! depends on it (ordinal 0, empty volume, nobody answers). A marker that cannot be read makes
//! ordinal 0 wait and read it again; it is never taken as "absent".

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use petkv_client::tls::ClientTls;
use tonic::Request;

use crate::edge::tls::Dialers;
use crate::node::Node;
use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::{
    AllocateNodeIdRequest, AnnounceEpochRequest, ClusterInfoRequest, ClusterInfoResponse, JoinRequest,
};
use crate::pod::discovery::PeerDirectory;
use crate::pod::identity::{self, IdentityRecord, PodName};
use crate::pod::marker::{error_chain, MarkerError};
use crate::pod::startup::{decide, ProbeRound, QuietWindow, StartupAction, StartupFacts, WaitReason, BOOTSTRAP_QUIET};
use crate::raft::batch_metrics::BatchRecorder;
use crate::raft::fence::VoteFloor;
use crate::raft::network::{Network, PeerChannels, Speaker};
use crate::raft::peer_health::PeerHealth;
use crate::raft::{self, LogId, NodeId, Raft, WatchReceiver};

/// Timeout of one start-up RPC to a peer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between two probes while waiting.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a waiting node repeats what it waits for.
const SAY_EVERY: Duration = Duration::from_secs(5);
/// How often the quiet period before a bootstrap is probed ([`QuietWindow`]).
const BOOTSTRAP_PROBE_EVERY: Duration = Duration::from_millis(250);

/// A running cluster found at start-up.
#[derive(Debug, Clone)]
pub struct ClusterFound {
    /// The pod that answered, and its answer.
    pub via: String,
    pub info: ClusterInfoResponse,
}

/// What the node at peer address `addr` says about its cluster (`None`: no answer in time).
pub(crate) async fn cluster_info(channels: &PeerChannels, addr: &str) -> Option<ClusterInfoResponse> {
    let channel = channels.peer(addr).ok()?;
    let mut req = Request::new(ClusterInfoRequest {});
    req.set_timeout(PROBE_TIMEOUT);
    let reply = tokio::time::timeout(PROBE_TIMEOUT, RaftClient::new(channel).cluster_info(req)).await.ok()?.ok()?;
    Some(reply.into_inner())
}

/// Asks every other pod whether a cluster runs there. Prefers an answer that names a leader.
pub async fn probe(channels: &PeerChannels, peers: &PeerDirectory, me: &PodName) -> Option<ClusterFound> {
    let asks = peers.candidates(me).into_iter().map(|(_, addr)| async move {
        cluster_info(channels, &addr).await.map(|info| ClusterFound { via: addr, info })
    });
    let answers: Vec<ClusterFound> =
        futures::future::join_all(asks).await.into_iter().flatten().filter(|f| f.info.initialized).collect();
    let with_leader = answers.iter().find(|f| !f.info.leader_peer_addr.is_empty()).cloned();
    with_leader.or_else(|| answers.into_iter().next())
}

async fn start_raft(node: &Arc<Node>, record: IdentityRecord) -> anyhow::Result<Raft> {
    let mut config = (*node.config.raft.to_config(&record.cluster_id).context("invalid Raft settings")?).clone();
    // A restarted node whose log ends before what a peer holds must not campaign until a
    // leader has brought it that far (see `fence::VoteFloor`).
    let catch_up_to = node.fence.floor().and_then(|f| f.holds).filter(|c| {
        let applied = node.sm.applied().ok().flatten();
        let last = node.log.last_log_id().ok().flatten();
        last.max(applied).as_ref() < Some(c)
    });
    if catch_up_to.is_some() {
        config.enable_elect = false;
    }
    node.set_identity(record.clone());
    let speaker = Speaker { cluster_id: record.cluster_id.clone(), node_id: record.node_id, fence: node.fence.clone() };
    let raft = Raft::new(
        record.node_id,
        Arc::new(config),
        Network::new(node.channels.clone(), PeerHealth::new(node.prometheus.clone()), speaker),
        node.log.clone(),
        node.sm.clone(),
    )
    .await
    .context("starting Raft")?;
    raft.set_metrics_recorder(Some(Arc::new(BatchRecorder(node.prometheus.clone()))))
        .await
        .context("installing the Raft batch recorder")?;
    node.set_raft(raft.clone());
    tracing::info!(node_id = record.node_id, cluster_id = %record.cluster_id, epoch = node.fence.epoch(), "raft started");
    if let Some(mut restarted) = node.fence.take_restarted() {
        let raft = raft.clone();
        let heartbeat = Duration::from_millis(node.config.raft.heartbeat_ms);
        tokio::spawn(async move {
            while let Some(peer) = restarted.recv().await {
                if raft.is_leader() {
                    // A restarted follower's volume may be a copy from before entries its older
                    // process acknowledged (a force-deleted pod's replacement): its log may be
                    // behind what this leader counted, which openraft accepts only when told.
                    let _ = raft.trigger().allow_next_revert(&peer, true).await;
                } else if raft.metrics().borrow_watched().current_leader == Some(peer) {
                    campaign_after_leader_restart(&raft, peer, heartbeat);
                }
            }
        });
    }
    if let Some(target) = catch_up_to {
        tracing::info!(?target, "elections off until this node has applied as far as its peers hold");
        let raft = raft.clone();
        tokio::spawn(async move {
            let caught_up = raft.wait(None).metrics(|m| m.last_applied >= Some(target), "caught up").await;
            if caught_up.is_ok() {
                raft.runtime_config().elect(true);
                tracing::info!(?target, "caught up with what its peers held: elections on");
            }
        });
    }
    Ok(raft)
}

/// The leader this follower follows has restarted: its older process is fenced (every message
/// it sends is refused), so the leader lease that older process holds on this follower protects
/// nobody, yet openraft would make the cluster wait it out (the lease plus an election timeout)
/// before electing anyone. Campaign at once instead. The restarted node votes (its own lease
/// ended with its process); the other followers still refuse while the lease lasts, so one of
/// them plus the restarted node make the majority of three. A random pause of up to two
/// heartbeats keeps two followers that heard the announcement together from splitting the vote,
/// and gives the restarted node time to start Raft after its announcement.
fn campaign_after_leader_restart(raft: &Raft, leader: NodeId, heartbeat: Duration) {
    let raft = raft.clone();
    let pause = heartbeat.mul_f64(rand::random::<f64>() * 2.0);
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        let still_following = raft.metrics().borrow_watched().current_leader == Some(leader);
        if still_following {
            tracing::info!(leader, "the leader restarted: campaigning instead of waiting out its lease");
            let _ = raft.trigger().elect(false).await;
        }
    });
}

/// Announces this start's epoch to every other voter of the membership on the volume and
/// waits until each has recorded it (from then on they refuse any older process with this
/// identity), then takes what they report as this node's [`VoteFloor`] and moves its vote to
/// the floor's term, so this node never votes or campaigns in a term an older process may have
/// voted in. Waits for every voter, however long: with one of them unheard, an older process
/// could still be counted by it. A voter whose address is now held by another incarnation (or
/// an empty volume) counts as heard: that voter no longer runs.
async fn fence_older_processes(node: &Node, record: &IdentityRecord) -> anyhow::Result<()> {
    let mut pending: BTreeMap<NodeId, String> = crate::store::voters_on_volume(&node.log, &node.sm)
        .await
        .context("reading the membership from the volume")?
        .into_iter()
        .filter(|(id, _)| *id != record.node_id)
        .map(|(id, n)| (id, n.peer_addr))
        .collect();
    let epoch = node.fence.epoch();
    let asked = pending.len();
    let mut floor = VoteFloor::default();
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    while !pending.is_empty() {
        let asks = pending.iter().map(|(id, addr)| async move {
            let request = AnnounceEpochRequest {
                cluster_id: record.cluster_id.clone(),
                node_id: record.node_id,
                epoch,
                target: *id,
            };
            let answer = async {
                let mut req = Request::new(request);
                req.set_timeout(PROBE_TIMEOUT);
                RaftClient::new(node.channels.peer(addr).map_err(|e| tonic::Status::unavailable(e.to_string()))?)
                    .announce_epoch(req)
                    .await
            };
            let answer = tokio::time::timeout(PROBE_TIMEOUT, answer)
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in time")));
            (*id, answer)
        });
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(reply) if reply.get_ref().absent => {
                    tracing::info!(
                        voter = id,
                        "the voter no longer runs at its address (another incarnation or an empty volume there)"
                    );
                    pending.remove(&id);
                }
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let holds: Option<LogId> = raft::codec::decode("last log id", &reply.last_log_id)?;
                    floor = floor.max(VoteFloor { term: reply.term, holds });
                    pending.remove(&id);
                }
                Err(status) => node.fence.check_refusal(&status),
            }
        }
        if pending.is_empty() {
            break;
        }
        if last_said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            let waiting: Vec<String> = pending.iter().map(|(id, addr)| format!("node {id} at {addr}")).collect();
            tracing::warn!(
                epoch,
                waited = ?started.elapsed(),
                "waiting for {} to record this start (epoch {epoch}) before Raft starts: until every voter has, \
                 an older process with this identity (a force-deleted pod's) could still be counted",
                waiting.join(", ")
            );
            last_said = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let own_term = node.log.vote().context("reading the vote")?.map(|v| raft::vote_term(&v)).unwrap_or(0);
    if floor.term > own_term {
        // For node id 0, which no node has: a leader of that term (any real id is greater)
        // is still followed, while this node's own first election runs in a later term.
        // Votes in that term are refused by the floor itself (`service::check_vote_floor`).
        node.log.seed_vote(floor.term, 0).await.context("recording the vote")?;
    }
    tracing::info!(epoch, voters = asked, term = floor.term, holds = ?floor.holds, "every voter recorded this start");
    node.fence.set_floor(floor);
    Ok(())
}

/// Runs until this node runs Raft with an identity (or fails for a reason that retrying cannot
/// fix). `identity` is what the volume held.
pub async fn establish(node: &Arc<Node>, identity: Option<IdentityRecord>) -> anyhow::Result<()> {
    if node.config.pod.ordinal == 0 && crate::recovery::restore::is_staged(&node.config.data_dir) {
        let record = crate::recovery::restore::finish(node, identity).await?;
        start_raft(node, record).await?;
        return Ok(());
    }
    if let Some(record) = identity {
        tracing::info!(pod = %node.config.pod, node_id = record.node_id, "volume has state: resuming");
        // Peers answer the announcements of others only once they know their own identity.
        node.set_identity(record.clone());
        fence_older_processes(node, &record).await?;
        start_raft(node, record).await?;
        return Ok(());
    }
    let config = &node.config;
    let mut backoff = Duration::from_millis(100);
    let mut last_said: Option<Instant> = None;
    let mut marker_error: Option<String> = None;
    let mut quiet = QuietWindow::default();
    loop {
        let found = probe(&node.channels, &config.peers, &config.pod).await;
        let round = match &found {
            Some(_) => ProbeRound::ClusterAnswered,
            None if config.peers.own_name_resolves(&config.pod).await => ProbeRound::NoCluster,
            None => ProbeRound::CannotTell,
        };
        quiet.observe(round, Instant::now());
        let ordinal = config.pod.ordinal;
        let set_was_bootstrapped = if StartupFacts::needs_marker(false, found.is_some(), ordinal) {
            match config.bootstrap_marker.read().await {
                Ok(id) => Some(id.is_some()),
                Err(e) => {
                    marker_error = Some(error_chain(&e));
                    None
                }
            }
        } else {
            None
        };
        let facts = StartupFacts {
            volume_has_identity: false,
            cluster_answers: found.is_some(),
            ordinal,
            set_was_bootstrapped,
        };
        match (decide(facts), found) {
            (StartupAction::Join, Some(found)) => match join_new(node, &found).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(via = %found.via, error = %format!("{e:#}"), "joining failed; will retry"),
            },
            (StartupAction::Bootstrap, _) => {
                if quiet.long_enough(Instant::now()) {
                    return bootstrap(node).await;
                }
                if round == ProbeRound::CannotTell && last_said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                    tracing::warn!(
                        "empty volume on ordinal 0 and no cluster answers, but this pod cannot resolve its own \
                         name ({}): name resolution is failing, so peers that do not resolve may be running; \
                         waiting instead of bootstrapping",
                        config.peers.peer_addr(&config.pod).unwrap_or_default()
                    );
                    last_said = Some(Instant::now());
                }
                if quiet.rounds() == 1 {
                    tracing::info!(
                        "empty volume on ordinal 0, no cluster answers and the set was never bootstrapped: \
                         bootstrapping if that holds for {BOOTSTRAP_QUIET:?}"
                    );
                }
                tokio::time::sleep(BOOTSTRAP_PROBE_EVERY).await;
                continue;
            }
            (StartupAction::Wait(reason), _) => {
                if last_said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                    say_waiting(node, reason, marker_error.as_deref());
                    last_said = Some(Instant::now());
                }
            }
            (action, found) => bail!("start-up decision {action:?} with {found:?} is inconsistent"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn say_waiting(node: &Node, reason: WaitReason, marker_error: Option<&str>) {
    let primary = node.config.pod.sibling(0);
    let addr = node.config.peers.peer_addr(&primary).unwrap_or_else(|| "(no address)".into());
    match reason {
        WaitReason::ForPrimary => {
            tracing::info!("empty volume: waiting for the primary {primary} at {addr} to bootstrap the cluster")
        }
        WaitReason::ForExistingCluster => tracing::warn!(
            "empty volume on ordinal 0, but the set was bootstrapped before (marker: {}): waiting for \
             a running member to rejoin instead of starting a second cluster",
            node.config.bootstrap_marker
        ),
        WaitReason::ForMarker => tracing::warn!(
            error = marker_error.unwrap_or("unknown"),
            "empty volume on ordinal 0 and no cluster answers, but the bootstrap marker ({}) cannot be \
             read: waiting and reading it again instead of bootstrapping (the set may have been \
             bootstrapped before)",
            node.config.bootstrap_marker
        ),
    }
}

async fn leader_client(node: &Node, found: &ClusterFound) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
    let addr = if found.info.leader_peer_addr.is_empty() { &found.via } else { &found.info.leader_peer_addr };
    Ok(RaftClient::new(node.channels.peer(addr)?))
}

async fn join_new(node: &Arc<Node>, found: &ClusterFound) -> anyhow::Result<()> {
    let pod = &node.config.pod;
    let mut leader = leader_client(node, found).await?;
    let allocated = leader
        .allocate_node_id(AllocateNodeIdRequest { ordinal: pod.ordinal })
        .await
        .context("asking the leader for a node id")?
        .into_inner();
    tracing::info!(%pod, node_id = allocated.node_id, cluster_id = %allocated.cluster_id, "empty volume: joining the running cluster");
    let record = IdentityRecord::new(pod, allocated.cluster_id, allocated.node_id);
    crate::pod::volume::claim(&node.config.data_dir, &node.log, &record).await?;
    start_raft(node, record).await?;
    Ok(())
}

async fn bootstrap(node: &Arc<Node>) -> anyhow::Result<()> {
    let cluster_id = identity::new_cluster_id();
    let record = IdentityRecord::new(&node.config.pod, cluster_id.clone(), raft::node_id(0, 1));
    tracing::info!(pod = %node.config.pod, %cluster_id, "empty volume, no cluster answers, ordinal 0: bootstrapping");
    crate::pod::volume::claim(&node.config.data_dir, &node.log, &record).await?;
    // The marker goes before `initialize`: whatever point a crash interrupts, the restarted
    // node (same identity, ordinal 0, incarnation 1) finishes the bootstrap in `ensure_member`
    // as long as the marker is absent or names this very cluster.
    record_marker(node, &cluster_id).await?;
    let raft = start_raft(node, record).await?;
    initialize(node, &raft).await
}

/// Records the marker for `cluster_id`; fails if the marker turns out to name another cluster
/// (someone else bootstrapped the set first), so this node never initializes a second one.
async fn record_marker(node: &Node, cluster_id: &str) -> anyhow::Result<()> {
    let marker = &node.config.bootstrap_marker;
    let recorded = marker.record(cluster_id).await.context("recording the bootstrap marker")?;
    if recorded != cluster_id {
        bail!(
            "the bootstrap marker ({marker}) names cluster {recorded:?}, recorded by someone else while this node \
             bootstrapped {cluster_id:?}: not initializing a second cluster"
        );
    }
    Ok(())
}

async fn initialize(node: &Node, raft: &Raft) -> anyhow::Result<()> {
    let id = node.node_id().context("no identity")?;
    let members = std::collections::BTreeMap::from([(id, node.peer_node())]);
    raft.initialize(members).await.context("initializing the one-member cluster")?;
    Ok(())
}

/// Makes sure this node is in the membership, as the leader sees it: asks the leader to add it
/// (idempotent: a member gets "yes" at once) until the leader says yes. The local view is not
/// enough: a pod removed by a scale-down and started again still finds itself in its own old
/// membership. Also finishes a bootstrap that stopped between writing the identity and
/// initializing.
pub async fn ensure_member(node: Arc<Node>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(identity) = node.identity().cloned() else { return };
    let mut said = false;
    loop {
        let leads = node.raft().is_ok_and(|r| r.is_leader());
        if leads && node.member(identity.node_id).is_some() {
            return;
        }
        let found = probe(&node.channels, &node.config.peers, &node.config.pod).await;
        let result = match &found {
            Some(found) => join_existing(&node, &identity, found).await.map(|()| true),
            None => match node.raft() {
                Ok(raft) if !raft.is_initialized().await.unwrap_or(true) => {
                    match may_finish_bootstrap(&node, &identity).await {
                        Ok(true) => {
                            tracing::warn!("finishing an interrupted bootstrap");
                            finish_bootstrap(&node, &identity, raft).await.map(|()| true)
                        }
                        Ok(false) => Ok(false),
                        Err(e) => Err(anyhow::Error::new(e).context(
                            "cannot tell whether to finish an interrupted bootstrap: will read the marker again",
                        )),
                    }
                }
                _ => Ok(false),
            },
        };
        match result {
            Ok(true) => return,
            Err(e) if !said => {
                tracing::warn!(error = %format!("{e:#}"), "not confirmed as a member yet; will keep asking the leader");
                said = true;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn finish_bootstrap(node: &Node, identity: &IdentityRecord, raft: &Raft) -> anyhow::Result<()> {
    if node.config.bootstrap_marker.read().await.context("reading the bootstrap marker")?.is_none() {
        record_marker(node, &identity.cluster_id).await?;
    }
    initialize(node, raft).await
}

/// Only the bootstrap node (ordinal 0, incarnation 1) finishes a bootstrap, and only when the
/// marker is absent (no marker configured) or names this very cluster. A marker that cannot be
/// read is an error: the caller asks again later.
async fn may_finish_bootstrap(node: &Node, identity: &IdentityRecord) -> Result<bool, MarkerError> {
    if identity.node_id != raft::node_id(0, 1) {
        return Ok(false);
    }
    Ok(may_finish_with(node.config.bootstrap_marker.read().await?.as_deref(), &identity.cluster_id))
}

/// The marker rule of [`may_finish_bootstrap`], given what the marker names.
fn may_finish_with(marker: Option<&str>, cluster_id: &str) -> bool {
    marker.is_none_or(|id| id == cluster_id)
}

async fn join_existing(node: &Node, identity: &IdentityRecord, found: &ClusterFound) -> anyhow::Result<()> {
    if found.info.cluster_id != identity.cluster_id {
        bail!(
            "the cluster answering at {} is {:?} but this volume belongs to cluster {:?}",
            found.via,
            found.info.cluster_id,
            identity.cluster_id
        );
    }
    let me = node.peer_node();
    let mut leader = leader_client(node, found).await?;
    leader
        .join(JoinRequest {
            node_id: identity.node_id,
            ordinal: identity.ordinal,
            client_addr: me.client_addr,
            peer_addr: me.peer_addr,
            cluster_id: identity.cluster_id.clone(),
        })
        .await
        .context("asking the leader to add this node")?;
    Ok(())
}

/// `petkv wait-primary`: returns once a cluster answers (or at once if the volume has state).
/// `peer_tls` is how the peer ports are dialed (mutual TLS), if they use TLS.
pub async fn wait_primary(
    data_dir: &Path,
    pod: &PodName,
    peers: &PeerDirectory,
    peer_tls: Option<ClientTls>,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    if identity::load(data_dir)?.is_some() {
        println!("{pod}: volume {} has state; nothing to wait for", data_dir.display());
        return Ok(());
    }
    let channels = PeerChannels::new(Dialers { peer: peer_tls, client: None });
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut last_said: Option<Instant> = None;
    loop {
        if let Some(found) = probe(&channels, peers, pod).await {
            println!("{pod}: cluster {} answers at {}", found.info.cluster_id, found.via);
            return Ok(());
        }
        if pod.ordinal == 0 {
            println!("{pod}: no cluster answers; ordinal 0 may bootstrap");
            return Ok(());
        }
        if last_said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
            let primary = pod.sibling(0);
            println!(
                "{pod}: waiting for the primary {primary} at {}",
                peers.peer_addr(&primary).unwrap_or_else(|| "(no address)".into())
            );
            last_said = Some(Instant::now());
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            bail!("no cluster answered within {:?}", timeout.unwrap_or_default());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_bootstrap_is_finished_only_under_its_own_marker() {
        assert!(may_finish_with(None, "c1"), "no marker yet: the crash came before it was written");
        assert!(may_finish_with(Some("c1"), "c1"), "the marker names this very cluster");
        assert!(!may_finish_with(Some("c2"), "c1"), "another cluster was recorded: never initialize");
        assert!(!may_finish_with(Some(""), "c1"), "an empty marker file still marks the set as bootstrapped");
    }
}
