//! etcd's `Cluster` and `Maintenance` services.
//!
//! - MemberList: every Raft member with its pod name, peer URL and etcd client URL (each
//!   member's own `--etcd-advertise`, asked with the caller's credentials; a member that does
//!   not answer is listed with this node's etcd port on its host). Learners are read replicas.
//! - MemberAdd/Remove/Update/Promote: refused; membership follows the StatefulSet's replica
//!   count (`petkv scale`, or the StatefulSet itself with `--kube-statefulset`).
//! - Status: this member's version (etcd API level), data dir size, leader, Raft index and
//!   term, applied index, learner flag, and why it refuses writes, if it does.
//! - Alarm: NOSPACE for each member whose volume is below its reserve (`--min-free-bytes`);
//!   the alarm follows the free space, so it cannot be raised or cleared by hand.
//! - Snapshot: petkv's consistent backup in etcd's snapshot envelope
//!   ([`crate::recovery::etcd_snapshot`]), which `petkv restore` reads. It is not a bbolt file:
//!   etcd's own `snapshot restore` cannot read it.
//! - HashKV: a CRC-32 of the member's keys at a revision, equal on members at one revision.
//! - Defragment, Hash, MoveLeader, Downgrade: UNIMPLEMENTED, with the reason.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use petkv_client::pb::v1::cluster_server::Cluster;
use petkv_client::pb::v1::{BackupRequest, MembersRequest};
use tonic::{Request, Response, Status};

use sha2::{Digest, Sha256};

use super::errors::to_etcd;
use super::{native, to_i64, EtcdApi};
use crate::pb::etcd::etcdserverpb::cluster_server::Cluster as EtcdCluster;
use crate::pb::etcd::etcdserverpb::maintenance_server::Maintenance as EtcdMaintenance;
use crate::pb::etcd::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest,
    DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::recovery::etcd_snapshot;

/// The etcd API level petkv answers as (what `etcdctl endpoint status` shows as the version).
pub const ETCD_VERSION: &str = "3.5.0";

/// Why membership calls are refused.
const MEMBERSHIP: &str = "etcdserver: petkv's membership follows the StatefulSet's replica count: scale the set \
    (kubectl scale statefulset, or `petkv scale N`) and pods join or leave by ordinal";

/// The answer streamed for a snapshot.
pub type SnapshotStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// Bytes under `dir` (the data dir: the store and the Raft log), for `dbSize`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `host:port` with `port` in place of the port of `addr`.
fn with_port(addr: &str, port: u16) -> String {
    match addr.rsplit_once(':') {
        Some((host, _)) => format!("{host}:{port}"),
        None => format!("{addr}:{port}"),
    }
}

#[tonic::async_trait]
impl EtcdCluster for EtcdApi {
    async fn member_add(&self, _: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(Status::failed_precondition(MEMBERSHIP))
    }

    async fn member_remove(&self, _: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(Status::failed_precondition(MEMBERSHIP))
    }

    async fn member_update(&self, _: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::failed_precondition(MEMBERSHIP))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(Status::failed_precondition(MEMBERSHIP))
    }

    async fn member_list(&self, req: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let answer = Cluster::members(&self.api, native(&req, MembersRequest {})).await.map_err(to_etcd)?.into_inner();
        let config = &self.node().config;
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let (client_scheme, peer_scheme) = (scheme(config.tls.client.is_some()), scheme(config.tls.peer.is_some()));
        let own_port = config.etcd_listen.map(|a| a.port());
        let members = answer
            .members
            .into_iter()
            .map(|m| {
                let status = m.status.unwrap_or_default();
                let etcd_addr = match (status.etcd_addr.is_empty(), own_port) {
                    (false, _) => Some(status.etcd_addr.clone()),
                    (true, Some(port)) => Some(with_port(&m.client_addr, port)),
                    (true, None) => None,
                };
                let name = if status.hostname.is_empty() {
                    format!("{}-{}", config.pod.set, m.ordinal)
                } else {
                    status.hostname.clone()
                };
                Member {
                    id: m.node_id,
                    name,
                    peer_ur_ls: vec![format!("{peer_scheme}://{}", m.peer_addr)],
                    client_ur_ls: etcd_addr.into_iter().map(|a| format!("{client_scheme}://{a}")).collect(),
                    is_learner: !m.voter,
                }
            })
            .collect();
        Ok(Response::new(MemberListResponse { header: Some(self.header_of(answer.header)), members }))
    }
}

#[tonic::async_trait]
impl EtcdMaintenance for EtcdApi {
    type SnapshotStream = SnapshotStream;

    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        if req.get_ref().action != AlarmAction::Get as i32 {
            return Err(Status::failed_precondition(
                "etcdserver: petkv raises NOSPACE while a member's volume is below its reserve (--min-free-bytes) \
                 and clears it when space is freed; it cannot be raised or cleared by hand",
            ));
        }
        let answer = Cluster::members(&self.api, native(&req, MembersRequest {})).await.map_err(to_etcd)?.into_inner();
        let alarms = answer
            .members
            .iter()
            .filter(|m| m.status.as_ref().is_some_and(|s| s.volume_free_bytes < s.volume_reserve_bytes))
            .map(|m| AlarmMember { member_id: m.node_id, alarm: AlarmType::Nospace as i32 })
            .collect();
        Ok(Response::new(AlarmResponse { header: Some(self.header_of(answer.header)), alarms }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.node().status();
        let data_dir = self.node().config.data_dir.clone();
        let db_size = tokio::task::spawn_blocking(move || dir_bytes(&data_dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatusResponse {
            header: Some(self.header(status.revision)),
            version: ETCD_VERSION.to_string(),
            db_size: to_i64(db_size),
            leader: status.leader_id,
            raft_index: status.committed_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors: (!status.writes_refused.is_empty()).then(|| status.writes_refused.clone()).into_iter().collect(),
            db_size_in_use: to_i64(db_size),
            is_learner: status.role == "learner",
            ..Default::default()
        }))
    }

    /// petkv's backup in etcd's snapshot envelope ([`etcd_snapshot`]): the backup's chunks,
    /// then its padding and SHA-256.
    async fn snapshot(&self, req: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let chunks = Cluster::backup(&self.api, native(&req, BackupRequest {})).await.map_err(to_etcd)?.into_inner();
        let etcd = self.clone();
        // (digest so far, backup bytes so far, enveloped bytes still to send)
        let state = Arc::new(Mutex::new((Sha256::new(), 0u64, 0u64)));
        let sent = state.clone();
        let body = chunks.map(move |chunk| {
            let chunk = chunk.map_err(to_etcd)?;
            let mut s = sent.lock().map_err(|_| Status::internal("etcdserver: snapshot state poisoned"))?;
            if chunk.header.is_some() {
                s.2 = etcd_snapshot::enveloped_len(chunk.total_bytes);
            }
            s.0.update(&chunk.data);
            s.1 += chunk.data.len() as u64;
            s.2 = s.2.saturating_sub(chunk.data.len() as u64);
            Ok(SnapshotResponse {
                header: Some(etcd.header_of(chunk.header)),
                remaining_bytes: s.2,
                blob: chunk.data,
                version: ETCD_VERSION.to_string(),
            })
        });
        let header = self.header(self.node().sm.current_revision());
        let tail = futures::stream::once(async move {
            let mut s = state.lock().map_err(|_| Status::internal("etcdserver: snapshot state poisoned"))?;
            let (hasher, len) = (std::mem::take(&mut s.0), s.1);
            Ok(SnapshotResponse {
                header: Some(header),
                remaining_bytes: 0,
                blob: etcd_snapshot::trailer(hasher, len).into(),
                version: ETCD_VERSION.to_string(),
            })
        });
        Ok(Response::new(Box::pin(body.chain(tail))))
    }

    async fn defragment(&self, _: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        Err(Status::unimplemented("etcdserver: petkv's store reclaims space by itself; there is nothing to defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("etcdserver: Hash (of a bbolt file) has no petkv counterpart"))
    }

    /// A CRC-32 of every key this member holds at the revision (0: now), with its value,
    /// revisions, version and lease, in key order: members at one revision answer the same
    /// hash, so a member that diverged shows (`etcdctl endpoint hashkv`). Served by the member
    /// asked, from its own state, as etcd's.
    async fn hash_kv(&self, req: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let at = match super::non_negative("revision", req.get_ref().revision)? {
            0 => None,
            at => Some(at),
        };
        self.node().serving_raft().map_err(to_etcd)?;
        let sm = self.node().sm.clone();
        let compacted = sm.compacted();
        let (hash, revision) = tokio::task::spawn_blocking(move || {
            let mut hasher = crc32fast::Hasher::new();
            let read = super::kv::for_each_at(&sm, (Bound::Unbounded, Bound::Unbounded), at, |kv| {
                hasher.update(&kv.key);
                hasher.update(&kv.stored.value);
                for n in [kv.stored.create_revision, kv.stored.mod_revision, kv.stored.version, kv.stored.lease] {
                    hasher.update(&n.to_le_bytes());
                }
            })?;
            std::io::Result::Ok(read.map(|revision| (hasher.finalize(), revision)))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("etcdserver: storage error: {e}")))?
        .map_err(|e| to_etcd(crate::api::revision_status(e)))?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.header(self.node().sm.current_revision())),
            hash,
            compact_revision: to_i64(compacted),
            hash_revision: to_i64(revision),
        }))
    }

    async fn move_leader(&self, _: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: petkv moves leadership itself (a leader that stops hands it over); MoveLeader is not served",
        ))
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("etcdserver: petkv has no cluster version to downgrade"))
    }
}
