//! The Raft log's record decoding (raft-log chunk files with petkv's length-and-complement
//! framing), as opening the log reads each chunk back. A damaged chunk must decode to an error,
//! never a panic or an unbounded allocation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use petkv::store::log_store;

fuzz_target!(|data: &[u8]| {
    let (decoded, error) = log_store::decode_records(data);
    assert!(decoded <= data.len(), "{decoded} records from {} bytes", data.len());
    if let Some(e) = error {
        assert!(!e.to_string().is_empty());
    }
});
