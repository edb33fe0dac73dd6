//! `petkv serve` refuses to start, with one clear line and a non-zero exit, when its identity,
//! volume or ports are wrong, and changes nothing on disk.

use std::process::{Command, Output};

fn petkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petkv")).args(args).env_remove("PETKV_HOSTNAME").output().expect("run petkv")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn serve_args<'a>(hostname: &'a str, data_dir: &'a str, client: &'a str, peer: &'a str) -> Vec<&'a str> {
    vec![
        "serve",
        "--hostname",
        hostname,
        "--data-dir",
        data_dir,
        "--peers",
        "0=127.0.0.1:1",
        "--client-listen",
        client,
        "--peer-listen",
        peer,
        "--peer-advertise",
        "127.0.0.1:1",
    ]
}

/// Gives `dir` the identity record of petkv-1 (no store), as a volume of petkv-1 would have.
fn save_identity_of_petkv_1(dir: &std::path::Path) {
    let pod = petkv::pod::identity::parse_hostname("petkv-1").expect("pod");
    let record = petkv::pod::identity::IdentityRecord::new(&pod, "c0ffee".into(), petkv::raft::node_id(1, 1));
    petkv::pod::identity::save(dir, &record).expect("save");
}

fn wait_primary_as_petkv_1(data_dir: &str) -> Output {
    petkv(&[
        "wait-primary",
        "--hostname",
        "petkv-1",
        "--data-dir",
        data_dir,
        "--peers",
        "0=127.0.0.1:1",
        "--timeout-secs",
        "1",
    ])
}

#[test]
fn hostname_without_an_ordinal_is_a_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = petkv(&serve_args("petkv", dir.path().to_str().expect("utf8"), "127.0.0.1:0", "127.0.0.1:0"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a StatefulSet pod name"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "nothing may be written");
}

#[test]
fn volume_of_another_pod_is_refused_naming_both_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    save_identity_of_petkv_1(dir.path());
    let before = std::fs::read(dir.path().join(petkv::pod::identity::IDENTITY_FILE)).expect("read");
    let out = petkv(&serve_args("petkv-2", dir.path().to_str().expect("utf8"), "127.0.0.1:0", "127.0.0.1:0"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("petkv-1") && err.contains("petkv-2"), "{err}");
    assert_eq!(std::fs::read(dir.path().join(petkv::pod::identity::IDENTITY_FILE)).expect("read"), before);
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 1, "no storage may be created");
}

#[test]
fn port_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = petkv(&serve_args("petkv-0", dir.path().to_str().expect("utf8"), &port, "127.0.0.1:0"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("port in use"), "{}", stderr(&out));
}

#[test]
fn unreadable_data_dir_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = petkv(&serve_args("petkv-0", file.to_str().expect("utf8"), "127.0.0.1:0", "127.0.0.1:0"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("data dir"), "{}", stderr(&out));
}

#[test]
fn wait_primary_returns_at_once_for_a_volume_with_state_and_times_out_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf8");
    let waiting = wait_primary_as_petkv_1(d);
    assert!(!waiting.status.success());
    assert!(String::from_utf8_lossy(&waiting.stdout).contains("waiting for the primary petkv-0"));
    save_identity_of_petkv_1(dir.path());
    let ready = wait_primary_as_petkv_1(d);
    assert!(ready.status.success(), "{}", stderr(&ready));
}

#[test]
fn client_reports_unreachable_endpoints() {
    let out = petkv(&["get", "k", "--endpoints", "127.0.0.1:1", "--timeout-ms", "300"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no endpoint answered"), "{}", stderr(&out));
}

#[test]
fn kubernetes_flags_outside_a_pod_are_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = serve_args("petkv-0", dir.path().to_str().expect("utf8"), "127.0.0.1:0", "127.0.0.1:0");
    args.extend(["--kube-statefulset", "petkv", "--kube-namespace", "shop"]);
    let out = Command::new(env!("CARGO_BIN_EXE_petkv"))
        .args(&args)
        .env_remove("PETKV_HOSTNAME")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("run petkv");
    assert!(!out.status.success());
    let err = stderr(&out);
    if cfg!(feature = "kube") {
        assert!(err.contains("--kube-statefulset needs the Kubernetes API"), "{err}");
    } else {
        assert!(err.contains("built with the `kube` feature"), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "nothing may be written");
}

#[test]
fn a_configmap_marker_needs_the_statefulset_that_owns_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = serve_args("petkv-0", dir.path().to_str().expect("utf8"), "127.0.0.1:0", "127.0.0.1:0");
    args.extend(["--bootstrap-configmap", "petkv-bootstrap"]);
    let out = petkv(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--kube-statefulset"), "{}", stderr(&out));
}

#[test]
fn tls_files_that_do_not_load_are_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let certs = dir.path().join("certs");
    let made = petkv(&["certs", "--out", certs.to_str().expect("utf8"), "--replicas", "2"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let path = |name: &str| certs.join(name).to_str().expect("utf8").to_string();
    let (ca, cert0, key1) = (path("ca.pem"), path("petkv-0.pem"), path("petkv-1-key.pem"));
    let data = data.to_str().expect("utf8");
    let mut args = serve_args("petkv-0", data, "127.0.0.1:0", "127.0.0.1:0");
    args.extend(["--http-listen", "127.0.0.1:0", "--tls-cert", &cert0, "--tls-key", &key1, "--tls-ca", &ca]);
    let out = petkv(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not belong to the certificate"), "{}", stderr(&out));
    assert!(!std::path::Path::new(data).exists(), "the volume is not touched");

    let missing = path("nope.pem");
    let out = petkv(&[
        "wait-primary",
        "--hostname",
        "petkv-1",
        "--data-dir",
        data,
        "--peers",
        "0=127.0.0.1:1",
        "--peer-tls-cert",
        &missing,
        "--peer-tls-key",
        &key1,
        "--peer-tls-ca",
        &ca,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope.pem"), "{}", stderr(&out));
}
