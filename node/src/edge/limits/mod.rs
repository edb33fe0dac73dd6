//! Bounds on what clients can make a node hold, so a flood of connections, streams or large
//! requests leaves it serving its other clients with bounded memory.
//!
//! - [`ClientPortLimits`]: the settings (`petkv serve` flags) and the tonic/hyper options they
//!   become on the client port ([`ClientPortLimits::server`]): HTTP/2 streams per connection,
//!   keepalive pings that reap dead connections, the server-side request deadline (tonic also
//!   honours a shorter `grpc-timeout` from the client).
//! - [`connections`]: the cap on open connections of a port (client and HTTP), counted at TCP
//!   accept, for plaintext and TLS alike.
//! - [`inflight`]: the cap on requests in flight; beyond it, `RESOURCE_EXHAUSTED` at once.
//! - [`message`]: the largest request the client port decodes, derived from the key and value
//!   limits, and the `RESOURCE_EXHAUSTED` answer to a larger one.
//! - [`nofile`]: the open-file limit raised to the hard limit at start.
//!
//! The TLS handshake timeout lives with the TLS acceptor ([`crate::edge::tls::incoming`]).

pub mod connections;
pub mod inflight;
pub mod message;
pub mod nofile;

use std::time::Duration;

use tonic::transport::Server;

/// Default cap on open client-port connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on concurrent HTTP/2 streams (requests) per client-port connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default cap on client-port requests in flight across all connections.
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 1024;
/// Default interval of HTTP/2 keepalive pings on an idle client connection.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered before the connection is closed.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than `--request-timeout-ms` the server-side deadline is: the handlers'
/// own timeouts answer `DEADLINE_EXCEEDED` with a reason first; the deadline catches the rest.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// Default cap on open HTTP-port (metrics, health) connections.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 64;
/// Requests the HTTP port serves at once; more are answered 503 at once.
pub const HTTP_MAX_INFLIGHT: usize = 32;
/// Largest request body the HTTP port accepts (its routes take none).
pub const HTTP_MAX_BODY_BYTES: usize = 1024;
/// Longest time an HTTP-port request may take.
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The client port's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPortLimits {
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub max_inflight_requests: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Open HTTP-port connections.
    pub max_http_connections: usize,
}

impl Default for ClientPortLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_inflight_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_http_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
        }
    }
}

impl ClientPortLimits {
    /// The client port's tonic server with these bounds and the server-side deadline
    /// `request_timeout` + [`DEADLINE_MARGIN`].
    pub fn server(&self, request_timeout: Duration) -> Server {
        Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .timeout(request_timeout.saturating_add(DEADLINE_MARGIN))
    }
}
