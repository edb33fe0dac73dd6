//! The snapshot file: a checksummed dump of the state-machine tree.
//!
//! ```text
//! "PETKVSNP" | u32 format | u32 meta_len | postcard(SnapshotMeta)
//! { u32 key_len | key | u32 value_len | value }*      -- every entry of the sm tree
//! u32 0xFFFF_FFFF                                       -- end of records
//! u32 crc32 of everything above
//! ```
//!
//! The same file is what a leader streams to a lagging member (and what backups will hold). A file
//! whose checksum or framing does not hold is refused as a whole: nothing of it is installed.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::faults::with_context;
use super::{decode, encode};
use crate::raft::SnapshotMeta;

const MAGIC: &[u8; 8] = b"PETKVSNP";
/// Bumped whenever the records inside change encoding (format 2: revisioned keys).
pub const FORMAT: u32 = 2;
const END_OF_RECORDS: u32 = u32::MAX;
/// Largest key or value the reader accepts; larger framing means a corrupt file.
const MAX_FIELD: u32 = 64 * 1024 * 1024;

/// A snapshot on disk: what openraft hands around as the snapshot data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub len: u64,
}

impl SnapshotFile {
    /// Describes an existing file.
    pub fn at(path: PathBuf) -> io::Result<Self> {
        let len = fs::metadata(&path)?.len();
        Ok(Self { path, len })
    }
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes a snapshot to `path` (via a temporary file, fsync'd and renamed, so `path` either
/// does not exist or is complete).
pub fn write<I>(path: &Path, meta: &SnapshotMeta, records: I) -> io::Result<SnapshotFile>
where
    I: IntoIterator<Item = io::Result<(Vec<u8>, Vec<u8>)>>,
{
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(|e| with_context(&format!("create {}", tmp.display()), e))?;
    let mut w = CrcWriter { inner: BufWriter::new(file), crc: crc32fast::Hasher::new() };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT.to_le_bytes())?;
    let meta_bytes = encode(meta)?;
    w.write_all(&(meta_bytes.len() as u32).to_le_bytes())?;
    w.write_all(&meta_bytes)?;
    for record in records {
        let (key, value) = record?;
        for field in [&key, &value] {
            w.write_all(&(field.len() as u32).to_le_bytes())?;
            w.write_all(field)?;
        }
    }
    w.write_all(&END_OF_RECORDS.to_le_bytes())?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    crate::support::durable::sync_dir_of(path)?;
    SnapshotFile::at(path.to_path_buf())
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_field(r: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    if len > MAX_FIELD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record field of {len} bytes")));
    }
    super::read_len(r, len as usize)
}

/// Reads a snapshot file, calling `on_record` for every record, and returns its metadata.
/// Fails on a bad magic, an unknown format, broken framing, a truncated file or a checksum
/// mismatch. Callers that must not act on a bad file call [`verify`] first.
pub fn read(path: &Path, on_record: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>) -> io::Result<SnapshotMeta> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("snapshot {}: {e}", path.display()));
    let file = File::open(path).map_err(context)?;
    read_from(BufReader::new(file), on_record).map_err(context)
}

/// [`read`] from any reader: the whole format check, without the file. (The fuzz target
/// `snapshot_file` feeds it arbitrary bytes.)
pub fn read_from<R: Read>(
    reader: R,
    on_record: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<SnapshotMeta> {
    let mut inner = reader;
    let meta = read_head_of(&mut inner, on_record)?;
    let mut rest = [0u8; 1];
    if inner.read(&mut rest)? != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "trailing bytes after checksum"));
    }
    Ok(meta)
}

/// The length of the whole snapshot at the head of `path`, checked as [`read`] checks it;
/// what follows it is not looked at (an envelope around it: [`crate::recovery::etcd_snapshot`]).
pub fn len_at_head(path: &Path) -> io::Result<u64> {
    struct Counting<R> {
        inner: R,
        n: u64,
    }
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.n += n as u64;
            Ok(n)
        }
    }
    let mut counted = Counting { inner: BufReader::new(File::open(path)?), n: 0 };
    read_head_of(&mut counted, |_, _| Ok(()))?;
    Ok(counted.n)
}

/// Reads one snapshot from `reader`, up to and including its checksum.
fn read_head_of<R: Read>(
    reader: &mut R,
    mut on_record: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<SnapshotMeta> {
    let mut r = CrcReader { inner: reader, crc: crc32fast::Hasher::new() };
    let meta = read_header(&mut r)?;
    loop {
        let key_len = read_u32(&mut r)?;
        if key_len == END_OF_RECORDS {
            break;
        }
        let key = read_field(&mut r, key_len)?;
        let value_len = read_u32(&mut r)?;
        let value = read_field(&mut r, value_len)?;
        on_record(key, value)?;
    }
    let computed = r.crc.clone().finalize();
    let stored = read_u32(&mut r.inner)?;
    if stored != computed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("checksum mismatch: stored {stored:08x}, computed {computed:08x}"),
        ));
    }
    Ok(meta)
}

/// The metadata at the head of a snapshot file (not a check of the rest: see [`verify`]).
pub fn read_meta(path: &Path) -> io::Result<SnapshotMeta> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("snapshot {}: {e}", path.display()));
    read_header(&mut BufReader::new(File::open(path).map_err(context)?)).map_err(context)
}

/// Reads the magic, the format and the metadata at the head of a snapshot file.
fn read_header(r: &mut impl Read) -> io::Result<SnapshotMeta> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a petkv snapshot (bad magic)"));
    }
    let format = read_u32(r)?;
    if format != FORMAT {
        let by = if format > FORMAT { "a newer petkv" } else { "an older pre-release petkv" };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot format {format}, written by {by}; this binary reads format {FORMAT}"),
        ));
    }
    let meta_len = read_u32(r)?;
    decode("snapshot meta", &read_field(r, meta_len)?)
}

/// Checks a snapshot file end to end without acting on it; returns its metadata and record count.
pub fn verify(path: &Path) -> io::Result<(SnapshotMeta, u64)> {
    let mut count = 0u64;
    let meta = read(path, |_, _| {
        count += 1;
        Ok(())
    })?;
    Ok((meta, count))
}

/// Copies the records of the snapshot at `src` into a new snapshot at `dst` that carries `meta`
/// instead of the metadata `src` recorded (a restored backup starts a cluster with its own
/// membership). Streams: the records never sit in memory all at once. Fails, leaving no `dst`,
/// if `src` does not check out end to end.
pub fn relabel(src: &Path, dst: &Path, meta: &SnapshotMeta) -> io::Result<SnapshotFile> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<(Vec<u8>, Vec<u8>)>>(1024);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let result = read(src, |k, v| {
                tx.send(Ok((k, v))).map_err(|_| io::Error::other("snapshot writer stopped"))?;
                Ok(())
            });
            if let Err(e) = &result {
                // The writer must not finish a file from a source that failed its checks.
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            result
        });
        let written = write(dst, meta, rx);
        let read_result = reader.join().map_err(|_| io::Error::other("snapshot reader panicked"))?;
        match (read_result, written) {
            (Ok(_), Ok(file)) => Ok(file),
            (Err(e), _) | (Ok(_), Err(e)) => {
                let _ = fs::remove_file(dst);
                let _ = fs::remove_file(dst.with_extension("tmp"));
                Err(e)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta::default()
    }

    fn sample(dir: &Path) -> SnapshotFile {
        let records = (0..100u32).map(|i| Ok((format!("k{i}").into_bytes(), vec![i as u8; i as usize])));
        write(&dir.join("s.snap"), &meta(), records).expect("write snapshot")
    }

    #[test]
    fn round_trips_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample(dir.path());
        let mut seen = Vec::new();
        read(&file.path, |k, v| {
            seen.push((k, v));
            Ok(())
        })
        .expect("read back");
        assert_eq!(seen.len(), 100);
        assert_eq!(seen[7], (b"k7".to_vec(), vec![7u8; 7]));
        assert!(!file.path.with_extension("tmp").exists());
    }

    #[test]
    fn flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample(dir.path());
        let mut bytes = fs::read(&file.path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&file.path, bytes).expect("write");
        let err = verify(&file.path).expect_err("corrupt snapshot must be refused");
        assert!(err.to_string().contains("snapshot"), "{err}");
    }

    #[test]
    fn truncated_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample(dir.path());
        let bytes = fs::read(&file.path).expect("read");
        fs::write(&file.path, &bytes[..bytes.len() - 10]).expect("write");
        assert!(verify(&file.path).is_err());
    }

    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.snap");
        fs::write(&path, b"definitely not a snapshot file").expect("write");
        let err = verify(&path).expect_err("foreign file");
        assert!(err.to_string().contains("bad magic"), "{err}");
    }
}
