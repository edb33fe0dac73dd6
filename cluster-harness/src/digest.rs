//! Convergence by digest: every member's whole state machine, compared at one applied index.
//!
//! Reading a few keys on each member finds a replica that lost a key the workload wrote last,
//! not one that diverged somewhere else (an older mod revision, a key the others deleted). So
//! after an experiment, with the workload stopped, [`compare`] waits until every member has
//! applied the leader's index and that index stays put, then scans each member's whole
//! keyspace with stale reads (served from that member's own state machine) and hashes it:
//! SHA-256 over every key's key, value and mod revision, in key order, plus the key count.
//! Members that applied the same log hold the same state, so the digests must be equal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use petkv_client::pb::v1::{Consistency, ScanRequest};
use petkv_client::Client;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Cluster;

/// Keys per scan page.
const PAGE: u32 = 1000;
/// How many consecutive polls must see the same applied index everywhere.
const STABLE_POLLS: usize = 3;
const POLL: Duration = Duration::from_millis(100);

/// A digest of a state: key count and SHA-256 over (key, value, mod revision) in key order,
/// whatever order and page sizes the entries arrived in.
#[derive(Debug, Default, Clone)]
pub struct StateDigest {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
}

impl StateDigest {
    /// Adds a key; a key seen twice keeps its last value (pages never overlap).
    pub fn add(&mut self, key: &[u8], value: &[u8], mod_revision: u64) {
        self.entries.insert(key.to_vec(), (value.to_vec(), mod_revision));
    }

    pub fn key_count(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The SHA-256, hex. Lengths are hashed before bytes, so no two states share an input.
    pub fn hex(&self) -> String {
        let mut h = Sha256::new();
        h.update((self.entries.len() as u64).to_be_bytes());
        for (key, (value, mod_revision)) in &self.entries {
            h.update((key.len() as u64).to_be_bytes());
            h.update(key);
            h.update((value.len() as u64).to_be_bytes());
            h.update(value);
            h.update(mod_revision.to_be_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One member's row.
#[derive(Debug, Clone, Serialize)]
pub struct MemberDigest {
    pub ordinal: u32,
    pub node_id: u64,
    /// `petkv-2#1`.
    pub node: String,
    /// The applied index the scan was served at (every page's reply header).
    pub applied_index: u64,
    pub key_count: u64,
    /// The first 16 hex digits of the SHA-256.
    pub digest: String,
    /// Why this member has no digest (it did not answer, or its index moved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every member's digest at one applied index.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Convergence {
    /// The index every member had applied when scanned (0 if they never agreed on one).
    pub applied_index: u64,
    pub members: Vec<MemberDigest>,
    /// True when every member has a digest and they are all equal.
    pub digests_equal: bool,
    /// Members whose digest differs from the most common one, or that have none.
    pub divergent: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Scans a member's whole keyspace (stale reads: its own state machine) into a digest.
/// Returns the digest and the smallest and largest applied index the pages were served at.
pub async fn scan(client: &Client) -> anyhow::Result<(StateDigest, u64, u64)> {
    let mut digest = StateDigest::default();
    let (mut lo, mut hi) = (u64::MAX, 0);
    let mut token = Vec::new();
    loop {
        let page = client
            .scan(ScanRequest {
                limit: PAGE,
                page_token: token.clone().into(),
                consistency: Consistency::Stale as i32,
                ..Default::default()
            })
            .await?;
        let index = page.header.map(|h| h.raft_index).unwrap_or(0);
        lo = lo.min(index);
        hi = hi.max(index);
        for kv in &page.kvs {
            digest.add(&kv.key, &kv.value, kv.mod_revision);
        }
        if page.next_page_token.is_empty() {
            return Ok((digest, lo, hi));
        }
        token = page.next_page_token.to_vec();
    }
}

/// Waits until every member's applied index equals the leader's and stays put (the workload
/// must be stopped), then digests every member at that index. Never fails: what could not be
/// done within `timeout` is in the rows' and the result's `error`.
pub async fn compare(cluster: &Cluster, timeout: Duration) -> Convergence {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt made");
    while Instant::now() < deadline {
        let index = match settled_index(cluster, deadline).await {
            Ok(i) => i,
            Err(e) => {
                last_error = format!("{e:#}");
                break;
            }
        };
        match digest_all(cluster, index).await {
            Ok(c) => return c,
            Err(e) => last_error = format!("{e:#}"), // an index moved: settle again
        }
    }
    // Out of time: whatever each member says, so the report shows who is missing.
    let mut members = Vec::new();
    for o in cluster.ordinals() {
        members.push(match one(cluster, o, None).await {
            Ok(row) => row,
            Err(e) => empty_row(cluster, o, format!("{e:#}")),
        });
    }
    let mut c = summarize(0, members);
    c.digests_equal = false;
    c.error = Some(format!("members did not settle at one applied index within {timeout:?}: {last_error}"));
    c
}

/// The applied index every member reports, the leader's, unchanged over several polls.
async fn settled_index(cluster: &Cluster, deadline: Instant) -> anyhow::Result<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let mut why = String::from("no poll yet");
    loop {
        match poll_indexes(cluster).await {
            Ok(index) => {
                if seen.last().is_some_and(|i| *i != index) {
                    seen.clear();
                }
                seen.push(index);
                if seen.len() >= STABLE_POLLS {
                    return Ok(index);
                }
            }
            Err(e) => {
                seen.clear();
                why = e;
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("no settled applied index: {why}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Ok(index)` when every member reports the leader's applied index.
async fn poll_indexes(cluster: &Cluster) -> Result<u64, String> {
    let mut leader = None;
    let mut applied = BTreeMap::new();
    for o in cluster.ordinals() {
        let s = cluster.status(o).await.map_err(|e| format!("petkv-{o} does not answer: {e}"))?;
        if s.role == "leader" {
            leader = Some(s.applied_index);
        }
        applied.insert(o, s.applied_index);
    }
    let index = leader.ok_or("no leader")?;
    match applied.iter().find(|(_, i)| **i != index) {
        Some((o, i)) => Err(format!("petkv-{o} applied {i}, the leader {index}")),
        None => Ok(index),
    }
}

async fn digest_all(cluster: &Cluster, index: u64) -> anyhow::Result<Convergence> {
    let mut members = Vec::new();
    for o in cluster.ordinals() {
        members.push(one(cluster, o, Some(index)).await?);
    }
    Ok(summarize(index, members))
}

/// One member's row; with `at`, fails if the scan was not served at exactly that index.
async fn one(cluster: &Cluster, ordinal: u32, at: Option<u64>) -> anyhow::Result<MemberDigest> {
    let status = cluster.status(ordinal).await?;
    let client = cluster.client_for(&[cluster.client_addr(ordinal)], Duration::from_secs(10))?;
    let (digest, lo, hi) = scan(&client).await?;
    if let Some(at) = at {
        anyhow::ensure!(lo == at && hi == at, "petkv-{ordinal} moved from {at} to {lo}..{hi} while it was scanned");
    }
    let hex = digest.hex();
    Ok(MemberDigest {
        ordinal,
        node_id: status.node_id,
        node: petkv::raft::node_label(&cluster.spec.set, status.node_id),
        applied_index: hi,
        key_count: digest.key_count(),
        digest: hex[..16].to_string(),
        error: None,
    })
}

fn empty_row(cluster: &Cluster, ordinal: u32, error: String) -> MemberDigest {
    MemberDigest {
        ordinal,
        node_id: 0,
        node: format!("{}-{ordinal}", cluster.spec.set),
        applied_index: 0,
        key_count: 0,
        digest: String::new(),
        error: Some(error),
    }
}

/// Digests equal, and which members differ from the reference: the most common digest.
pub fn summarize(applied_index: u64, members: Vec<MemberDigest>) -> Convergence {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for m in members.iter().filter(|m| m.error.is_none()) {
        *counts.entry(m.digest.as_str()).or_default() += 1;
    }
    let reference = counts.iter().max_by_key(|(_, n)| **n).map(|(d, _)| d.to_string()).unwrap_or_default();
    let divergent: Vec<u32> =
        members.iter().filter(|m| m.error.is_some() || m.digest != reference).map(|m| m.ordinal).collect();
    let digests_equal = !members.is_empty() && divergent.is_empty();
    Convergence { applied_index, members, digests_equal, divergent, error: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(pages: &[&[(&str, &str, u64)]]) -> StateDigest {
        let mut d = StateDigest::default();
        for page in pages {
            for (k, v, i) in *page {
                d.add(k.as_bytes(), v.as_bytes(), *i);
            }
        }
        d
    }

    #[test]
    fn the_digest_does_not_depend_on_pages_or_their_order() {
        let (a, b, c) = (("key-0", "x", 3), ("key-1", "y", 7), ("key-2", "z", 9));
        let one_page = digest_of(&[&[a, b, c]]);
        let pages = digest_of(&[&[a], &[b, c]]);
        let reversed = digest_of(&[&[b, c], &[a]]);
        let shuffled = digest_of(&[&[c, a], &[b]]);
        assert_eq!(one_page.hex(), pages.hex());
        assert_eq!(one_page.hex(), reversed.hex());
        assert_eq!(one_page.hex(), shuffled.hex());
        assert_eq!(one_page.key_count(), 3);
        assert_eq!(one_page.hex().len(), 64);
    }

    #[test]
    fn a_differing_value_mod_revision_or_key_changes_the_digest() {
        let base = digest_of(&[&[("key-0", "x", 3), ("key-1", "y", 7)]]).hex();
        assert_ne!(base, digest_of(&[&[("key-0", "x", 3), ("key-1", "Y", 7)]]).hex(), "value");
        assert_ne!(base, digest_of(&[&[("key-0", "x", 3), ("key-1", "y", 8)]]).hex(), "mod revision");
        assert_ne!(base, digest_of(&[&[("key-0", "x", 3), ("key-2", "y", 7)]]).hex(), "key");
        assert_ne!(base, digest_of(&[&[("key-0", "x", 3)]]).hex(), "a missing key");
        // Lengths are hashed: moving a byte from the key to the value is another state.
        assert_ne!(digest_of(&[&[("ab", "c", 1)]]).hex(), digest_of(&[&[("a", "bc", 1)]]).hex());
        assert_eq!(StateDigest::default().key_count(), 0);
    }

    fn row(ordinal: u32, digest: &str) -> MemberDigest {
        MemberDigest {
            ordinal,
            node_id: u64::from(ordinal) << 32,
            node: format!("petkv-{ordinal}#0"),
            applied_index: 10,
            key_count: 1,
            digest: digest.into(),
            error: None,
        }
    }

    #[test]
    fn the_odd_member_out_is_named() {
        let c = summarize(10, vec![row(0, "aa"), row(1, "bb"), row(2, "aa")]);
        assert!(!c.digests_equal);
        assert_eq!(c.divergent, vec![1]);
        let c = summarize(10, vec![row(0, "aa"), row(1, "aa"), row(2, "aa")]);
        assert!(c.digests_equal && c.divergent.is_empty());
        let mut missing = row(2, "");
        missing.error = Some("does not answer".into());
        let c = summarize(10, vec![row(0, "aa"), row(1, "aa"), missing]);
        assert!(!c.digests_equal);
        assert_eq!(c.divergent, vec![2]);
        assert!(!summarize(0, Vec::new()).digests_equal);
    }
}
