//! The client crate stays free of the server's heavy dependencies: `cargo tree` of its normal
//! dependencies (what a program that depends on it compiles) names none of them.

use std::process::Command;

/// Crates only the node needs (storage, Raft, certificate issuing, Kubernetes, its HTTP port
/// and metrics), by name or name prefix, and the node crate itself.
const SERVER_ONLY: &[&str] = &["sled", "openraft", "raft-log", "rcgen", "kube", "k8s-openapi", "axum", "prometheus"];

#[test]
fn the_client_depends_on_no_server_crate() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "--manifest-path", manifest])
        .args(["-p", "petkv-client"])
        .output()
        .expect("running cargo tree");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let names: Vec<&str> = stdout.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(names.contains(&"tonic"), "cargo tree listed no tonic:\n{stdout}");
    let server: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| *name == "petkv" || SERVER_ONLY.iter().any(|s| name.starts_with(s)))
        .collect();
    assert!(server.is_empty(), "petkv-client depends on server crates {server:?}:\n{stdout}");
}
