//! `petkv-harness demo`: the README's main command.
//!
//! Starts a 3-pod set, writes data, kills the primary and shows the failover, brings it back
//! with the same identity and volume, wipes a follower's volume and shows it rejoin under a new
//! node id, scales to 5 (two read replicas) and back to 3, hands leadership over with SIGTERM,
//! restarts every pod, and then verifies:
//! identity (hostname ↔ ordinal ↔ node id ↔ volume) and data (every acknowledged write present
//! on every member). Each step is printed with its timing; the verdict is a table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use petkv_client::pb::v1::Consistency;
use petkv_client::Client;

use crate::{wait, Cluster, ClusterSpec};

/// Bound for every wait in the demo.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys written before the faults start.
const KEYS: usize = 200;

/// The outcome of a demo run.
#[derive(Debug)]
pub struct DemoReport {
    pub steps: Vec<(String, Duration)>,
    pub identity_ok: bool,
    pub data_ok: bool,
    pub acknowledged_writes: usize,
}

fn step(steps: &mut Vec<(String, Duration)>, started: Instant, what: String) {
    let took = started.elapsed();
    println!("  ✔ {what}  ({} ms)", took.as_millis());
    steps.push((what, took));
}

fn pod_name(id: u64) -> String {
    petkv::raft::node_label("petkv", id)
}

async fn first_successful_write(
    client: &Client,
    key: &str,
    acked: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let value = format!("v-{key}");
    client.put(key.as_bytes(), value.as_bytes(), None).await.with_context(|| format!("write {key}"))?;
    acked.insert(key.to_string(), value);
    Ok(())
}

/// Runs the demo against `cluster` (which must not be started yet).
pub async fn run(cluster: &mut Cluster) -> anyhow::Result<DemoReport> {
    let mut steps = Vec::new();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    println!("petkv demo: a 3-pod StatefulSet on loopback, state in {}", cluster.state_dir().display());

    let t = Instant::now();
    cluster.start_all()?;
    let leader = cluster.wait_healthy(STEP_TIMEOUT).await?;
    step(&mut steps, t, format!("3 pods started in parallel; petkv-0 bootstrapped, petkv-{leader} leads"));
    let ids: BTreeMap<u32, u64> = {
        let mut m = BTreeMap::new();
        for o in cluster.ordinals() {
            m.insert(o, cluster.status(o).await?.node_id);
        }
        m
    };

    let client = cluster.client()?;
    let t = Instant::now();
    for i in 0..KEYS {
        first_successful_write(&client, &format!("key-{i:04}"), &mut acked).await?;
    }
    step(&mut steps, t, format!("{KEYS} keys written and acknowledged"));

    let leader = cluster.wait_leader(STEP_TIMEOUT).await?;
    let t = Instant::now();
    cluster.kill(leader).await?;
    first_successful_write(&client, "after-kill", &mut acked).await?;
    let new_leader = cluster.wait_leader(STEP_TIMEOUT).await?;
    step(
        &mut steps,
        t,
        format!(
            "kill -9 petkv-{leader} (the leader): petkv-{new_leader} took over; first write after the kill succeeded"
        ),
    );

    let t = Instant::now();
    cluster.start(leader)?;
    let back = cluster.wait_member(leader, STEP_TIMEOUT).await?;
    ensure!(back.node_id == ids[&leader], "petkv-{leader} came back as {} instead of {}", back.node_id, ids[&leader]);
    step(&mut steps, t, format!("petkv-{leader} restarted with its volume: same node id {}", pod_name(back.node_id)));

    let follower = (new_leader + 1) % 3;
    let t = Instant::now();
    cluster.kill(follower).await?;
    cluster.wipe_volume(follower)?;
    first_successful_write(&client, "while-wiped", &mut acked).await?;
    cluster.start(follower)?;
    let rejoined = cluster.wait_member(follower, STEP_TIMEOUT).await?;
    ensure!(rejoined.node_id != ids[&follower], "a wiped volume must not reuse its node id");
    let rejoined_id = rejoined.node_id;
    wait::until("the old incarnation to leave the membership", STEP_TIMEOUT, || async {
        let m = client.members().await.ok()?;
        (!m.members.iter().any(|m| m.node_id == ids[&follower])).then_some(())
    })
    .await?;
    step(
        &mut steps,
        t,
        format!(
            "petkv-{follower}'s volume wiped: it rejoined as {} (was {}), the old id was removed",
            pod_name(rejoined_id),
            pod_name(ids[&follower])
        ),
    );

    let t = Instant::now();
    cluster.scale(5).await?;
    cluster.wait_healthy(STEP_TIMEOUT).await?;
    first_successful_write(&client, "while-five", &mut acked).await?;
    let five = cluster.client()?.members().await?;
    let learners = five.members.iter().filter(|m| !m.voter).count();
    cluster.scale(3).await?;
    wait::until("the set to be back to 3 members", STEP_TIMEOUT, || async {
        (client.members().await.ok()?.members.len() == 3).then_some(())
    })
    .await?;
    step(&mut steps, t, format!(
        "scaled to 5 ({} voters, {learners} read replicas) and back to 3: petkv-4 and petkv-3 left the cluster before exiting",
        five.members.len() - learners
    ));

    let leader = cluster.wait_leader(STEP_TIMEOUT).await?;
    let t = Instant::now();
    let exit = cluster.terminate(leader).await?;
    first_successful_write(&client, "after-sigterm", &mut acked).await?;
    let exit = exit.map(|s| s.to_string()).unwrap_or_else(|| "killed after the grace period".into());
    step(&mut steps, t, format!("SIGTERM to the leader petkv-{leader}: leadership handed over, {exit}"));
    cluster.start(leader)?;
    cluster.wait_member(leader, STEP_TIMEOUT).await?;

    let t = Instant::now();
    cluster.down().await?;
    cluster.start_all()?;
    cluster.wait_healthy(STEP_TIMEOUT).await?;
    step(&mut steps, t, "every pod stopped and restarted: the cluster re-formed from its volumes".into());

    // Verdict: identity.
    let mut identity_table = Table::new();
    identity_table.load_preset(UTF8_FULL_CONDENSED);
    identity_table.set_header(vec!["pod", "hostname", "ordinal", "node id", "volume", "volume says", "ok"]);
    let mut identity_ok = true;
    for o in cluster.ordinals() {
        let s = cluster.status(o).await?;
        let record = petkv::pod::identity::load(&cluster.volume(o))?.context("volume has no identity")?;
        let expected_id = if o == follower { rejoined_id } else { ids[&o] };
        let ok = s.hostname == format!("petkv-{o}")
            && s.ordinal == o
            && s.node_id == expected_id
            && record.node_id == s.node_id
            && record.ordinal == o
            && record.cluster_id == s.cluster_id;
        identity_ok &= ok;
        identity_table.add_row(vec![
            format!("petkv-{o}"),
            s.hostname.clone(),
            s.ordinal.to_string(),
            pod_name(s.node_id),
            cluster.volume(o).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            format!("{}-{} / {}", record.set_name, record.ordinal, pod_name(record.node_id)),
            if ok { "yes".into() } else { "NO".into() },
        ]);
    }

    // Verdict: data. Every acknowledged write, on every member (stale reads after catch-up).
    let mut data_table = Table::new();
    data_table.load_preset(UTF8_FULL_CONDENSED);
    data_table.set_header(vec!["pod", "acknowledged writes present", "missing or wrong", "ok"]);
    let mut data_ok = true;
    let last_index =
        client.get(b"after-sigterm", Consistency::Linearizable).await?.header.map(|h| h.raft_index).unwrap_or(0);
    for o in cluster.ordinals() {
        wait::until(&format!("petkv-{o} to apply index {last_index}"), STEP_TIMEOUT, || async {
            (cluster.status(o).await.ok()?.applied_index >= last_index).then_some(())
        })
        .await?;
        let pod_client = cluster.client_of(o)?;
        let mut present = 0;
        let mut bad = Vec::new();
        for (k, v) in &acked {
            let got = pod_client.get(k.as_bytes(), Consistency::Stale).await?.kv.map(|kv| kv.value.to_vec());
            if got.as_deref() == Some(v.as_bytes()) {
                present += 1;
            } else {
                bad.push(k.clone());
            }
        }
        let ok = bad.is_empty();
        data_ok &= ok;
        data_table.add_row(vec![
            format!("petkv-{o}"),
            format!("{present}/{}", acked.len()),
            if bad.is_empty() { "-".into() } else { bad.join(", ") },
            if ok { "yes".into() } else { "NO".into() },
        ]);
    }
    println!("\nIdentity (hostname ↔ ordinal ↔ node id ↔ volume):\n{identity_table}");
    println!("\nData (every acknowledged write on every member):\n{data_table}");
    let verdict = if identity_ok && data_ok { "PASS" } else { "FAIL" };
    println!(
        "\nverdict: {verdict} — identity {}, data {}",
        if identity_ok { "kept" } else { "BROKEN" },
        if data_ok { "kept" } else { "LOST" }
    );
    Ok(DemoReport { steps, identity_ok, data_ok, acknowledged_writes: acked.len() })
}

/// Runs the demo on a fresh cluster in `state_dir` (or a temporary one).
pub async fn run_fresh(state_dir: Option<&std::path::Path>) -> anyhow::Result<DemoReport> {
    let spec = ClusterSpec::default();
    let mut cluster = match state_dir {
        Some(dir) => Cluster::in_dir(spec, dir)?,
        None => Cluster::new(spec)?,
    };
    let report = run(&mut cluster).await;
    cluster.down().await?;
    report
}
