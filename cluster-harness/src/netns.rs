//! Pod mode's network: each pod in its own network namespace on a bridge the harness creates.
//!
//! For a set it creates a bridge `pk<id>br` with address `10.a.b.1/24` in the root namespace,
//! and for each pod a namespace `petkv-<id>-<ordinal>` joined to the bridge by a veth pair, with
//! `10.a.b.(ordinal+2)` on its `eth0`. Every pod gets an `/etc/hosts` that names every pod as
//! `<set>-<ordinal>.<domain>` (`ip netns exec` bind-mounts `/etc/netns/<ns>/hosts` over
//! `/etc/hosts`), so the node resolves its peers the StatefulSet way. Partitions cut a pod's
//! veth link. A force-deleted pod's replacement gets a new namespace and a new address,
//! `10.a.b.(ordinal+2+100·generation)`, while the old namespace stays with the process still
//! running in it (`netns/replace.rs`). Everything is removed when the network is dropped.
//! Needs root and iproute2.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context};

/// The DNS domain pods resolve each other under (the headless service's, in Kubernetes).
pub const POD_DOMAIN: &str = "petkv.harness.local";

mod replace;

pub use replace::RetiredPod;

/// The pod network of one set.
pub struct PodNetwork {
    id: String,
    subnet: (u8, u8),
    set: String,
    pods: Vec<u32>,
    /// Force-deleted pods: the generation of each replaced ordinal's current namespace and
    /// address (absent: 0, the first).
    generations: BTreeMap<u32, u32>,
    /// Namespaces of force-deleted pods, `(ordinal, generation)`, removed with the network.
    retired: Vec<(u32, u32)>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn tc(namespace: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(["netns", "exec", namespace, "tc"]).args(args).output().context("run tc")?;
    if !out.status.success() {
        bail!("tc {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Checks that the kernel can add latency (`tc netem`), in a scratch namespace.
pub fn check_netem() -> anyhow::Result<()> {
    let probe = format!("petkv-netem-{}-{:08x}", std::process::id(), rand::random::<u32>());
    ip(&["netns", "add", &probe])?;
    let result = tc(&probe, &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]);
    let _ = ip(&["netns", "del", &probe]);
    result.context("this kernel cannot add latency: tc netem is not available (no sch_netem)")
}

/// True when pod mode can run here: root, iproute2, namespaces allowed, and an `/etc/hosts`
/// for `ip netns exec` to mount each pod's own hosts file over (without one every pod would
/// fail to resolve its peers).
pub fn available() -> bool {
    let root = nix::unistd::geteuid().is_root() && std::path::Path::new("/etc/hosts").is_file();
    let probe = format!("petkv-probe-{}-{:08x}", std::process::id(), rand::random::<u32>());
    root && ip(&["netns", "add", &probe]).is_ok() && ip(&["netns", "del", &probe]).is_ok()
}

impl PodNetwork {
    /// Creates the bridge for a set.
    pub fn create(set: &str) -> anyhow::Result<Self> {
        let id = format!("{:04x}", rand::random::<u16>());
        let subnet = (rand::random_range(200..=249u8), rand::random_range(1..=254u8));
        let net = Self {
            id,
            subnet,
            set: set.to_string(),
            pods: Vec::new(),
            generations: BTreeMap::new(),
            retired: Vec::new(),
        };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.{}.{}.1/24", subnet.0, subnet.1), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("pk{}br", self.id)
    }

    fn host_veth(&self, ordinal: u32) -> String {
        self.host_veth_at(ordinal, self.generation(ordinal))
    }

    /// The network namespace of a pod.
    pub fn namespace(&self, ordinal: u32) -> String {
        self.namespace_at(ordinal, self.generation(ordinal))
    }

    /// The pod's address.
    pub fn ip(&self, ordinal: u32) -> String {
        self.ip_at(ordinal, self.generation(ordinal))
    }

    /// How many times the pod with this ordinal was force-deleted and replaced.
    fn generation(&self, ordinal: u32) -> u32 {
        self.generations.get(&ordinal).copied().unwrap_or(0)
    }

    /// What the names of a pod's generation end with: nothing for the first, `r<g>` after.
    fn suffix(generation: u32) -> String {
        if generation == 0 {
            String::new()
        } else {
            format!("r{generation}")
        }
    }

    fn host_veth_at(&self, ordinal: u32, generation: u32) -> String {
        format!("pk{}h{ordinal}{}", self.id, Self::suffix(generation))
    }

    fn namespace_at(&self, ordinal: u32, generation: u32) -> String {
        format!("petkv-{}-{ordinal}{}", self.id, Self::suffix(generation))
    }

    fn ip_at(&self, ordinal: u32, generation: u32) -> String {
        format!("10.{}.{}.{}", self.subnet.0, self.subnet.1, ordinal + 2 + 100 * generation)
    }

    /// Creates a pod's namespace and link (idempotent) and rewrites every pod's hosts file.
    pub fn add_pod(&mut self, ordinal: u32) -> anyhow::Result<()> {
        if !self.pods.contains(&ordinal) {
            self.create_link(ordinal)?;
            self.pods.push(ordinal);
        }
        self.write_hosts()
    }

    /// The namespace of the pod's current generation, joined to the bridge with its address.
    fn create_link(&self, ordinal: u32) -> anyhow::Result<()> {
        let (ns, host) = (self.namespace(ordinal), self.host_veth(ordinal));
        let pod = format!("pk{}p{ordinal}{}", self.id, Self::suffix(self.generation(ordinal)));
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &pod])?;
        ip(&["link", "set", &host, "master", &self.bridge()])?;
        ip(&["link", "set", &host, "up"])?;
        ip(&["link", "set", &pod, "netns", &ns])?;
        ip(&["-n", &ns, "link", "set", &pod, "name", "eth0"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.ip(ordinal)), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])
    }

    /// DNS of one pod fails (`false`: its hosts file is emptied, in place, so the pod's
    /// bind-mounted `/etc/hosts` names nobody, not even itself) or works again (`true`).
    pub fn set_dns(&self, ordinal: u32, works: bool) -> anyhow::Result<()> {
        if works {
            return self.write_hosts();
        }
        let path = std::path::Path::new("/etc/netns").join(self.namespace(ordinal)).join("hosts");
        std::fs::write(&path, "").with_context(|| format!("empty {}", path.display()))
    }

    fn write_hosts(&self) -> anyhow::Result<()> {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for o in &self.pods {
            let name = format!("{}-{o}", self.set);
            hosts.push_str(&format!("{} {name}.{POD_DOMAIN} {name}\n", self.ip(*o)));
        }
        for o in &self.pods {
            let dir = std::path::Path::new("/etc/netns").join(self.namespace(*o));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            std::fs::write(dir.join("hosts"), &hosts)?;
        }
        Ok(())
    }

    /// Adds latency to a pod's link (`tc netem` in its namespace).
    pub fn add_latency(&self, ordinal: u32, delay: std::time::Duration) -> anyhow::Result<()> {
        tc(
            &self.namespace(ordinal),
            &["qdisc", "add", "dev", "eth0", "root", "netem", "delay", &format!("{}ms", delay.as_millis())],
        )
    }

    /// Removes added latency.
    pub fn clear_latency(&self, ordinal: u32) -> anyhow::Result<()> {
        tc(&self.namespace(ordinal), &["qdisc", "del", "dev", "eth0", "root"])
    }

    fn side_bridge(&self, side: usize) -> String {
        format!("pk{}s{side}", self.id)
    }

    /// Splits the set: the first group stays on the main bridge (with the clients), every
    /// other group gets a bridge of its own with no address. Pods talk within their group only.
    pub fn split(&self, groups: &[Vec<u32>]) -> anyhow::Result<()> {
        for (side, group) in groups.iter().enumerate().skip(1) {
            let bridge = self.side_bridge(side);
            ip(&["link", "add", &bridge, "type", "bridge"])?;
            ip(&["link", "set", &bridge, "up"])?;
            for o in group {
                ip(&["link", "set", &self.host_veth(*o), "master", &bridge])?;
            }
        }
        Ok(())
    }

    /// Undoes [`split`](Self::split): every pod back on the main bridge.
    pub fn join_sides(&self) -> anyhow::Result<()> {
        for o in &self.pods {
            ip(&["link", "set", &self.host_veth(*o), "master", &self.bridge()])?;
        }
        for side in 1..=self.pods.len() {
            let _ = ip(&["link", "del", &self.side_bridge(side)]);
        }
        Ok(())
    }

    /// Cuts a pod off the network (its link goes down).
    pub fn isolate(&self, ordinal: u32) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_veth(ordinal), "down"])
    }

    /// Reconnects a pod.
    pub fn heal(&self, ordinal: u32) -> anyhow::Result<()> {
        ip(&["link", "set", &self.host_veth(ordinal), "up"])
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let current = self.pods.iter().map(|o| (*o, self.generation(*o)));
        for (o, generation) in current.chain(self.retired.iter().copied()) {
            let ns = self.namespace_at(o, generation);
            let _ = ip(&["netns", "del", &ns]);
            let _ = ip(&["link", "del", &self.host_veth_at(o, generation)]);
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&ns));
        }
        let _ = self.join_sides();
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
