//! A force-deleted pod's replacement on the network: the same name, a new namespace and a new
//! address, while the old namespace (with the process still running in it) stays as it was.
//!
//! Kubernetes gives the replacement of a force-deleted pod a new IP, and the pod's DNS name
//! follows it; the stale process keeps its old IP, its TCP connections and its node's view of
//! the world. Here: the old namespace keeps its link on the bridge and its hosts file (its node
//! is cut off from the control plane, so nothing updates it), the pod's next generation gets
//! `petkv-<id>-<ordinal>r<g>` at `10.a.b.(ordinal+2+100·g)`, and every current pod's hosts
//! file names the replacement.

use anyhow::{ensure, Context};

use super::PodNetwork;

/// The old generation of a force-deleted pod: where its stale process still runs.
#[derive(Debug, Clone)]
pub struct RetiredPod {
    /// The namespace the stale process runs in.
    pub namespace: String,
    /// Its address, still on the bridge.
    pub ip: String,
}

impl PodNetwork {
    /// Moves a pod's name to a new namespace and address: the old namespace keeps running as
    /// it is (its link, its address, its hosts file, which is never rewritten again), a new
    /// one is created for the replacement, and every current pod's hosts file (the
    /// replacement's included) names the replacement's address. Returns the old generation.
    pub fn replace_pod(&mut self, ordinal: u32) -> anyhow::Result<RetiredPod> {
        ensure!(self.pods.contains(&ordinal), "pod {ordinal} has no namespace to replace");
        let old = self.generation(ordinal);
        let next = old + 1;
        ensure!(
            ordinal + 2 + 100 * next <= 254,
            "no address left for generation {next} of pod {ordinal} (10.a.b.(ordinal+2+100·generation))"
        );
        let retired = RetiredPod { namespace: self.namespace_at(ordinal, old), ip: self.ip_at(ordinal, old) };
        self.generations.insert(ordinal, next);
        self.retired.push((ordinal, old));
        self.create_link(ordinal).with_context(|| format!("the namespace of pod {ordinal}'s replacement"))?;
        self.write_hosts()?;
        Ok(retired)
    }
}
