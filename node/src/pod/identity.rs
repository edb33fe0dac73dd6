//! Who this node is.
//!
//! A pod learns its identity from its hostname, as a StatefulSet pod does: `petkv-2` is set
//! `petkv`, ordinal 2. The volume (`--data-dir`) keeps the durable identity, written once at
//! first start: cluster id, set, ordinal and Raft node id. At every start the record is
//! compared with the hostname; a volume from `petkv-1` mounted on `petkv-2` is refused with an
//! error that names both, and nothing on disk is changed.
//!
//! The record carries a CRC-32 of its own fields, so a damaged record is refused as corrupt even
//! when the damage still parses (a flipped digit in the node id). Its `format` is the volume's
//! format version: a volume of a newer format is refused with an error that says to run a
//! newer petkv, never read as if it were this one's.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// The file name of the identity record inside the data dir.
pub const IDENTITY_FILE: &str = "identity.json";
/// The volume format this binary writes and reads (the identity record's `format`).
pub const FORMAT: u32 = 3;

/// A pod name: `<set>-<ordinal>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub set: String,
    pub ordinal: u32,
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.set, self.ordinal)
    }
}

impl PodName {
    /// The name of another pod of the same set.
    pub fn sibling(&self, ordinal: u32) -> PodName {
        PodName { set: self.set.clone(), ordinal }
    }
}

/// Errors about a node's identity. Each one stops the node before it changes anything.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "hostname {0:?} is not a StatefulSet pod name: expected <set>-<ordinal>, like petkv-0 \
         (set --hostname to override on a laptop)"
    )]
    BadHostname(String),
    #[error("cannot read the identity record {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the identity record {path} is corrupt: {detail}; refusing to start (not repairing it)")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the volume at {data_dir} belongs to {volume} but this pod is {host}; refusing to start \
         and leaving the volume untouched"
    )]
    Mismatch { data_dir: PathBuf, volume: String, host: String },
    #[error(
        "the volume at {data_dir} holds Raft data but no identity record; it is foreign or damaged, \
         refusing to start (nothing is repaired or thrown away)"
    )]
    DataWithoutIdentity { data_dir: PathBuf },
    #[error(
        "the identity record in {data_dir} names node {node_id} of cluster {cluster_id:?}, but the Raft store \
         {store}; it was wiped or replaced. Refusing to start: an empty log must never vote under an id that \
         already voted (wipe the whole volume to rejoin under a new id)"
    )]
    StoreMismatch { data_dir: PathBuf, node_id: NodeId, cluster_id: String, store: String },
    #[error("cannot read the store's owner record in {data_dir}: {detail}")]
    StoreUnreadable { data_dir: PathBuf, detail: String },
    #[error("cannot write the identity record {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Parses a hostname (or the first label of an FQDN) into a pod name.
pub fn parse_hostname(hostname: &str) -> Result<PodName, IdentityError> {
    let bad = || IdentityError::BadHostname(hostname.to_string());
    let label = hostname.split('.').next().unwrap_or_default();
    let (set, ordinal) = label.rsplit_once('-').ok_or_else(bad)?;
    if !is_dns_label(label) || set.is_empty() || set.ends_with('-') {
        return Err(bad());
    }
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if ordinal.len() > 1 && ordinal.starts_with('0') {
        return Err(bad());
    }
    let ordinal = ordinal.parse::<u32>().map_err(|_| bad())?;
    Ok(PodName { set: set.to_string(), ordinal })
}

/// A pod hostname is an RFC 1123 DNS label: lowercase letters, digits and '-', at most 63
/// characters, starting and ending with a letter or digit.
fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// The durable identity kept on the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRecord {
    pub format: u32,
    pub cluster_id: String,
    pub set_name: String,
    pub ordinal: u32,
    pub node_id: NodeId,
    pub created_unix: u64,
    /// CRC-32 (hex) of the record's JSON without this field (`None` only while computing it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl IdentityRecord {
    pub fn new(pod: &PodName, cluster_id: String, node_id: NodeId) -> Self {
        let created_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut record = Self {
            format: FORMAT,
            cluster_id,
            set_name: pod.set.clone(),
            ordinal: pod.ordinal,
            node_id,
            created_unix,
            checksum: None,
        };
        record.checksum = Some(record.computed_checksum());
        record
    }

    /// CRC-32 of the compact JSON of every field but the checksum.
    fn computed_checksum(&self) -> String {
        let unsummed = Self { checksum: None, ..self.clone() };
        // Serializing a struct of strings and integers cannot fail.
        let bytes = serde_json::to_vec(&unsummed).unwrap_or_default();
        format!("{:08x}", crc32fast::hash(&bytes))
    }

    /// The pod this volume belongs to.
    pub fn pod(&self) -> PodName {
        PodName { set: self.set_name.clone(), ordinal: self.ordinal }
    }

    /// Refuses a volume that belongs to another pod.
    pub fn check_matches(&self, host: &PodName, data_dir: &Path) -> Result<(), IdentityError> {
        if self.pod() != *host || crate::raft::ordinal_of(self.node_id) != host.ordinal {
            return Err(IdentityError::Mismatch {
                data_dir: data_dir.to_path_buf(),
                volume: self.pod().to_string(),
                host: host.to_string(),
            });
        }
        Ok(())
    }
}

/// A fresh cluster id (bootstrap, restore): 64 random bits in hex.
pub fn new_cluster_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Reads the identity record, if the volume has one.
pub fn load(data_dir: &Path) -> Result<Option<IdentityRecord>, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Unreadable { path, source }),
    };
    parse(&path, &bytes).map(Some)
}

/// Parses the bytes of an identity record read from `path` (named in errors): JSON of a known
/// format whose checksum holds.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<IdentityRecord, IdentityError> {
    let corrupt = |detail: String| IdentityError::Corrupt { path: path.to_path_buf(), detail };
    let record: IdentityRecord = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    match (record.format, &record.checksum) {
        (FORMAT, Some(stored)) => {
            let computed = record.computed_checksum();
            if *stored != computed {
                return Err(corrupt(format!("checksum mismatch: stored {stored}, computed {computed}")));
            }
        }
        (FORMAT, None) => return Err(corrupt("the checksum is missing".into())),
        (newer, _) if newer > FORMAT => {
            return Err(corrupt(format!(
                "the volume has format {newer}, written by a newer petkv; this binary reads format {FORMAT}: \
                 run the newer version (a volume is never downgraded)"
            )))
        }
        (older, _) => {
            return Err(corrupt(format!(
                "the volume has format {older}, written by a pre-release petkv whose format this binary \
                 does not read (it reads format {FORMAT})"
            )))
        }
    }
    Ok(record)
}

/// Writes the identity record atomically and durably (temp file, fsync, rename, fsync dir).
pub fn save(data_dir: &Path, record: &IdentityRecord) -> Result<(), IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    let write = || -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        crate::support::durable::write_atomically(&path, &bytes)
    };
    write().map_err(|source| IdentityError::Write { path: path.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_hostnames_parse() {
        assert_eq!(parse_hostname("petkv-0").ok(), Some(PodName { set: "petkv".into(), ordinal: 0 }));
        assert_eq!(parse_hostname("my-kv-12").ok(), Some(PodName { set: "my-kv".into(), ordinal: 12 }));
        assert_eq!(
            parse_hostname("petkv-2.petkv.default.svc.cluster.local").ok(),
            Some(PodName { set: "petkv".into(), ordinal: 2 })
        );
    }

    #[test]
    fn hostnames_without_an_ordinal_are_refused() {
        for bad in
            ["petkv", "petkv-", "-3", "petkv-x", "petkv-01", "petkv--1", "petkv-99999999999", "", "PetKV-1", "pet_kv-1"]
        {
            let err = parse_hostname(bad).expect_err(bad);
            assert!(err.to_string().contains("not a StatefulSet pod name"), "{err}");
        }
    }

    #[test]
    fn record_round_trips_and_matches_its_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = parse_hostname("petkv-1").expect("pod");
        let record = IdentityRecord::new(&pod, "c1".into(), crate::raft::node_id(1, 1));
        save(dir.path(), &record).expect("save");
        let loaded = load(dir.path()).expect("load").expect("present");
        assert_eq!(loaded, record);
        loaded.check_matches(&pod, dir.path()).expect("same pod");
    }

    #[test]
    fn volume_of_another_ordinal_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record =
            IdentityRecord::new(&parse_hostname("petkv-1").expect("pod"), "c1".into(), crate::raft::node_id(1, 1));
        save(dir.path(), &record).expect("save");
        let before = fs::read(dir.path().join(IDENTITY_FILE)).expect("read");
        let err = record.check_matches(&parse_hostname("petkv-2").expect("pod"), dir.path()).expect_err("mismatch");
        let msg = err.to_string();
        assert!(msg.contains("petkv-1") && msg.contains("petkv-2"), "{msg}");
        assert_eq!(fs::read(dir.path().join(IDENTITY_FILE)).expect("read"), before);
    }

    #[test]
    fn corrupt_record_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(IDENTITY_FILE), b"{not json").expect("write");
        let err = load(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn every_flipped_bit_of_a_record_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = parse_hostname("petkv-1").expect("pod");
        save(dir.path(), &IdentityRecord::new(&pod, "00c0ffee00c0ffee".into(), crate::raft::node_id(1, 1)))
            .expect("save");
        let bytes = fs::read(dir.path().join(IDENTITY_FILE)).expect("read");
        let path = dir.path().join(IDENTITY_FILE);
        parse(&path, &bytes).expect("the record as written");
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                let err = parse(&path, &damaged).expect_err("a flipped bit must not parse as a record");
                let msg = err.to_string();
                assert!(msg.contains("corrupt") && msg.contains(IDENTITY_FILE), "byte {at} bit {bit}: {msg}");
            }
        }
    }

    #[test]
    fn a_record_of_an_older_or_newer_format_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(IDENTITY_FILE);
        let old =
            br#"{"format":1,"cluster_id":"c1","set_name":"petkv","ordinal":1,"node_id":4294967297,"created_unix":5}"#;
        let err = parse(&path, old).expect_err("format 1").to_string();
        assert!(err.contains("format 1") && err.contains("pre-release"), "{err}");
        let newer =
            br#"{"format":4,"cluster_id":"c1","set_name":"petkv","ordinal":1,"node_id":4294967297,"created_unix":5}"#;
        let err = parse(&path, newer).expect_err("format 4").to_string();
        assert!(err.contains("newer petkv") && err.contains("format 4"), "{err}");
    }

    #[test]
    fn empty_volume_has_no_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("lost+found")).expect("mkdir");
        assert_eq!(load(dir.path()).expect("load"), None);
    }
}
