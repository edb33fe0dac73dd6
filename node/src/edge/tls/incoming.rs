//! A listener's accepted connections as TLS streams, for tonic's `serve_with_incoming`.
//!
//! Handshakes run concurrently, each in its own task and bounded by [`HANDSHAKE_TIMEOUT`], so
//! a slow or silent client never holds up the others. A failed handshake (a plaintext client,
//! a client that does not trust the CA, a certificate the port refuses) is logged with the
//! remote address and the reason, and the connection is dropped; tonic only sees connections
//! whose handshake succeeded. Connections come through the port's
//! [`crate::edge::limits::connections::GatedListener`], so one still handshaking holds a slot of the
//! port's connection cap and the cap works the same with TLS as without.

use std::time::Duration;

use futures::Stream;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::ServerTls;
use crate::edge::limits::connections::{Admitted, GatedListener};

/// Longest time a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by the server.
const BACKLOG: usize = 64;

/// The TLS streams of the connections `listener` admits. `port` names the port in log lines.
/// Accepting stops when the stream is dropped (the server stopped).
pub fn accept(
    mut listener: GatedListener,
    tls: &ServerTls,
    port: &'static str,
) -> impl Stream<Item = std::io::Result<TlsStream<Admitted<TcpStream>>>> {
    let acceptor = TlsAcceptor::from(tls.config());
    let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.next() => accepted,
                _ = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(port, %remote, error = %e, "TLS handshake failed; connection refused"),
                    Err(_) => tracing::warn!(port, %remote, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
