//! Finding peers the StatefulSet way.
//!
//! In Kubernetes a pod's peer address is `<set>-<ordinal>.<headless service domain>:<port>`.
//! On a laptop, or in the harness's process mode, a static map `ordinal=host:port` gives the
//! same names. Only peer (Raft) addresses are discovered; client addresses travel in the Raft
//! membership, advertised by each node when it joins.

use std::collections::BTreeMap;

use crate::pod::identity::PodName;

/// How many ordinals a DNS-mode node probes at start-up when looking for a running cluster.
pub const DEFAULT_PROBE_ORDINALS: u32 = 16;

/// Bound on resolving the pod's own name ([`PeerDirectory::own_name_resolves`]).
const OWN_NAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the peers of a set are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDirectory {
    /// `ordinal → host:port` of each pod's peer port.
    Static(BTreeMap<u32, String>),
    /// `<set>-<ordinal>.<domain>:<port>`, probing ordinals `0..probe_ordinals`.
    Dns { domain: String, port: u16, probe_ordinals: u32 },
}

/// A malformed `--peers` map.
#[derive(Debug, thiserror::Error)]
#[error("invalid --peers entry {entry:?}: {detail} (expected ordinal=host:port, comma separated)")]
pub struct BadPeerMap {
    pub entry: String,
    pub detail: String,
}

impl PeerDirectory {
    /// Parses `0=127.0.0.1:7001,1=127.0.0.2:7001`.
    pub fn parse_static(spec: &str) -> Result<Self, BadPeerMap> {
        let mut map = BTreeMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |detail: &str| BadPeerMap { entry: entry.to_string(), detail: detail.to_string() };
            let (ordinal, addr) = entry.split_once('=').ok_or_else(|| bad("missing '='"))?;
            let ordinal: u32 = ordinal.trim().parse().map_err(|_| bad("ordinal is not a number"))?;
            let addr = addr.trim();
            let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("address has no port"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("address must be host:port"));
            }
            if map.insert(ordinal, addr.to_string()).is_some() {
                return Err(bad("ordinal listed twice"));
            }
        }
        Ok(PeerDirectory::Static(map))
    }

    /// The peer address of one pod of the set.
    pub fn peer_addr(&self, pod: &PodName) -> Option<String> {
        match self {
            PeerDirectory::Static(map) => map.get(&pod.ordinal).cloned(),
            PeerDirectory::Dns { domain, port, .. } => Some(format!("{pod}.{domain}:{port}")),
        }
    }

    /// Whether this pod can resolve its own peer name now: the test that name resolution
    /// works at all. With a static map there is nothing to resolve. A pod's own record in the
    /// headless Service exists while the pod does (`publishNotReadyAddresses`), so failing to
    /// resolve it means DNS is failing or lagging, and then peers that do not resolve say
    /// nothing about whether they run a cluster.
    pub async fn own_name_resolves(&self, me: &PodName) -> bool {
        match (self, self.peer_addr(me)) {
            (PeerDirectory::Static(_), _) => true,
            (PeerDirectory::Dns { .. }, Some(addr)) => {
                let lookup = tokio::time::timeout(OWN_NAME_TIMEOUT, tokio::net::lookup_host(addr));
                match lookup.await {
                    Ok(Ok(mut addrs)) => addrs.next().is_some(),
                    _ => false,
                }
            }
            (PeerDirectory::Dns { .. }, None) => false,
        }
    }

    /// Every other pod worth probing at start-up, lowest ordinal first.
    pub fn candidates(&self, me: &PodName) -> Vec<(u32, String)> {
        let ordinals: Vec<u32> = match self {
            PeerDirectory::Static(map) => map.keys().copied().collect(),
            PeerDirectory::Dns { probe_ordinals, .. } => (0..*probe_ordinals).collect(),
        };
        ordinals
            .into_iter()
            .filter(|o| *o != me.ordinal)
            .filter_map(|o| self.peer_addr(&me.sibling(o)).map(|a| (o, a)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ordinal: u32) -> PodName {
        PodName { set: "petkv".into(), ordinal }
    }

    #[test]
    fn static_map_parses_and_lists_the_others() {
        let dir = PeerDirectory::parse_static("0=127.0.0.1:7001, 1=127.0.0.2:7001,2=[::1]:7003").expect("parse");
        assert_eq!(dir.peer_addr(&pod(1)).as_deref(), Some("127.0.0.2:7001"));
        assert_eq!(dir.candidates(&pod(1)), vec![(0, "127.0.0.1:7001".into()), (2, "[::1]:7003".into())]);
    }

    #[test]
    fn malformed_static_maps_are_refused() {
        for bad in ["0", "x=127.0.0.1:1", "0=127.0.0.1", "0=:80", "0=a:1,0=b:2", "0=h:99999"] {
            assert!(PeerDirectory::parse_static(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names_follow_the_statefulset_pattern() {
        let dir =
            PeerDirectory::Dns { domain: "petkv.default.svc.cluster.local".into(), port: 7001, probe_ordinals: 3 };
        assert_eq!(dir.peer_addr(&pod(2)).as_deref(), Some("petkv-2.petkv.default.svc.cluster.local:7001"));
        assert_eq!(dir.candidates(&pod(0)).len(), 2);
    }
}
