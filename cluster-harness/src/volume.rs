//! Size-limited volumes: a pod's volume directory as a tmpfs of a fixed size, as a PVC has a
//! capacity, and filling one up to see what a full disk does to a node.
//!
//! Mounting needs root (`mount(2)`); [`available`] says whether it works here, as
//! [`crate::netns::available`] does for pod mode. A tmpfs lives as long as its
//! [`SizedVolume`]: its contents are gone once it is unmounted.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The file [`fill`] writes into a volume.
pub const FILLER: &str = "filler";
/// How much [`fill`] writes per call.
const CHUNK: usize = 1024 * 1024;

/// A tmpfs of a fixed size mounted at a directory, unmounted when dropped.
#[derive(Debug)]
pub struct SizedVolume {
    path: PathBuf,
    bytes: u64,
}

impl SizedVolume {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing).
    pub fn mount(path: &Path, bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        let options = format!("size={bytes}");
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
            .with_context(|| format!("mount a tmpfs of {bytes} bytes at {} (needs root)", path.display()))?;
        Ok(Self { path: path.to_path_buf(), bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The volume's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for SizedVolume {
    fn drop(&mut self) {
        // Detached: a pod that was just killed may still hold files open for a moment.
        if let Err(e) = umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unmount a pod volume");
        }
    }
}

/// True when size-limited volumes can be mounted here (root, and tmpfs allowed).
pub fn available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let Ok(dir) = tempfile::Builder::new().prefix("petkv-volume-probe-").tempdir() else { return false };
    SizedVolume::mount(dir.path(), 1024 * 1024).is_ok()
}

/// Writes real bytes (a sparse file would take no space) into `<dir>/filler` until the
/// filesystem that holds `dir` has at most `leave_free` bytes free; with 0, until it refuses
/// more (ENOSPC). Returns the filler's path. Calling it again adds to the same file.
pub fn fill(dir: &Path, leave_free: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(FILLER);
    let mut file =
        OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("open {}", path.display()))?;
    let zeros = vec![0u8; CHUNK];
    loop {
        let free = petkv::edge::space::probe::measure(dir)?.free;
        if free <= leave_free && leave_free > 0 {
            return Ok(path);
        }
        let want = usize::try_from(free.saturating_sub(leave_free)).unwrap_or(CHUNK).clamp(1, CHUNK);
        match file.write_all(&zeros[..want]) {
            Ok(()) => {}
            Err(e) if leave_free == 0 && e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => return Ok(path),
            Err(e) => return Err(e).with_context(|| format!("write {}", path.display())),
        }
    }
}

/// Removes what [`fill`] wrote into `dir`.
pub fn unfill(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(FILLER);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sized_volume_fills_to_what_is_asked_and_empties_again() {
        if !available() {
            eprintln!("size-limited volumes need root: not run");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = SizedVolume::mount(&dir.path().join("v"), 8 * 1024 * 1024).expect("mount");
        let space = |p: &Path| petkv::edge::space::probe::measure(p).expect("statvfs");
        assert_eq!(space(volume.path()).total, volume.bytes());
        fill(volume.path(), 3 * 1024 * 1024).expect("fill");
        let free = space(volume.path()).free;
        assert!(free <= 3 * 1024 * 1024 && free > 2 * 1024 * 1024, "{free}");
        fill(volume.path(), 0).expect("fill up");
        assert_eq!(space(volume.path()).free, 0);
        unfill(volume.path()).expect("unfill");
        assert_eq!(space(volume.path()).free, volume.bytes());
        let path = volume.path().to_path_buf();
        drop(volume);
        assert_ne!(space(&path).total, 8 * 1024 * 1024, "unmounted");
    }
}
