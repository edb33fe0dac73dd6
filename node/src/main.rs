//! The `petkv` binary: `serve` runs a node, `wait-primary` is the init-container step, the
//! rest are client commands. Exit codes: 0 success, 1 error, 3 key not found or compare
//! failed, 4 outcome unknown (a write that may or may not have been applied).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use petkv::cli::output::{
    kv_json, print_kvs, print_members, print_reply, print_status, print_txn, print_watch_response,
};
use petkv::cli::{BackupArgs, CertsArgs, Cli, ClientArgs, Command, LeaseCommand, LogFormat, OutputFormat, RestoreArgs};
use petkv::raft::fence::FenceError;
use petkv::recovery::backup::BackupSummary;
use petkv::recovery::restore::StageOutcome;
use petkv_client::pb::v1::{PutRequest, ScanRequest, WatchRequest};
use petkv_client::{Client, ClientError, LeaseKeeper, Renewal};
use serde_json::json;

/// The node's allocator: jemalloc, measured against glibc malloc under the 64-client put
/// benchmark (docs/benchmarks.md): 10–18% less CPU per put, peak RSS within a few MiB of
/// glibc's. One arena (glibc keeps freed memory in up to 8 arenas per core), and dirty pages
/// returned after half a second by a background thread.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read by jemalloc itself at its first allocation (`malloc_conf`; the
/// `_RJEM_MALLOC_CONF` environment variable still overrides them).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[export_name = "_rjem_malloc_conf"]
#[used]
static JEMALLOC_OPTIONS: &[u8; 69] = b"background_thread:true,narenas:1,dirty_decay_ms:500,muzzy_decay_ms:0\0";

const EXIT_ERROR: u8 = 1;
const EXIT_NOT_FOUND_OR_COMPARE_FAILED: u8 = 3;
const EXIT_OUTCOME_UNKNOWN: u8 = 4;

/// What is logged unless `RUST_LOG` says otherwise. raft-log and its WAL (chunked-wal) log at
/// info on every flush of the Raft log (thousands of lines a second under writes, each
/// formatted on the flush thread), and openraft at info on every election and membership
/// step: only their warnings and errors are kept.
/// openraft logs a warning for every failed replication or heartbeat attempt (thousands a
/// second while a peer is down); the peer transport logs those itself, rate-limited
/// (`raft::peer_health`).
const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,openraft::replication=error,openraft::core::heartbeat=error,raft_log=warn,chunked_wal=warn";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        // One JSON object per line: timestamp, level, target, `fields` (with `message`), the
        // current span (`span`, e.g. the `node` span with the pod name) and all open `spans`.
        LogFormat::Json => builder.json().with_target(true).with_current_span(true).with_span_list(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn client(args: &ClientArgs) -> Result<Client, ClientError> {
    args.client()
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_interrupt() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Says that lease `id` is gone; the exit code for it.
fn lease_gone(id: u64) -> Result<u8, ClientError> {
    eprintln!("lease {id} expired or was revoked");
    Ok(EXIT_NOT_FOUND_OR_COMPARE_FAILED)
}

/// `petkv lease …`.
async fn run_lease(command: LeaseCommand) -> Result<u8, ClientError> {
    match command {
        LeaseCommand::Grant { ttl_seconds, id, client: args } => {
            let r = client(&args)?.lease_grant(id, ttl_seconds).await?;
            let human = format!("lease {} granted, TTL {} s", r.id, r.ttl_seconds);
            print_reply(args.output, &r.header, json!({"id": r.id, "ttl_seconds": r.ttl_seconds}), human);
            Ok(0)
        }
        LeaseCommand::KeepAlive { id, once, client: args } => {
            let c = client(&args)?;
            let print = |ttl: u64| match args.output {
                OutputFormat::Json => println!("{}", json!({"id": id, "ttl_seconds": ttl})),
                OutputFormat::Table => println!("lease {id} kept alive, TTL {ttl} s"),
            };
            if once {
                return match c.keep_alive().await?.renew(id).await? {
                    0 => lease_gone(id),
                    ttl => {
                        print(ttl);
                        Ok(0)
                    }
                };
            }
            // The first renewal says the TTL, which sets the pace of the ones after it.
            let ttl = match c.keep_alive().await?.renew(id).await? {
                0 => return lease_gone(id),
                ttl => ttl,
            };
            print(ttl);
            let mut keeper = LeaseKeeper::for_ttl(Arc::new(c), id, ttl);
            while let Some(renewal) = keeper.next().await {
                match renewal {
                    Renewal::Renewed { ttl_seconds, .. } => print(ttl_seconds),
                    Renewal::Failed(e) => eprintln!("keep-alive failed, trying again: {e}"),
                    Renewal::Ended(None) => return lease_gone(id),
                    Renewal::Ended(Some(e)) => return Err(e),
                }
            }
            Ok(0)
        }
        LeaseCommand::Revoke { id, client: args } => {
            let r = client(&args)?.lease_revoke(id).await?;
            let human = format!("lease {id} revoked, {} key(s) deleted", r.deleted);
            print_reply(args.output, &r.header, json!({"id": id, "deleted": r.deleted}), human);
            Ok(0)
        }
        LeaseCommand::Ttl { id, keys, client: args } => {
            let r = client(&args)?.lease_time_to_live(id, keys).await?;
            let names: Vec<String> = r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            let human = format!(
                "lease {id}: {:.1} s of {} s left{}",
                r.remaining_ms as f64 / 1000.0,
                r.granted_ttl_seconds,
                if keys { format!(", keys: {}", names.join(" ")) } else { String::new() }
            );
            let fields = json!({"id": id, "remaining_ms": r.remaining_ms, "granted_ttl_seconds": r.granted_ttl_seconds, "keys": names});
            print_reply(args.output, &r.header, fields, human);
            Ok(0)
        }
        LeaseCommand::List { client: args } => {
            let r = client(&args)?.leases().await?;
            let leases: Vec<_> = r.leases.iter().map(|l| json!({"id": l.id, "ttl_seconds": l.ttl_seconds})).collect();
            let human =
                r.leases.iter().map(|l| format!("{} (TTL {} s)", l.id, l.ttl_seconds)).collect::<Vec<_>>().join("\n");
            print_reply(args.output, &r.header, json!({"leases": leases}), human);
            Ok(0)
        }
    }
}

async fn run_client(command: Command) -> Result<u8, ClientError> {
    match command {
        Command::Put { key, value, if_mod_revision, lease, prev_kv, client: args } => {
            let msg = PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.as_bytes().to_vec().into(),
                if_mod_revision,
                lease: lease.unwrap_or(0),
                prev_kv,
                ..Default::default()
            };
            let r = client(&args)?.put_with(msg).await?;
            let kv = r.kv.as_ref();
            let mut human = if r.succeeded {
                format!("OK {key} version {}", kv.map(|k| k.version).unwrap_or(0))
            } else {
                format!("NOT WRITTEN: {key} has mod revision {}", kv.map(|k| k.mod_revision).unwrap_or(0))
            };
            let mut fields = json!({"succeeded": r.succeeded, "kv": kv.map(kv_json)});
            if prev_kv && r.succeeded {
                match &r.prev_kv {
                    Some(p) => human.push_str(&format!(
                        "\nprevious: {} (mod revision {}, version {})",
                        String::from_utf8_lossy(&p.value),
                        p.mod_revision,
                        p.version
                    )),
                    None => human.push_str("\nprevious: none (new key)"),
                }
                fields["prev_kv"] = r.prev_kv.as_ref().map(kv_json).into();
            }
            print_reply(args.output, &r.header, fields, human);
            Ok(if r.succeeded { 0 } else { EXIT_NOT_FOUND_OR_COMPARE_FAILED })
        }
        Command::Get { key, consistency, rev, client: args } => {
            let r = client(&args)?.get_at(key.as_bytes(), consistency.into(), rev).await?;
            let kvs: Vec<_> = r.kv.into_iter().collect();
            if kvs.is_empty() && args.output == petkv::cli::OutputFormat::Table {
                let h = r.header.unwrap_or_default();
                eprintln!(
                    "{key}: not found (revision {}, raft index {}, served by node {})",
                    h.revision, h.raft_index, h.served_by
                );
                return Ok(EXIT_NOT_FOUND_OR_COMPARE_FAILED);
            }
            print_kvs(args.output, &r.header, &kvs, &[]);
            Ok(if kvs.is_empty() { EXIT_NOT_FOUND_OR_COMPARE_FAILED } else { 0 })
        }
        Command::Delete { key, if_mod_revision, client: args } => {
            let r = client(&args)?.delete(key.as_bytes(), if_mod_revision).await?;
            let human = match (r.succeeded, r.deleted) {
                (false, _) => format!(
                    "NOT DELETED: {key} has mod revision {}",
                    r.previous.as_ref().map(|k| k.mod_revision).unwrap_or(0)
                ),
                (true, true) => format!("DELETED {key}"),
                (true, false) => format!("{key} did not exist"),
            };
            let fields =
                json!({"succeeded": r.succeeded, "deleted": r.deleted, "previous": r.previous.as_ref().map(kv_json)});
            print_reply(args.output, &r.header, fields, human);
            Ok(if r.succeeded && r.deleted { 0 } else { EXIT_NOT_FOUND_OR_COMPARE_FAILED })
        }
        Command::Scan { prefix, start, end, limit, all, consistency, rev, client: args } => {
            let c = client(&args)?;
            let mut req = ScanRequest {
                prefix: prefix.unwrap_or_default().into_bytes().into(),
                start_key: start.unwrap_or_default().into_bytes().into(),
                end_key: end.unwrap_or_default().into_bytes().into(),
                limit,
                page_token: Default::default(),
                consistency: petkv_client::pb::v1::Consistency::from(consistency) as i32,
                revision: rev,
            };
            let mut kvs = Vec::new();
            loop {
                let r = c.scan(req.clone()).await?;
                kvs.extend(r.kvs);
                if !all || r.next_page_token.is_empty() {
                    print_kvs(args.output, &r.header, &kvs, &r.next_page_token);
                    return Ok(0);
                }
                // Every page reads the state the first one read.
                req.revision = r.header.map_or(req.revision, |h| h.revision);
                req.page_token = r.next_page_token;
            }
        }
        Command::Watch { key, prefix, end, rev, prev_kv, progress_ms, max_events, client: args } => {
            let c = client(&args)?;
            let request = WatchRequest {
                key: key.into_bytes().into(),
                range_end: end.unwrap_or_default().into_bytes().into(),
                prefix,
                start_revision: rev,
                prev_kv,
                progress_interval_ms: progress_ms,
            };
            let mut watcher = petkv_client::Watcher::new(&c, request);
            let mut seen = 0u64;
            loop {
                let response = watcher.next().await?;
                print_watch_response(args.output, &response);
                seen += response.events.len() as u64;
                if max_events > 0 && seen >= max_events {
                    return Ok(0);
                }
            }
        }
        Command::Lease(lease) => run_lease(lease).await,
        Command::Elect { name, proposal, listen, ttl, client: args } => {
            let c = std::sync::Arc::new(client(&args)?);
            if listen {
                let mut shown: Option<Vec<u8>> = None;
                loop {
                    let (leader, at) = petkv_client::leader(&c, &name).await?;
                    let key = leader.as_ref().map(|(k, _)| k.clone());
                    if key != shown {
                        match &leader {
                            Some((_, value)) => println!("{}", String::from_utf8_lossy(value)),
                            None => eprintln!("{name}: no leader"),
                        }
                        shown = key;
                    }
                    petkv_client::next_leader_change(&c, &name, at).await?;
                }
            }
            let proposal = proposal.unwrap_or_default();
            let lead = petkv_client::Lock::acquire_with_value(c, &name, ttl, proposal.as_bytes()).await?;
            println!("{name}: elected with {proposal} (revision {})", lead.revision);
            wait_for_interrupt().await;
            lead.release().await?;
            Ok(0)
        }
        Command::Lock { name, ttl, command, client: args } => {
            let c = std::sync::Arc::new(client(&args)?);
            let lock = petkv_client::Lock::acquire(c, &name, ttl).await?;
            let key = String::from_utf8_lossy(&lock.key).into_owned();
            match args.output {
                OutputFormat::Json => {
                    println!("{}", json!({"key": key, "lease": lock.lease, "revision": lock.revision}))
                }
                OutputFormat::Table => println!("{key} holds the lock (revision {})", lock.revision),
            }
            let code = match command.split_first() {
                Some((program, rest)) => match tokio::process::Command::new(program).args(rest).status().await {
                    Ok(status) => status.code().unwrap_or(1).clamp(0, 255) as u8,
                    Err(e) => {
                        eprintln!("petkv lock: cannot run {program}: {e}");
                        1
                    }
                },
                None => {
                    wait_for_interrupt().await;
                    0
                }
            };
            lock.release().await?;
            Ok(code)
        }
        Command::Compact { revision, client: args } => {
            let r = client(&args)?.compact(revision).await?;
            let human = format!("history before revision {} dropped", r.compacted);
            print_reply(args.output, &r.header, json!({"compacted": r.compacted}), human);
            Ok(0)
        }
        Command::Txn { file, client: args } => {
            let request = match read_txn(file.as_deref()) {
                Ok(request) => request,
                Err(e) => {
                    eprintln!("petkv txn: {e}");
                    return Ok(EXIT_ERROR);
                }
            };
            let r = client(&args)?.txn(request.clone()).await?;
            print_txn(args.output, &request, &r);
            Ok(if r.succeeded { 0 } else { EXIT_NOT_FOUND_OR_COMPARE_FAILED })
        }
        Command::Status { client: args } => {
            print_status(args.output, &client(&args)?.status().await?);
            Ok(0)
        }
        Command::Scale { replicas, client: args } => {
            let r = client(&args)?.scale(replicas).await?;
            print_reply(
                args.output,
                &r.header,
                json!({"replicas": r.replicas}),
                format!("declared replicas: {}", r.replicas),
            );
            Ok(0)
        }
        Command::Members { client: args } => {
            print_members(args.output, &client(&args)?.members().await?);
            Ok(0)
        }
        Command::Serve(_) | Command::WaitPrimary(_) | Command::Backup(_) | Command::Restore(_) | Command::Certs(_) => {
            unreachable!("handled in main")
        }
    }
}

/// The transaction of `petkv txn`, from `file` or (none or `-`) stdin. Errors read as
/// `cannot read …` or `line 3: …`, printed after `petkv txn: `.
fn read_txn(file: Option<&std::path::Path>) -> Result<petkv_client::pb::v1::TxnRequest, String> {
    use std::io::{IsTerminal, Read};
    let input = match file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
        _ => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "compares, a blank line, the success operations, a blank line, the failure operations; \
                     end with Ctrl-D"
                );
            }
            let mut input = String::new();
            stdin.read_to_string(&mut input).map_err(|e| format!("cannot read stdin: {e}"))?;
            input
        }
    };
    petkv::cli::txn::parse(&input).map_err(|e| e.to_string())
}

/// The exit status of a `serve` that failed: a replaced process has its own, so that whoever
/// restarts it can tell (it will refuse again on the same volume).
fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<FenceError>() {
        Some(FenceError::Replaced { .. }) => ExitCode::from(petkv::raft::fence::EXIT_REPLACED as u8),
        _ => ExitCode::from(EXIT_ERROR),
    }
}

fn report(result: anyhow::Result<()>, what: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn print_backup(output: OutputFormat, summary: &BackupSummary, removed: &[std::path::PathBuf], verb: &str) {
    match output {
        OutputFormat::Json => println!("{}", json!({"backup": summary, "removed": removed})),
        OutputFormat::Table => {
            println!(
                "{verb} {}: raft index {} (term {}), {} keys, {} bytes, crc32 {}",
                summary.path.display(),
                summary.raft_index,
                summary.term,
                summary.keys,
                summary.bytes,
                summary.checksum
            );
            for path in removed {
                println!("removed old backup {}", path.display());
            }
        }
    }
}

async fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let deadline = std::time::Duration::from_secs(args.deadline_secs);
    let client = args.client.client_with_timeout(deadline)?;
    let (summary, removed) = match (&args.out, &args.out_dir) {
        (Some(out), _) => (petkv::recovery::backup::take(&client, out, deadline).await?, Vec::new()),
        (None, Some(dir)) => petkv::recovery::backup::take_into_dir(&client, dir, args.keep as usize, deadline).await?,
        (None, None) => anyhow::bail!("say where the backup goes: --out FILE or --out-dir DIR"),
    };
    print_backup(args.client.output, &summary, &removed, "backup");
    Ok(())
}

fn print_written(out: &std::path::Path, written: &petkv::edge::tls::certs::Written) {
    let ca = out.join(petkv::edge::tls::certs::CA_CERT);
    if written.new_ca {
        println!("new CA {} (keep {} out of the cluster)", ca.display(), petkv::edge::tls::certs::CA_KEY);
    } else {
        println!("issued with the existing CA {}", ca.display());
    }
    for path in &written.files {
        println!("wrote {}", path.display());
    }
}

fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    if !args.clients.is_empty() {
        let written = petkv::edge::tls::certs::write_clients(&args.out, &args.clients, args.days, args.existing())?;
        print_written(&args.out, &written);
        for name in &args.clients {
            println!("give it a role with a line `cert:{name} ROLE` in the tokens file (--auth-tokens)");
        }
        return Ok(());
    }
    let spec = args.spec();
    let written = petkv::edge::tls::certs::write_set(&args.out, &spec)?;
    print_written(&args.out, &written);
    let ca = args.out.join(petkv::edge::tls::certs::CA_CERT);
    println!("pods' peer domain: {} (their --peer-domain)", spec.peer_domain());
    let from = |path: std::path::PathBuf| format!(" --from-file={}", path.display());
    let mut pods = format!("kubectl -n {} create secret generic {}-tls{}", spec.namespace, spec.set, from(ca.clone()));
    for o in 0..spec.replicas {
        let (cert, key) = petkv::edge::tls::certs::pod_files(&args.out, &spec.set, o);
        pods.push_str(&(from(cert) + &from(key)));
    }
    let client = format!(
        "kubectl -n {} create secret generic {}-client-tls{}{}{}",
        spec.namespace,
        spec.set,
        from(ca),
        from(args.out.join(petkv::edge::tls::certs::CLIENT_CERT)),
        from(args.out.join(petkv::edge::tls::certs::CLIENT_KEY))
    );
    println!("the Secrets deploy/tls mounts:\n  {pods}\n  {client}");
    Ok(())
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let hostname = petkv::cli::hostname_or_machines(args.hostname.as_deref());
    let pod = petkv::pod::identity::parse_hostname(&hostname)?;
    match petkv::recovery::restore::stage(&args.from, &args.data_dir, &pod, args.if_empty)? {
        StageOutcome::Staged(summary) => {
            print_backup(args.output, &summary, &[], "staged");
            if args.output == OutputFormat::Table {
                println!("{pod}: the next `petkv serve` on this volume starts a new cluster from the backup");
            }
        }
        StageOutcome::NotPrimary => {
            println!(
                "{pod}: not ordinal 0; nothing to stage (this pod joins the restored primary with an empty volume)"
            )
        }
        StageOutcome::AlreadyRestored(what) => println!(
            "{pod}: volume {} already holds the cluster restored from this backup ({what}); left alone",
            args.data_dir.display()
        ),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // `serve` owns its runtime: it seals the store once the runtime is gone.
        Command::Serve(args) => {
            init_logging(args.log_format);
            let result = args.to_config().and_then(petkv::pod::server::serve);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // With JSON logs the fatal error is a log line too, so every line parses.
                    match args.log_format {
                        LogFormat::Json => tracing::error!(error = format!("{e:#}"), "petkv: {e:#}"),
                        LogFormat::Text => eprintln!("petkv: {e:#}"),
                    }
                    exit_code_of(&e)
                }
            }
        }
        command => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(run_command(command)),
            Err(e) => {
                eprintln!("petkv: cannot start the tokio runtime: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

/// Every command but `serve`.
async fn run_command(command: Command) -> ExitCode {
    match command {
        Command::WaitPrimary(args) => {
            let result = async {
                let id = &args.identity;
                let timeout = args.timeout_secs.map(std::time::Duration::from_secs);
                let tls = args.peer_tls.dialer()?;
                petkv::pod::boot::wait_primary(&id.data_dir, &id.pod()?, &id.peers()?, tls, timeout).await
            }
            .await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("petkv wait-primary: {e:#}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Backup(args) => report(backup(&args).await, "petkv backup"),
        Command::Restore(args) => report(restore(&args), "petkv restore"),
        Command::Certs(args) => report(certs(&args), "petkv certs"),
        command => match run_client(command).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("petkv: {e}");
                ExitCode::from(if matches!(e, ClientError::OutcomeUnknown(_)) {
                    EXIT_OUTCOME_UNKNOWN
                } else {
                    EXIT_ERROR
                })
            }
        },
    }
}
