//! Outgoing gRPC channels, plaintext or over TLS: one function ([`lazy_channel`]) that
//! everything uses to reach a node (the client library; in the node, peer RPCs, forwarding to
//! the leader, start-up probes).
//!
//! Over TLS the channel connects through [`TlsConnect`]: a TCP connection, then a rustls
//! handshake with the [`ClientTls`] configuration, verifying the server's certificate for the
//! host dialed (a DNS name or an IP address). tonic's own TLS settings are not used: they
//! build their rustls configuration once, and the node's follows certificate rotation. A connection
//! that fails before a request could be sent says so in its message ("tcp connect error",
//! "tls handshake error", as hyper's own connector does for plaintext); tonic wraps every
//! connector failure in its `ConnectError`, which [`crate::outcome::is_not_applied`] looks for.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint, Uri};

use super::ClientTls;

/// The prefix of the error of a connection whose TCP connection failed.
const TCP_CONNECT_ERROR: &str = "tcp connect error";
/// The prefix of the error of a connection whose TLS handshake failed.
const TLS_HANDSHAKE_ERROR: &str = "tls handshake error";

/// An address that cannot be dialed.
#[derive(Debug, thiserror::Error)]
#[error("invalid address {addr:?}: {detail}")]
pub struct BadAddress {
    pub addr: String,
    pub detail: String,
}

/// The host part of `host:port` (without the brackets of an IPv6 address).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// A lazily connected channel to `addr` (`host:port`), over TLS when `tls` is given. `tune`
/// sets the endpoint's options (timeouts, keep-alive).
pub fn lazy_channel(
    addr: &str,
    tls: Option<&ClientTls>,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, BadAddress> {
    let bad = |detail: String| BadAddress { addr: addr.to_string(), detail };
    let endpoint = tune(Endpoint::from_shared(format!("http://{addr}")).map_err(|e| bad(e.to_string()))?);
    Ok(match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => {
            let server_name =
                ServerName::try_from(host_of(addr).to_string()).map_err(|e| bad(format!("not a host name: {e}")))?;
            // The endpoint's own URI stays `http://`: tonic (built with a TLS backend for
            // `TlsConnectInfo`) would otherwise put its own TLS on top of this connector, or
            // refuse an `https` URI it has no TLS settings for. Requests still say `https`.
            let origin = format!("https://{addr}").parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
            endpoint.origin(origin).connect_with_connector_lazy(TlsConnect {
                tls: tls.clone(),
                addr: addr.to_string(),
                server_name,
            })
        }
    })
}

/// Connects to one address over TLS (a tower service, as tonic's connectors are).
#[derive(Clone)]
pub struct TlsConnect {
    tls: ClientTls,
    addr: String,
    server_name: ServerName<'static>,
}

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let context = |what: &str, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"));
            let tcp = TcpStream::connect(&this.addr).await.map_err(|e| context(TCP_CONNECT_ERROR, e))?;
            tcp.set_nodelay(true).map_err(|e| context(TCP_CONNECT_ERROR, e))?;
            let stream = TlsConnector::from(this.tls.config())
                .connect(this.server_name, tcp)
                .await
                .map_err(|e| context(TLS_HANDSHAKE_ERROR, e))?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(
            host_of("petkv-0.petkv-peers.ns.svc.cluster.local:7380"),
            "petkv-0.petkv-peers.ns.svc.cluster.local"
        );
        assert_eq!(host_of("127.0.0.1:7379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7379"), "::1");
    }
}
