//! Checks every client request at the edge, before anything is proposed or read.
//!
//! A bad request gets `INVALID_ARGUMENT` with a message that names the limit; it never panics
//! the node and never writes anything. The gRPC handlers call one function per request
//! ([`Limits::put`], [`Limits::delete`], [`Limits::get`], [`Limits::scan`], [`scale`]) and act
//! only on what it returns; the fuzz target `api_requests` calls the same functions on
//! arbitrary bytes decoded as each request.

use std::ops::Bound;

use petkv_client::pb::v1::{
    CompactRequest, Consistency, DeleteRequest, GetRequest, PutRequest, ScaleRequest, ScanRequest, WriteId as PbWriteId,
};
use tonic::Status;

use crate::store::command::{Command, Compare, CompareOp, CompareTarget, KeyRange, Txn, TxnOp, WriteId};

/// Default largest key, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default largest value, in bytes (etcd's default request limit is 1.5 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Default number of keys in a scan page when the request says 0.
pub const DEFAULT_SCAN_LIMIT: u32 = 1_000;
/// Default largest scan page a client may ask for.
pub const DEFAULT_MAX_SCAN_LIMIT: u32 = 10_000;
/// Largest replica count a set may declare.
pub const MAX_REPLICAS: u32 = 1_000;

/// Request size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_scan_limit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_scan_limit: DEFAULT_MAX_SCAN_LIMIT,
        }
    }
}

/// Read consistency requested by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    Linearizable,
    Stale,
}

/// A validated scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPlan {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
    pub limit: usize,
    pub consistency: ReadConsistency,
    /// The revision to read at; `None`: the latest.
    pub revision: Option<u64>,
}

/// A validated get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetPlan {
    pub consistency: ReadConsistency,
    /// The revision to read at; `None`: the latest.
    pub revision: Option<u64>,
}

/// A requested revision: 0 asks for the latest.
fn revision(requested: u64) -> Option<u64> {
    (requested != 0).then_some(requested)
}

pub(crate) fn write_id(w: Option<PbWriteId>) -> Option<WriteId> {
    w.map(|w| WriteId { client_id: w.client_id, sequence: w.sequence })
}

impl Limits {
    /// Checks a key.
    pub fn key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, over the limit of {} bytes (--max-key-bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Checks a value.
    pub fn value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value_bytes {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes, over the limit of {} bytes (--max-value-bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Checks a put and turns it into the command the handler proposes.
    pub fn put(&self, req: &PutRequest) -> Result<Command, Status> {
        self.key(&req.key)?;
        self.value(&req.value)?;
        if req.prev_kv {
            return Ok(Self::put_returning_previous(req));
        }
        Ok(Command::Put {
            key: req.key.to_vec(),
            value: req.value.to_vec(),
            if_mod_revision: req.if_mod_revision,
            write_id: write_id(req.write_id),
            lease: req.lease,
        })
    }

    /// A put that answers with the key before it: a transaction of that one put (`prev_kv`), whose
    /// compare is the put's `if_mod_revision` and whose failure branch reads the key as it is, so
    /// the answer is the plain put's in every case. Plain puts skip the transaction: they neither
    /// keep nor copy the previous value.
    fn put_returning_previous(req: &PutRequest) -> Command {
        let key = req.key.to_vec();
        let compares = req
            .if_mod_revision
            .map(|expected| Compare {
                key: key.clone(),
                target: CompareTarget::ModRevision(expected),
                op: CompareOp::Equal,
            })
            .into_iter()
            .collect();
        Command::Txn(Txn {
            compares,
            success: vec![TxnOp::Put { key: key.clone(), value: req.value.to_vec(), lease: req.lease, prev_kv: true }],
            failure: vec![TxnOp::Range { range: KeyRange::Key(key), limit: 1 }],
            write_id: write_id(req.write_id),
        })
    }

    /// Checks a delete and turns it into the command the handler proposes.
    pub fn delete(&self, req: &DeleteRequest) -> Result<Command, Status> {
        self.key(&req.key)?;
        Ok(Command::Delete {
            key: req.key.to_vec(),
            if_mod_revision: req.if_mod_revision,
            write_id: write_id(req.write_id),
        })
    }

    /// Checks a get; returns how it is to be read.
    pub fn get(&self, req: &GetRequest) -> Result<GetPlan, Status> {
        self.key(&req.key)?;
        Ok(GetPlan { consistency: consistency(req.consistency)?, revision: revision(req.revision) })
    }

    /// Checks a compaction and turns it into the command the handler proposes (whether the
    /// revision is past the store's or already compacted is for the state machine to say).
    pub fn compact(&self, req: &CompactRequest) -> Result<Command, Status> {
        if req.revision == 0 {
            return Err(Status::invalid_argument("revision must be set: compaction drops the history before it"));
        }
        Ok(Command::Compact { revision: req.revision })
    }

    /// Checks a scan and turns it into a key range, a page size and a read consistency.
    pub fn scan(&self, req: &ScanRequest) -> Result<ScanPlan, Status> {
        let has_range = !req.start_key.is_empty() || !req.end_key.is_empty();
        if !req.prefix.is_empty() && has_range {
            return Err(Status::invalid_argument("set either prefix or start_key/end_key, not both"));
        }
        for k in [&req.prefix, &req.start_key, &req.end_key, &req.page_token] {
            if k.len() > self.max_key_bytes {
                return Err(Status::invalid_argument(format!(
                    "scan bound is {} bytes, over the key limit of {} bytes (--max-key-bytes)",
                    k.len(),
                    self.max_key_bytes
                )));
            }
        }
        if !req.end_key.is_empty() && req.start_key >= req.end_key {
            return Err(Status::invalid_argument(format!(
                "empty or inverted range: start_key {:?} must sort before end_key {:?}",
                String::from_utf8_lossy(&req.start_key),
                String::from_utf8_lossy(&req.end_key)
            )));
        }
        if req.limit > self.max_scan_limit {
            return Err(Status::invalid_argument(format!(
                "scan limit {} is over the maximum of {} (--max-scan-limit)",
                req.limit, self.max_scan_limit
            )));
        }
        let limit = if req.limit == 0 { DEFAULT_SCAN_LIMIT.min(self.max_scan_limit) } else { req.limit } as usize;
        let (mut start, end) = if !req.prefix.is_empty() {
            (Bound::Included(req.prefix.to_vec()), prefix_end(&req.prefix))
        } else {
            let start =
                if req.start_key.is_empty() { Bound::Unbounded } else { Bound::Included(req.start_key.to_vec()) };
            let end = if req.end_key.is_empty() { Bound::Unbounded } else { Bound::Excluded(req.end_key.to_vec()) };
            (start, end)
        };
        if !req.page_token.is_empty() {
            let token = req.page_token.to_vec();
            let inside = match &start {
                Bound::Included(s) => token >= *s,
                _ => true,
            } && match &end {
                Bound::Excluded(e) => token < *e,
                _ => true,
            };
            if !inside {
                return Err(Status::invalid_argument("page_token does not belong to this scan's range"));
            }
            start = Bound::Excluded(token);
        }
        let consistency = consistency(req.consistency)?;
        Ok(ScanPlan { start, end, limit, consistency, revision: revision(req.revision) })
    }
}

/// Checks a scale request and turns it into the command the handler proposes.
pub fn scale(req: &ScaleRequest) -> Result<Command, Status> {
    if req.replicas == 0 || req.replicas > MAX_REPLICAS {
        return Err(Status::invalid_argument(format!(
            "replicas must be between 1 and {MAX_REPLICAS}, got {}",
            req.replicas
        )));
    }
    Ok(Command::SetReplicas { replicas: req.replicas })
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// Checks a consistency level (an unknown number is an error, not a default).
pub fn consistency(raw: i32) -> Result<ReadConsistency, Status> {
    match Consistency::try_from(raw) {
        Ok(Consistency::Unspecified | Consistency::Linearizable) => Ok(ReadConsistency::Linearizable),
        Ok(Consistency::Stale) => Ok(ReadConsistency::Stale),
        Err(_) => {
            Err(Status::invalid_argument(format!("unknown consistency {raw}: use 1 (linearizable) or 2 (stale)")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(prefix: &str, start: &str, end: &str, limit: u32, token: &str) -> ScanRequest {
        ScanRequest {
            prefix: prefix.as_bytes().to_vec().into(),
            start_key: start.as_bytes().to_vec().into(),
            end_key: end.as_bytes().to_vec().into(),
            limit,
            page_token: token.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn is_invalid(r: Result<impl std::fmt::Debug, Status>, needle: &str) {
        let err = r.expect_err("must be refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(needle), "{} does not mention {needle}", err.message());
    }

    #[test]
    fn keys_must_be_non_empty_and_within_the_limit() {
        let l = Limits::default();
        is_invalid(l.key(b""), "empty");
        is_invalid(l.key(&vec![b'k'; DEFAULT_MAX_KEY_BYTES + 1]), "--max-key-bytes");
        assert!(l.key(&vec![b'k'; DEFAULT_MAX_KEY_BYTES]).is_ok());
    }

    #[test]
    fn values_must_be_within_the_limit() {
        let l = Limits::default();
        is_invalid(l.value(&vec![0; DEFAULT_MAX_VALUE_BYTES + 1]), "--max-value-bytes");
        assert!(l.value(b"").is_ok());
    }

    #[test]
    fn malformed_scans_are_refused() {
        let l = Limits::default();
        is_invalid(l.scan(&scan("a", "b", "", 0, "")), "not both");
        is_invalid(l.scan(&scan("", "b", "a", 0, "")), "inverted");
        is_invalid(l.scan(&scan("", "b", "b", 0, "")), "inverted");
        is_invalid(l.scan(&scan("", "", "", DEFAULT_MAX_SCAN_LIMIT + 1, "")), "--max-scan-limit");
        is_invalid(l.scan(&scan("p", "", "", 0, "q")), "page_token");
    }

    #[test]
    fn prefix_scans_become_half_open_ranges() {
        let l = Limits::default();
        let plan = l.scan(&scan("ab", "", "", 0, "")).expect("valid");
        assert_eq!(plan.start, Bound::Included(b"ab".to_vec()));
        assert_eq!(plan.end, Bound::Excluded(b"ac".to_vec()));
        assert_eq!(plan.limit, DEFAULT_SCAN_LIMIT as usize);
        assert_eq!(prefix_end(&[b'a', 0xff]), Bound::Excluded(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), Bound::Unbounded);
    }

    #[test]
    fn page_token_continues_after_the_last_key() {
        let plan = Limits::default().scan(&scan("", "a", "z", 5, "k")).expect("valid");
        assert_eq!(plan.start, Bound::Excluded(b"k".to_vec()));
        assert_eq!(plan.end, Bound::Excluded(b"z".to_vec()));
    }

    #[test]
    fn requests_become_the_commands_the_handlers_propose() {
        let l = Limits::default();
        let put = PutRequest {
            key: b"k".to_vec().into(),
            value: b"v".to_vec().into(),
            write_id: Some(PbWriteId { client_id: 3, sequence: 4 }),
            if_mod_revision: Some(0),
            lease: 9,
            prev_kv: false,
        };
        assert_eq!(
            l.put(&put).expect("valid"),
            Command::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                if_mod_revision: Some(0),
                write_id: Some(WriteId { client_id: 3, sequence: 4 }),
                lease: 9,
            }
        );
        is_invalid(l.put(&PutRequest { key: Default::default(), ..put.clone() }), "empty");
        // Asking for the previous value makes it a one-put transaction with the same compare.
        assert_eq!(
            l.put(&PutRequest { prev_kv: true, ..put.clone() }).expect("valid"),
            Command::Txn(Txn {
                compares: vec![Compare {
                    key: b"k".to_vec(),
                    target: CompareTarget::ModRevision(0),
                    op: CompareOp::Equal
                }],
                success: vec![TxnOp::Put { key: b"k".to_vec(), value: b"v".to_vec(), lease: 9, prev_kv: true }],
                failure: vec![TxnOp::Range { range: KeyRange::Key(b"k".to_vec()), limit: 1 }],
                write_id: Some(WriteId { client_id: 3, sequence: 4 }),
            })
        );
        let delete = DeleteRequest { key: b"k".to_vec().into(), write_id: None, if_mod_revision: None };
        assert_eq!(
            l.delete(&delete).expect("valid"),
            Command::Delete { key: b"k".to_vec(), if_mod_revision: None, write_id: None }
        );
        let get = GetRequest { key: b"k".to_vec().into(), consistency: 2, revision: 7 };
        assert_eq!(l.get(&get).ok(), Some(GetPlan { consistency: ReadConsistency::Stale, revision: Some(7) }));
        let latest = GetRequest { revision: 0, ..get.clone() };
        assert_eq!(l.get(&latest).ok().and_then(|p| p.revision), None, "revision 0 reads the latest");
        is_invalid(l.get(&GetRequest { key: Default::default(), consistency: 9, revision: 0 }), "empty");
        assert_eq!(l.compact(&CompactRequest { revision: 9 }).ok(), Some(Command::Compact { revision: 9 }));
        is_invalid(l.compact(&CompactRequest { revision: 0 }), "must be set");
        is_invalid(l.scan(&ScanRequest { consistency: 3, ..scan("", "", "", 0, "") }), "unknown consistency");
        assert_eq!(scale(&ScaleRequest { replicas: 5 }).ok(), Some(Command::SetReplicas { replicas: 5 }));
        is_invalid(scale(&ScaleRequest { replicas: 0 }), "between 1 and 1000");
        is_invalid(scale(&ScaleRequest { replicas: MAX_REPLICAS + 1 }), "between 1 and 1000");
    }

    #[test]
    fn unknown_consistency_is_refused() {
        assert_eq!(consistency(0).ok(), Some(ReadConsistency::Linearizable));
        assert_eq!(consistency(2).ok(), Some(ReadConsistency::Stale));
        is_invalid(consistency(7), "unknown consistency");
    }
}
