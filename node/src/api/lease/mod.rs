//! `petkv.v1.Lease`: granting, keeping alive, inspecting and revoking leases.
//!
//! - [`clock`]: the leader's deadlines and the task that revokes expired leases.
//! - this module: the handlers. Grants and revocations go through Raft like writes (a
//!   follower forwards them); keep-alives and TTL questions need the leader's clock, so a
//!   follower forwards them too (a keep-alive stream is relayed whole).

pub mod clock;

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use petkv_client::pb::v1::lease_client::LeaseClient;
use petkv_client::pb::v1::lease_server::Lease;
use petkv_client::pb::v1::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::forward::{no_leader, relay, to_leader_without_deadline, Origin};
use super::leader::{NotServed, ReadAt};
use super::{applied_header, header, Api};
use crate::raft::ServerState;
use crate::store::command::{Command, CommandResult, LeaseError};

pub use clock::LeaseClock;

/// The longest TTL a lease may ask for (a year).
pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// A lease error as a status (NOT_FOUND, ALREADY_EXISTS).
pub fn lease_status(e: LeaseError) -> Status {
    match e {
        LeaseError::NotFound(_) => Status::not_found(e.to_string()),
        LeaseError::Exists(_) => Status::already_exists(e.to_string()),
    }
}

/// The messages of a client stream until it ends or fails, each through `map`, read by a task
/// of their own (so the stream handed on is a plain channel).
pub(crate) fn until_error<T: Send + 'static, U: Send + 'static>(
    mut incoming: Streaming<T>,
    map: fn(T) -> U,
) -> tokio_stream::wrappers::ReceiverStream<U> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            if tx.send(map(msg)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The response stream of a keep-alive.
pub type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

impl Api {
    /// The shortest TTL a lease gets: a failover (a lease of the old leader's clock, then a new
    /// election) must fit in it with room to spare.
    fn min_ttl_seconds(&self) -> u64 {
        let election_max_ms = 2 * self.node.config.raft.election_timeout_ms;
        (2 * election_max_ms).div_ceil(1000).max(1)
    }

    /// The term this node leads in, if it leads.
    fn leading_term(&self) -> Option<u64> {
        let m = self.node.metrics()?;
        (m.state == ServerState::Leader).then_some(m.current_term)
    }

    /// Renews lease `id` on this leader after a read-index round confirmed it leads; its TTL
    /// from now (0: no such lease).
    async fn renew_here(&self, id: u64) -> Result<u64, NotServed> {
        self.read_index(false).await?;
        let term = self.leading_term().ok_or_else(|| NotServed::Failed(no_leader(&self.node, false)))?;
        let sm = self.node.sm.clone();
        let lease = tokio::task::spawn_blocking(move || sm.lease(id))
            .await
            .map_err(|e| NotServed::Failed(Status::internal(e.to_string())))?
            .map_err(|e| NotServed::Failed(Api::storage_error(e)))?;
        let Some(lease) = lease else { return Ok(0) };
        self.node.lease_clock.renew(term, id, Duration::from_secs(lease.ttl_seconds), Instant::now());
        Ok(lease.ttl_seconds)
    }

    /// Serves a stream of keep-alives (the native and the etcd API's): renewed here when this
    /// node leads, else the whole stream is relayed to the leader; when leadership moves it
    /// ends and the client opens a new one.
    pub(super) async fn keep_alive(
        &self,
        origin: Origin,
        mut incoming: tokio_stream::wrappers::ReceiverStream<LeaseKeepAliveRequest>,
    ) -> Result<KeepAliveStream, Status> {
        let node = &self.node;
        node.serving_raft()?;
        if self.leading_term().is_none() {
            let Some((_, leader)) = node.leader().filter(|(id, _)| Some(*id) != node.node_id()) else {
                return Err(no_leader(node, origin.forwarded));
            };
            if origin.forwarded {
                return Err(no_leader(node, true));
            }
            let (channel, req) = to_leader_without_deadline(node, &leader, &origin, incoming)?;
            let stream = LeaseClient::new(channel).lease_keep_alive(req).await.map_err(relay)?.into_inner();
            return Ok(Box::pin(stream));
        }
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(msg) = incoming.next().await {
                let answer = match api.renew_here(msg.id).await {
                    Ok(ttl_seconds) => {
                        Ok(LeaseKeepAliveResponse { header: Some(applied_header(&api.node)), id: msg.id, ttl_seconds })
                    }
                    Err(NotServed::Forward(_)) => Err(no_leader(&api.node, false)),
                    Err(NotServed::Failed(s)) => Err(s),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Lease for Api {
    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        if msg.ttl_seconds == 0 || msg.ttl_seconds > MAX_TTL_SECONDS {
            return Err(Status::invalid_argument(format!(
                "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}, got {}",
                msg.ttl_seconds
            )));
        }
        let ttl_seconds = msg.ttl_seconds.max(self.min_ttl_seconds());
        let answer = |result| match result {
            CommandResult::LeaseGranted { index, id, ttl_seconds } => {
                if let Some(term) = self.leading_term() {
                    self.node.lease_clock.renew(term, id, Duration::from_secs(ttl_seconds), Instant::now());
                }
                let revision = self.node.sm.current_revision();
                Ok(LeaseGrantResponse { header: Some(header(&self.node, index, revision)), id, ttl_seconds })
            }
            other => Err(other),
        };
        let cmd = Command::LeaseGrant { id: msg.id, ttl_seconds };
        let forward = |ch, req| async move { LeaseClient::new(ch).lease_grant(req).await };
        self.write_or_forward(&origin, msg, cmd, answer, forward).await
    }

    async fn lease_revoke(&self, req: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let answer = |result| match result {
            CommandResult::LeaseRevoked { index, revision, deleted } => {
                Ok(LeaseRevokeResponse { header: Some(header(&self.node, index, revision)), deleted })
            }
            other => Err(other),
        };
        let cmd = Command::LeaseRevoke { id: msg.id };
        let forward = |ch, req| async move { LeaseClient::new(ch).lease_revoke(req).await };
        self.write_or_forward(&origin, msg, cmd, answer, forward).await
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let origin = Origin::of(&req);
        let incoming = until_error(req.into_inner(), |r| r);
        self.keep_alive(origin, incoming).await.map(Response::new)
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let origin = Origin::of(&req);
        let forward = |ch, req| async move { LeaseClient::new(ch).lease_time_to_live(req).await };
        let msg = match self.read_on_leader_or_forward(&origin, req.into_inner(), forward).await? {
            ReadAt::Here(msg) => msg,
            ReadAt::Leader(answer) => return Ok(answer),
        };
        let Some(term) = self.leading_term() else { return Err(no_leader(&self.node, origin.forwarded)) };
        let (sm, id, want_keys) = (self.node.sm.clone(), msg.id, msg.keys);
        let (lease, keys) = tokio::task::spawn_blocking(move || {
            let lease = sm.lease(id)?;
            let keys = if want_keys && lease.is_some() { sm.lease_keys(id)? } else { Vec::new() };
            std::io::Result::Ok((lease, keys))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Api::storage_error)?;
        let Some(lease) = lease else { return Err(lease_status(LeaseError::NotFound(id))) };
        let ttl = Duration::from_secs(lease.ttl_seconds);
        let remaining = self.node.lease_clock.remaining(term, id, ttl, Instant::now());
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: Some(applied_header(&self.node)),
            id,
            remaining_ms: remaining.as_millis() as u64,
            granted_ttl_seconds: lease.ttl_seconds,
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn lease_leases(&self, req: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let origin = Origin::of(&req);
        let forward = |ch, req| async move { LeaseClient::new(ch).lease_leases(req).await };
        if let ReadAt::Leader(answer) = self.read_or_forward(&origin, req.into_inner(), forward).await? {
            return Ok(answer);
        }
        let sm = self.node.sm.clone();
        let leases = tokio::task::spawn_blocking(move || sm.leases())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Api::storage_error)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(applied_header(&self.node)),
            leases: leases.into_iter().map(|(id, l)| LeaseStatus { id, ttl_seconds: l.ttl_seconds }).collect(),
        }))
    }
}
