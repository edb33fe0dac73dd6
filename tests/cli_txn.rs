//! `petkv txn` and `petkv lease`, the command line, end to end against a 1-node set. Leases:
//! granted, a key put with one, its TTL and keys, kept alive once, listed, revoked with its key.
//! Transactions: a text-form transaction on
//! stdin runs its success branch (exit 0, the JSON names the branch, the get sees the put
//! before it), the same transaction again runs its failure branch (exit 3), the JSON form from
//! `--file`, and a malformed transaction is refused before anything is sent, naming its line.

use std::process::{Output, Stdio};

use anyhow::Context;
use petkv_e2e::healthy_cluster;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Runs `petkv txn --endpoints ENDPOINT --output json [extra…]` with `stdin` on its standard input.
async fn petkv_txn(endpoint: &str, extra: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let mut child = tokio::process::Command::new(petkv_harness::binary::petkv_binary()?)
        .args(["txn", "--endpoints", endpoint, "--output", "json", "--timeout-ms", "10000"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("run petkv txn")?;
    let mut input = child.stdin.take().context("petkv txn's stdin")?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    Ok(child.wait_with_output().await?)
}

/// The JSON `petkv txn` printed, with what it wrote to stderr on failure.
fn json_of(out: &Output) -> anyhow::Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "petkv txn printed no JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Create `config` once: the success branch puts it and reads it back, the failure branch
/// reads it.
const CREATE_ONCE: &str = r#"version("config") = 0

put config "first \"version\"" --prev-kv
get --prefix conf

get config
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_runs_a_branch_and_reports_it_through_its_exit_status() -> anyhow::Result<()> {
    let cluster = healthy_cluster(1, 1, &[]).await?;
    let endpoint = cluster.client_addr(0);

    // The compare holds: the success branch, one result per operation.
    let out = petkv_txn(&endpoint, &[], CREATE_ONCE).await?;
    let first = json_of(&out)?;
    assert_eq!(out.status.code(), Some(0), "success branch: {first}");
    assert_eq!(first["succeeded"], true, "{first}");
    let results = first["results"].as_array().context("results")?;
    assert_eq!(results.len(), 2, "{first}");
    assert_eq!(results[0]["put"]["key"], "config", "{first}");
    assert_eq!(results[0]["put"]["prev_kv"], Value::Null, "a new key has no previous value: {first}");
    let kvs = results[1]["get"]["kvs"].as_array().context("the get's keys")?;
    assert_eq!(kvs.len(), 1, "{first}");
    assert_eq!(kvs[0]["key"], "config");
    assert_eq!(kvs[0]["value"], "first \"version\"", "the escapes are resolved: {first}");
    let revision = first["revision"].as_u64().context("revision")?;
    assert!(revision > 0, "{first}");
    assert_eq!(kvs[0]["mod_revision"].as_u64(), Some(revision), "the put took the transaction's revision");

    // The same again: the key exists now, so the failure branch runs and changes nothing.
    let out = petkv_txn(&endpoint, &[], CREATE_ONCE).await?;
    let second = json_of(&out)?;
    assert_eq!(out.status.code(), Some(3), "failure branch: {second}");
    assert_eq!(second["succeeded"], false, "{second}");
    assert_eq!(second["revision"].as_u64(), Some(revision), "a failed compare takes no revision: {second}");
    let results = second["results"].as_array().context("results")?;
    assert_eq!(results.len(), 1, "{second}");
    assert_eq!(results[0]["get"]["kvs"][0]["value"], "first \"version\"", "{second}");

    // The JSON form, from a file: a value compare and a delete of the prefix.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("txn.json");
    std::fs::write(
        &file,
        r#"{"compare": [{"key": "config", "target": "value", "op": "=", "value": "first \"version\""}],
            "success": [{"delete": {"key": "conf", "prefix": true, "prev_kv": true}}]}"#,
    )?;
    let out = petkv_txn(&endpoint, &["--file", &file.display().to_string()], "").await?;
    let third = json_of(&out)?;
    assert_eq!(out.status.code(), Some(0), "{third}");
    assert_eq!(third["results"][0]["delete"]["deleted"], 1, "{third}");
    assert_eq!(third["results"][0]["delete"]["prev_kvs"][0]["key"], "config", "{third}");
    assert_eq!(third["revision"].as_u64(), Some(revision + 1), "{third}");

    // A malformed transaction: refused with its line named, nothing sent.
    let out = petkv_txn(&endpoint, &[], "version(\"config\") = 0\n\nput config v\nfrobnicate config\n").await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing printed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("petkv txn: line 4: unknown operation `frobnicate`"), "stderr: {stderr}");
    let out = petkv_txn(&endpoint, &[], "{\"success\": [{\"put\": {\"key\": \"k\"}}]}").await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("petkv txn: JSON: missing field `value`"), "stderr: {stderr}");

    // Nothing changed after the delete.
    let status = cluster.status(0).await?;
    assert_eq!(status.revision, revision + 1, "the refused transactions wrote nothing");
    Ok(())
}

/// Runs `petkv ARGS… --endpoints ENDPOINT --output json` and parses what it printed.
async fn petkv_json(endpoint: &str, args: &[&str]) -> anyhow::Result<(Option<i32>, Value)> {
    let out = tokio::process::Command::new(petkv_harness::binary::petkv_binary()?)
        .args(args)
        .args(["--endpoints", endpoint, "--output", "json"])
        .kill_on_drop(true)
        .output()
        .await
        .context("run petkv")?;
    let json = if out.stdout.is_empty() { Value::Null } else { json_of(&out)? };
    Ok((out.status.code(), json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands_grant_attach_inspect_and_revoke() -> anyhow::Result<()> {
    let cluster = healthy_cluster(1, 1, &[]).await?;
    let endpoint = cluster.client_addr(0);
    let (code, granted) = petkv_json(&endpoint, &["lease", "grant", "60"]).await?;
    assert_eq!(code, Some(0), "{granted}");
    let id = granted["id"].as_u64().context("a lease id")?.to_string();
    let (code, put) = petkv_json(&endpoint, &["put", "svc/x", "up", "--lease", &id]).await?;
    assert_eq!((code, &put["kv"]["lease"]), (Some(0), &Value::from(id.parse::<u64>()?)), "{put}");
    let (_, ttl) = petkv_json(&endpoint, &["lease", "ttl", &id, "--keys"]).await?;
    assert_eq!(ttl["keys"], serde_json::json!(["svc/x"]), "{ttl}");
    assert!(ttl["remaining_ms"].as_u64().is_some_and(|ms| ms > 0 && ms <= 60_000), "{ttl}");
    let (code, kept) = petkv_json(&endpoint, &["lease", "keep-alive", &id, "--once"]).await?;
    assert_eq!((code, kept["ttl_seconds"].as_u64()), (Some(0), Some(60)), "{kept}");
    let (_, list) = petkv_json(&endpoint, &["lease", "list"]).await?;
    assert_eq!(list["leases"][0]["id"].to_string(), id, "{list}");
    let (code, revoked) = petkv_json(&endpoint, &["lease", "revoke", &id]).await?;
    assert_eq!((code, revoked["deleted"].as_u64()), (Some(0), Some(1)), "{revoked}");
    let (code, _) = petkv_json(&endpoint, &["get", "svc/x"]).await?;
    assert_eq!(code, Some(3), "the key went with its lease");
    let (code, _) = petkv_json(&endpoint, &["lease", "keep-alive", &id, "--once"]).await?;
    assert_eq!(code, Some(3), "a revoked lease cannot be kept alive");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_a_command_under_the_lock_and_returns_its_status() -> anyhow::Result<()> {
    let cluster = healthy_cluster(1, 1, &[]).await?;
    let endpoint = cluster.client_addr(0);
    let run = |args: Vec<&'static str>| {
        let endpoint = endpoint.clone();
        async move {
            tokio::process::Command::new(petkv_harness::binary::petkv_binary()?)
                .args(["lock", "cron", "--ttl", "5", "--endpoints", &endpoint, "--"])
                .args(args)
                .kill_on_drop(true)
                .output()
                .await
                .context("run petkv lock")
        }
    };
    let out = run(vec!["sh", "-c", "exit 7"]).await?;
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("holds the lock"));
    // Released afterwards: the next one takes it at once.
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), run(vec!["true"])).await??;
    assert_eq!(out.status.code(), Some(0));
    Ok(())
}
