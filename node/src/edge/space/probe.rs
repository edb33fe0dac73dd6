//! How full a volume is: `statvfs(2)` of the filesystem that holds a path.

use std::io;
use std::path::Path;

/// A volume's size and what of it the node may still write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail`: the filesystem's own reserve
    /// for root, e.g. ext4's 5 %, does not count).
    pub free: u64,
    /// The filesystem's size in bytes.
    pub total: u64,
}

/// Measures the filesystem that holds `path`.
pub fn measure(path: &Path) -> io::Result<VolumeSpace> {
    let stat = nix::sys::statvfs::statvfs(path)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("statvfs {}: {e}", path.display())))?;
    let unit = stat.fragment_size() as u64;
    Ok(VolumeSpace {
        free: (stat.blocks_available() as u64).saturating_mul(unit),
        total: (stat.blocks() as u64).saturating_mul(unit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_a_volume_with_some_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = measure(dir.path()).expect("statvfs");
        assert!(space.total > 0 && space.free <= space.total, "{space:?}");
    }

    #[test]
    fn a_missing_path_is_an_error_that_names_it() {
        let err = measure(Path::new("/no/such/petkv/dir")).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/no/such/petkv/dir"), "{err}");
    }
}
