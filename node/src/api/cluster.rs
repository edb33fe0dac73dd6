//! `petkv.v1.Cluster`: who is who. `Members` asks every member for its own status, so the
//! answer shows what each node itself reports (role, applied index, key count), not what the
//! answering node believes about it.

use std::time::Duration;

use petkv_client::pb::v1::cluster_client::ClusterClient;
use petkv_client::pb::v1::cluster_server::Cluster;
use petkv_client::pb::v1::{
    BackupRequest, Member, MembersRequest, MembersResponse, NodeStatus, ScaleRequest, ScaleResponse, StatusRequest,
};
use tonic::{Request, Response, Status};

use super::forward::{relay, to_leader_without_deadline, Origin};
use super::leader::NotServed;
use super::{applied_header, header, Api};
use crate::recovery::backup::ChunkStream;
use crate::store::command::CommandResult;

/// How long `Members` waits for each member's status.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[tonic::async_trait]
impl Cluster for Api {
    type BackupStream = ChunkStream;

    async fn backup(&self, req: Request<BackupRequest>) -> Result<Response<ChunkStream>, Status> {
        let origin = Origin::of(&req);
        match self.read_index(origin.forwarded).await {
            Ok(()) => {
                let export = self.node.sm.export().await.map_err(Api::storage_error)?;
                let index = export.meta.last_log_id.map(|l| l.index).unwrap_or(0);
                tracing::info!(index, revision = export.revision, "streaming a backup");
                let header = header(&self.node, index, export.revision);
                Ok(Response::new(crate::recovery::backup::stream_file(export.file, header)))
            }
            Err(NotServed::Forward(leader)) => {
                // No deadline on the forwarded call: the stream lasts as long as the backup is big.
                let (channel, req) = to_leader_without_deadline(&self.node, &leader, &origin, BackupRequest {})?;
                let stream = ClusterClient::new(channel)
                    .max_decoding_message_size(2 * crate::recovery::backup::CHUNK_BYTES)
                    .backup(req)
                    .await
                    .map_err(relay)?
                    .into_inner();
                Ok(Response::new(Box::pin(stream)))
            }
            Err(NotServed::Failed(s)) => Err(s),
        }
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(self.node.status()))
    }

    async fn scale(&self, req: Request<ScaleRequest>) -> Result<Response<ScaleResponse>, Status> {
        let origin = Origin::of(&req);
        let msg = req.into_inner();
        let cmd = crate::api::validation::scale(&msg)?;
        let answer = |result| match result {
            CommandResult::Replicas { index, replicas } => {
                tracing::info!(replicas, "declared replica count changed");
                let revision = self.node.sm.current_revision();
                Ok(ScaleResponse { header: Some(header(&self.node, index, revision)), replicas })
            }
            other => Err(other),
        };
        let forward = |ch, req| async move { ClusterClient::new(ch).scale(req).await };
        self.write_or_forward(&origin, msg, cmd, answer, forward).await
    }

    async fn members(&self, req: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        // Each member is asked with the caller's credentials: what the caller may not see it
        // does not see through this node either.
        let origin = Origin::of(&req);
        let node = &self.node;
        let metrics = node.metrics().ok_or_else(|| Status::unavailable("node is starting: not a member yet"))?;
        let membership = metrics.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
        let asks = membership.nodes().map(|(id, peer)| {
            let (id, peer, voter) = (*id, peer.clone(), voters.contains(id));
            let channel = node.channels.client(&peer.client_addr);
            let origin = &origin;
            async move {
                let status = async {
                    let mut client = ClusterClient::new(channel.map_err(|e| e.to_string())?);
                    let mut req = origin.request(StatusRequest {});
                    req.set_timeout(MEMBER_STATUS_TIMEOUT);
                    tokio::time::timeout(MEMBER_STATUS_TIMEOUT, client.status(req))
                        .await
                        .map_err(|_| "timed out".to_string())?
                        .map(|r| r.into_inner())
                        .map_err(|s| s.message().to_string())
                }
                .await;
                let (status, error) = match status {
                    Ok(s) => (Some(s), String::new()),
                    Err(e) => (None, e),
                };
                Member {
                    node_id: id,
                    ordinal: peer.ordinal,
                    client_addr: peer.client_addr,
                    peer_addr: peer.peer_addr,
                    voter,
                    status,
                    error,
                }
            }
        });
        let members = futures::future::join_all(asks).await;
        Ok(Response::new(MembersResponse { header: Some(applied_header(node)), members }))
    }
}
