//! etcd's snapshot envelope around a petkv backup.
//!
//! etcd's clients take a snapshot only when its size is 32 bytes past a multiple of 512 (a
//! bbolt file, whose pages are 512-byte aligned, followed by its SHA-256), and check that
//! digest. So the etcd port's `Snapshot` streams petkv's backup, zero padding to a multiple of
//! 512 bytes, then the SHA-256 of the backup and the padding ([`trailer`]). `petkv restore`
//! reads such a file as it reads a plain backup ([`unwrap`]). etcd's own `snapshot restore`
//! cannot read it: the payload is not a bbolt file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::store::snapshot;

/// etcd's snapshots are a multiple of this, plus the digest.
pub const ALIGN: u64 = 512;
/// The SHA-256 at the end.
pub const DIGEST_BYTES: u64 = 32;

/// Zero bytes after a backup of `len` bytes, up to the next multiple of [`ALIGN`].
pub fn padding(len: u64) -> u64 {
    (ALIGN - len % ALIGN) % ALIGN
}

/// The size of the enveloped snapshot of a backup of `len` bytes.
pub fn enveloped_len(len: u64) -> u64 {
    len + padding(len) + DIGEST_BYTES
}

/// What follows a backup of `len` bytes, already fed into `hasher`: the padding and the digest.
pub fn trailer(mut hasher: Sha256, len: u64) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(padding(len)).unwrap_or(0)];
    hasher.update(&out);
    out.extend_from_slice(&hasher.finalize());
    out
}

/// When `path` is an enveloped backup (its size and digest say so): a temporary file with the
/// backup alone. `None` for any other file (a plain backup is read as it is).
pub fn unwrap(path: &Path) -> io::Result<Option<tempfile::NamedTempFile>> {
    let len = std::fs::metadata(path)?.len();
    if len < DIGEST_BYTES || len % ALIGN != DIGEST_BYTES {
        return Ok(None);
    }
    let body = len - DIGEST_BYTES;
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut (&mut file).take(body), &mut hasher)?;
    let mut stored = [0u8; DIGEST_BYTES as usize];
    file.read_exact(&mut stored)?;
    if hasher.finalize().as_slice() != stored {
        return Ok(None);
    }
    let payload = snapshot::len_at_head(path)?;
    if payload > body {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the backup runs into the etcd snapshot's digest"));
    }
    file.seek(SeekFrom::Start(payload))?;
    let mut gap = Vec::new();
    (&mut file).take(body - payload).read_to_end(&mut gap)?;
    if gap.iter().any(|b| *b != 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes between the backup and the etcd snapshot's digest are not padding",
        ));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut out = tempfile::NamedTempFile::new()?;
    io::copy(&mut (&mut file).take(payload), out.as_file_mut())?;
    out.as_file_mut().flush()?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_what_etcd_clients_check() {
        for len in [0u64, 1, 480, 511, 512, 513, 10_000] {
            let total = enveloped_len(len);
            assert_eq!(total % ALIGN, DIGEST_BYTES, "{len}");
            assert!(total >= len + DIGEST_BYTES && total < len + ALIGN + DIGEST_BYTES);
        }
    }

    #[test]
    fn a_file_that_is_not_enveloped_is_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("plain");
        std::fs::write(&path, vec![7u8; 544]).expect("write");
        assert!(unwrap(&path).expect("read").is_none(), "right size, wrong digest: not an envelope");
        std::fs::write(&path, b"short").expect("write");
        assert!(unwrap(&path).expect("read").is_none());
    }
}
