//! The systems under test as clusters that the scenarios steer: launch, find the leader,
//! signal and restart one member, tell whether a member is ready, read its data dir. One
//! implementation per system ([`PetkvSystem`] here, `EtcdSystem` with the `etcd` feature), so
//! each scenario is written once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use petkv_client::pb::v1::Consistency;

use super::petkv_target::PetkvTarget;
use super::workload::KvTarget;
use super::{System, Target};
use crate::{Cluster, ClusterSpec};

/// Flags for every member of each system, beside the ones the bench sets.
#[derive(Debug, Clone, Default)]
pub struct ExtraArgs {
    /// `petkv serve` flags (`--petkv-arg`).
    pub petkv: Vec<String>,
    /// `etcd` flags (`--etcd-arg`).
    pub etcd: Vec<String>,
}

/// A time limit for one status or readiness probe.
const PROBE: Duration = Duration::from_millis(500);

/// A cluster of one system, driven by the scenarios. Member indexes are `0..members()`.
pub trait SystemUnderTest: Sized {
    type Target: KvTarget;
    fn system(&self) -> System;
    /// Creates empty data dirs under `parent` (petkv: its own temp dir) and starts every
    /// member with the system's share of `args`, without waiting for anything.
    fn launch(parent: &Path, args: &ExtraArgs) -> anyhow::Result<Self>;
    fn members(&self) -> usize;
    /// `connections` connections placed by `target` (see [`Target`]).
    fn connect(
        &self,
        connections: usize,
        target: Target,
    ) -> impl Future<Output = anyhow::Result<Vec<Arc<Self::Target>>>>;
    /// One connection to member `i` (petkv: it fails over to the others; etcd: that member only).
    fn connect_to(&self, i: usize) -> impl Future<Output = anyhow::Result<Arc<Self::Target>>>;
    /// Waits until every running member is serving under one leader.
    fn wait_healthy(&mut self, timeout: Duration) -> impl Future<Output = anyhow::Result<()>>;
    /// The member that leads now, as the members' own status says.
    fn leader(&self) -> impl Future<Output = anyhow::Result<usize>>;
    /// The highest Raft term any running member reports (leader changes show as increments).
    fn term(&self) -> impl Future<Output = anyhow::Result<u64>>;
    /// Sends `sig` to member `i` (no waiting).
    fn signal(&self, i: usize, sig: Signal) -> anyhow::Result<()>;
    /// Waits for member `i` to exit (SIGKILL after `grace`).
    fn wait_exit(&mut self, i: usize, grace: Duration) -> impl Future<Output = anyhow::Result<()>>;
    /// Starts member `i` again on its data dir.
    fn start(&mut self, i: usize) -> anyhow::Result<()>;
    /// Member `i`'s own readiness endpoint says ready (petkv `/readyz`, etcd `/health`).
    fn ready(&self, i: usize) -> impl Future<Output = bool>;
    /// Member `i` serves a local read (petkv stale, etcd serializable) of `key` with a value.
    fn reads(&self, i: usize, key: &str) -> impl Future<Output = bool>;
    fn data_dir(&self, i: usize) -> PathBuf;
    /// The store revision and the revision before which history is dropped, where the system
    /// reports both (petkv's status does; etcd's does not say its compacted revision).
    fn history(&self) -> impl Future<Output = Option<(u64, u64)>> {
        std::future::ready(None)
    }
    /// The members' batch totals now, where the system reports them (petkv's `/metrics`).
    fn batching(&self) -> impl Future<Output = Option<super::batching::Snapshot>> {
        std::future::ready(None)
    }
    /// Process ids of the running members.
    fn pids(&self) -> Vec<u32>;
    /// Stops every member.
    fn shutdown(self) -> impl Future<Output = anyhow::Result<()>>;
}

/// `GET path` on `addr`, all of it within [`PROBE`]: the status code and body, or None.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let work = crate::http::get(addr, path, PROBE, PROBE);
    tokio::time::timeout(PROBE, work).await.ok().and_then(Result::ok)
}

/// Bytes a directory tree takes on disk (`du`: allocated blocks × 512).
pub fn disk_usage(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// A petkv set of 3 pods in process mode.
pub struct PetkvSystem {
    pub cluster: Cluster,
    endpoints: Vec<String>,
}

impl PetkvSystem {
    /// Wraps a running cluster.
    pub fn new(cluster: Cluster) -> Self {
        let endpoints = cluster.ordinals().iter().map(|o| cluster.client_addr(*o)).collect();
        Self { cluster, endpoints }
    }

    /// `connections` etcd clients over the members' etcd ports (`--via etcd-api`), placed as
    /// the bench places etcd's own: each balanced over every member, or on the leader alone.
    #[cfg(feature = "etcd")]
    pub async fn connect_etcd_api(
        &self,
        connections: usize,
        target: Target,
    ) -> anyhow::Result<Vec<Arc<super::etcd_target::EtcdTarget>>> {
        let all: Vec<String> = self.cluster.ordinals().iter().map(|o| self.cluster.etcd_addr(*o)).collect();
        let endpoints = match target {
            Target::Spread => all,
            Target::Leader => {
                let leader = self.leader().await?;
                vec![all.get(leader).cloned().context("the leader has no etcd port")?]
            }
        };
        super::etcd_target::EtcdTarget::connect(&endpoints, connections).await
    }

    fn ordinal(&self, i: usize) -> anyhow::Result<u32> {
        self.cluster.ordinals().get(i).copied().with_context(|| format!("no petkv member {i}"))
    }
}

impl SystemUnderTest for PetkvSystem {
    type Target = PetkvTarget;

    fn system(&self) -> System {
        System::Petkv
    }

    fn launch(_parent: &Path, args: &ExtraArgs) -> anyhow::Result<Self> {
        let mut cluster = Cluster::new(ClusterSpec { extra_args: args.petkv.clone(), ..ClusterSpec::default() })?;
        cluster.start_all()?;
        Ok(Self::new(cluster))
    }

    fn members(&self) -> usize {
        self.endpoints.len()
    }

    async fn connect(&self, connections: usize, target: Target) -> anyhow::Result<Vec<Arc<PetkvTarget>>> {
        match target {
            Target::Spread => PetkvTarget::connect_spread(&self.endpoints, connections),
            Target::Leader => PetkvTarget::connect(
                &crate::workload::endpoints_from(&self.endpoints, self.leader().await?),
                connections,
            ),
        }
    }

    async fn connect_to(&self, i: usize) -> anyhow::Result<Arc<PetkvTarget>> {
        Ok(PetkvTarget::connect(&crate::workload::endpoints_from(&self.endpoints, i), 1)?.remove(0))
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.cluster.wait_healthy(timeout).await.map(|_| ())
    }

    async fn leader(&self) -> anyhow::Result<usize> {
        for (i, o) in self.cluster.ordinals().into_iter().enumerate() {
            if self.cluster.status(o).await.is_ok_and(|s| s.role == "leader") {
                return Ok(i);
            }
        }
        anyhow::bail!("no petkv pod says it leads")
    }

    async fn term(&self) -> anyhow::Result<u64> {
        let mut term = None;
        for o in self.cluster.ordinals() {
            if let Ok(s) = self.cluster.status(o).await {
                term = Some(term.unwrap_or(0).max(s.term));
            }
        }
        term.context("no petkv pod answered its status")
    }

    fn signal(&self, i: usize, sig: Signal) -> anyhow::Result<()> {
        self.cluster.signal(self.ordinal(i)?, sig)
    }

    async fn wait_exit(&mut self, i: usize, grace: Duration) -> anyhow::Result<()> {
        let o = self.ordinal(i)?;
        let pod = self.cluster.pod_mut(o)?;
        if pod.wait_exit(grace).await?.is_none() {
            pod.kill().await?;
        }
        Ok(())
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let o = self.ordinal(i)?;
        self.cluster.start(o)
    }

    async fn ready(&self, i: usize) -> bool {
        let Ok(o) = self.ordinal(i) else { return false };
        http_get(&self.cluster.http_addr(o), "/readyz").await.is_some_and(|(code, _)| code == 200)
    }

    async fn reads(&self, i: usize, key: &str) -> bool {
        let Ok(o) = self.ordinal(i) else { return false };
        let Ok(client) = petkv_client::Client::new(&[self.cluster.client_addr(o)], PROBE) else { return false };
        client.get(key.as_bytes(), Consistency::Stale).await.is_ok_and(|r| r.kv.is_some())
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.cluster.volume(self.ordinal(i).unwrap_or(i as u32))
    }

    fn pids(&self) -> Vec<u32> {
        self.cluster.ordinals().into_iter().filter_map(|o| self.cluster.pod(o).ok()?.pid()).collect()
    }

    async fn batching(&self) -> Option<super::batching::Snapshot> {
        let mut totals = super::batching::Snapshot::default();
        for o in self.cluster.ordinals() {
            let (code, text) = http_get(&self.cluster.http_addr(o), "/metrics").await?;
            if code != 200 {
                return None;
            }
            totals.add_scrape(&text);
        }
        Some(totals)
    }

    async fn history(&self) -> Option<(u64, u64)> {
        let leader = self.leader().await.ok()?;
        let status = self.cluster.status(self.ordinal(leader).ok()?).await.ok()?;
        Some((status.revision, status.compacted_revision))
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        self.cluster.down().await
    }
}

#[cfg(feature = "etcd")]
pub use etcd_system::EtcdSystem;

#[cfg(feature = "etcd")]
mod etcd_system {
    use super::*;
    use crate::bench::etcd::EtcdCluster;
    use crate::bench::etcd_target::EtcdTarget;
    use etcd_client::{Client, ConnectOptions, GetOptions};

    /// A 3-member etcd.
    pub struct EtcdSystem {
        pub etcd: EtcdCluster,
    }

    impl EtcdSystem {
        async fn client_of(&self, i: usize) -> Option<Client> {
            let options = ConnectOptions::new().with_connect_timeout(PROBE).with_timeout(PROBE);
            Client::connect([self.etcd.endpoint(i)], Some(options)).await.ok()
        }
    }

    impl SystemUnderTest for EtcdSystem {
        type Target = EtcdTarget;

        fn system(&self) -> System {
            System::Etcd
        }

        fn launch(parent: &Path, args: &ExtraArgs) -> anyhow::Result<Self> {
            Ok(Self { etcd: EtcdCluster::start(parent, &args.etcd)? })
        }

        fn members(&self) -> usize {
            self.etcd.endpoints().len()
        }

        async fn connect(&self, connections: usize, target: Target) -> anyhow::Result<Vec<Arc<EtcdTarget>>> {
            match target {
                Target::Spread => EtcdTarget::connect(self.etcd.endpoints(), connections).await,
                Target::Leader => {
                    let leader = self.leader().await?;
                    EtcdTarget::connect(&[self.etcd.endpoint(leader).to_string()], connections).await
                }
            }
        }

        async fn connect_to(&self, i: usize) -> anyhow::Result<Arc<EtcdTarget>> {
            Ok(EtcdTarget::connect(&[self.etcd.endpoint(i).to_string()], 1).await?.remove(0))
        }

        async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
            self.etcd.wait_healthy(timeout).await?;
            // Every running member also agrees on one leader.
            let running = self.etcd.running();
            let this = &*self;
            crate::wait::until("etcd members to agree on a leader", timeout, || {
                let running = running.clone();
                async move {
                    let mut leader = None;
                    for i in running {
                        let s = this.client_of(i).await?.status().await.ok()?;
                        if s.leader() == 0 || leader.is_some_and(|l| l != s.leader()) {
                            return None;
                        }
                        leader = Some(s.leader());
                    }
                    leader
                }
            })
            .await
            .map(|_| ())
        }

        async fn leader(&self) -> anyhow::Result<usize> {
            for i in 0..self.members() {
                let Some(mut c) = self.client_of(i).await else { continue };
                if let Ok(s) = c.status().await {
                    if s.header().is_some_and(|h| h.member_id() == s.leader()) {
                        return Ok(i);
                    }
                }
            }
            anyhow::bail!("no etcd member says it leads")
        }

        async fn term(&self) -> anyhow::Result<u64> {
            let mut term = None;
            for i in 0..self.members() {
                let Some(mut c) = self.client_of(i).await else { continue };
                if let Ok(s) = c.status().await {
                    term = Some(term.unwrap_or(0).max(s.raft_term()));
                }
            }
            term.context("no etcd member answered its status")
        }

        fn signal(&self, i: usize, sig: Signal) -> anyhow::Result<()> {
            self.etcd.signal_member(i, sig)
        }

        async fn wait_exit(&mut self, i: usize, grace: Duration) -> anyhow::Result<()> {
            self.etcd.wait_exit(i, grace).await.map(|_| ())
        }

        fn start(&mut self, i: usize) -> anyhow::Result<()> {
            self.etcd.start_member(i)
        }

        async fn ready(&self, i: usize) -> bool {
            http_get(self.etcd.endpoint(i), "/health")
                .await
                .is_some_and(|(code, body)| code == 200 && body.contains("\"health\":\"true\""))
        }

        async fn reads(&self, i: usize, key: &str) -> bool {
            let Some(mut c) = self.client_of(i).await else { return false };
            c.get(key, Some(GetOptions::new().with_serializable())).await.is_ok_and(|r| !r.kvs().is_empty())
        }

        fn data_dir(&self, i: usize) -> PathBuf {
            self.etcd.data_dir(i)
        }

        fn pids(&self) -> Vec<u32> {
            self.etcd.pids()
        }

        async fn shutdown(mut self) -> anyhow::Result<()> {
            self.etcd.stop().await;
            Ok(())
        }
    }
}
