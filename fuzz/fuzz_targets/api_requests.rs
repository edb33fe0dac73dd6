//! Every request message of the public API (`petkv.v1.KV`, `petkv.v1.Cluster`) decoded from
//! arbitrary bytes with prost, then checked by the very functions the gRPC handlers call
//! (`petkv::api::validation`). Nothing may panic; what validation accepts must be within the
//! limits, carry the request's own fields, and describe a well-formed key range.

#![no_main]

use std::collections::BTreeMap;
use std::ops::Bound;

use libfuzzer_sys::fuzz_target;
use petkv::store::command::Command;
use petkv::api::validation::{self, Limits, ReadConsistency, MAX_REPLICAS};
use petkv_client::pb::v1::{DeleteRequest, GetRequest, PutRequest, ScaleRequest, ScanRequest};
use prost::Message;

/// Small limits, so the fuzzer reaches every one of them.
const LIMITS: Limits = Limits { max_key_bytes: 16, max_value_bytes: 64, max_scan_limit: 100 };

fn refused(status: tonic::Status) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(!status.message().is_empty());
}

/// A message that decoded must encode to bytes that decode to the same message.
fn round_trips<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) {
    let again = M::decode(msg.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(&again, msg);
}

fn key_ok(key: &[u8]) {
    assert!(!key.is_empty() && key.len() <= LIMITS.max_key_bytes, "accepted key of {} bytes", key.len());
}

fn consistency_of(raw: i32) -> Option<ReadConsistency> {
    match raw {
        0 | 1 => Some(ReadConsistency::Linearizable),
        2 => Some(ReadConsistency::Stale),
        _ => None,
    }
}

fn check_scan(req: &ScanRequest) {
    match LIMITS.scan(req) {
        Ok(plan) => {
            assert!(plan.limit >= 1 && plan.limit <= LIMITS.max_scan_limit as usize, "limit {}", plan.limit);
            assert_eq!(Some(plan.consistency), consistency_of(req.consistency));
            assert!(req.prefix.is_empty() || (req.start_key.is_empty() && req.end_key.is_empty()));
            for bound in [&plan.start, &plan.end] {
                if let Bound::Included(k) | Bound::Excluded(k) = bound {
                    assert!(k.len() <= LIMITS.max_key_bytes, "bound of {} bytes", k.len());
                }
            }
            // The range must be one an ordered map accepts (BTreeMap::range panics on an
            // inverted range or on an empty one with both ends excluded).
            let mut map = BTreeMap::new();
            map.insert(req.page_token.to_vec(), ());
            map.insert(req.prefix.to_vec(), ());
            for (k, ()) in map.range::<Vec<u8>, _>((plan.start.clone(), plan.end.clone())) {
                if !req.prefix.is_empty() {
                    assert!(k.starts_with(&req.prefix), "{k:?} is in the range of prefix {:?}", req.prefix);
                }
            }
        }
        Err(status) => refused(status),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 5 {
        0 => {
            let Ok(req) = PutRequest::decode(bytes) else { return };
            round_trips(&req);
            match LIMITS.put(&req) {
                Ok(Command::Put { key, value, if_mod_index, write_id }) => {
                    key_ok(&key);
                    assert!(value.len() <= LIMITS.max_value_bytes);
                    assert_eq!((key.as_slice(), value.as_slice()), (req.key.as_ref(), req.value.as_ref()));
                    assert_eq!(if_mod_index, req.if_mod_index);
                    assert_eq!(
                        write_id.map(|w| (w.client_id, w.sequence)),
                        req.write_id.map(|w| (w.client_id, w.sequence))
                    );
                }
                Ok(other) => panic!("a put became {other:?}"),
                Err(status) => refused(status),
            }
        }
        1 => {
            let Ok(req) = DeleteRequest::decode(bytes) else { return };
            round_trips(&req);
            match LIMITS.delete(&req) {
                Ok(Command::Delete { key, if_mod_index, write_id }) => {
                    key_ok(&key);
                    assert_eq!(key.as_slice(), req.key.as_ref());
                    assert_eq!(if_mod_index, req.if_mod_index);
                    assert_eq!(
                        write_id.map(|w| (w.client_id, w.sequence)),
                        req.write_id.map(|w| (w.client_id, w.sequence))
                    );
                }
                Ok(other) => panic!("a delete became {other:?}"),
                Err(status) => refused(status),
            }
        }
        2 => {
            let Ok(req) = GetRequest::decode(bytes) else { return };
            round_trips(&req);
            match LIMITS.get(&req) {
                Ok(consistency) => {
                    key_ok(&req.key);
                    assert_eq!(Some(consistency), consistency_of(req.consistency));
                }
                Err(status) => refused(status),
            }
        }
        3 => {
            let Ok(req) = ScanRequest::decode(bytes) else { return };
            round_trips(&req);
            check_scan(&req);
        }
        _ => {
            let Ok(req) = ScaleRequest::decode(bytes) else { return };
            round_trips(&req);
            match validation::scale(&req) {
                Ok(Command::SetReplicas { replicas }) => {
                    assert!((1..=MAX_REPLICAS).contains(&replicas));
                    assert_eq!(replicas, req.replicas);
                }
                Ok(other) => panic!("a scale became {other:?}"),
                Err(status) => refused(status),
            }
        }
    }
});
