//! A one-shot command stopped by SIGTERM or SIGINT (Ctrl-C) takes the pods it started with it:
//! they run in their own process groups, so dying of the signal used to leave them running.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use petkv_harness::wait;

const SETTLE: Duration = Duration::from_secs(60);

/// `(pid, name, state)` of every process whose parent is `parent`, from `/proc/<pid>/stat`.
fn children(parent: u32) -> Vec<(u32, String, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (name) state ppid ...": the name may hold spaces, so split at the last ')'.
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let mut fields = tail.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            (ppid == parent).then_some((pid, name, state))
        })
        .collect()
}

/// True while `pid` runs (a zombie waiting to be reaped has stopped running).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, t)| t.split_whitespace().next()).unwrap_or("X");
    state != "Z" && state != "X" && kill(Pid::from_raw(pid as i32), None).is_ok()
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
            let pods: Vec<u32> = children(harness_pid)
                .into_iter()
                .filter(|(_, name, _)| name == "petkv")
                .map(|(pid, _, _)| pid)
                .collect();
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
