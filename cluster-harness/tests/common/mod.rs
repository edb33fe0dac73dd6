//! Helpers the `up` tests share: running `petkv-harness` against a state dir, as a user in a
//! second terminal would.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a test waits for a set to settle.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Runs `petkv-harness ARGS --state-dir DIR`.
pub fn harness(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_petkv-harness"))
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .output()
        .expect("run petkv-harness")
}

/// Runs it and returns its stdout; fails the test if it fails.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = harness(dir, args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
