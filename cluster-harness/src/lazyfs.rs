//! Pod volumes on LazyFS, to simulate power loss.
//!
//! `kill -9` of a node keeps the kernel's page cache: every byte it wrote survives, fsync'd or
//! not. [LazyFS](https://github.com/dsrhaslab/lazyfs) (FUSE; what Jepsen uses) keeps written
//! data in its own cache until the file is fsync'd, and drops what was not when it is killed
//! or told to clear its cache — what a power cut does to a disk's volatile cache.
//!
//! Each pod's volume directory (`data-<set>-<ordinal>`) becomes a LazyFS mount over a backing
//! dir in the state dir (`lazyfs/backing-<set>-<ordinal>`), with its config, fault FIFO and log
//! beside it (`lazyfs/`, `logs/lazyfs-<set>-<ordinal>.log`). [`LazyFsVolume::power_cut`] is
//! the synchronous way `scripts/install-lazyfs.sh` documents: kill -9 LazyFS (its cache, with
//! every unsynced byte, is gone), `fusermount3 -u` the dead mount, mount again over the same
//! backing dir. Directory operations (create, rename, unlink) reach the backing dir at once in
//! LazyFS, so only file contents are lost: files come back with their last fsync'd contents.
//!
//! The binary: `$PETKV_LAZYFS`, else what `scripts/install-lazyfs.sh` prints (it builds LazyFS
//! once from `../shared/third-party-src`). Mounting needs root and `/dev/fuse`;
//! [`probe`] says whether it works here, with the reason when it does not ([`Unavailable`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Environment variable naming a built `lazyfs` binary (skips `scripts/install-lazyfs.sh`).
pub const PETKV_LAZYFS: &str = "PETKV_LAZYFS";
/// Environment variable with LazyFS's cache size per volume (LazyFS syntax, e.g. `512mb`).
pub const PETKV_LAZYFS_CACHE: &str = "PETKV_LAZYFS_CACHE";
/// Default cache per volume: preallocated by LazyFS at mount; must hold every page the node
/// touches (eviction is off, so nothing unsynced reaches the backing dir before a cut).
const DEFAULT_CACHE: &str = "256mb";
/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// LazyFS cannot run here: the reason (not root, no `/dev/fuse`, no sources, a failed build or
/// a failed probe mount). Experiments and tests that need it are skipped with this reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("LazyFS is not available here: {0}")]
pub struct Unavailable(pub String);

/// The `lazyfs` binary, built if needed; checked once per process: root, `/dev/fuse`,
/// `fusermount3`, the binary, and a probe mount in a scratch directory.
pub fn probe() -> Result<PathBuf, Unavailable> {
    static PROBED: OnceLock<Result<PathBuf, Unavailable>> = OnceLock::new();
    PROBED.get_or_init(probe_once).clone()
}

fn probe_once() -> Result<PathBuf, Unavailable> {
    let no = |why: String| Err(Unavailable(why));
    if !nix::unistd::geteuid().is_root() {
        return no("mounting LazyFS volumes needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return no("/dev/fuse is missing (no FUSE in this kernel or container)".into());
    }
    // Builds LazyFS if needed, installing its Debian packages (fuse3 among them) as root.
    let binary = binary().map_err(|e| Unavailable(format!("{e:#}")))?;
    if Command::new("fusermount3").arg("-V").output().is_err() {
        return no("fusermount3 is missing (Debian package fuse3; scripts/install-lazyfs.sh installs it)".into());
    }
    let scratch = tempfile::Builder::new()
        .prefix("petkv-lazyfs-probe-")
        .tempdir()
        .map_err(|e| Unavailable(format!("cannot create a scratch dir: {e}")))?;
    let volume = LazyFsVolume::mount(&binary, &scratch.path().join("mnt"), scratch.path(), "probe", "4mb")
        .map_err(|e| Unavailable(format!("a probe mount failed: {e:#}")))?;
    let file = volume.path().join("probe");
    let written = std::fs::write(&file, b"x").and_then(|_| std::fs::read(&file));
    drop(volume);
    match written {
        Ok(bytes) if bytes == b"x" => Ok(binary),
        Ok(_) => no("a probe mount read back other bytes than it wrote".into()),
        Err(e) => no(format!("a probe mount could not write a file: {e}")),
    }
}

/// `$PETKV_LAZYFS`, else the path `scripts/install-lazyfs.sh` prints (building LazyFS the
/// first time, about 90 s).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PETKV_LAZYFS) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{PETKV_LAZYFS}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-lazyfs.sh");
    if !script.is_file() {
        bail!("{} not found; set {PETKV_LAZYFS} to a built lazyfs binary", script.display());
    }
    eprintln!("lazyfs: {} (builds LazyFS the first time, about 90 s)", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
        bail!(
            "{} exited with {}: {}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{} printed {:?}, which is not a file", script.display(), path.display());
    }
    Ok(path)
}

/// The cache size per volume: `$PETKV_LAZYFS_CACHE` or 256 MB.
pub fn cache_size() -> String {
    std::env::var(PETKV_LAZYFS_CACHE).ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_CACHE.into())
}

/// A LazyFS mount at a pod's volume directory, over a backing directory; unmounted (and its
/// LazyFS process stopped) when dropped.
#[derive(Debug)]
pub struct LazyFsVolume {
    binary: PathBuf,
    mount_point: PathBuf,
    backing: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl LazyFsVolume {
    /// Mounts LazyFS at `mount_point` (created if missing) over `<work>/lazyfs/backing-<name>`,
    /// with its config and FIFO in `<work>/lazyfs` and its log in `<work>/logs/lazyfs-<name>.log`.
    pub fn mount(binary: &Path, mount_point: &Path, work: &Path, name: &str, cache: &str) -> anyhow::Result<Self> {
        let dir = work.join("lazyfs");
        let backing = dir.join(format!("backing-{name}"));
        let logs = work.join("logs");
        for d in [mount_point, &backing, &logs] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let abs = |p: &Path| std::fs::canonicalize(p).with_context(|| format!("resolve {}", p.display()));
        let (mount_point, backing, dir) = (abs(mount_point)?, abs(&backing)?, abs(&dir)?);
        // LazyFS ignores a --config-path that contains "-o" (any case: it takes it for a FUSE
        // option) and then aborts on ./config/default.toml; the path it gets is relative to its
        // working directory (the config's dir) and free of "-".
        let config = dir.join(format!("{}.toml", name.replace('-', "_")));
        let fifo = dir.join(format!("{name}.fifo"));
        // See scripts/install-lazyfs.sh: [faults] and [cache] are required; no eviction, so no
        // unsynced page reaches the backing dir before a cut; "" logs to stdout (our log file).
        let text = format!(
            "[faults]\nfifo_path=\"{}\"\n\n[cache]\napply_eviction=false\n\n[cache.simple]\ncustom_size=\"{cache}\"\n\
             blocks_per_page=1\n\n[filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
            fifo.display()
        );
        std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        let mut volume = Self {
            binary: binary.to_path_buf(),
            mount_point,
            backing,
            config,
            log: logs.join(format!("lazyfs-{name}.log")),
            child: None,
        };
        volume.start()?;
        Ok(volume)
    }

    /// The mount point: the pod's volume directory.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The backing directory: what survives a power cut.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn start(&mut self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let subdir = format!("subdir={}", self.backing.display());
        let (config_dir, config_name) = match (self.config.parent(), self.config.file_name()) {
            (Some(d), Some(n)) => (d, n),
            _ => bail!("{} is not a file path", self.config.display()),
        };
        let mut child = Command::new(&self.binary)
            .current_dir(config_dir)
            .arg(&self.mount_point)
            .arg("--config-path")
            .arg(config_name)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o", &subdir, "-f"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: the terminal's Ctrl-C reaches the harness, which unmounts.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {}", self.binary.display()))?;
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "lazyfs exited ({status}) before mounting {}; its log ({}):\n{}",
                    self.mount_point.display(),
                    self.log.display(),
                    tail(&self.log, 8)
                );
            }
            if is_fuse_mount(&self.mount_point) && std::fs::metadata(&self.mount_point).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                unmount(&self.mount_point);
                bail!("lazyfs did not mount {} within {MOUNT_TIMEOUT:?}", self.mount_point.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Stops LazyFS at once and removes the mount: every byte not fsync'd since it was
    /// written is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount(&self.mount_point);
    }

    /// A power cut of this volume: kill -9 LazyFS (its cache of unsynced data goes with it),
    /// remove the dead mount, mount again over the same backing dir. The pod must be stopped
    /// first (its open files would keep the dead mount busy).
    pub fn power_cut(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start().context("mounting LazyFS again after a power cut")
    }
}

impl Drop for LazyFsVolume {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes a (live or dead) FUSE mount: `fusermount3 -u`, retried while the pods' processes,
/// just killed, still hold files on it, then lazily (`-uz`).
fn unmount(mount_point: &Path) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while is_fuse_mount(mount_point) {
        let lazy = Instant::now() >= deadline;
        let ok = Command::new("fusermount3")
            .arg(if lazy { "-uz" } else { "-u" })
            .arg(mount_point)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if lazy {
            if !ok {
                tracing::warn!(path = %mount_point.display(), "cannot unmount a LazyFS volume");
            }
            return;
        }
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// True when `path` is the mount point of a FUSE filesystem in this mount namespace.
pub fn is_fuse_mount(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy();
    info.lines().any(|line| {
        // "id parent major:minor root mount-point options ... - fstype source super-options"
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = line.split(" - ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap_or("");
        fields.get(4).is_some_and(|m| unescape(m) == want) && fstype.starts_with("fuse")
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// What a power cut keeps: fsync'd data and directory operations; not unsynced data.
    #[test]
    fn a_power_cut_drops_what_was_not_fsynced() {
        let binary = match probe() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut volume =
            LazyFsVolume::mount(&binary, &dir.path().join("mnt"), dir.path(), "unit", "8mb").expect("mount");
        let synced = volume.path().join("synced");
        let mut f = std::fs::File::create(&synced).expect("create");
        f.write_all(b"kept").expect("write");
        f.sync_all().expect("fsync");
        f.write_all(b" and lost").expect("write");
        drop(f);
        std::fs::write(volume.path().join("unsynced"), b"lost").expect("write");
        assert_eq!(std::fs::read(&synced).expect("read"), b"kept and lost", "the cache serves reads");
        volume.power_cut().expect("power cut");
        assert_eq!(std::fs::read(&synced).expect("read"), b"kept");
        assert_eq!(std::fs::read(volume.path().join("unsynced")).expect("the file itself survives"), b"");
        let mount = volume.path().to_path_buf();
        drop(volume);
        assert!(!is_fuse_mount(&mount), "unmounted when dropped");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/tmp/a\\040b"), "/tmp/a b");
    }
}
