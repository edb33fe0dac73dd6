//! Finding the `petkv` binary.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// Environment variable that names the binary explicitly.
pub const PETKV_BIN: &str = "PETKV_BIN";

/// The `petkv` binary: `$PETKV_BIN`, else the one next to the running executable (cargo puts
/// test binaries in `target/<profile>/deps/` and the `petkv` binary in `target/<profile>/`).
pub fn petkv_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(PETKV_BIN) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{PETKV_BIN}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("petkv");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().filter(|p| p.file_name().is_some_and(|n| n != "target"));
    }
    bail!(
        "cannot find the petkv binary near {}; build it with `cargo build -p petkv` or set {PETKV_BIN}",
        exe.display()
    )
}
