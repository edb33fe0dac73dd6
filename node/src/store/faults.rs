//! What the store's failed disk operations said about the volume.
//!
//! openraft keeps a storage error only as text once it stops on it, and the state machine's
//! background writer reports its failure as a message: neither tells a full volume from a
//! broken disk. Every failed disk operation of the log store and the state machine passes its
//! `io::Error` through [`VolumeFaults::note`] on its way out, so the node can tell by the
//! error's kind ([`io::ErrorKind::StorageFull`], [`io::ErrorKind::QuotaExceeded`]) why it stopped.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// The faults seen on one node's volume, shared by its log store and state machine.
#[derive(Debug, Default)]
pub struct VolumeFaults {
    out_of_space: AtomicBool,
}

impl VolumeFaults {
    /// Records what `error` says about the volume and hands it back.
    pub fn note(&self, error: io::Error) -> io::Error {
        if is_out_of_space(error.kind()) {
            self.out_of_space.store(true, Ordering::Relaxed);
        }
        error
    }

    /// True once a disk operation failed because the volume (or the quota on it) was full.
    pub fn out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Relaxed)
    }
}

/// True for the kinds a full volume or an exhausted quota produce (ENOSPC, EDQUOT).
pub fn is_out_of_space(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// `error` with `context` in front of its message, keeping its kind (which [`VolumeFaults`]
/// and the callers' error classification rely on).
pub fn with_context(context: &str, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

/// A sled error as an `io::Error` with `context`, keeping the kind of an I/O failure inside it.
pub fn from_sled(context: &str, error: sled::Error) -> io::Error {
    match error {
        sled::Error::Io(e) => with_context(context, e),
        other => io::Error::other(format!("{context}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_volume_is_told_apart_by_the_error_kind_through_context() {
        let faults = VolumeFaults::default();
        let eio = faults.note(with_context("append", io::Error::from_raw_os_error(libc_eio())));
        assert_eq!(eio.kind(), io::Error::from_raw_os_error(libc_eio()).kind());
        assert!(!faults.out_of_space(), "an I/O error is not a full volume");
        let full = faults.note(from_sled(
            "write applied entries",
            sled::Error::Io(io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32)),
        ));
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert!(full.to_string().starts_with("write applied entries: "), "{full}");
        assert!(faults.out_of_space());
        let quota = VolumeFaults::default();
        quota.note(with_context("flush", io::Error::from_raw_os_error(nix::errno::Errno::EDQUOT as i32)));
        assert!(quota.out_of_space(), "an exhausted quota counts as full");
    }

    fn libc_eio() -> i32 {
        nix::errno::Errno::EIO as i32
    }
}
