//! The cap on a port's open connections: [`ConnectionGate`] hands out one slot per accepted
//! connection and [`GatedListener`] closes, right after accept, every connection that finds
//! no slot free.
//!
//! A slot is taken at TCP accept, before a TLS handshake, so connections that are still
//! handshaking count too; it is given back when the connection is dropped (closed by either
//! side, reaped by HTTP/2 keepalive, or timed out in the handshake). Refusals are counted in
//! `petkv_connections_refused_total{port}` and logged at warn at most once per
//! [`WARN_EVERY`], with the number refused since the last line, so a flood cannot flood the
//! log too. Open connections are `petkv_open_connections{port}`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use crate::edge::metrics::Metrics;

/// Shortest time between two warnings about refused connections on one port.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open-connection slots of one port.
#[derive(Clone)]
pub struct ConnectionGate {
    port: &'static str,
    max: usize,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    log: Arc<RefusalLog>,
}

impl std::fmt::Debug for ConnectionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGate").field("port", &self.port).field("max", &self.max).finish_non_exhaustive()
    }
}

impl ConnectionGate {
    /// A gate that lets at most `max` connections of `port` be open at once (`max` is at
    /// least 1 and at most tokio's semaphore limit).
    pub fn new(port: &'static str, max: usize, metrics: Arc<Metrics>) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self { port, max, slots: Arc::new(Semaphore::new(max)), metrics, log: Arc::new(RefusalLog::default()) }
    }

    /// The port's name in metrics and logs.
    pub fn port(&self) -> &'static str {
        self.port
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// `io` holding a slot, or `None` (counted and logged) when every slot is taken: the
    /// caller drops `io`, which closes the connection.
    pub fn admit<IO>(&self, io: IO, remote: SocketAddr) -> Option<Admitted<IO>> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.connection_opened(self.port);
                Some(Admitted { io, _slot: Slot { _permit: permit, port: self.port, metrics: self.metrics.clone() } })
            }
            Err(_) => {
                self.metrics.record_connection_refused(self.port);
                if let Some(refused) = self.log.refused() {
                    tracing::warn!(
                        port = self.port,
                        %remote,
                        max = self.max,
                        refused_since_last_warning = refused,
                        "connection limit reached; closing new connections"
                    );
                }
                None
            }
        }
    }
}

/// Counts refusals and says when a warning is due.
#[derive(Default)]
struct RefusalLog {
    last_warning: Mutex<Option<Instant>>,
    refused: AtomicU64,
}

impl RefusalLog {
    /// Records one refusal; returns how many there were since the last warning when a new
    /// warning is due.
    fn refused(&self) -> Option<u64> {
        let count = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = crate::support::sync::lock(&self.last_warning);
        let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if !due {
            return None;
        }
        *last = Some(Instant::now());
        self.refused.fetch_sub(count, Ordering::Relaxed);
        Some(count)
    }
}

/// An open connection's hold on its slot; gives the slot back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    port: &'static str,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.port);
    }
}

/// A connection that holds a slot of its port for as long as it lives. Reads and writes go
/// straight to the inner stream; tonic's connection info is the inner stream's, so
/// `Request::remote_addr` works as before.
pub struct Admitted<IO> {
    io: IO,
    _slot: Slot,
}

impl<IO> Admitted<IO> {
    /// The inner stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A TCP listener whose connections pass through a [`ConnectionGate`], with Nagle's algorithm
/// off (replies are written in several small frames; without it a reply can wait ~40 ms for
/// the client's delayed ACK). Accept errors (out of file descriptors, a connection reset before
/// it was taken) are retried with axum's back-off rather than spinning.
pub struct GatedListener {
    listener: TcpListener,
    gate: ConnectionGate,
}

impl GatedListener {
    pub fn new(listener: TcpListener, gate: ConnectionGate) -> Self {
        Self { listener, gate }
    }

    /// The next connection that found a free slot.
    pub async fn next(&mut self) -> (Admitted<TcpStream>, SocketAddr) {
        loop {
            let (tcp, remote) = axum::serve::Listener::accept(&mut self.listener).await;
            if let Some(admitted) = self.gate.admit(tcp, remote) {
                if let Err(e) = admitted.get_ref().set_nodelay(true) {
                    tracing::debug!(port = self.gate.port(), %remote, error = %e, "cannot turn off Nagle's algorithm");
                }
                return (admitted, remote);
            }
        }
    }

    /// The admitted connections as the stream tonic's `serve_with_incoming` takes.
    pub fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Admitted<TcpStream>>> {
        futures::stream::unfold(self, |mut listener| async move {
            let (conn, _) = listener.next().await;
            Some((Ok(conn), listener))
        })
    }
}

impl axum::serve::Listener for GatedListener {
    type Io = Admitted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.next().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_due_once_per_interval_with_the_count_since_the_last() {
        let log = RefusalLog::default();
        assert_eq!(log.refused(), Some(1), "the first refusal is logged");
        assert_eq!(log.refused(), None);
        assert_eq!(log.refused(), None);
        *log.last_warning.lock().unwrap() = Some(Instant::now() - WARN_EVERY);
        assert_eq!(log.refused(), Some(3), "two suppressed and this one");
        assert_eq!(log.refused(), None);
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_a_closed_one_frees_its_slot() {
        let metrics = Arc::new(Metrics::new());
        let gate = ConnectionGate::new("client", 2, metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut gated = GatedListener::new(listener, gate.clone());
        let first = TcpStream::connect(addr).await.unwrap();
        let (a, _) = gated.next().await;
        let _second = TcpStream::connect(addr).await.unwrap();
        let (_b, _) = gated.next().await;
        assert_eq!(gate.open(), 2);
        // The third is accepted and closed at once; the next one waits for a slot.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let waiting = tokio::spawn(async move { gated.next().await });
        let read = tokio::io::AsyncReadExt::read(&mut third, &mut byte).await;
        assert!(matches!(read, Ok(0) | Err(_)), "the refused connection is closed: {read:?}");
        drop((a, first));
        let _fourth = TcpStream::connect(addr).await.unwrap();
        let (_d, _) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
        assert_eq!(gate.open(), 2);
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"petkv_connections_refused_total{port="client"} 1"#), "{text}");
        assert!(text.contains(r#"petkv_open_connections{port="client"} 2"#), "{text}");
    }
}
