//! The abusive clients of `flood`, each against one node's client port (plaintext): idle
//! HTTP/2 connections, streams that never finish their request, oversized requests and bursts
//! of concurrent requests on few connections. The e2e tests of the node's limits use the same
//! pieces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{GetRequest, PutRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// The client connection preface and an empty SETTINGS frame: what an HTTP/2 client sends
/// before its first request.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// Connections opened at once while building an idle flood.
const CONNECT_PARALLELISM: usize = 64;

/// Connections that said hello in HTTP/2 and then nothing more.
pub struct IdleConnections {
    pub streams: Vec<TcpStream>,
    /// Connections that could not even be made (the listen backlog was full, or no file
    /// descriptor was left on this side).
    pub failed: usize,
}

/// Opens `n` idle HTTP/2 connections to `addr`.
pub async fn open_idle(addr: &str, n: usize) -> IdleConnections {
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    let mut pending = JoinSet::new();
    let mut started = 0;
    while started < n || !pending.is_empty() {
        while started < n && pending.len() < CONNECT_PARALLELISM {
            let addr = addr.to_string();
            pending.spawn(async move {
                let mut tcp = TcpStream::connect(&addr).await?;
                tcp.write_all(HTTP2_PREFACE).await?;
                anyhow::Ok(tcp)
            });
            started += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(tcp))) => streams.push(tcp),
            Some(_) => failed += 1,
            None => break,
        }
    }
    IdleConnections { streams, failed }
}

impl IdleConnections {
    /// How many of the connections the server closed: each is read until the server's first
    /// bytes (an open connection: its SETTINGS), the end of the stream (closed), or `wait`.
    pub async fn closed_by_server(&mut self, wait: Duration) -> usize {
        let mut closed = 0;
        for tcp in &mut self.streams {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
                Ok(Ok(_)) | Err(_) => {}
            }
        }
        closed
    }
}

/// gRPC answers counted by status code name (`OK`, `RESOURCE_EXHAUSTED`, ...).
#[derive(Debug, Default, Clone)]
pub struct Tally(Arc<std::sync::Mutex<BTreeMap<String, u64>>>);

impl Tally {
    pub fn add<T>(&self, result: &Result<T, tonic::Status>) {
        let code = match result {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(code).or_default() += 1;
    }

    /// The counts so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answers in all.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

/// One HTTP/2 connection to `addr`'s client port.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    endpoint.connect().await.with_context(|| format!("connect to {addr}"))
}

/// Until `stop`, `senders` tasks each put values of `bytes` bytes (over the server's limit) on
/// their own connection; the answers are tallied.
pub async fn oversized(addr: &str, senders: usize, bytes: usize, stop: watch::Receiver<bool>) -> anyhow::Result<Tally> {
    let tally = Tally::default();
    let value: bytes::Bytes = vec![b'o'; bytes].into();
    for _ in 0..senders {
        let mut kv = KvClient::new(connect(addr).await?).max_encoding_message_size(usize::MAX);
        let (tally, value, stop) = (tally.clone(), value.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                let req = PutRequest { key: b"oversized".to_vec().into(), value: value.clone(), ..Default::default() };
                tally.add(&kv.put(req).await);
            }
        });
    }
    Ok(tally)
}

/// Until `stop`, `streams` concurrent gets of `key` on each of `connections` connections, each
/// stream sending its next get as soon as the last is answered; the answers are tallied.
pub async fn burst(
    addr: &str,
    connections: usize,
    streams: usize,
    key: &[u8],
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Tally> {
    let tally = Tally::default();
    for _ in 0..connections {
        let channel = connect(addr).await?;
        for _ in 0..streams {
            let mut kv = KvClient::new(channel.clone());
            let (tally, stop, key) = (tally.clone(), stop.clone(), key.to_vec());
            tokio::spawn(async move {
                while !*stop.borrow() {
                    tally.add(&kv.get(GetRequest { key: key.clone().into(), ..Default::default() }).await);
                }
            });
        }
    }
    Ok(tally)
}

/// Requests (HTTP/2 streams) on one connection that send their headers and the start of a
/// message, then never finish it: each holds a request slot on the server until its deadline.
/// The client (h2) sends no more streams at once than the server's SETTINGS allow and queues
/// the others; a client that sent more would have them refused by the server's h2.
pub struct StalledStreams {
    /// The concurrent-stream limit the server advertised.
    pub server_max_streams: usize,
    tasks: JoinSet<()>,
}

impl StalledStreams {
    /// Stops every stream (drops the connection).
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

/// Starts `n` stalled `Put` requests on one new HTTP/2 connection to `addr`.
pub async fn stall_streams(addr: &str, n: usize) -> anyhow::Result<StalledStreams> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
    let (send, connection) = h2::client::handshake(tcp).await.context("HTTP/2 handshake")?;
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let _ = connection.await;
    });
    // The limit is known once the server's SETTINGS frame has been read.
    let settings = crate::wait::until("the server's HTTP/2 settings", Duration::from_secs(10), || {
        let max = send.current_max_send_streams();
        async move { (max != usize::MAX).then_some(max) }
    })
    .await?;
    let uri = format!("http://{addr}/petkv.v1.KV/Put");
    for _ in 0..n {
        let (mut send, uri) = (send.clone(), uri.clone());
        tasks.spawn(async move {
            if std::future::poll_fn(|cx| send.poll_ready(cx)).await.is_err() {
                return;
            }
            let request = http::Request::post(uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("static request parts are valid");
            let Ok((response, mut body)) = send.send_request(request, false) else { return };
            // A frame header promising 100 bytes, and 1 of them.
            let _ = body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 0x0a]), false);
            // Answered at the server's deadline, or never.
            let _ = response.await;
        });
    }
    Ok(StalledStreams { server_max_streams: settings, tasks })
}
