//! A volume damaged after a clean shutdown is refused at start: the pod exits non-zero with an
//! error that names the damaged file, and every file of the volume is left byte for byte as it
//! was (nothing repaired, nothing dropped). The same volume undamaged starts and serves all its
//! data, so the refusals are the damage's doing.

use std::path::{Path, PathBuf};

use petkv_client::pb::v1::Consistency;
use petkv_e2e::{files_of, SETTLE};
use petkv_harness::{wait, Cluster, ClusterSpec};

fn largest(dir: &Path, ext: &str) -> PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).expect("meta").len()));
    files.remove(0)
}

fn flip_middle(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(path, bytes).expect("write");
}

fn cut(path: &Path, by: u64) {
    let len = std::fs::metadata(path).expect("meta").len();
    std::fs::OpenOptions::new().write(true).open(path).expect("open").set_len(len - by).expect("cut");
}

fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("remove");
    }
    for (path, bytes) in files_of(from) {
        let dest = to.join(path.strip_prefix(from).expect("inside"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::write(dest, bytes).expect("copy");
    }
}

type Damage = fn(&Path) -> PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_volume_is_refused_at_start_and_left_untouched() -> anyhow::Result<()> {
    // Frequent snapshots, so the volume holds a snapshot file and a purged log.
    let spec = ClusterSpec {
        replicas: 1,
        voters: 1,
        extra_args: vec!["--snapshot-every".into(), "20".into()],
        ..Default::default()
    };
    let mut cluster = Cluster::new(spec)?;
    cluster.start_all()?;
    cluster.wait_healthy(SETTLE).await?;
    let client = cluster.client()?;
    for i in 0..50 {
        client.put(format!("k{i:02}").as_bytes(), b"value", None).await?;
    }
    wait::until("a snapshot", SETTLE, || async { (cluster.status(0).await.ok()?.snapshot_index > 0).then_some(()) })
        .await?;
    let exit = cluster.terminate(0).await?;
    let log = cluster.pod(0)?.log_tail(20);
    assert!(exit.is_some_and(|s| s.success()), "clean stop: {exit:?}\n{log}");
    let volume = cluster.volume(0);
    assert!(volume.join(petkv::store::seal::SEAL_FILE).exists(), "a clean stop seals the store:\n{log}");
    let clean = cluster.state_dir().join("clean-volume");
    copy_dir(&volume, &clean);

    let cases: [(&str, Damage, &str); 8] = [
        (
            "flipped byte in the Raft log",
            |v| largest(&v.join("raft-log"), "wal"),
            "changed since the last clean shutdown",
        ),
        ("Raft log cut short", |v| largest(&v.join("raft-log"), "wal"), "changed since the last clean shutdown"),
        (
            "flipped byte in the snapshot",
            |v| largest(&v.join("snapshots"), "snap"),
            "changed since the last clean shutdown",
        ),
        ("snapshot cut short", |v| largest(&v.join("snapshots"), "snap"), "changed since the last clean shutdown"),
        ("flipped byte in sled's db", |v| v.join("sled").join("db"), "changed since the last clean shutdown"),
        ("sled's db cut short", |v| v.join("sled").join("db"), "changed since the last clean shutdown"),
        ("identity record with another digit", |v| v.join(petkv::pod::identity::IDENTITY_FILE), "checksum mismatch"),
        ("identity record cut short", |v| v.join(petkv::pod::identity::IDENTITY_FILE), "is corrupt"),
    ];
    for (name, file_of, needle) in cases {
        copy_dir(&clean, &volume);
        let file = file_of(&volume);
        if name.contains("cut short") {
            cut(&file, 7);
        } else if name.contains("another digit") {
            let text = std::fs::read_to_string(&file)?;
            let at = text.find("\"ordinal\": 0").expect("the ordinal field") + "\"ordinal\": ".len();
            std::fs::write(&file, format!("{}1{}", &text[..at], &text[at + 1..]))?;
        } else {
            flip_middle(&file);
        }
        let before = files_of(&volume);
        cluster.start(0)?;
        let exit = cluster.pod_mut(0)?.wait_exit(SETTLE).await?;
        let log = cluster.pod(0)?.log_tail(5);
        assert!(exit.is_some_and(|s| !s.success()), "{name}: the start must be refused: {exit:?}\n{log}");
        let file_name = file.file_name().expect("name").to_string_lossy().into_owned();
        assert!(log.contains(&file_name) && log.contains(needle), "{name}: the error must name {file_name}:\n{log}");
        assert!(files_of(&volume) == before, "{name}: a refused start must not change a byte of the volume");
    }

    copy_dir(&clean, &volume);
    cluster.start(0)?;
    cluster.wait_healthy(SETTLE).await?;
    assert_eq!(cluster.status(0).await?.key_count, 50);
    let kv = cluster.client()?.get(b"k49", Consistency::Linearizable).await?.kv.expect("k49");
    assert_eq!(kv.value.as_ref(), b"value");
    Ok(())
}
