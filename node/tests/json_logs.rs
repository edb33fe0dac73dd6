//! `petkv serve --log-format json` (or `PETKV_LOG_FORMAT=json`) writes one JSON object per
//! stderr line, with `timestamp`, `level`, `target`, `fields.message` and the `node` span,
//! fatal start-up errors included.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn petkv() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_petkv"));
    cmd.env_remove("PETKV_HOSTNAME").env_remove("PETKV_LOG_FORMAT").env_remove("RUST_LOG");
    cmd
}

/// Checks that every line is a JSON log record; returns the records.
fn parse_lines(lines: &[String]) -> Vec<serde_json::Value> {
    assert!(!lines.is_empty(), "no log lines at all");
    lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["timestamp"].is_string(), "no timestamp: {line}");
            assert!(v["level"].is_string(), "no level: {line}");
            assert!(v["target"].is_string(), "no target: {line}");
            assert!(v["fields"]["message"].is_string(), "no fields.message: {line}");
            v
        })
        .collect()
}

#[test]
fn serve_logs_one_json_object_per_line_with_the_node_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = free_port();
    let mut child = petkv()
        .args(["serve", "--hostname", "petkv-0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .args(["--peers", &format!("0=127.0.0.1:{peer}"), "--peer-listen", &format!("127.0.0.1:{peer}")])
        .args(["--client-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn petkv");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Until the one-node cluster is bootstrapped and ready (or a generous bound passes).
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let ready = line.contains("readiness changed") && line.contains("\"ready\":true");
                lines.push(line);
                if ready {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    lines.extend(rx.try_iter());
    let records = parse_lines(&lines);
    assert!(
        records.iter().any(|r| r["fields"]["message"] == "readiness changed" && r["fields"]["ready"] == true),
        "the node never became ready:\n{}",
        lines.join("\n")
    );
    let starting = records
        .iter()
        .find(|r| r["fields"]["message"] == "petkv node starting")
        .unwrap_or_else(|| panic!("no start-up line:\n{}", lines.join("\n")));
    assert_eq!(starting["span"]["name"], "node", "{starting}");
    assert_eq!(starting["span"]["pod"], "petkv-0", "{starting}");
    assert!(starting["spans"].is_array(), "{starting}");
    assert!(starting["fields"]["http"].is_string(), "the HTTP address is logged: {starting}");
}

#[test]
fn the_env_variable_selects_json_and_a_fatal_error_is_a_json_line_too() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = petkv()
        .env("PETKV_LOG_FORMAT", "json")
        .args(["serve", "--hostname", "petkv-0", "--data-dir"])
        .arg(dir.path())
        .args(["--peers", "0=127.0.0.1:1", "--peer-advertise", "127.0.0.1:1"])
        .args(["--client-listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
        .args(["--http-listen", &taken_addr])
        .output()
        .expect("run petkv");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let records = parse_lines(&lines);
    let last = records.last().expect("a line");
    assert_eq!(last["level"], "ERROR", "{last}");
    let message = last["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("http address") && message.contains(&taken_addr), "{message}");
}
