//! A one-shot command stopped by SIGTERM or SIGINT (Ctrl-C) takes the pods it started with it:
//! they run in their own process groups, so dying of the signal used to leave them running.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use petkv_harness::wait;

const SETTLE: Duration = Duration::from_secs(60);

/// `(name, state, parent pid)` of process `pid`, from `/proc/<pid>/stat`; `None` once it is gone.
fn stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (name) state ppid ...": the name may hold spaces, so split at the last ')'.
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((name, state, ppid))
}

/// Pids of the processes named `name` whose parent is `parent`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(n, _, ppid)| ppid == parent && n == name))
        .collect()
}

/// True while `pid` runs (a zombie waiting to be reaped has stopped running).
fn running(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state, _)| state != 'Z' && state != 'X') && kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_stopped_by_a_signal_stops_its_pods() -> anyhow::Result<()> {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let harness = tokio::process::Command::new(env!("CARGO_BIN_EXE_petkv-harness"))
            .args(["bench", "--mode", "put", "--clients", "1", "--warmup-secs", "0", "--duration-secs", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let harness_pid = harness.id().expect("the harness runs");
        let pods = wait::until("the bench's 3 pods to run", SETTLE, || async {
            let pods = children_named(harness_pid, "petkv");
            (pods.len() == 3).then_some(pods)
        })
        .await?;
        kill(Pid::from_raw(harness_pid as i32), signal)?;
        let out = tokio::time::timeout(SETTLE, harness.wait_with_output()).await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "stopped by {signal}, the bench cannot report success");
        assert!(stderr.contains(signal.as_str()), "it says why it stopped: {stderr}");
        wait::until(&format!("the pods to be gone after {signal}"), SETTLE, || async {
            pods.iter().all(|pid| !running(*pid)).then_some(())
        })
        .await?;
    }
    Ok(())
}
