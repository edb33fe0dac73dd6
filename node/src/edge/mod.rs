//! The edge: what every connection and request crosses before it reaches the data path, and
//! what the node shows of itself.
//!
//! - [`tls`]: TLS on the client port, mutual TLS on the peer port, reloaded when the files
//!   change; `petkv certs`.
//! - [`auth`]: bearer tokens and client certificates mapped to roles, checked per method.
//! - [`limits`]: bounds under a flood: connections, streams, requests in flight, message size,
//!   deadlines, keepalive, the open-file limit.
//! - [`space`]: the free-space guard: writes refused while a volume is below its reserve.
//! - [`metrics`]: the Prometheus registry and metric families, the gRPC metrics layer.
//! - [`http`]: the HTTP port: `/metrics`, `/healthz`, `/readyz`.
//! - [`reload`]: values built from files (TLS material, the tokens file), rebuilt when the
//!   files change.

pub mod auth;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod reload;
pub mod space;
pub mod tls;
