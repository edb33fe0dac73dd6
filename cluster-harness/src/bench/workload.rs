//! The closed-loop driver: C clients, each with one request in flight at a time, spread
//! round-robin over a fixed set of connections, for a warm-up and then a measured duration.
//!
//! Generic over [`KvTarget`], so petkv and etcd run the identical workload.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::Mode;

/// Highest latency the histograms record (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 60_000_000;

/// One watch stream of a system under test.
pub trait EventStream: Send + 'static {
    /// The events of the next response, each as the stamp its value starts with
    /// ([`stamp_of`]); empty for a response without events; None when the stream ended.
    fn next_batch(&mut self) -> impl Future<Output = Result<Option<Vec<u64>>, String>> + Send;
}

/// One connection to a system under test. Errors are strings: the driver only counts them.
pub trait KvTarget: Send + Sync + 'static {
    type Events: EventStream;
    /// Writes `key`.
    fn put(&self, key: String, value: Arc<Vec<u8>>) -> impl Future<Output = Result<(), String>> + Send;
    /// Linearizable read.
    fn get(&self, key: String) -> impl Future<Output = Result<(), String>> + Send;
    /// Read served by any member from its local state (may be stale).
    fn get_stale(&self, key: String) -> impl Future<Output = Result<(), String>> + Send;
    /// Read the key's revision, then write it only if the revision is unchanged. `Ok(false)`
    /// means the compare failed (another client won): a conflict, not an error.
    fn cas(&self, key: String, value: Arc<Vec<u8>>) -> impl Future<Output = Result<bool, String>> + Send;
    /// Puts `value` to both keys in one transaction.
    fn txn(&self, keys: [String; 2], value: Arc<Vec<u8>>) -> impl Future<Output = Result<(), String>> + Send;
    /// Watches every key that starts with `prefix`, from now; returns once the server says the
    /// watch is established (its first, `created` response has arrived).
    fn watch_prefix(&self, prefix: String) -> impl Future<Output = Result<Self::Events, String>> + Send;
    /// Grants a lease of `ttl_seconds` (the system picks its id).
    fn lease_grant(&self, ttl_seconds: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// The prefix of every key the bench writes.
pub const KEY_PREFIX: &str = "bench-";

/// Microseconds since this process first asked: the clock of [`stamped_value`].
pub fn stamp_now() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A value of `size` bytes (at least 8) that starts with [`stamp_now`], little-endian: a watcher
/// that receives it knows how long ago the put was sent.
pub fn stamped_value(size: usize) -> Vec<u8> {
    let mut v = vec![b'x'; size.max(8)];
    v[..8].copy_from_slice(&stamp_now().to_le_bytes());
    v
}

/// The stamp a value of [`stamped_value`] starts with; 0 for a shorter value.
pub fn stamp_of(value: &[u8]) -> u64 {
    value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    pub mode: Mode,
    pub clients: usize,
    pub keys: u64,
    pub value_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Operations per second over all clients, each client pacing its own share; `None`: as
    /// fast as answers come (closed loop).
    pub rate: Option<f64>,
}

/// What the clients saw in the measured window.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Successful operations in the measured window.
    pub ops: u64,
    pub errors: u64,
    /// Failed compares (cas mode).
    pub conflicts: u64,
    pub elapsed: Duration,
    /// Latency of successful operations (and conflicts), in microseconds.
    pub latency_us: Histogram<u64>,
    /// The first few distinct error messages.
    pub sample_errors: Vec<String>,
    /// With [`drive_recorded`]: when each successful operation completed (warm-up included),
    /// sorted; empty otherwise.
    pub success_times: Vec<Instant>,
}

/// The key a client uses for its `i`th operation: spread over the key space.
pub fn key_of(n: u64) -> String {
    format!("{KEY_PREFIX}{n:08}")
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Runs the workload over `connections` (client `c` uses connection `c % len`).
pub async fn drive<T: KvTarget>(connections: &[Arc<T>], w: &Workload) -> anyhow::Result<Outcome> {
    drive_inner(connections, w, false).await
}

/// [`drive`], also recording when every successful operation completed (the failover
/// scenarios look for the longest stretch without one).
pub async fn drive_recorded<T: KvTarget>(connections: &[Arc<T>], w: &Workload) -> anyhow::Result<Outcome> {
    drive_inner(connections, w, true).await
}

async fn drive_inner<T: KvTarget>(connections: &[Arc<T>], w: &Workload, record: bool) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!connections.is_empty(), "no connections to drive");
    anyhow::ensure!(w.clients > 0 && w.keys > 0, "need at least one client and one key");
    let value = Arc::new(vec![b'x'; w.value_size]);
    let start = Instant::now();
    let measure_from = start + w.warmup;
    let deadline = measure_from + w.duration;
    let tasks: Vec<_> = (0..w.clients)
        .map(|c| {
            let conn = connections[c % connections.len()].clone();
            let (value, mode, keys) = (value.clone(), w.mode, w.keys);
            // A paced client starts its operations this far apart, offset so the clients interleave.
            let pace = w.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(w.clients as f64 / r));
            let mut next_start = start + pace.map_or(Duration::ZERO, |p| p.mul_f64(c as f64 / w.clients as f64));
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let (mut ops, mut errors, mut conflicts) = (0u64, 0u64, 0u64);
                let mut sample_errors = Vec::new();
                let mut times = Vec::new();
                let mut seed = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut n = 0u64;
                loop {
                    if let Some(pace) = pace {
                        tokio::time::sleep_until(next_start.into()).await;
                        next_start += pace;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    // xorshift: a cheap, per-client key sequence uniform over the key space.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = key_of(seed % keys);
                    let result = match mode {
                        Mode::Txn => {
                            conn.txn([key.clone(), key_of((seed + 1) % keys)], value.clone()).await.map(|_| true)
                        }
                        Mode::Put => conn.put(key, value.clone()).await.map(|_| true),
                        Mode::Watch => conn.put(key, Arc::new(stamped_value(value.len()))).await.map(|_| true),
                        Mode::Get => conn.get(key).await.map(|_| true),
                        Mode::GetStale => conn.get_stale(key).await.map(|_| true),
                        Mode::Mixed if n.is_multiple_of(2) => conn.put(key, value.clone()).await.map(|_| true),
                        Mode::Mixed => conn.get(key).await.map(|_| true),
                        Mode::Cas => conn.cas(key, value.clone()).await,
                    };
                    n += 1;
                    let done = Instant::now();
                    if record && done <= deadline && matches!(result, Ok(true)) {
                        times.push(done);
                    }
                    if now < measure_from || done > deadline {
                        continue;
                    }
                    match result {
                        Ok(ok) => {
                            let us = (done - now).as_micros().clamp(1, MAX_LATENCY_US as u128) as u64;
                            hist.saturating_record(us);
                            if ok {
                                ops += 1;
                            } else {
                                conflicts += 1;
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            if sample_errors.len() < 3 && !sample_errors.contains(&e) {
                                sample_errors.push(e);
                            }
                        }
                    }
                }
                (hist, ops, errors, conflicts, sample_errors, times)
            })
        })
        .collect();
    let mut out = Outcome {
        ops: 0,
        errors: 0,
        conflicts: 0,
        elapsed: w.duration,
        latency_us: new_histogram(),
        sample_errors: Vec::new(),
        success_times: Vec::new(),
    };
    for t in tasks {
        let (hist, ops, errors, conflicts, samples, times) = t.await?;
        out.success_times.extend(times);
        out.latency_us.add(&hist).map_err(|e| anyhow::anyhow!("merge histograms: {e}"))?;
        out.ops += ops;
        out.errors += errors;
        out.conflicts += conflicts;
        for s in samples {
            if out.sample_errors.len() < 5 && !out.sample_errors.contains(&s) {
                out.sample_errors.push(s);
            }
        }
    }
    out.success_times.sort_unstable();
    Ok(out)
}

/// Writes keys `0..keys` with at most `concurrency` writes in flight (before read modes).
pub async fn preload<T: KvTarget>(
    connections: &[Arc<T>],
    keys: u64,
    value_size: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    put_range(connections, 0..keys, keys, value_size, concurrency).await.map(|_| ())
}

/// Attempts per put in [`put_range`]: a put that failed (or timed out, outcome unknown) is
/// sent again; writing the same value twice is harmless for these bulk writes.
const PUT_ATTEMPTS: u32 = 5;

/// Writes puts number `puts` (a range), put `n` to key `n % key_space`, with at most
/// `concurrency` writes in flight. A failed put is retried (up to 5 attempts); returns how many
/// retries there were, and fails if a put fails every attempt.
pub async fn put_range<T: KvTarget>(
    connections: &[Arc<T>],
    puts: std::ops::Range<u64>,
    key_space: u64,
    value_size: usize,
    concurrency: usize,
) -> anyhow::Result<u64> {
    anyhow::ensure!(!connections.is_empty(), "no connections to write through");
    anyhow::ensure!(key_space > 0, "need at least one key");
    let value = Arc::new(vec![b'x'; value_size]);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(puts.start));
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|c| {
            let conn = connections[c % connections.len()].clone();
            let (value, next, end) = (value.clone(), next.clone(), puts.end);
            tokio::spawn(async move {
                let mut retries = 0u64;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= end {
                        return anyhow::Ok(retries);
                    }
                    let key = key_of(n % key_space);
                    let mut attempt = 1;
                    while let Err(e) = conn.put(key.clone(), value.clone()).await {
                        anyhow::ensure!(attempt < PUT_ATTEMPTS, "put {key} failed {attempt} times; last: {e}");
                        attempt += 1;
                        retries += 1;
                    }
                }
            })
        })
        .collect();
    let mut retries = 0;
    for t in tasks {
        retries += t.await??;
    }
    Ok(retries)
}

/// The longest stretch without a completed operation among `times` (sorted) that ends after
/// `from`: the window a fault at `from` caused. A stretch still open at `end` counts up to
/// `end`. Returns the window and whether some operation completed after `from` at all.
pub fn longest_gap_after(times: &[Instant], from: Instant, end: Instant) -> (Duration, bool) {
    let mut longest = Duration::ZERO;
    let mut prev: Option<Instant> = None;
    let mut any_after = false;
    for &t in times {
        if t > from {
            any_after = true;
            if let Some(p) = prev {
                longest = longest.max(t - p);
            } else {
                longest = longest.max(t - from);
            }
        }
        prev = Some(t);
    }
    let last = prev.map_or(from, |p| p.max(from));
    (longest.max(end.saturating_duration_since(last)), any_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_value_carries_its_send_time() {
        let before = stamp_now();
        let v = stamped_value(100);
        assert_eq!(v.len(), 100);
        let stamp = stamp_of(&v);
        assert!(stamp >= before && stamp <= stamp_now(), "{before} <= {stamp}");
        assert_eq!(stamped_value(3).len(), 8);
        assert_eq!(stamp_of(b"short"), 0);
    }

    #[test]
    fn longest_gap_spans_the_fault() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = [at(0), at(10), at(20), at(900), at(910), at(1000)];
        // Fault at 15 ms: the gap 20 → 900 is the window.
        assert_eq!(longest_gap_after(&times, at(15), at(1000)), (Duration::from_millis(880), true));
        // Gaps that ended before the fault do not count; an open stretch at the end does.
        assert_eq!(longest_gap_after(&times[..3], at(15), at(500)), (Duration::from_millis(480), true));
        assert_eq!(longest_gap_after(&times[..2], at(15), at(500)), (Duration::from_millis(485), false));
        assert_eq!(longest_gap_after(&[], at(15), at(500)), (Duration::from_millis(485), false));
    }
}
