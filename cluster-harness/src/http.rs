//! A minimal HTTP/1.1 GET for the pods' HTTP port (`/metrics`, `/healthz`, `/readyz`) and
//! etcd's `/health`: one request per connection, no client library needed; and one sample of
//! a Prometheus text exposition.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on `addr`: the status code and the body. The connection must be made within
/// `connect_timeout` and the whole answer read within `read_timeout`.
pub async fn get(
    addr: &str,
    path: &str,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr} timed out"))??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(read_timeout, stream.read_to_end(&mut raw))
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))??;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    anyhow::ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked body: {head}");
    Ok((status, body.to_string()))
}

/// The value of one sample (`name` or `name{labels}`, exactly as exported) in a Prometheus
/// text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of `series` in the `/metrics` of the HTTP port at `addr`.
pub async fn metric(addr: &str, series: &str) -> anyhow::Result<f64> {
    let (status, body) = get(addr, "/metrics", Duration::from_secs(2), Duration::from_secs(5)).await?;
    anyhow::ensure!(status == 200, "GET /metrics on {addr}: {status}");
    sample(&body, series).with_context(|| format!("no sample {series} in the metrics of {addr}"))
}
