//! Backups: a consistent cut of the state machine streamed from the cluster into a file.
//!
//! - Server side ([`stream_file`]): the `Cluster.Backup` handler confirms leadership with a
//!   read-index round (so the cut holds every write acknowledged before the call), exports the
//!   state machine at its applied index ([`crate::store::StateMachine::export`]) and streams the
//!   file in chunks.
//! - Client side ([`take`]): receives the stream into `<out>.partial`, checks it end to end
//!   (framing and CRC-32), fsyncs it and renames it into place, so a backup file either does not
//!   exist or is complete. [`take_into_dir`] names files by time and Raft index and keeps the last N.
//! - [`inspect`] checks any backup file and says what it holds; a corrupt or truncated file is an
//!   error, never a partial answer.
//!
//! The file format is the snapshot format ([`crate::store::snapshot`]).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use petkv_client::pb::v1::cluster_client::ClusterClient;
use petkv_client::pb::v1::{BackupChunk, BackupRequest, ResponseHeader};
use petkv_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Status;

use crate::store::snapshot;
use crate::store::state_machine::{is_user_key_record, revision_of_record};

/// Size of one streamed chunk.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// File names of backups written by [`take_into_dir`]: `petkv-backup-<UTC time>-<index>.snap`.
pub const FILE_PREFIX: &str = "petkv-backup-";
pub const FILE_SUFFIX: &str = ".snap";

/// The stream type of the `Backup` RPC.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

/// Errors of taking, checking or restoring a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup {path}: corrupt or truncated, refused ({detail})")]
    Corrupt { path: PathBuf, detail: String },
    #[error("backup {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("no endpoint could serve the backup ({endpoints}): {last}")]
    Unavailable { endpoints: String, last: String },
    #[error("backup refused by the server: {0}")]
    Rejected(String),
    #[error("backup did not finish within {0:?}")]
    TimedOut(Duration),
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Io { path: path.to_path_buf(), detail: e.to_string() }
}

/// What a checked backup file holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    pub path: PathBuf,
    /// The Raft index of the cut: the backup holds exactly the writes committed up to it.
    pub raft_index: u64,
    /// The term of the entry at that index.
    pub term: u64,
    /// The store revision of the cut.
    pub revision: u64,
    /// User keys in the backup.
    pub keys: u64,
    /// Records of any kind (keys, sessions, bookkeeping).
    pub records: u64,
    pub bytes: u64,
    /// The CRC-32 stored at the end of the file (checked).
    pub checksum: String,
}

/// Checks `path` end to end and says what it holds. A file that fails any check is refused.
pub fn inspect(path: &Path) -> Result<BackupSummary, BackupError> {
    inspect_cut(path).map(|(summary, _)| summary)
}

/// [`inspect`], plus the log id of the cut (what a restored cluster's log continues after).
pub fn inspect_cut(path: &Path) -> Result<(BackupSummary, crate::raft::LogId), BackupError> {
    let corrupt = |e: std::io::Error| BackupError::Corrupt { path: path.to_path_buf(), detail: e.to_string() };
    let bytes = std::fs::metadata(path).map_err(|e| io_error(path, e))?.len();
    let (mut keys, mut records, mut revision) = (0u64, 0u64, 0u64);
    let meta = snapshot::read(path, |k, v| {
        records += 1;
        keys += u64::from(is_user_key_record(&k));
        revision = revision_of_record(&k, &v).unwrap_or(revision);
        Ok(())
    })
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => io_error(path, e),
        _ => corrupt(e),
    })?;
    let last = meta.last_log_id.ok_or_else(|| BackupError::Corrupt {
        path: path.to_path_buf(),
        detail: "the backup records no Raft index (taken from a cluster that never applied anything?)".into(),
    })?;
    let checksum = format!("{:08x}", stored_checksum(path).map_err(|e| io_error(path, e))?);
    let summary = BackupSummary {
        path: path.to_path_buf(),
        raft_index: last.index,
        term: crate::raft::log_id_term(&last),
        revision,
        keys,
        records,
        bytes,
        checksum,
    };
    Ok((summary, last))
}

/// The CRC-32 in the last four bytes of a (checked) snapshot file.
fn stored_checksum(path: &Path) -> std::io::Result<u32> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::End(-4))?;
    let mut crc = [0u8; 4];
    file.read_exact(&mut crc)?;
    Ok(u32::from_le_bytes(crc))
}

/// Server side: streams the exported file in chunks; the first carries `header` and the size.
/// The file (a [`tempfile::TempPath`]) is removed when the stream ends or is dropped.
pub fn stream_file(file: tempfile::TempPath, header: ResponseHeader) -> ChunkStream {
    struct State {
        file: Option<tokio::fs::File>,
        _path: tempfile::TempPath,
        header: Option<ResponseHeader>,
        total: u64,
    }
    let path = file.to_path_buf();
    let total = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let state = State { file: None, _path: file, header: Some(header), total };
    Box::pin(futures::stream::unfold(Some(state), move |state| {
        let path = path.clone();
        async move {
            let mut state = state?;
            if state.file.is_none() {
                match tokio::fs::File::open(&path).await {
                    Ok(f) => state.file = Some(f),
                    Err(e) => return Some((Err(Status::internal(format!("open backup export: {e}"))), None)),
                }
            }
            let mut buf = vec![0u8; CHUNK_BYTES];
            let file = state.file.as_mut()?;
            let mut filled = 0;
            while filled < buf.len() {
                match file.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => return Some((Err(Status::internal(format!("read backup export: {e}"))), None)),
                }
            }
            if filled == 0 && state.header.is_none() {
                return None;
            }
            buf.truncate(filled);
            let chunk = BackupChunk { header: state.header.take(), total_bytes: state.total, data: buf.into() };
            Some((Ok(chunk), Some(state)))
        }
    }))
}

/// The partial file a backup is received into before it is checked and renamed.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// Client side: takes a backup from the first of `endpoints` that serves one, into `out`.
/// Within `deadline` overall; a server that fails mid-stream leaves no file behind.
/// Through `client`'s endpoints, TLS and credentials.
pub async fn take(client: &Client, out: &Path, deadline: Duration) -> Result<BackupSummary, BackupError> {
    let endpoints = client.endpoints();
    let mut last = String::from("no endpoint tried");
    let attempt = async {
        for (endpoint, channel) in endpoints.iter().zip(client.channels()) {
            match receive(client, channel, out).await {
                Ok(summary) => return Ok(summary),
                Err(Attempt::Retry(why)) => last = format!("{endpoint}: {why}"),
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
        Err(BackupError::Unavailable { endpoints: endpoints.join(","), last: last.clone() })
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => {
            let _ = std::fs::remove_file(partial_path(out));
            Err(BackupError::TimedOut(deadline))
        }
    }
}

enum Attempt {
    Retry(String),
    Fatal(BackupError),
}

async fn receive(client: &Client, channel: Channel, out: &Path) -> Result<BackupSummary, Attempt> {
    let partial = partial_path(out);
    if let Err(e) = receive_into(client, channel, &partial).await {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let checked = {
        let partial = partial.clone();
        tokio::task::spawn_blocking(move || inspect(&partial)).await.map_err(|e| Attempt::Fatal(io_error(out, e)))?
    };
    match checked {
        Ok(mut summary) => {
            std::fs::rename(&partial, out).map_err(|e| Attempt::Fatal(io_error(out, e)))?;
            crate::support::durable::sync_dir_of(out).map_err(|e| Attempt::Fatal(io_error(out, e)))?;
            summary.path = out.to_path_buf();
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(Attempt::Retry(format!("received a backup that does not check out: {e}")))
        }
    }
}

async fn receive_into(client: &Client, channel: Channel, partial: &Path) -> Result<(), Attempt> {
    let mut grpc = ClusterClient::new(channel).max_decoding_message_size(2 * CHUNK_BYTES);
    let mut stream = match grpc.backup(client.authorize(tonic::Request::new(BackupRequest {}))).await {
        Ok(r) => r.into_inner(),
        Err(s) if petkv_client::is_retryable(&s) => return Err(Attempt::Retry(s.message().to_string())),
        Err(s) => return Err(Attempt::Fatal(BackupError::Rejected(format!("{:?}: {}", s.code(), s.message())))),
    };
    let fatal = |e: std::io::Error| Attempt::Fatal(io_error(partial, e));
    let mut file = tokio::fs::File::create(partial).await.map_err(fatal)?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| Attempt::Retry(format!("stream broke: {}", s.message())))?;
        file.write_all(&chunk.data).await.map_err(fatal)?;
    }
    file.sync_all().await.map_err(fatal)?;
    Ok(())
}

/// Takes a backup into `dir` under a name that sorts by time
/// (`petkv-backup-20261122T101500Z-12345.snap`), then removes all but the newest `keep`
/// backups of that dir. Older backups are removed only after the new one checked out.
pub async fn take_into_dir(
    client: &Client,
    dir: &Path,
    keep: usize,
    deadline: Duration,
) -> Result<(BackupSummary, Vec<PathBuf>), BackupError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(['-', ':'], "");
    let provisional = dir.join(format!("{FILE_PREFIX}{stamp}-taking{FILE_SUFFIX}"));
    let summary = take(client, &provisional, deadline).await?;
    let out = dir.join(format!("{FILE_PREFIX}{stamp}-{}{FILE_SUFFIX}", summary.raft_index));
    std::fs::rename(&provisional, &out).map_err(|e| io_error(&out, e))?;
    let summary = BackupSummary { path: out, ..summary };
    let removed = prune(dir, keep.max(1))?;
    Ok((summary, removed))
}

/// Removes all but the newest `keep` finished backups of `dir`; returns what it removed.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX) && !n.contains("-taking"))
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = backups.into_iter().take(excess).collect();
    for path in &removed {
        std::fs::remove_file(path).map_err(|e| io_error(path, e))?;
    }
    Ok(removed)
}
