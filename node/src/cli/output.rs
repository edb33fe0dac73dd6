//! How client subcommands print: a human table or JSON (`--output json`). Keys and values are
//! shown as UTF-8 (invalid bytes replaced).

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use petkv_client::pb::v1::{KeyValue, MembersResponse, NodeStatus, ResponseHeader, WatchResponse};
use serde_json::{json, Value};

use super::OutputFormat;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn header_json(h: &Option<ResponseHeader>) -> Value {
    let h = h.unwrap_or_default();
    json!({"revision": h.revision, "raft_index": h.raft_index, "term": h.term, "served_by": h.served_by})
}

/// A key-value as JSON.
pub fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": text(&kv.key), "value": text(&kv.value),
        "create_revision": kv.create_revision, "mod_revision": kv.mod_revision, "version": kv.version,
        "lease": kv.lease,
    })
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(headers.to_vec());
    t
}

/// Prints a reply that carries a header plus some fields.
pub fn print_reply(format: OutputFormat, header: &Option<ResponseHeader>, fields: Value, human: String) {
    match format {
        OutputFormat::Json => {
            let mut v = fields;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("header".into(), header_json(header));
            }
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        OutputFormat::Table => {
            let h = header.unwrap_or_default();
            println!("{human}  (raft index {}, served by node {})", h.raft_index, h.served_by);
        }
    }
}

/// Prints key-values (get, scan).
pub fn print_kvs(format: OutputFormat, header: &Option<ResponseHeader>, kvs: &[KeyValue], next_page_token: &[u8]) {
    match format {
        OutputFormat::Json => {
            let v = json!({
                "header": header_json(header),
                "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(),
                "next_page_token": text(next_page_token),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        OutputFormat::Table => {
            let mut t = table(&["key", "value", "version", "mod revision", "create revision"]);
            for kv in kvs {
                t.add_row(vec![
                    text(&kv.key),
                    text(&kv.value),
                    kv.version.to_string(),
                    kv.mod_revision.to_string(),
                    kv.create_revision.to_string(),
                ]);
            }
            println!("{t}");
            let h = header.unwrap_or_default();
            println!(
                "{} key(s) at revision {} (raft index {}), served by node {}",
                kvs.len(),
                h.revision,
                h.raft_index,
                h.served_by
            );
            if !next_page_token.is_empty() {
                println!("more keys follow; continue after {:?}", text(next_page_token));
            }
        }
    }
}

fn status_json(s: &NodeStatus) -> Value {
    json!({
        "hostname": s.hostname, "set": s.set_name, "ordinal": s.ordinal, "node_id": s.node_id,
        "cluster_id": s.cluster_id, "data_dir": s.data_dir, "role": s.role, "leader_id": s.leader_id,
        "term": s.term, "last_log_index": s.last_log_index, "committed_index": s.committed_index,
        "applied_index": s.applied_index, "snapshot_index": s.snapshot_index, "purged_index": s.purged_index,
        "key_count": s.key_count, "client_addr": s.client_addr, "peer_addr": s.peer_addr,
        "ready": s.ready, "declared_replicas": s.declared_replicas,
        "volume_free_bytes": s.volume_free_bytes, "volume_reserve_bytes": s.volume_reserve_bytes,
        "writes_refused": s.writes_refused, "revision": s.revision, "compacted_revision": s.compacted_revision,
    })
}

/// Prints one node's status.
pub fn print_status(format: OutputFormat, s: &NodeStatus) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status_json(s)).unwrap_or_default()),
        OutputFormat::Table => {
            let mut t = table(&["field", "value"]);
            if let Value::Object(map) = status_json(s) {
                for (k, v) in map {
                    t.add_row(vec![k, v.to_string().trim_matches('"').to_string()]);
                }
            }
            println!("{t}");
        }
    }
}

/// Prints the members table.
pub fn print_members(format: OutputFormat, m: &MembersResponse) {
    match format {
        OutputFormat::Json => {
            let members: Vec<Value> = m
                .members
                .iter()
                .map(|mem| {
                    json!({
                        "node_id": mem.node_id, "ordinal": mem.ordinal, "voter": mem.voter,
                        "client_addr": mem.client_addr, "peer_addr": mem.peer_addr,
                        "status": mem.status.as_ref().map(status_json), "error": mem.error,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"header": header_json(&m.header), "members": members}))
                    .unwrap_or_default()
            );
        }
        OutputFormat::Table => {
            let mut t = table(&["pod", "node id", "kind", "role", "term", "applied", "keys", "client addr", "note"]);
            for mem in &m.members {
                let kind = if mem.voter { "voter" } else { "learner" };
                match &mem.status {
                    Some(s) => t.add_row(vec![
                        s.hostname.clone(),
                        mem.node_id.to_string(),
                        kind.into(),
                        s.role.clone(),
                        s.term.to_string(),
                        s.applied_index.to_string(),
                        s.key_count.to_string(),
                        mem.client_addr.clone(),
                        String::new(),
                    ]),
                    None => t.add_row(vec![
                        format!("ordinal {}", mem.ordinal),
                        mem.node_id.to_string(),
                        kind.into(),
                        "unreachable".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        mem.client_addr.clone(),
                        mem.error.clone(),
                    ]),
                };
            }
            println!("{t}");
        }
    }
}

/// Prints one watch response: a line per event (or per progress), as it arrives.
pub fn print_watch_response(format: OutputFormat, r: &WatchResponse) {
    use petkv_client::pb::v1::event::EventType;
    let revision = r.header.as_ref().map_or(0, |h| h.revision);
    match format {
        OutputFormat::Json => {
            let line = if r.events.is_empty() {
                json!({"revision": revision, "created": r.created, "progress": r.progress})
            } else {
                let events: Vec<Value> = r
                    .events
                    .iter()
                    .map(|e| {
                        let kind = if e.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" };
                        json!({"type": kind, "kv": e.kv.as_ref().map(kv_json), "prev_kv": e.prev_kv.as_ref().map(kv_json)})
                    })
                    .collect();
                json!({"revision": revision, "events": events})
            };
            println!("{line}");
        }
        OutputFormat::Table => {
            if r.created {
                eprintln!("watching from revision {}", revision + 1);
            } else if r.progress {
                println!("progress: current to revision {revision}");
            }
            for e in &r.events {
                let Some(kv) = &e.kv else { continue };
                let prev = e.prev_kv.as_ref().map(|p| format!(" (was {})", text(&p.value))).unwrap_or_default();
                if e.r#type == EventType::Delete as i32 {
                    println!("DELETE {} @{}{prev}", text(&kv.key), kv.mod_revision);
                } else {
                    println!("PUT {} {} @{}{prev}", text(&kv.key), text(&kv.value), kv.mod_revision);
                }
            }
        }
    }
}

/// How a transaction's operation names its keys: `k`, `prefix k` or `[a, z)`.
fn txn_keys(key: &[u8], range_end: &[u8], prefix: bool) -> String {
    match (prefix, range_end.is_empty()) {
        (true, _) => format!("prefix {}", text(key)),
        (false, true) => text(key),
        (false, false) => format!("[{}, {})", text(key), text(range_end)),
    }
}

/// Prints a transaction's outcome: the branch taken (`SUCCEEDED` or `FAILED`), one entry per
/// operation of that branch, and the revision. `request` is the transaction sent: the results
/// carry no keys of their own, so the operations name them.
pub fn print_txn(
    format: OutputFormat,
    request: &petkv_client::pb::v1::TxnRequest,
    r: &petkv_client::pb::v1::TxnResponse,
) {
    use petkv_client::pb::v1::txn_op::Op;
    use petkv_client::pb::v1::txn_op_result::Result as OpResult;
    let ops = if r.succeeded { &request.success } else { &request.failure };
    let op = |i: usize| ops.get(i).and_then(|o| o.op.as_ref());
    let revision = r.header.as_ref().map_or(0, |h| h.revision);
    match format {
        OutputFormat::Json => {
            let results: Vec<Value> = r
                .results
                .iter()
                .enumerate()
                .map(|(i, result)| match (&result.result, op(i)) {
                    (Some(OpResult::Put(p)), o) => {
                        let key = match o {
                            Some(Op::Put(put)) => Value::String(text(&put.key)),
                            _ => Value::Null,
                        };
                        json!({"put": {"key": key, "prev_kv": p.prev_kv.as_ref().map(kv_json)}})
                    }
                    (Some(OpResult::Delete(d)), _) => json!({"delete": {
                        "deleted": d.deleted, "prev_kvs": d.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
                    }}),
                    (Some(OpResult::Range(g)), _) => json!({"get": {
                        "kvs": g.kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": g.more,
                    }}),
                    (None, _) => Value::Null,
                })
                .collect();
            let v = json!({
                "succeeded": r.succeeded, "revision": revision, "results": results, "header": header_json(&r.header),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        OutputFormat::Table => {
            println!("{}", if r.succeeded { "SUCCEEDED" } else { "FAILED" });
            let was = |kv: &KeyValue| format!("{} (was {})", text(&kv.key), text(&kv.value));
            for (i, result) in r.results.iter().enumerate() {
                match (&result.result, op(i)) {
                    (Some(OpResult::Put(p)), o) => {
                        let key = match o {
                            Some(Op::Put(put)) => text(&put.key),
                            _ => String::new(),
                        };
                        match (&p.prev_kv, o) {
                            (Some(prev), _) => println!("PUT {key} (was {})", text(&prev.value)),
                            (None, Some(Op::Put(put))) if put.prev_kv => println!("PUT {key} (new key)"),
                            (None, _) => println!("PUT {key}"),
                        }
                    }
                    (Some(OpResult::Delete(d)), o) => {
                        let keys = match o {
                            Some(Op::Delete(del)) => format!(": {}", txn_keys(&del.key, &del.range_end, del.prefix)),
                            _ => String::new(),
                        };
                        println!("DELETED {} key(s){keys}", d.deleted);
                        for kv in &d.prev_kvs {
                            println!("  {}", was(kv));
                        }
                    }
                    (Some(OpResult::Range(g)), o) => {
                        let keys = match o {
                            Some(Op::Range(get)) => format!(" {}", txn_keys(&get.key, &get.range_end, get.prefix)),
                            _ => String::new(),
                        };
                        let more = if g.more { ", more follow past the limit" } else { "" };
                        println!("GET{keys}: {} key(s){more}", g.kvs.len());
                        for kv in &g.kvs {
                            println!("  {} {} @{}", text(&kv.key), text(&kv.value), kv.mod_revision);
                        }
                    }
                    (None, _) => println!("(an empty result)"),
                }
            }
            let h = r.header.unwrap_or_default();
            println!("revision {revision} (raft index {}, served by node {})", h.raft_index, h.served_by);
        }
    }
}
