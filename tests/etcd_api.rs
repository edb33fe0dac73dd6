//! etcd's v3 API on petkv's etcd port (`--etcd-listen`), driven by etcd's own `etcdctl`
//! (Debian's etcd-client, which `scripts/setup.sh --test` installs): put and get with their
//! flags, del, txn, compaction, watch from a revision across a leader failover, leases,
//! member list, endpoint status and health, and snapshot save restored into a new petkv set.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use petkv_e2e::SETTLE;
use petkv_harness::{wait, Cluster, ClusterSpec};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// What one etcdctl run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> anyhow::Result<String> {
        anyhow::ensure!(self.code == Some(0), "etcdctl failed ({:?}): {}{}", self.code, self.stdout, self.stderr);
        Ok(self.stdout)
    }
}

/// The endpoints flag for every pod's etcd port, as `host:port`: etcdctl 3.4's `endpoint
/// status` and `endpoint health` send an `http://` endpoint as the HTTP/2 `:authority`, which
/// petkv's HTTP/2 server (h2) refuses as malformed (etcd's Go server lets it through).
fn endpoints(cluster: &Cluster) -> String {
    cluster.ordinals().iter().map(|o| cluster.etcd_addr(*o)).collect::<Vec<_>>().join(",")
}

fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// Runs `etcdctl ARGS`, with `stdin` as its input.
async fn etcdctl(endpoints: &str, args: &[&str], stdin: &str) -> anyhow::Result<Run> {
    let mut child = etcdctl_command(endpoints, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run etcdctl (Debian's etcd-client; scripts/setup.sh --test installs it)")?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    let out =
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.context("etcdctl hung")??;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

async fn json(endpoints: &str, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    let out = etcdctl(endpoints, &all, "").await?.ok()?;
    serde_json::from_str(&out).with_context(|| format!("etcdctl's JSON: {out}"))
}

/// Reads lines of a running etcdctl's output until `seen` holds `want`.
async fn read_lines(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
    want: usize,
) -> anyhow::Result<()> {
    while seen.len() < want {
        let line = tokio::time::timeout(SETTLE, lines.next_line()).await.context("watch output")??;
        seen.push(line.context("the watch ended")?);
    }
    Ok(())
}

async fn etcd_set() -> anyhow::Result<Cluster> {
    petkv_e2e::healthy(ClusterSpec { etcd: true, ..Default::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_puts_gets_deletes_and_compacts() -> anyhow::Result<()> {
    let mut cluster = etcd_set().await?;
    let ep = endpoints(&cluster);
    assert_eq!(etcdctl(&ep, &["put", "foo", "bar"], "").await?.ok()?, "OK\n");
    let first = json(&ep, &["get", "foo"]).await?;
    let r1 = first["kvs"][0]["mod_revision"].as_i64().context("mod_revision")?;
    assert_eq!(etcdctl(&ep, &["put", "foo", "baz", "--prev-kv"], "").await?.ok()?, "OK\nfoo\nbar\n");
    assert_eq!(etcdctl(&ep, &["get", "foo"], "").await?.ok()?, "foo\nbaz\n");
    assert_eq!(etcdctl(&ep, &["get", "foo", &format!("--rev={r1}")], "").await?.ok()?, "foo\nbar\n");
    assert_eq!(etcdctl(&ep, &["get", "foo", "--consistency=s"], "").await?.ok()?, "foo\nbaz\n");
    for (k, v) in [("k1", "c"), ("k2", "a"), ("k3", "b")] {
        etcdctl(&ep, &["put", k, v], "").await?.ok()?;
    }
    assert_eq!(etcdctl(&ep, &["get", "k", "--prefix", "--keys-only"], "").await?.ok()?, "k1\n\nk2\n\nk3\n\n");
    let limited = json(&ep, &["get", "k", "--prefix", "--limit=2"]).await?;
    assert_eq!(limited["count"], 3, "count is every key in the range: {limited}");
    assert_eq!(limited["more"], true);
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(2));
    let by_value = etcdctl(&ep, &["get", "k", "--prefix", "--sort-by=VALUE", "--order=DESCEND"], "").await?.ok()?;
    assert_eq!(by_value, "k1\nc\nk3\nb\nk2\na\n");
    assert_eq!(etcdctl(&ep, &["get", "k2", "--from-key", "--keys-only"], "").await?.ok()?, "k2\n\nk3\n\n");
    let header = &limited["header"];
    assert!(header["cluster_id"].as_u64().is_some_and(|id| id != 0), "{header}");
    assert!(header["member_id"].as_u64().is_some_and(|id| id != 0), "{header}");
    assert!(header["raft_term"].as_u64().is_some_and(|t| t >= 1), "{header}");

    // A transaction, as etcdctl reads it: compares, success ops, failure ops (interactive
    // form, with its prompts, then the same from stdin without them).
    let txn = "value(\"foo\") = \"baz\"\n\nput foo qux\nget k1\n\nput foo failed\n\n";
    let prompts = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";
    assert_eq!(etcdctl(&ep, &["txn", "-i"], txn).await?.ok()?, format!("{prompts}SUCCESS\n\nOK\n\nk1\nc\n"));
    assert_eq!(etcdctl(&ep, &["txn"], txn).await?.ok()?, "FAILURE\n\nOK\n");
    assert_eq!(etcdctl(&ep, &["get", "foo"], "").await?.ok()?, "foo\nfailed\n");

    assert_eq!(etcdctl(&ep, &["del", "foo", "--prev-kv"], "").await?.ok()?, "1\nfoo\nfailed\n");
    assert_eq!(etcdctl(&ep, &["del", "k", "--prefix"], "").await?.ok()?, "3\n");
    assert_eq!(etcdctl(&ep, &["get", "k", "--prefix"], "").await?.ok()?, "");

    let now = json(&ep, &["get", "foo"]).await?["header"]["revision"].as_i64().context("revision")?;
    assert_eq!(etcdctl(&ep, &["compact", &now.to_string()], "").await?.ok()?, format!("compacted revision {now}\n"));
    let old = etcdctl(&ep, &["get", "foo", &format!("--rev={r1}")], "").await?;
    assert_ne!(old.code, Some(0));
    assert!(old.stderr.contains("required revision has been compacted"), "{}", old.stderr);
    let future = etcdctl(&ep, &["get", "foo", &format!("--rev={}", now + 100)], "").await?;
    assert!(future.stderr.contains("required revision is a future revision"), "{}", future.stderr);
    cluster.down().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watches_from_a_revision_through_a_leader_failover() -> anyhow::Result<()> {
    let mut cluster = etcd_set().await?;
    let ep = endpoints(&cluster);
    etcdctl(&ep, &["put", "w/0", "before"], "").await?.ok()?;
    let start = json(&ep, &["get", "w/0"]).await?["kvs"][0]["mod_revision"].as_i64().context("revision")?;
    let mut watch = etcdctl_command(&ep, &["watch", "w/", "--prefix", &format!("--rev={start}"), "--prev-kv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let mut seen = Vec::new();
    // From its start revision: the put already made, then new ones (each PUT, key, value).
    read_lines(&mut lines, &mut seen, 3).await?;
    etcdctl(&ep, &["put", "w/1", "one"], "").await?.ok()?;
    etcdctl(&ep, &["put", "w/0", "again"], "").await?.ok()?;
    read_lines(&mut lines, &mut seen, 3 + 3 + 5).await?;
    assert_eq!(seen, ["PUT", "w/0", "before", "PUT", "w/1", "one", "PUT", "w/0", "before", "w/0", "again"]);

    // The leader dies; the watch reconnects (to any member) and misses nothing.
    let leader = cluster.wait_leader(SETTLE).await?;
    cluster.kill(leader).await?;
    wait::until("a new leader", SETTLE, || async {
        etcdctl(&ep, &["put", "w/2", "two"], "").await.ok().filter(|r| r.code == Some(0)).map(|_| ())
    })
    .await?;
    cluster.start(leader)?;
    etcdctl(&ep, &["del", "w/1"], "").await?.ok()?;
    read_lines(&mut lines, &mut seen, 11 + 3 + 2).await?;
    assert_eq!(seen[11..], ["PUT", "w/2", "two", "DELETE", "w/1"], "no event lost or repeated: {seen:?}");
    watch.kill().await?;
    cluster.down().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_members_status_and_snapshots() -> anyhow::Result<()> {
    let mut cluster = etcd_set().await?;
    let ep = endpoints(&cluster);
    let granted = json(&ep, &["lease", "grant", "60"]).await?;
    let id = granted["ID"].as_i64().context("lease id")?;
    let hex = format!("{id:016x}");
    assert_eq!(granted["TTL"], 60);
    etcdctl(&ep, &["put", "held", "v", &format!("--lease={hex}")], "").await?.ok()?;
    let ttl = etcdctl(&ep, &["lease", "timetolive", &hex, "--keys"], "").await?.ok()?;
    assert!(ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([held])"), "{ttl}");
    let listed = etcdctl(&ep, &["lease", "list"], "").await?.ok()?;
    assert_eq!(listed, format!("found 1 leases\n{hex}\n"));
    let kept = etcdctl(&ep, &["lease", "keep-alive", "--once", &hex], "").await?.ok()?;
    assert_eq!(kept, format!("lease {hex} keepalived with TTL(60)\n"));
    assert_eq!(etcdctl(&ep, &["lease", "revoke", &hex], "").await?.ok()?, format!("lease {hex} revoked\n"));
    assert_eq!(etcdctl(&ep, &["get", "held"], "").await?.ok()?, "", "the lease's key went with it");
    let gone = etcdctl(&ep, &["lease", "timetolive", &hex], "").await?.ok()?;
    assert_eq!(gone, format!("lease {hex} already expired\n"));
    let missing = etcdctl(&ep, &["lease", "revoke", &hex], "").await?;
    assert!(missing.stderr.contains("requested lease not found"), "{}", missing.stderr);

    // Members: pod names, peer and etcd URLs, all voters.
    let members = etcdctl(&ep, &["member", "list"], "").await?.ok()?;
    for o in cluster.ordinals() {
        let line = members.lines().find(|l| l.contains(&format!("petkv-{o},"))).context("member line")?;
        assert!(line.contains(&format!("http://{}", cluster.etcd_addr(o))) && line.ends_with("false"), "{line}");
    }
    let add = etcdctl(&ep, &["member", "add", "extra", "--peer-urls=http://127.0.0.1:1"], "").await?;
    assert!(add.stderr.contains("membership follows the StatefulSet"), "{}", add.stderr);

    // Status and health of every endpoint; one leader, the same on all.
    let status = json(&ep, &["endpoint", "status"]).await?;
    let statuses = status.as_array().context("statuses")?;
    assert_eq!(statuses.len(), 3);
    let leaders: std::collections::BTreeSet<u64> =
        statuses.iter().filter_map(|s| s["Status"]["leader"].as_u64()).collect();
    assert_eq!(leaders.len(), 1, "{status}");
    assert!(statuses.iter().all(|s| s["Status"]["version"] == "3.5.0" && s["Status"]["dbSize"].as_i64() > Some(0)));
    // etcdctl prints its health lines on stderr.
    let health = etcdctl(&ep, &["endpoint", "health"], "").await?;
    assert_eq!(health.code, Some(0), "{}", health.stderr);
    assert_eq!(health.stderr.matches("is healthy").count(), 3, "{}", health.stderr);

    // HashKV: every member, at one revision, hashes its keys alike.
    etcdctl(&ep, &["put", "hashed", "1"], "").await?.ok()?;
    let now = json(&ep, &["get", "hashed"]).await?["header"]["revision"].as_i64().context("revision")?;
    let hashes = wait::until("equal HashKV on every member", SETTLE, || async {
        let out = etcdctl(&ep, &["endpoint", "hashkv", &format!("--rev={now}")], "").await.ok()?.ok().ok()?;
        let hashes: std::collections::BTreeSet<&str> = out.lines().filter_map(|l| l.split(", ").nth(1)).collect();
        (out.lines().count() == 3 && hashes.len() == 1).then(|| out.clone())
    })
    .await?;
    assert!(!hashes.contains(", 0\n"), "{hashes}");

    // A snapshot through the etcd port is petkv's backup: a new set restored from it has the data.
    etcdctl(&ep, &["put", "kept", "yes"], "").await?.ok()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("snap.db");
    let first = cluster.etcd_addr(0);
    let saved = etcdctl(&first, &["snapshot", "save", &file.display().to_string()], "").await?.ok()?;
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    cluster.down().await?;
    let mut restored = Cluster::new(ClusterSpec { replicas: 1, voters: 1, etcd: true, ..Default::default() })?;
    let pod0 = petkv::pod::identity::parse_hostname("petkv-0")?;
    petkv::recovery::restore::stage(&file, &restored.volume(0), &pod0, false)?;
    restored.start_all()?;
    restored.wait_healthy(SETTLE).await?;
    let ep = endpoints(&restored);
    assert_eq!(etcdctl(&ep, &["get", "kept"], "").await?.ok()?, "kept\nyes\n");
    restored.down().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_users_are_the_tokens_files_lines() -> anyhow::Result<()> {
    use petkv_harness::auth::{USER_READ, USER_WRITE};
    let mut cluster = petkv_e2e::healthy(ClusterSpec { etcd: true, auth: true, ..Default::default() }).await?;
    let ep = endpoints(&cluster);
    let auth = cluster.auth().context("auth")?.clone();
    let writer = format!("--user={USER_WRITE}:{}", auth.write);
    let reader = format!("--user={USER_READ}:{}", auth.read);
    assert_eq!(etcdctl(&ep, &[&writer, "put", "k", "v"], "").await?.ok()?, "OK\n");
    assert_eq!(etcdctl(&ep, &[&reader, "get", "k"], "").await?.ok()?, "k\nv\n");
    let denied = etcdctl(&ep, &[&reader, "put", "k", "w"], "").await?;
    assert!(denied.code != Some(0) && denied.stderr.contains("PermissionDenied"), "{}", denied.stderr);
    let nobody = etcdctl(&ep, &["get", "k"], "").await?;
    assert!(nobody.code != Some(0) && nobody.stderr.contains("Unauthenticated"), "{}", nobody.stderr);
    let wrong = etcdctl(&ep, &[&format!("--user={USER_WRITE}:{}", auth.read), "get", "k"], "").await?;
    assert!(wrong.stderr.contains("authentication failed, invalid user ID or password"), "{}", wrong.stderr);
    // A token's lease keep-alives go to the leader with the token (a follower relays them).
    let id = json(&ep, &[&writer, "lease", "grant", "60"]).await?["ID"].as_i64().context("lease id")?;
    for o in cluster.ordinals() {
        let one = cluster.etcd_addr(o);
        let kept = etcdctl(&one, &[&writer, "lease", "keep-alive", "--once", &format!("{id:x}")], "").await?.ok()?;
        assert!(kept.contains("keepalived with TTL(60)"), "{kept}");
    }
    let users = etcdctl(&ep, &[&writer, "user", "add", "someone:pw"], "").await?;
    assert!(users.stderr.contains("may not call /etcdserverpb.Auth/UserAdd (needs admin)"), "{}", users.stderr);
    let admin = format!("--user={}:{}", petkv_harness::auth::HARNESS, auth.admin);
    let users = etcdctl(&ep, &[&admin, "user", "add", "someone:pw"], "").await?;
    assert!(users.stderr.contains("lines of its tokens file"), "{}", users.stderr);
    cluster.down().await
}

/// etcd's Rust client (the `etcd-client` crate) on the etcd port: watch ids per stream, filters,
/// cancel, a progress request, a compacted start revision; compares of every target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_crate_watches_and_compares() -> anyhow::Result<()> {
    use etcd_client::{Client, Compare, CompareOp, EventType, Txn, TxnOp, WatchFilterType, WatchOptions};
    let mut cluster = etcd_set().await?;
    let endpoints: Vec<String> = cluster.ordinals().iter().map(|o| cluster.etcd_addr(*o)).collect();
    let mut client = Client::connect(&endpoints, None).await?;
    let first = client.put("a", "1", None).await?.header().context("header")?.revision();
    client.put("a", "2", None).await?;

    // Two watches on one stream: ids 0 and 1; the second drops PUTs.
    let mut stream = client.watch("a", Some(WatchOptions::new().with_start_revision(first).with_prev_key())).await?;
    let created = stream.message().await?.context("created")?;
    assert!(created.created() && created.watch_id() == 0);
    stream.watch("a", Some(WatchOptions::new().with_filters([WatchFilterType::NoPut]))).await?;
    let mut puts = Vec::new();
    let mut second = None;
    while puts.len() < 2 || second.is_none() {
        let r = stream.message().await?.context("the stream ended")?;
        if r.created() {
            second = Some(r.watch_id());
            continue;
        }
        assert_eq!(r.watch_id(), 0, "{r:?}");
        puts.extend(r.events().iter().map(|e| e.kv().map(|kv| kv.value().to_vec())));
    }
    assert_eq!(second, Some(1));
    assert_eq!(puts, [Some(b"1".to_vec()), Some(b"2".to_vec())]);
    client.delete("a", None).await?;
    // The delete reaches both watches (the second one only sees deletes).
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let r = stream.message().await?.context("the stream ended")?;
        for e in r.events() {
            assert_eq!(e.event_type(), EventType::Delete);
            if r.watch_id() == 0 {
                assert_eq!(e.prev_kv().map(|kv| kv.value().to_vec()), Some(b"2".to_vec()), "prev_kv");
            }
            seen.insert(r.watch_id());
        }
    }
    stream.cancel(1).await?;
    let canceled = stream.message().await?.context("cancel answer")?;
    assert!(canceled.canceled() && canceled.watch_id() == 1);
    stream.request_progress().await?;
    let progress = stream.message().await?.context("progress")?;
    assert_eq!(progress.watch_id(), -1);
    assert!(progress.header().is_some_and(|h| h.revision() > first));

    // Compares on every target, and the failure branch.
    let now = client.put("c", "v", None).await?.header().context("header")?.revision();
    let holds = Txn::new()
        .when([
            Compare::value("c", CompareOp::Equal, "v"),
            Compare::version("c", CompareOp::Equal, 1),
            Compare::mod_revision("c", CompareOp::Equal, now),
            Compare::create_revision("c", CompareOp::Less, now + 1),
            Compare::lease("c", CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put("c", "w", None)])
        .or_else([TxnOp::get("c", None)]);
    assert!(client.txn(holds).await?.succeeded());
    let fails = Txn::new()
        .when([Compare::version("c", CompareOp::Greater, 5)])
        .and_then([TxnOp::put("c", "x", None)])
        .or_else([TxnOp::get("c", None)]);
    let r = client.txn(fails).await?;
    assert!(!r.succeeded());
    let got = match r.op_responses().first() {
        Some(etcd_client::TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.value().to_vec()),
        other => anyhow::bail!("expected a range answer, got {other:?}"),
    };
    assert_eq!(got, Some(b"w".to_vec()));

    // A compare over a range, and a transaction inside the transaction.
    client.put("r/a", "1", None).await?;
    client.put("r/b", "1", None).await?;
    let nested = Txn::new()
        .when([Compare::version("r/a", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("inner", "yes", None)])
        .or_else([TxnOp::put("inner", "no", None)]);
    let outer = Txn::new()
        .when([Compare::version("r/", CompareOp::Equal, 1).with_prefix()])
        .and_then([TxnOp::put("r/a", "2", None), TxnOp::txn(nested)]);
    let r = client.txn(outer).await?;
    assert!(r.succeeded());
    match r.op_responses().get(1) {
        Some(etcd_client::TxnOpResponse::Txn(inner)) => assert!(inner.succeeded(), "decided before r/a changed"),
        other => anyhow::bail!("expected a nested answer, got {other:?}"),
    }
    let inner = client.get("inner", None).await?;
    assert_eq!(inner.kvs().first().map(|kv| kv.value().to_vec()), Some(b"yes".to_vec()));
    let over_range = Txn::new()
        .when([Compare::version("r/", CompareOp::Equal, 1).with_prefix()])
        .and_then([TxnOp::put("never", "x", None)]);
    assert!(!client.txn(over_range).await?.succeeded(), "r/a has version 2 now");
    let now = client.get("r/a", None).await?.header().context("header")?.revision();

    // A watch from a compacted revision is canceled with the compaction revision.
    client.compact(now, None).await?;
    let mut old = client.watch("c", Some(WatchOptions::new().with_start_revision(first))).await?;
    let mut answer = old.message().await?.context("answer")?;
    if answer.created() && !answer.canceled() {
        answer = old.message().await?.context("cancel")?;
    }
    assert!(answer.canceled() && answer.compact_revision() == now, "{answer:?}");
    cluster.down().await
}

/// The etcd port speaks TLS when the client port does, with the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_over_tls() -> anyhow::Result<()> {
    let mut cluster = petkv_e2e::healthy(ClusterSpec { etcd: true, tls: true, ..Default::default() }).await?;
    let ep = endpoints(&cluster);
    let ca = format!("--cacert={}", cluster.tls().context("tls")?.ca().display());
    assert_eq!(etcdctl(&ep, &[&ca, "put", "k", "v"], "").await?.ok()?, "OK\n");
    assert_eq!(etcdctl(&ep, &[&ca, "get", "k"], "").await?.ok()?, "k\nv\n");
    let plaintext = etcdctl(&ep, &["--dial-timeout=2s", "--command-timeout=3s", "get", "k"], "").await?;
    assert_ne!(plaintext.code, Some(0), "a plaintext client is not served: {}", plaintext.stdout);
    cluster.down().await
}
