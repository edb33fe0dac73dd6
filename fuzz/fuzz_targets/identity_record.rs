//! The identity record parser (`identity.json` on every volume) and the hostname parser that
//! decides a pod's identity. Nothing may panic; a record that parses must survive a write and
//! a read unchanged, and a hostname that parses must name the same pod when printed.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use petkv::pod::identity::{self, IDENTITY_FILE};

fuzz_target!(|data: &[u8]| {
    let path = Path::new(IDENTITY_FILE);
    match identity::parse(path, data) {
        Ok(record) => {
            let again = serde_json::to_vec(&record).expect("a parsed record serializes");
            assert_eq!(identity::parse(path, &again).expect("a parsed record re-parses"), record);
            let _ = record.check_matches(&record.pod(), Path::new("/data"));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(IDENTITY_FILE) && msg.contains("corrupt"), "{msg}");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pod) = identity::parse_hostname(text) {
            assert!(!pod.set.is_empty() && pod.set.len() < 63, "{pod:?}");
            assert_eq!(identity::parse_hostname(&pod.to_string()).expect("printed pod name parses"), pod);
        }
    }
});
