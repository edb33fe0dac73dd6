//! Forwarding to the leader.
//!
//! A follower that receives a write or a linearizable read sends it on to the leader it knows
//! and relays the answer, so clients may talk to any member (a plain load-balanced Service
//! works). A forwarded request is marked; a node that receives a marked request and is not the
//! leader answers UNAVAILABLE instead of forwarding again, so leader changes cannot make a
//! request bounce between nodes.
//!
//! The client's credentials travel with the forwarded request and the leader checks them
//! again ([`crate::edge::auth`]): the forwarded marker grants nothing, so a client that sets it
//! itself gains nothing either. A bearer token is passed on as the `authorization` metadata it
//! came in. A client certificate cannot be (its TLS session ends here): the subject name this
//! node verified goes as [`crate::edge::auth::FORWARDED_CERT`] over the channel to the leader's
//! client port, on which this node presents its own (pod) certificate; the leader believes the
//! subject only from a connection whose certificate names a pod of the set, and looks its role
//! up itself. The same holds for `Members`, which asks every member with the caller's
//! credentials.

use petkv_client::auth::AUTHORIZATION;
use petkv_client::outcome::{is_not_applied, not_applied};
use petkv_client::pb::v1::kv_client::KvClient;
use tonic::metadata::{Ascii, Binary, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::edge::auth::layer::ETCD_TOKEN;
use crate::edge::auth::{Authenticated, Credential};
use crate::node::Node;
use crate::raft::PeerNode;

/// Metadata key that marks a forwarded request.
pub const FORWARDED: &str = "x-petkv-forwarded";

/// Relays an error from the leader; a connection that was never made becomes "not applied".
pub fn relay(status: Status) -> Status {
    if is_not_applied(&status) {
        not_applied(status)
    } else {
        status
    }
}

/// What a handler keeps of an incoming request to pass on when it forwards it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The request was already forwarded once.
    pub forwarded: bool,
    /// The client's bearer token, sent on with the forwarded request.
    authorization: Option<MetadataValue<Ascii>>,
    /// The subject of the client certificate this node verified, stated to the leader.
    certificate: Option<String>,
}

impl Origin {
    pub fn of<T>(req: &Request<T>) -> Self {
        let certificate = match req.extensions().get::<Authenticated>() {
            Some(Authenticated { credential: Credential::Certificate(subject), .. }) => Some(subject.clone()),
            _ => None,
        };
        // An etcd client's token (its `token` metadata) goes on as a bearer token.
        let etcd_token = || {
            let token = req.metadata().get(ETCD_TOKEN)?.to_str().ok()?;
            format!("Bearer {}", token.trim()).parse().ok()
        };
        Self {
            forwarded: req.metadata().contains_key(FORWARDED),
            authorization: req.metadata().get(AUTHORIZATION).cloned().or_else(etcd_token),
            certificate,
        }
    }

    /// `msg` as a request carrying the client's credentials: its certificate's subject if it
    /// was identified by one, else its `authorization` metadata, if any.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(subject) = &self.certificate {
            let value = MetadataValue::<Binary>::from_bytes(subject.as_bytes());
            req.metadata_mut().insert_bin(crate::edge::auth::FORWARDED_CERT, value);
        } else if let Some(value) = &self.authorization {
            req.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        req
    }
}

/// Answer for a request that needs a leader when none can be used.
pub fn no_leader(node: &Node, forwarded: bool) -> Status {
    not_applied(if forwarded {
        Status::unavailable("leadership moved while the request was forwarded; retry")
    } else {
        match node.leader() {
            Some((id, _)) if Some(id) == node.node_id() => Status::unavailable("this node is stepping down; retry"),
            _ => Status::unavailable("no leader is known (election in progress or no quorum); retry"),
        }
    })
}

/// The cached channel to the leader's public API, and a request marked as forwarded with the
/// node's request timeout.
pub fn to_leader<T>(node: &Node, leader: &PeerNode, origin: &Origin, msg: T) -> Result<(Channel, Request<T>), Status> {
    let (channel, mut req) = to_leader_without_deadline(node, leader, origin, msg)?;
    req.set_timeout(node.config.request_timeout);
    Ok((channel, req))
}

/// [`to_leader`] without the request timeout: for a streamed reply that lasts as long as it is
/// big (a backup).
pub fn to_leader_without_deadline<T>(
    node: &Node,
    leader: &PeerNode,
    origin: &Origin,
    msg: T,
) -> Result<(Channel, Request<T>), Status> {
    let channel = node.channels.client(&leader.client_addr).map_err(|e| Status::internal(e.to_string()))?;
    let mut req = origin.request(msg);
    req.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    node.prometheus.record_forwarded();
    Ok((channel, req))
}

/// A KV client on a forwarding channel, with the node's message size limits.
pub fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(64 * 1024 * 1024).max_encoding_message_size(64 * 1024 * 1024)
}
