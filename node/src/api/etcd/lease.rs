//! etcd's `Lease` service on petkv's leases: the same grants, keep-alives (renewed on the
//! leader, relayed from a follower), TTLs on the leader's clock and revocations, with etcd's
//! signed ids and TTLs. etcd's answer for a lease that is gone is a keep-alive with TTL 0 and
//! NOT_FOUND "requested lease not found" elsewhere; petkv's are the same.

use futures::StreamExt;
use petkv_client::pb::v1::lease_server::Lease;
use petkv_client::pb::v1::{
    LeaseGrantRequest as PbGrant, LeaseKeepAliveRequest as PbKeepAlive, LeaseLeasesRequest as PbLeases,
    LeaseRevokeRequest as PbRevoke, LeaseTimeToLiveRequest as PbTimeToLive,
};
use tonic::{Request, Response, Status, Streaming};

use super::errors::to_etcd;
use super::{native, non_negative, to_i64, EtcdApi};
use crate::api::forward::Origin;
use crate::api::lease::{until_error, KeepAliveStream};
use crate::pb::etcd::etcdserverpb::lease_server::Lease as EtcdLease;
use crate::pb::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};

/// The etcd keep-alive answers of one stream.
pub type EtcdKeepAliveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EtcdLease for EtcdApi {
    type LeaseKeepAliveStream = EtcdKeepAliveStream;

    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let g = req.get_ref();
        let msg = PbGrant { id: non_negative("ID", g.id)?, ttl_seconds: non_negative("TTL", g.ttl)? };
        let answer = Lease::lease_grant(&self.api, native(&req, msg)).await.map_err(to_etcd)?.into_inner();
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.header_of(answer.header)),
            id: to_i64(answer.id),
            ttl: to_i64(answer.ttl_seconds),
            error: String::new(),
        }))
    }

    async fn lease_revoke(&self, req: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let msg = PbRevoke { id: non_negative("ID", req.get_ref().id)? };
        let answer = Lease::lease_revoke(&self.api, native(&req, msg)).await.map_err(to_etcd)?.into_inner();
        Ok(Response::new(LeaseRevokeResponse { header: Some(self.header_of(answer.header)) }))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let origin = Origin::of(&req);
        // A negative id names no lease: it is asked as id 0, which none has (TTL 0 back).
        let incoming = until_error(req.into_inner(), |r: LeaseKeepAliveRequest| PbKeepAlive {
            id: u64::try_from(r.id).unwrap_or(0),
        });
        let answers: KeepAliveStream = self.api.keep_alive(origin, incoming).await.map_err(to_etcd)?;
        let etcd = self.clone();
        let answers = answers.map(move |answer| {
            answer.map_err(to_etcd).map(|a| LeaseKeepAliveResponse {
                header: Some(etcd.header_of(a.header)),
                id: to_i64(a.id),
                ttl: to_i64(a.ttl_seconds),
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let t = req.get_ref();
        let msg = PbTimeToLive { id: non_negative("ID", t.id)?, keys: t.keys };
        let answer = match Lease::lease_time_to_live(&self.api, native(&req, msg)).await {
            Ok(answer) => answer.into_inner(),
            // etcd answers a lease that is gone with TTL -1, not an error.
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Ok(Response::new(LeaseTimeToLiveResponse {
                    header: Some(self.header(self.node().sm.current_revision())),
                    id: t.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: vec![],
                }))
            }
            Err(s) => return Err(to_etcd(s)),
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: Some(self.header_of(answer.header)),
            id: to_i64(answer.id),
            // etcd's TTL is whole seconds left, rounded down.
            ttl: to_i64(answer.remaining_ms / 1000),
            granted_ttl: to_i64(answer.granted_ttl_seconds),
            keys: answer.keys,
        }))
    }

    async fn lease_leases(&self, req: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        let answer = Lease::lease_leases(&self.api, native(&req, PbLeases {})).await.map_err(to_etcd)?.into_inner();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header_of(answer.header)),
            leases: answer.leases.into_iter().map(|l| LeaseStatus { id: to_i64(l.id) }).collect(),
        }))
    }
}
