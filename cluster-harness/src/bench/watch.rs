//! `bench --mode watch`: `--watchers` W watchers of every bench key while `--clients` C clients
//! put, on petkv and (with `--compare etcd`) on etcd, alternating round by round.
//!
//! Watcher `i` has its own connection to member `i mod 3` and one watch stream on it, for both
//! systems. The writers are the usual closed loop ([`super::workload`]), placed by `--target`;
//! each put's value starts with the time it was sent ([`stamped_value`]), so a watcher that
//! receives the event knows the put-to-event latency: from just before the put was sent to the
//! event's arrival at the watcher, commit included.
//!
//! After the writers stop, each watcher waits (up to [`DRAIN`]) for every acknowledged put: the
//! events still missing then are a figure, and must be 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::report::{Metric, ScenarioReport, ScenarioRun};
use super::sut::SystemUnderTest;
use super::workload::{self, stamp_now, EventStream, KvTarget, Workload, KEY_PREFIX};
use super::{BenchSpec, Mode, Systems};

/// How long the watchers may take, after the writers stop, to receive every acknowledged put.
const DRAIN: Duration = Duration::from_secs(15);
/// How often a waiting watcher looks whether it has everything.
const CHECK: Duration = Duration::from_millis(100);
/// Highest latency the histogram records, in microseconds.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Runs the watch bench: fresh systems, `spec.rounds` rounds (petkv, then etcd, in each).
pub async fn run(spec: &BenchSpec) -> anyhow::Result<ScenarioReport> {
    anyhow::ensure!(spec.mode == Mode::Watch, "the watch bench runs --mode watch, not {}", spec.mode.name());
    anyhow::ensure!(spec.watchers > 0 && spec.clients > 0, "--mode watch needs at least one watcher and one client");
    let systems = Systems::start(spec).await?;
    let result = async {
        let mut runs = Vec::new();
        for round in 1..=spec.rounds.max(1) {
            runs.push(one_round(&systems.petkv, spec, round).await?);
            #[cfg(feature = "etcd")]
            if let Some(e) = &systems.etcd {
                runs.push(one_round(e, spec, round).await?);
            }
        }
        anyhow::Ok(runs)
    }
    .await;
    systems.stop().await?;
    let rate = spec.rate.map_or(String::new(), |r| format!(" at {r:.0} puts/s"));
    let settings = format!(
        "{} watchers · {} clients / {} conns{rate} · {} keys · {} B · {}s",
        spec.watchers,
        spec.clients,
        spec.connections_for(spec.clients),
        spec.keys,
        spec.value_size.max(8),
        spec.duration.as_secs_f64()
    );
    let notes = vec![
        "watchers: watcher i has its own connection to member i mod 3, one watch of every bench key".into(),
        spec.target.describe().to_string(),
        "put→event: from just before the put is sent until the watcher receives its event (commit included)".into(),
    ];
    Ok(ScenarioReport::new(Mode::Watch.name(), settings, result?, notes))
}

/// What one watcher saw.
struct Seen {
    /// Events received in the measured window, and their put-to-event latency (µs).
    in_window: u64,
    latency_us: Histogram<u64>,
    /// Events received in all.
    total: u64,
    error: Option<String>,
}

/// Receives events until it has `expected` (set once the writers stop) or the drain ends.
async fn watch<E: EventStream>(
    mut events: E,
    window: (Instant, Instant),
    expected: Arc<AtomicU64>,
    drain_until: Instant,
) -> Seen {
    let (measure_from, deadline) = window;
    let mut seen = Seen {
        in_window: 0,
        latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid"),
        total: 0,
        error: None,
    };
    while seen.total < expected.load(Ordering::Acquire) && Instant::now() < drain_until {
        let batch = match tokio::time::timeout(CHECK, events.next_batch()).await {
            Err(_) => continue,
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) => {
                seen.error = Some("the watch stream ended".into());
                break;
            }
            Ok(Err(e)) => {
                seen.error = Some(e);
                break;
            }
        };
        let (now, now_us) = (Instant::now(), stamp_now());
        seen.total += batch.len() as u64;
        if now >= measure_from && now <= deadline {
            for stamp in batch {
                seen.latency_us.saturating_record(now_us.saturating_sub(stamp).clamp(1, MAX_LATENCY_US));
                seen.in_window += 1;
            }
        }
    }
    seen
}

async fn one_round<S: SystemUnderTest>(s: &S, spec: &BenchSpec, round: usize) -> anyhow::Result<ScenarioRun> {
    let members = s.members();
    let mut watchers = Vec::with_capacity(spec.watchers);
    for i in 0..spec.watchers {
        let conn = s.connect_to(i % members).await?;
        let events = conn.watch_prefix(KEY_PREFIX.into()).await.map_err(|e| anyhow::anyhow!("watcher {i}: {e}"))?;
        watchers.push((conn, events));
    }
    let writers = s.connect(spec.connections_for(spec.clients), spec.target).await?;
    let w = Workload {
        mode: Mode::Watch,
        clients: spec.clients,
        keys: spec.keys,
        value_size: spec.value_size,
        warmup: spec.warmup,
        duration: spec.duration,
        rate: spec.rate,
    };
    let pids = s.pids();
    let start = Instant::now();
    let window = (start + w.warmup, start + w.warmup + w.duration);
    let drain_until = window.1 + DRAIN;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    // The connections stay open until every watcher is done.
    let (conns, streams): (Vec<_>, Vec<_>) = watchers.into_iter().unzip();
    let tasks: Vec<_> =
        streams.into_iter().map(|events| tokio::spawn(watch(events, window, expected.clone(), drain_until))).collect();
    let cpu = super::cpu_over_window(pids.clone(), tokio::time::Instant::from_std(start), w.warmup, w.duration);
    let outcome = workload::drive_recorded(&writers, &w).await?;
    let acknowledged = outcome.success_times.len() as u64;
    expected.store(acknowledged, Ordering::Release);
    let cpu_seconds = cpu.await??;
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let (mut delivered, mut missing, mut errors) = (0u64, 0u64, Vec::new());
    for (i, t) in tasks.into_iter().enumerate() {
        let seen = t.await?;
        delivered += seen.in_window;
        missing += acknowledged.saturating_sub(seen.total);
        latency.add(&seen.latency_us).map_err(|e| anyhow::anyhow!("merge histograms: {e}"))?;
        if let Some(e) = seen.error {
            errors.push(format!("watcher {i}: {e}"));
        }
    }
    drop(conns);
    let rss = super::procstat::peak_rss(&pids)?;
    let secs = w.duration.as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let puts_per_sec = outcome.ops as f64 / secs;
    let events_per_sec = delivered as f64 / secs;
    let metrics = vec![
        Metric::new("events delivered/s (all watchers)", events_per_sec, 0),
        Metric::new("puts acknowledged/s", puts_per_sec, 0),
        Metric {
            ratio: false,
            ..Metric::new(
                format!("events per put (ideal: {})", spec.watchers),
                super::report::ratio(events_per_sec, puts_per_sec).unwrap_or(0.0),
                2,
            )
        },
        Metric::new("put→event p50 ms", ms(0.5), 2),
        Metric::new("put→event p99 ms", ms(0.99), 2),
        Metric::new("put→event p99.9 ms", ms(0.999), 2),
        Metric::new("put acknowledged p50 ms", outcome.latency_us.value_at_quantile(0.5) as f64 / 1000.0, 2),
        Metric::new("put acknowledged p99 ms", outcome.latency_us.value_at_quantile(0.99) as f64 / 1000.0, 2),
        Metric::new("CPU s (cluster, window)", cpu_seconds, 2),
        Metric::new(
            "CPU ms per 1,000 events delivered",
            if delivered > 0 { cpu_seconds * 1e6 / delivered as f64 } else { 0.0 },
            1,
        ),
        Metric::new("peak RSS MiB (largest member)", rss.iter().copied().max().unwrap_or(0) as f64 / 1048576.0, 0),
        Metric::count("events missing after the drain (all watchers)", missing as f64),
        Metric::count("failed puts", outcome.errors as f64),
    ];
    eprintln!(
        "round {round}: {}: {events_per_sec:.0} events/s, {puts_per_sec:.0} puts/s, put→event p99 {:.2} ms, {missing} \
         missing",
        s.system().name(),
        ms(0.99)
    );
    let mut notes = errors;
    notes.extend(outcome.sample_errors.iter().map(|e| format!("put error: {e}")));
    Ok(ScenarioRun { system: s.system(), round, metrics, notes })
}
