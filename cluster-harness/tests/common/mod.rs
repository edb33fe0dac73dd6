//! Helpers the `up` tests share: running `petkv-harness` against a state dir, as a user in a
//! second terminal would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use petkv_harness::control;

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

/// `petkv-harness up` running in the background. Dropped before [`Up::wait`] (a test that
/// failed), it freezes the controller, kills every pod it ran (each in its own process group,
/// they would outlive it) and then the controller.
pub struct Up {
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Up {
    /// Starts `petkv-harness up ARGS --state-dir DIR`.
    pub fn start(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_petkv-harness"))
            .arg("up")
            .args(args)
            .arg("--state-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { dir: dir.to_path_buf(), child: Some(child) })
    }

    /// Waits for the controller to exit (after `down` or a signal).
    pub async fn wait(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().expect("running");
        Ok(tokio::time::timeout(SETTLE, child.wait()).await??)
    }

    #[allow(dead_code)] // not every test binary signals it
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().and_then(|c| c.id()).expect("running") as i32)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGSTOP); // recreates nothing now
        }
        if let Ok(Some(running)) = control::read_running(&self.dir) {
            for pid in running.pods.values().filter_map(|p| p.pid) {
                let _ = signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        drop(child); // kill_on_drop
    }
}
