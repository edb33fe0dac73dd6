//! The snapshot file reader: what a node reads at start, what a follower installs from its
//! leader and what `petkv restore` checks. Arbitrary bytes must be refused or read, never
//! panic or allocate without bound; records written by the writer must read back exactly.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use petkv::raft::SnapshotMeta;
use petkv::store::snapshot;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        // Raw bytes as a snapshot file.
        let mut records = 0usize;
        let _ = snapshot::read_from(rest, |_, _| {
            records += 1;
            Ok(())
        });
    } else {
        // Records through the writer and back.
        let mut u = Unstructured::new(rest);
        let Ok(records) = Vec::<(Vec<u8>, Vec<u8>)>::arbitrary(&mut u) else { return };
        // The writer fsyncs the file and its directory: on tmpfs that costs nothing.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("tempdir");
        let path = dir.path().join("s.snap");
        snapshot::write(&path, &SnapshotMeta::default(), records.iter().cloned().map(Ok)).expect("write");
        let mut read = Vec::new();
        snapshot::read(&path, |k, v| {
            read.push((k, v));
            Ok(())
        })
        .expect("a written snapshot reads back");
        assert_eq!(read, records);
    }
});
