//! A petkv client: talks to any of several endpoints, fails over to the next on UNAVAILABLE,
//! and gives every write a `(client_id, sequence)` so retries are applied once.
//!
//! A write is reported as failed only when every attempt is known not to have been applied
//! (the server marked it so, or no connection was made). If any attempt may have reached the
//! log (a timeout, a broken connection), the write is reported as
//! [`ClientError::OutcomeUnknown`], never as failed: it may have been applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::outcome::is_not_applied;
use crate::pb::v1::cluster_client::ClusterClient;
use crate::pb::v1::kv_client::KvClient;
use crate::pb::v1::lease_client::LeaseClient;
use crate::pb::v1::{
    CompactRequest, CompactResponse, Consistency, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, MembersRequest, MembersResponse, NodeStatus,
    PutRequest, PutResponse, ScaleRequest, ScaleResponse, ScanRequest, ScanResponse, StatusRequest, TxnRequest,
    TxnResponse, WatchRequest, WatchResponse, WriteId,
};
use crate::tls::dial::lazy_channel;
use crate::tls::{ClientTls, TlsError};

/// Longest pause between two rounds over all endpoints. Short: during a failover the next
/// leader is usually known within an election timeout, and a retry on loopback or a LAN is
/// cheap.
const MAX_ROUND_PAUSE: Duration = Duration::from_millis(100);
/// The pause after the first round that found no leader.
const FIRST_ROUND_PAUSE: Duration = Duration::from_millis(25);

/// Bounds of one attempt on one endpoint (a third of the request's budget, within these).
const MIN_ATTEMPT: Duration = Duration::from_millis(300);
const MAX_ATTEMPT: Duration = Duration::from_secs(5);

/// Default time one request may take end to end, failovers included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors a client call returns.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {detail}")]
    BadEndpoint { endpoint: String, detail: String },
    #[error("no endpoint answered ({endpoints}): {last}")]
    Unavailable { endpoints: String, last: String },
    #[error("outcome unknown: the write may or may not have been applied ({0})")]
    OutcomeUnknown(String),
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rejected(Status),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    BadToken(String),
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "failed precondition",
        Code::NotFound => "not found",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::ResourceExhausted => "resource exhausted",
        Code::Internal => "internal error",
        _ => "error",
    }
}

impl ClientError {
    /// The gRPC status behind a rejection, if any.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Rejected(s) => Some(s),
            _ => None,
        }
    }
}

/// A client of a petkv cluster. Safe to share between tasks: concurrent writes each take their
/// own "lane" (a client id with its own sequence), because one client id may have only one
/// write in flight — the server remembers only the last write per client id.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    preferred: AtomicU64,
    /// Lanes not in use. tokio's lock: held only to pop or push one, and never poisoned.
    lanes: Mutex<Vec<Lane>>,
    timeout: Duration,
    /// The `authorization` metadata every request carries ([`Client::with_token`]).
    authorization: Option<MetadataValue<Ascii>>,
}

/// A client id and the next sequence number on it.
#[derive(Debug)]
struct Lane {
    client_id: u64,
    next_sequence: u64,
}

impl Lane {
    fn new() -> Self {
        Self { client_id: rand::random::<u64>() | 1, next_sequence: 1 }
    }
}

/// The largest watch response a client takes: one revision goes whole, however many keys it
/// changed (each up to the value limit).
pub const MAX_WATCH_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Whether an error means "try another endpoint".
pub fn is_retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded)
}

impl Client {
    /// A plaintext client for `endpoints` (`host:port`, at least one). Connects lazily.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, ClientError> {
        Self::with_tls(endpoints, timeout, None)
    }

    /// A client for `endpoints` (`host:port`, or `https://host:port` with `tls`), over TLS when
    /// `tls` is given. Connects lazily.
    pub fn with_tls(endpoints: &[String], timeout: Duration, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint { endpoint: String::new(), detail: "no endpoints given".into() });
        }
        let channels = endpoints
            .iter()
            .map(|e| {
                let bad = |detail: String| ClientError::BadEndpoint { endpoint: e.clone(), detail };
                let addr = match (e.split_once("://"), tls) {
                    (None, _) => e.as_str(),
                    (Some(("http", addr)), None) | (Some(("https", addr)), Some(_)) => addr,
                    (Some(("https", _)), None) => {
                        return Err(bad("an https endpoint needs a CA to trust (--ca)".into()))
                    }
                    (Some(("http", _)), Some(_)) => {
                        return Err(bad("a plaintext endpoint given with TLS settings".into()))
                    }
                    (Some((scheme, _)), _) => return Err(bad(format!("unknown scheme {scheme:?}"))),
                };
                lazy_channel(addr, tls, |ep| ep.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true))
                    .map_err(|err| bad(err.detail))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            endpoints: endpoints.to_vec(),
            channels,
            preferred: AtomicU64::new(0),
            lanes: Mutex::new(Vec::new()),
            timeout,
            authorization: None,
        })
    }

    /// Sends `token` as `authorization: Bearer <token>` with every request (a server started
    /// with `--auth-tokens`).
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let value = crate::auth::bearer(token.trim()).parse::<MetadataValue<Ascii>>().map_err(|_| {
            ClientError::BadToken("the token holds characters a gRPC header cannot carry (visible ASCII only)".into())
        })?;
        self.authorization = Some(value);
        Ok(self)
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `req` with this client's credentials, if it has any.
    pub fn authorize<T>(&self, mut req: Request<T>) -> Request<T> {
        if let Some(value) = &self.authorization {
            req.metadata_mut().insert(crate::auth::AUTHORIZATION, value.clone());
        }
        req
    }

    /// One lazily connected channel per endpoint, in the order given.
    pub fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        self.channels.iter().cloned()
    }

    /// Runs one write on a lane of its own; the lane's sequence advances whatever the outcome.
    async fn on_lane<T, F, Fut>(&self, write: F) -> Result<T, ClientError>
    where
        F: FnOnce(WriteId) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut lane = self.lanes.lock().await.pop().unwrap_or_else(Lane::new);
        let id = WriteId { client_id: lane.client_id, sequence: lane.next_sequence };
        lane.next_sequence += 1;
        let result = write(id).await;
        self.lanes.lock().await.push(lane);
        result
    }

    /// Calls `f` on endpoints in turn, starting with the last one that worked, until one
    /// answers something other than a retryable error or the overall timeout passes.
    async fn with_failover<T, F, Fut>(&self, is_write: bool, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let n = self.channels.len();
        let mut attempt = 0usize;
        // Whether some attempt may have been applied (for writes: "outcome unknown").
        let mut ambiguous = false;
        let mut last = String::from("no attempt made");
        // The last answer a server gave (not a timeout): what the error reports when the time
        // runs out during a later attempt, which would otherwise hide it.
        let mut last_answer: Option<String> = None;
        let mut pause = FIRST_ROUND_PAUSE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let i = (self.preferred.load(Ordering::Relaxed) as usize + attempt) % n;
            // One endpoint may hang (a partitioned pod keeps its TCP connection open): give each
            // attempt a third of the budget, so the others get their turn within it.
            let per_try = remaining.min((self.timeout / 3).clamp(MIN_ATTEMPT, MAX_ATTEMPT));
            match tokio::time::timeout(per_try, f(self.channels[i].clone(), per_try)).await {
                Ok(Ok(v)) => {
                    self.preferred.store(i as u64, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(status)) if is_retryable(&status) => {
                    ambiguous |= !is_not_applied(&status);
                    last = format!("{}: {}", self.endpoints[i], status.message());
                    if !matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) {
                        last_answer = Some(last.clone());
                    }
                    self.avoid(i);
                }
                Ok(Err(status)) if is_write && ambiguous => {
                    return Err(ClientError::OutcomeUnknown(format!(
                        "an earlier attempt may have been applied; then {}: {}",
                        self.endpoints[i],
                        status.message()
                    )))
                }
                Ok(Err(status)) => return Err(ClientError::Rejected(status)),
                Err(_) => {
                    ambiguous = true;
                    last = format!("{}: timed out", self.endpoints[i]);
                    self.avoid(i);
                }
            }
            attempt += 1;
            if attempt.is_multiple_of(n) {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(MAX_ROUND_PAUSE);
            }
        }
        let last = match last_answer {
            Some(answer) if answer != last => format!("{answer}; then {last}"),
            _ => last,
        };
        if is_write && ambiguous {
            Err(ClientError::OutcomeUnknown(last))
        } else {
            Err(ClientError::Unavailable { endpoints: self.endpoints.join(","), last })
        }
    }

    /// The endpoint requests start with now.
    pub(crate) fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) as usize % self.channels.len().max(1)
    }

    /// After endpoint `i` failed, later requests start with the next one.
    pub(crate) fn avoid(&self, i: usize) {
        let next = ((i + 1) % self.channels.len()) as u64;
        let _ = self.preferred.compare_exchange(i as u64, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> Request<T> {
        let mut req = self.authorize(Request::new(msg));
        req.set_timeout(timeout);
        req
    }

    /// Writes `key`. With `if_mod_revision`, only if the key's mod revision equals it (0 =
    /// absent).
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        if_mod_revision: Option<u64>,
    ) -> Result<PutResponse, ClientError> {
        let msg = PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            if_mod_revision,
            ..Default::default()
        };
        self.put_with(msg).await
    }

    /// Writes `key` attached to `lease`: the key is deleted when the lease ends.
    pub async fn put_with_lease(&self, key: &[u8], value: &[u8], lease: u64) -> Result<PutResponse, ClientError> {
        let msg = PutRequest { key: key.to_vec().into(), value: value.to_vec().into(), lease, ..Default::default() };
        self.put_with(msg).await
    }

    /// Sends a put as the caller built it (`if_mod_revision`, `lease`, `prev_kv` for the key
    /// before the write); its write id is set here, so a retry is applied once.
    pub async fn put_with(&self, mut msg: PutRequest) -> Result<PutResponse, ClientError> {
        self.on_lane(|id| async move {
            msg.write_id = Some(id);
            self.with_failover(true, |ch, t| {
                let msg = msg.clone();
                async move { KvClient::new(ch).put(self.request(msg, t)).await.map(|r| r.into_inner()) }
            })
            .await
        })
        .await
    }

    /// Deletes `key`, optionally only if its mod revision matches.
    pub async fn delete(&self, key: &[u8], if_mod_revision: Option<u64>) -> Result<DeleteResponse, ClientError> {
        self.on_lane(|id| async move {
            let msg = DeleteRequest { key: key.to_vec().into(), write_id: Some(id), if_mod_revision };
            self.with_failover(true, |ch, t| {
                let msg = msg.clone();
                async move { KvClient::new(ch).delete(self.request(msg, t)).await.map(|r| r.into_inner()) }
            })
            .await
        })
        .await
    }

    /// Reads `key`.
    pub async fn get(&self, key: &[u8], consistency: Consistency) -> Result<GetResponse, ClientError> {
        self.get_at(key, consistency, 0).await
    }

    /// Reads `key` as it was at `revision` (0: the latest).
    pub async fn get_at(
        &self,
        key: &[u8],
        consistency: Consistency,
        revision: u64,
    ) -> Result<GetResponse, ClientError> {
        let msg = GetRequest { key: key.to_vec().into(), consistency: consistency as i32, revision };
        self.with_failover(false, |ch, t| {
            let msg = msg.clone();
            async move { KvClient::new(ch).get(self.request(msg, t)).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Opens one watch stream on the first endpoint that answers (no deadline: the stream
    /// lasts until it ends). [`crate::Watcher`] resumes such streams across members.
    pub async fn watch_stream(&self, req: WatchRequest) -> Result<tonic::Streaming<WatchResponse>, ClientError> {
        self.with_failover(false, |ch, _| {
            let req = self.authorize(Request::new(req.clone()));
            async move {
                KvClient::new(ch)
                    .max_decoding_message_size(MAX_WATCH_RESPONSE_BYTES)
                    .watch(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Runs a transaction (its write id is set here).
    pub async fn txn(&self, mut request: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.on_lane(|id| async move {
            request.write_id = Some(id);
            self.with_failover(true, |ch, t| {
                let msg = request.clone();
                async move { KvClient::new(ch).txn(self.request(msg, t)).await.map(|r| r.into_inner()) }
            })
            .await
        })
        .await
    }

    /// Grants a lease of `ttl_seconds` (`id` 0: the cluster picks one).
    pub async fn lease_grant(&self, id: u64, ttl_seconds: u64) -> Result<LeaseGrantResponse, ClientError> {
        let msg = LeaseGrantRequest { id, ttl_seconds };
        self.with_failover(true, |ch, t| async move {
            LeaseClient::new(ch).lease_grant(self.request(msg, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Revokes lease `id`, deleting its keys.
    pub async fn lease_revoke(&self, id: u64) -> Result<LeaseRevokeResponse, ClientError> {
        let msg = LeaseRevokeRequest { id };
        self.with_failover(true, |ch, t| async move {
            LeaseClient::new(ch).lease_revoke(self.request(msg, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Lease `id`'s remaining TTL on the leader's clock (and its keys, with `keys`).
    pub async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTimeToLiveResponse, ClientError> {
        let msg = LeaseTimeToLiveRequest { id, keys };
        self.with_failover(false, |ch, t| async move {
            LeaseClient::new(ch).lease_time_to_live(self.request(msg, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Every lease.
    pub async fn leases(&self) -> Result<LeaseLeasesResponse, ClientError> {
        self.with_failover(false, |ch, t| async move {
            LeaseClient::new(ch).lease_leases(self.request(LeaseLeasesRequest {}, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Opens a keep-alive stream on the first endpoint that answers.
    pub async fn keep_alive(&self) -> Result<crate::KeepAlive, ClientError> {
        let (tx, responses) = self
            .with_failover(false, |ch, _| async move {
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                let outgoing = self.authorize(Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
                let responses = LeaseClient::new(ch).lease_keep_alive(outgoing).await?.into_inner();
                Ok((tx, responses))
            })
            .await?;
        // The endpoint that answered is the preferred one now.
        let endpoint = self.preferred();
        Ok(crate::KeepAlive::new(tx, responses, endpoint))
    }

    /// Drops the history before `revision`.
    pub async fn compact(&self, revision: u64) -> Result<CompactResponse, ClientError> {
        let msg = CompactRequest { revision };
        self.with_failover(true, |ch, t| async move {
            KvClient::new(ch).compact(self.request(msg, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// One page of a scan.
    pub async fn scan(&self, msg: ScanRequest) -> Result<ScanResponse, ClientError> {
        self.with_failover(false, |ch, t| {
            let msg = msg.clone();
            async move { KvClient::new(ch).scan(self.request(msg, t)).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Status of the first endpoint that answers.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.with_failover(false, |ch, t| async move {
            ClusterClient::new(ch).status(self.request(StatusRequest {}, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Status of one specific endpoint, with no failover.
    pub async fn status_of(
        endpoint: &str,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<NodeStatus, ClientError> {
        Client::with_tls(&[endpoint.to_string()], timeout, tls)?.status_of_first().await
    }

    /// Status of this client's first endpoint, with no failover.
    pub async fn status_of_first(&self) -> Result<NodeStatus, ClientError> {
        let (client, endpoint, timeout) = (self, self.endpoints[0].as_str(), self.timeout);
        let ch = client.channels[0].clone();
        tokio::time::timeout(timeout, ClusterClient::new(ch).status(client.request(StatusRequest {}, timeout)))
            .await
            .map_err(|_| ClientError::Unavailable { endpoints: endpoint.into(), last: "timed out".into() })?
            .map(|r| r.into_inner())
            .map_err(|s| ClientError::Unavailable { endpoints: endpoint.into(), last: s.message().to_string() })
    }

    /// Declares the set's replica count.
    pub async fn scale(&self, replicas: u32) -> Result<ScaleResponse, ClientError> {
        self.with_failover(true, |ch, t| async move {
            ClusterClient::new(ch).scale(self.request(ScaleRequest { replicas }, t)).await.map(|r| r.into_inner())
        })
        .await
    }

    /// Every member with its own status.
    pub async fn members(&self) -> Result<MembersResponse, ClientError> {
        self.with_failover(false, |ch, t| async move {
            ClusterClient::new(ch).members(self.request(MembersRequest {}, t)).await.map(|r| r.into_inner())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(list: &[&str]) -> Vec<String> {
        list.iter().map(|e| e.to_string()).collect()
    }

    #[tokio::test]
    async fn endpoints_are_checked_against_the_tls_settings() {
        let timeout = Duration::from_secs(1);
        assert!(matches!(Client::new(&[], timeout), Err(ClientError::BadEndpoint { .. })));
        assert!(Client::new(&endpoints(&["127.0.0.1:7379", "http://[::1]:7379"]), timeout).is_ok());
        for bad in ["https://127.0.0.1:7379", "grpc://127.0.0.1:7379", "not an address:x"] {
            match Client::new(&endpoints(&[bad]), timeout) {
                Err(ClientError::BadEndpoint { endpoint, .. }) => assert_eq!(endpoint, bad),
                other => panic!("{bad}: {:?}", other.map(|c| c.endpoints().to_vec())),
            }
        }
    }

    #[tokio::test]
    async fn a_token_must_fit_in_a_header() {
        let client = || Client::new(&endpoints(&["127.0.0.1:7379"]), Duration::from_secs(1));
        let with_token = client().and_then(|c| c.with_token(" s3cret\n")).expect("a visible ASCII token");
        let req = with_token.authorize(Request::new(()));
        assert_eq!(
            req.metadata().get(crate::auth::AUTHORIZATION).map(|v| v.to_str().ok()),
            Some(Some("Bearer s3cret"))
        );
        assert!(matches!(client().and_then(|c| c.with_token("two\nlines")), Err(ClientError::BadToken(_))));
    }

    #[tokio::test]
    async fn a_write_no_server_received_fails_rather_than_being_unknown() {
        // Nothing listens on a just-closed port: every attempt fails to connect, so the write
        // was certainly not applied.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let client = Client::new(&[addr.to_string()], Duration::from_millis(700)).expect("client");
        match client.put(b"k", b"v", None).await {
            Err(ClientError::Unavailable { last, .. }) => assert!(last.contains("tcp connect error"), "{last}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
