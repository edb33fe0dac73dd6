//! The checks after the workload stopped: stale reads on every member agree with a
//! linearizable read ([`reads_agree`]), every pod kept its identity ([`identities_hold`]), which
//! pods did not start again ([`not_ready`]), every pod is in the cluster it was in before the
//! fault ([`same_cluster`]), and the longest time without a successful write
//! ([`longest_gap`]); [`members`] runs the checks of the members every experiment ends with.

use petkv_client::pb::v1::Consistency;

use super::CONVERGE;
use crate::digest::{self, Convergence};
use crate::workload::WorkloadSpec;
use crate::{wait, Cluster};

/// What the members look like once the workload stopped.
pub(super) struct MemberChecks {
    pub convergence: Convergence,
    pub reads_agree: bool,
    pub identity_kept: bool,
    /// Every pod is in cluster `cluster_id`.
    pub one_cluster: bool,
}

/// Digests compared on every member, stale reads against a linearizable one, identities, and
/// one cluster `cluster_id`; what could not be checked or differs goes to `notes`.
pub(super) async fn members(
    cluster: &Cluster,
    workload: &WorkloadSpec,
    cluster_id: &str,
    notes: &mut Vec<String>,
) -> MemberChecks {
    let convergence = digest::compare(cluster, CONVERGE).await;
    let reads_agree = reads_agree(cluster, workload).await.unwrap_or_else(|e| {
        notes.push(format!("reads could not be compared: {e:#}"));
        false
    });
    let identity_kept = identities_hold(cluster).await.unwrap_or_else(|e| {
        notes.push(format!("identities could not be checked: {e:#}"));
        false
    });
    let one_cluster = match same_cluster(cluster, cluster_id).await {
        Ok(others) => {
            notes.extend(others.iter().map(|o| format!("not cluster {cluster_id}: {o}")));
            others.is_empty()
        }
        Err(e) => {
            notes.push(format!("cluster ids could not be compared: {e:#}"));
            false
        }
    };
    if !convergence.digests_equal {
        for m in &convergence.members {
            if let Some(e) = &m.error {
                notes.push(format!("petkv-{}: no digest: {e}", m.ordinal));
            }
        }
        notes.extend(convergence.error.iter().cloned());
        for o in &convergence.divergent {
            let log = cluster.pod(*o).map(|p| p.log_tail(10)).unwrap_or_default();
            notes.push(format!("petkv-{o} diverges; its log ends:\n{log}"));
        }
    }
    MemberChecks { convergence, reads_agree, identity_kept, one_cluster }
}

/// Every pod that is not running or not ready, with the end of its log.
pub(super) async fn not_ready(cluster: &mut Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for o in cluster.ordinals() {
        let exited = cluster.pod_mut(o).ok().and_then(|p| p.reap());
        let running = cluster.pod_mut(o).is_ok_and(|p| p.is_running());
        let ready = cluster.status(o).await.is_ok_and(|s| s.ready);
        if ready {
            continue;
        }
        let state = match (exited, running) {
            (Some(status), _) => format!("exited ({status})"),
            (None, true) => "running but not ready".to_string(),
            (None, false) => "not running".to_string(),
        };
        let log = cluster.pod(o).map(|p| p.log_tail(20)).unwrap_or_default();
        out.push(format!("petkv-{o} did not start again: {state}; its log ends:\n{log}"));
    }
    out
}

/// Longest stretch in `[from, to]` without a successful write.
pub fn longest_gap(successes: &[u64], from: u64, to: u64) -> u64 {
    let mut times: Vec<u64> = successes.iter().copied().filter(|t| *t >= from && *t <= to).collect();
    times.sort_unstable();
    let mut last = from;
    let mut gap = 0;
    for t in times.into_iter().chain([to]) {
        gap = gap.max(t - last);
        last = t;
    }
    gap
}

/// Every member applied the same data: after each has applied the leader's index, stale reads
/// of every key on each member agree with a linearizable read.
pub(super) async fn reads_agree(cluster: &Cluster, workload: &WorkloadSpec) -> anyhow::Result<bool> {
    let client = cluster.client()?;
    let mut truth = Vec::new();
    for k in 0..workload.keys {
        let key = format!("key-{k}");
        truth.push(client.get(key.as_bytes(), Consistency::Linearizable).await?.kv.map(|kv| kv.value.to_vec()));
    }
    let target = cluster.status(cluster.wait_leader(CONVERGE).await?).await?.applied_index;
    for o in cluster.ordinals() {
        wait::until(&format!("petkv-{o} to apply {target}"), CONVERGE, || async {
            (cluster.status(o).await.ok()?.applied_index >= target).then_some(())
        })
        .await?;
        let pod = cluster.client_of(o)?;
        for (k, want) in truth.iter().enumerate() {
            let got = pod.get(format!("key-{k}").as_bytes(), Consistency::Stale).await?.kv.map(|kv| kv.value.to_vec());
            if &got != want {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Every pod that does not report cluster `id`, with the one it reports.
pub(super) async fn same_cluster(cluster: &Cluster, id: &str) -> anyhow::Result<Vec<String>> {
    let mut others = Vec::new();
    for o in cluster.ordinals() {
        let s = cluster.status(o).await?;
        if s.cluster_id != id {
            others.push(format!("petkv-{o} reports cluster {:?}", s.cluster_id));
        }
    }
    Ok(others)
}

/// Every pod's status agrees with its hostname and with the identity record on its volume.
pub(super) async fn identities_hold(cluster: &Cluster) -> anyhow::Result<bool> {
    for o in cluster.ordinals() {
        let s = cluster.status(o).await?;
        let Some(record) = petkv::pod::identity::load(&cluster.volume(o))? else { return Ok(false) };
        let ok = s.hostname == format!("petkv-{o}")
            && s.ordinal == o
            && record.node_id == s.node_id
            && petkv::raft::ordinal_of(s.node_id) == o;
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_gap_counts_from_the_fault_to_the_end() {
        assert_eq!(longest_gap(&[1, 5, 6, 20], 2, 25), 14);
        assert_eq!(longest_gap(&[], 2, 25), 23);
        assert_eq!(longest_gap(&[30], 0, 10), 10);
    }
}
