//! Who may speak on the peer port: a client certificate that chains to the cluster CA is not
//! enough, one of its DNS names must also name a pod of this set.
//!
//! The rule, for a node of set `<set>`:
//! - with `--peer-domain D` (Kubernetes: the headless Service's domain), a DNS name exactly
//!   `<set>-<ordinal>.D`;
//! - with a static `--peers` map (a laptop, the harness), a DNS name whose first label is
//!   `<set>-<ordinal>` (`petkv-2`, `petkv-2.anything`).
//!
//! `<ordinal>` is any ordinal, written as a pod name writes it (no leading zeros). Wildcard
//! names (`*.petkv-peers.ns.svc.cluster.local`) never count: they name every host of the
//! service, not one pod, so a wildcard certificate may serve a port but does not let its
//! holder join the set. Names are compared case-insensitively.

use crate::pod::identity::{parse_hostname, PodName};

/// The names that count as pods of one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNameRule {
    set: String,
    domain: Option<String>,
}

impl PeerNameRule {
    /// Pods of `set`, under `domain` when the set is found through DNS.
    pub fn new(set: &str, domain: Option<&str>) -> Self {
        let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()).filter(|d| !d.is_empty());
        Self { set: set.to_string(), domain }
    }

    /// The pod a DNS name names, if it names one of this set.
    pub fn pod_of(&self, dns_name: &str) -> Option<PodName> {
        if dns_name.contains('*') {
            return None;
        }
        let name = dns_name.trim_end_matches('.').to_ascii_lowercase();
        let (first, rest) = match name.split_once('.') {
            Some((first, rest)) => (first, Some(rest)),
            None => (name.as_str(), None),
        };
        if let Some(domain) = &self.domain {
            if rest != Some(domain.as_str()) {
                return None;
            }
        }
        let pod = parse_hostname(first).ok()?;
        (pod.set == self.set).then_some(pod)
    }

    /// The first of `dns_names` that names a pod of this set.
    pub fn first_pod<'a>(&self, dns_names: impl IntoIterator<Item = &'a str>) -> Option<PodName> {
        dns_names.into_iter().find_map(|n| self.pod_of(n))
    }

    /// The rule in words, for error messages.
    pub fn describe(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}-<ordinal>.{d}", self.set),
            None => format!("{}-<ordinal>[.<domain>]", self.set),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_mode_wants_the_exact_pod_name_under_the_domain() {
        let rule = PeerNameRule::new("petkv", Some("petkv-peers.db.svc.cluster.local."));
        let pod = rule.pod_of("petkv-2.petkv-peers.db.svc.cluster.local").unwrap();
        assert_eq!((pod.set.as_str(), pod.ordinal), ("petkv", 2));
        assert!(rule.pod_of("PETKV-12.Petkv-Peers.db.svc.cluster.local.").is_some(), "case and the root dot");
        for name in [
            "petkv-2",                                     // short name: not under the domain
            "petkv-2.petkv-peers.other.svc.cluster.local", // another namespace
            "*.petkv-peers.db.svc.cluster.local",          // wildcard: no pod in particular
            "other-2.petkv-peers.db.svc.cluster.local",    // another set
            "petkv-02.petkv-peers.db.svc.cluster.local",   // not how a pod is named
            "petkv.petkv-peers.db.svc.cluster.local",      // no ordinal
            "petkv-client.petkv-peers.db.svc.cluster.local",
            "petkv-2.x.petkv-peers.db.svc.cluster.local",
        ] {
            assert!(rule.pod_of(name).is_none(), "{name}");
        }
    }

    #[test]
    fn static_mode_wants_the_pod_name_as_first_label() {
        let rule = PeerNameRule::new("petkv", None);
        assert_eq!(rule.pod_of("petkv-0").map(|p| p.ordinal), Some(0));
        assert_eq!(rule.pod_of("petkv-7.petkv-peers.default.svc.cluster.local").map(|p| p.ordinal), Some(7));
        for name in ["petkv", "petkv-client", "kv-0", "*.petkv-0", "localhost", "127.0.0.1", "my-petkv-0"] {
            assert!(rule.pod_of(name).is_none(), "{name}");
        }
        let found = rule.first_pod(["localhost", "*.svc", "petkv-3"]).unwrap();
        assert_eq!(found.ordinal, 3);
    }
}
