//! A concurrent client workload that records every operation, for the checker.
//!
//! Each simulated client has its own client over every pod and loops over a small key space:
//! puts of unique values, linearizable gets, some deletes, two-key transactions. Every
//! operation is recorded with its invoke and completion time. A write whose outcome the client
//! could not learn is recorded as `Unknown` (it may or may not have happened); one known not
//! to have been applied, and any failed read, is left out (it had no effect).
//!
//! The clients speak petkv's own API ([`Client`]) or, with [`WorkloadApi::Etcd`], etcd's v3 API
//! on the pods' etcd ports through the `etcd-client` crate ([`etcd`], feature `etcd`), so the
//! same checks cover both. etcd's errors do not say whether a write was applied: every failed
//! write through it is recorded as `Unknown`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use petkv_client::pb::v1::Consistency;
use petkv_client::{Client, ClientError};

use crate::checker::{Input, Operation, Outcome, Output, Served};
use petkv_client::pb::v1::ResponseHeader;

#[cfg(feature = "etcd")]
mod etcd;

/// How the workload runs.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub clients: usize,
    pub keys: usize,
    /// Per-request client timeout: short, so faults surface as unknown outcomes quickly.
    pub timeout: Duration,
    /// TLS, when the set runs with it ([`crate::Cluster::client_tls`]).
    pub tls: Option<petkv_client::tls::ClientTls>,
    /// A token allowed to write, when the set runs with authentication.
    pub token: Option<String>,
    /// Put before every value the workload writes (`c<client>-<n>`): a second workload on the
    /// same keys (`restore`'s, on the restored cluster) writes values no earlier one wrote.
    pub value_prefix: String,
    /// The API the workload's clients (and the final reads) speak; with `Etcd`, the endpoints
    /// given to the workload are the pods' etcd ports.
    pub api: WorkloadApi,
}

/// Which API the workload drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkloadApi {
    /// petkv's own API and client library.
    #[default]
    Native,
    /// etcd's v3 API on the pods' etcd ports, with the `etcd-client` crate (feature `etcd`).
    Etcd,
}

impl WorkloadSpec {
    /// One petkv client (the watchers', the lease holder's: always petkv's own API).
    pub(crate) fn client(&self, endpoints: &[String], timeout: Duration) -> Result<Client, petkv_client::ClientError> {
        let client = Client::with_tls(endpoints, timeout, self.tls.as_ref())?;
        match &self.token {
            Some(token) => client.with_token(token),
            None => Ok(client),
        }
    }

    /// One client of the workload (or the checker's final reads), through [`Self::api`].
    async fn workload_client(&self, endpoints: &[String], timeout: Duration) -> anyhow::Result<WorkloadClient> {
        match self.api {
            WorkloadApi::Native => Ok(WorkloadClient::Native(self.client(endpoints, timeout)?)),
            #[cfg(feature = "etcd")]
            WorkloadApi::Etcd => {
                anyhow::ensure!(
                    self.tls.is_none() && self.token.is_none(),
                    "the etcd workload runs on sets without TLS or authentication"
                );
                Ok(WorkloadClient::Etcd(Box::new(etcd::connect(endpoints, timeout).await?)))
            }
            #[cfg(not(feature = "etcd"))]
            WorkloadApi::Etcd => anyhow::bail!("a workload through the etcd port needs petkv-harness's etcd feature"),
        }
    }
}

/// Why an operation did not complete.
pub(crate) enum Failure {
    /// A write that may or may not have been applied.
    Unknown,
    /// It certainly had no effect (a refused write, any failed read).
    NoEffect,
}

/// What a completed operation returned: its outputs (one per key) and where it was served.
pub(crate) type Answer = (Vec<Output>, Option<Served>);

/// One client of the workload.
pub(crate) enum WorkloadClient {
    Native(Client),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

impl WorkloadClient {
    /// Runs `input` on `key`.
    async fn one(&self, key: &[u8], input: &Input) -> Result<Answer, Failure> {
        match self {
            WorkloadClient::Native(client) => {
                let result = match input {
                    Input::Put(v) => client.put(key, v, None).await.map(|r| (vec![Output::Ok], r.header)),
                    Input::Delete => client.delete(key, None).await.map(|r| (vec![Output::Ok], r.header)),
                    Input::Get => client
                        .get(key, Consistency::Linearizable)
                        .await
                        .map(|r| (vec![Output::Value(r.kv.map(|kv| kv.value.to_vec()))], r.header)),
                    Input::CompareAndPut { .. } => unreachable!("the workload issues no compare-and-put"),
                };
                result.map(|(outputs, header)| (outputs, header.map(served))).map_err(native_failure)
            }
            #[cfg(feature = "etcd")]
            WorkloadClient::Etcd(kv) => etcd::one(kv, key, input).await,
        }
    }

    /// Runs the two-key transaction `kind` on `keys`: one output per key.
    async fn txn(&self, keys: &[Vec<u8>; 2], kind: &TxnKind) -> Result<Answer, Failure> {
        match self {
            WorkloadClient::Native(client) => native_txn(client, keys, kind).await,
            #[cfg(feature = "etcd")]
            WorkloadClient::Etcd(kv) => etcd::txn(kv, keys, kind).await,
        }
    }
}

fn served(h: ResponseHeader) -> Served {
    Served { node: h.served_by, raft_index: h.raft_index, term: h.term, revision: h.revision }
}

fn native_failure(e: ClientError) -> Failure {
    match e {
        ClientError::OutcomeUnknown(_) => Failure::Unknown,
        _ => Failure::NoEffect,
    }
}

async fn native_txn(client: &Client, keys: &[Vec<u8>; 2], kind: &TxnKind) -> Result<Answer, Failure> {
    use petkv_client::pb::v1::txn_op::Op;
    use petkv_client::pb::v1::txn_op_result::Result as OpResult;
    use petkv_client::pb::v1::{TxnOp, TxnPut, TxnRange, TxnRequest};
    let ops = keys
        .iter()
        .map(|key| TxnOp {
            op: Some(match kind {
                TxnKind::PutBoth(v) => {
                    Op::Put(TxnPut { key: key.clone().into(), value: v.clone().into(), ..Default::default() })
                }
                TxnKind::GetBoth => Op::Range(TxnRange { key: key.clone().into(), ..Default::default() }),
            }),
        })
        .collect();
    let r = client.txn(TxnRequest { success: ops, ..Default::default() }).await.map_err(native_failure)?;
    let outputs = (0..keys.len())
        .map(|i| match r.results.get(i).and_then(|x| x.result.clone()) {
            Some(OpResult::Range(range)) => Output::Value(range.kvs.first().map(|kv| kv.value.to_vec())),
            _ => Output::Ok,
        })
        .collect();
    Ok((outputs, r.header.map(served)))
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            clients: 6,
            keys: 5,
            timeout: Duration::from_secs(2),
            tls: None,
            token: None,
            value_prefix: String::new(),
            api: WorkloadApi::Native,
        }
    }
}

/// What the workload saw.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub history: Vec<Operation>,
    /// Completion times (ns since start) of successful writes.
    pub write_successes_ns: Vec<u64>,
    /// Completion times (ns since start) of every successful operation.
    pub successes_ns: Vec<u64>,
    pub unknown_outcomes: usize,
    pub failed: usize,
}

/// A running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    /// While set, the clients issue nothing (see [`Workload::pause_handle`]).
    paused: Arc<AtomicBool>,
    recorded: Arc<Mutex<Recorded>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub started: Instant,
}

fn key_name(k: usize) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// `endpoints` starting at the `first`-th (modulo their number): a client given them starts
/// there and fails over to the ones after it.
pub fn endpoints_from(endpoints: &[String], first: usize) -> Vec<String> {
    let mut rotated = endpoints.to_vec();
    let len = rotated.len().max(1);
    rotated.rotate_left(first % len);
    rotated
}

impl Workload {
    /// Starts the clients against `endpoints`.
    pub async fn start(endpoints: &[String], spec: &WorkloadSpec) -> anyhow::Result<Self> {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let mut tasks = Vec::new();
        for c in 0..spec.clients {
            // Client c starts at member c mod n: reads and writes reach every member, followers
            // included (which serve linearizable reads and hand writes to the leader).
            let client = spec.workload_client(&endpoints_from(endpoints, c), spec.timeout).await?;
            let (stop, paused, recorded, keys) = (stop.clone(), paused.clone(), recorded.clone(), spec.keys);
            let prefix = spec.value_prefix.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if paused.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    n += 1;
                    let key = (rand::random::<u32>() as usize) % keys;
                    let other = (key + 1 + (rand::random::<u32>() as usize) % keys.saturating_sub(1).max(1)) % keys;
                    let roll = rand::random::<u32>() % 20;
                    let value = format!("{prefix}c{c}-{n}").into_bytes();
                    let input = match roll {
                        // Transactions on two keys, recorded per key (see `run_txn`).
                        0..=1 if other != key => {
                            let both = [key_name(key), key_name(other)];
                            let kind = if roll == 0 { TxnKind::PutBoth(value) } else { TxnKind::GetBoth };
                            for done in run_txn(&client, c as u64, both, kind, started).await {
                                record(&recorded, done);
                            }
                            continue;
                        }
                        0..=9 => Input::Put(value),
                        10..=17 => Input::Get,
                        _ => Input::Delete,
                    };
                    let op = run_one(&client, c as u64, key_name(key), input, started).await;
                    record(&recorded, op);
                }
            }));
        }
        Ok(Self { stop, paused, recorded, tasks, started })
    }

    /// Operations recorded so far, and how many of them have an unknown outcome.
    pub fn progress(&self) -> (usize, usize) {
        let r = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        (r.history.len(), r.unknown_outcomes)
    }

    /// A switch that pauses the clients (set) and resumes them (cleared): an operation in
    /// flight completes, no new one starts while it is set.
    pub fn pause_handle(&self) -> Arc<AtomicBool> {
        self.paused.clone()
    }

    /// Nanoseconds since the workload started.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Stops the clients and returns what they recorded.
    pub async fn stop(self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone();
        recorded
    }
}

/// The result of one operation: `None` when it certainly had no effect.
struct Done {
    op: Option<Operation>,
    is_write: bool,
    failed: bool,
}

async fn run_one(client: &WorkloadClient, id: u64, key: Vec<u8>, input: Input, started: Instant) -> Done {
    let invoked_ns = started.elapsed().as_nanos() as u64;
    let is_write = !matches!(input, Input::Get);
    let result = client.one(&key, &input).await;
    let at_ns = started.elapsed().as_nanos() as u64;
    let (outcome, served) = match result {
        Ok((mut outputs, served)) => {
            (Outcome::Completed { at_ns, output: outputs.pop().unwrap_or(Output::Ok) }, served)
        }
        Err(Failure::Unknown) => (Outcome::Unknown, None),
        Err(Failure::NoEffect) => return Done { op: None, is_write, failed: true },
    };
    Done { op: Some(Operation { client: id, key, input, invoked_ns, outcome, served }), is_write, failed: false }
}

/// A transaction of the workload, on two keys.
pub(crate) enum TxnKind {
    /// Put one value to both keys: one revision for both.
    PutBoth(Vec<u8>),
    /// Read both keys at one point.
    GetBoth,
}

/// Runs a transaction on `keys` and records it as one operation per key, with the
/// transaction's invocation, completion and reply header. The linearizability check sees each
/// key's part in that key's history (a per-key projection: every violation it reports is real,
/// but it checks no order across keys); that the parts are one atomic change is what the watch
/// streams check (one revision for both puts, [`crate::checker::watch`]).
async fn run_txn(client: &WorkloadClient, id: u64, keys: [Vec<u8>; 2], kind: TxnKind, started: Instant) -> Vec<Done> {
    let invoked_ns = started.elapsed().as_nanos() as u64;
    let is_write = matches!(kind, TxnKind::PutBoth(_));
    let result = client.txn(&keys, &kind).await;
    let at_ns = started.elapsed().as_nanos() as u64;
    let input = |_: usize| match &kind {
        TxnKind::PutBoth(v) => Input::Put(v.clone()),
        TxnKind::GetBoth => Input::Get,
    };
    let outcome_of = |output: Option<Output>| match output {
        Some(output) => Outcome::Completed { at_ns, output },
        None => Outcome::Unknown,
    };
    let (outputs, served): (Vec<Option<Output>>, Option<Served>) = match result {
        Ok((outputs, served)) => (outputs.into_iter().map(Some).collect(), served),
        Err(Failure::Unknown) if is_write => (vec![None, None], None),
        Err(_) => return vec![Done { op: None, is_write, failed: true }],
    };
    keys.into_iter()
        .zip(outputs)
        .enumerate()
        .map(|(i, (key, output))| Done {
            op: Some(Operation { client: id, key, input: input(i), invoked_ns, outcome: outcome_of(output), served }),
            is_write,
            failed: false,
        })
        .collect()
}

fn record(recorded: &Mutex<Recorded>, done: Done) {
    let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
    if done.failed {
        r.failed += 1;
    }
    let Some(op) = done.op else { return };
    match &op.outcome {
        Outcome::Completed { at_ns, .. } => {
            r.successes_ns.push(*at_ns);
            if done.is_write {
                r.write_successes_ns.push(*at_ns);
            }
        }
        Outcome::Unknown => r.unknown_outcomes += 1,
    }
    r.history.push(op);
}

/// The client id of [`final_reads`] in the history.
pub const FINAL_READER: u64 = u64::MAX;

/// Reads every key once more (linearizable) and appends the reads to the history, so a lost
/// acknowledged write shows up as a violation.
pub async fn final_reads(endpoints: &[String], spec: &WorkloadSpec, recorded: &mut Recorded, started: Instant) {
    let Ok(client) = spec.workload_client(endpoints, Duration::from_secs(10)).await else { return };
    for k in 0..spec.keys {
        let done = run_one(&client, FINAL_READER, key_name(k), Input::Get, started).await;
        record_into(recorded, done);
    }
}

fn record_into(recorded: &mut Recorded, done: Done) {
    let m = Mutex::new(std::mem::take(recorded));
    record(&m, done);
    *recorded = m.into_inner().unwrap_or_else(|p| p.into_inner());
}

#[cfg(test)]
mod tests {
    use super::endpoints_from;

    #[test]
    fn endpoints_start_at_the_given_one_and_wrap_around() {
        let e: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(endpoints_from(&e, 0), ["a", "b", "c"]);
        assert_eq!(endpoints_from(&e, 1), ["b", "c", "a"]);
        assert_eq!(endpoints_from(&e, 5), ["c", "a", "b"]);
        assert!(endpoints_from(&[], 3).is_empty());
    }
}
