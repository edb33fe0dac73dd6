//! Writing a small file so that a power loss at any instant leaves either the old contents or
//! the new, never a mix or nothing: the one way the node writes its identity, seal and
//! bootstrap-marker files (docs/architecture.md, "Durability rules").
//!
//! The order: write a temporary file beside the target, fsync it, rename it over the target,
//! fsync the directory. The rename is atomic; the first fsync makes sure the renamed file has
//! its contents, the second that the rename itself survives.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably (creating its directory if needed).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with_mode(path, bytes, None)
}

/// [`write_atomically`], the file created with permission bits `mode` (say `0o600` for a
/// secret) instead of the process's default; the mode is set before any byte is written.
pub fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = parent_of(path);
    fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    let mut f = options.open(&tmp)?;
    if let Some(mode) = mode {
        // A leftover temporary file keeps its old mode through `open`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir_of(path)
}

/// Removes `path` durably (the directory is fsync'd); a missing file is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir_of(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// fsyncs the directory that holds `path`, so a create, rename or removal in it is durable.
pub fn sync_dir_of(path: &Path) -> io::Result<()> {
    File::open(parent_of(path))?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_contents_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("record");
        write_atomically(&path, b"one").expect("first write");
        write_atomically(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("record")]);
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        remove(&dir.path().join("nothing")).expect("remove");
    }

    #[test]
    fn a_secret_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomically_with_mode(&path, b"public", Some(0o644)).expect("write");
        write_atomically_with_mode(&path, b"secret", Some(0o600)).expect("rewrite");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!((fs::read(&path).expect("read").as_slice(), mode), (b"secret".as_slice(), 0o600));
    }
}
