//! `bench` through the library, petkv only: a short put run and a short get run (with preload)
//! on a fresh 3-pod set, checking that the report holds sane figures.

use std::time::Duration;

use petkv_harness::bench::{self, BenchSpec, Mode, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_petkv_put_and_get_for_a_second() -> anyhow::Result<()> {
    let spec = BenchSpec {
        mode: Mode::Put,
        clients: 4,
        keys: 1000,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        ..Default::default()
    };
    let reports = bench::sweep(&spec, &[1, 4]).await?;
    assert_eq!(reports.len(), 2);
    for report in &reports {
        let p = report.petkv.as_ref().expect("petkv ran");
        assert!(report.etcd.is_none());
        assert_eq!(p.system, System::Petkv);
        assert!(p.ops_per_sec > 0.0, "{}", report.table());
        assert!(p.p50_ms > 0.0 && p.p50_ms <= p.p99_ms && p.p99_ms <= p.p999_ms, "{}", report.table());
        assert_eq!(p.errors, 0, "{}", report.table());
        assert!(p.cpu_seconds > 0.0, "{}", report.table());
        assert_eq!(p.peak_rss_mib.len(), 3);
        assert!(p.peak_rss_mib.iter().all(|m| *m > 1.0));
    }
    let svg = bench::sweep::svg("test", &reports);
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));

    let get = BenchSpec { mode: Mode::GetStale, preload: Some(200), clients: 2, ..spec };
    let report = bench::run(&get).await?;
    assert_eq!(report.keys, 200);
    let p = report.petkv.as_ref().expect("petkv ran");
    assert!(p.ops_per_sec > 0.0 && p.errors == 0, "{}", report.table());
    Ok(())
}

/// The same etcd client on petkv's etcd port: every mode the comparison uses runs without an
/// error, and the report says which API petkv was driven through.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_petkv_through_its_etcd_port_with_the_etcd_client() -> anyhow::Result<()> {
    for mode in [Mode::Put, Mode::Get, Mode::Txn] {
        let spec = BenchSpec {
            mode,
            clients: 4,
            keys: 200,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            via: bench::Via::EtcdApi,
            ..Default::default()
        };
        let report = bench::run(&spec).await?;
        let p = report.petkv.as_ref().expect("petkv ran");
        assert!(p.ops_per_sec > 0.0 && p.errors == 0, "{}", report.table());
        assert!(report.table().contains("through its etcd v3 port"), "{}", report.table());
    }
    Ok(())
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn compare_etcd_without_the_feature_says_how_to_enable_it() {
    let spec = BenchSpec { compare: Some(bench::Compare::Etcd), ..Default::default() };
    let err = bench::run(&spec).await.expect_err("no etcd support in this build");
    assert!(format!("{err:#}").contains("--features petkv-harness/etcd"), "{err:#}");
}

/// The scenarios, petkv only, with tiny parameters: each must measure something and leave the
/// set healthy (the failover scenarios start the stopped leader again and wait for it).
mod scenarios {
    use std::time::Duration;

    use petkv_harness::bench::report::ScenarioReport;
    use petkv_harness::bench::scenario::{self, Scenario, ScenarioSpec};
    use petkv_harness::bench::System;

    fn spec(scenario: Scenario) -> ScenarioSpec {
        ScenarioSpec {
            scenario,
            clients: 4,
            keys: 500,
            before: Duration::from_secs(1),
            after: Duration::from_secs(5),
            restart_keys: 2000,
            puts: 2000,
            writers: 32,
            ..Default::default()
        }
    }

    fn figure(report: &ScenarioReport, name: &str) -> f64 {
        assert!(report.etcd.is_none());
        report.median(System::Petkv, name).unwrap_or_else(|| panic!("no {name:?} in\n{}", report.table()))
    }

    async fn failover(s: Scenario) -> anyhow::Result<()> {
        let report = scenario::run(&spec(s)).await?;
        let table = report.table();
        assert_eq!(report.runs.len(), 1, "{table}");
        let window = figure(&report, "window without a successful write ms");
        assert!(window > 0.0 && window < 5000.0, "{table}");
        assert_eq!(figure(&report, "writes resumed (1 = yes)"), 1.0, "{table}");
        assert!(figure(&report, "successful puts/s over the run") > 0.0, "{table}");
        // The old leader was started again and reported ready before the run ended.
        assert!(figure(&report, "stopped member: start → ready again ms") > 0.0, "{table}");
        assert!(table.contains("(the leader)"), "{table}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failover_kill_measures_a_window_and_restarts_the_leader() -> anyhow::Result<()> {
        failover(Scenario::FailoverKill).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failover_term_measures_a_window_and_restarts_the_leader() -> anyhow::Result<()> {
        failover(Scenario::FailoverTerm).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cold_start_times_the_first_acknowledged_put() -> anyhow::Result<()> {
        let report = scenario::run(&ScenarioSpec { rounds: 2, ..spec(Scenario::ColdStart) }).await?;
        assert_eq!(report.runs.len(), 2);
        let first = figure(&report, "launch → first acknowledged put ms");
        let all = figure(&report, "launch → all 3 members serving (polled every 50 ms) ms");
        assert!(first > 0.0 && all >= first, "{}", report.table());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_ready_times_a_follower_back_to_serving() -> anyhow::Result<()> {
        let report = scenario::run(&spec(Scenario::RestartReady)).await?;
        let table = report.table();
        let ready = figure(&report, "start → ready ms");
        let reads = figure(&report, "start → serves a local read of the last key ms");
        assert!(ready > 0.0 && reads > 0.0, "{table}");
        assert!(figure(&report, "data dir of the restarted member MiB") > 0.0, "{table}");
        assert!(table.contains("(a follower)"), "{table}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn volume_measures_the_data_dirs_twice_and_the_retained_history() -> anyhow::Result<()> {
        // A retention of 500 revisions, passed to every member: after 2,000 puts the leader has
        // compacted some of them (it looks every 500 ms, so the puts of the last half second
        // may not be compacted yet), and never into the last 500.
        let args = petkv_harness::bench::sut::ExtraArgs {
            petkv: vec!["--history-retention=500".into()],
            ..Default::default()
        };
        let report = scenario::run(&ScenarioSpec { args, ..spec(Scenario::Volume) }).await?;
        let table = report.table();
        let retained = figure(&report, "revisions of history retained");
        assert!((500.0..2000.0).contains(&retained), "{table}");
        assert!(table.contains("petkv serve flags added: --history-retention=500"), "{table}");
        let half = figure(&report, "data dir MiB after 1000 puts (largest member)");
        let all = figure(&report, "data dir MiB after 2000 puts (largest member)");
        assert!(half > 0.0 && all > 0.0, "{table}");
        assert!(figure(&report, "growth from half to all the puts ×") > 0.0, "{table}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn footprint_measures_watchers_and_leases() -> anyhow::Result<()> {
        let report = scenario::run(&ScenarioSpec { watchers: 300, leases: 1000, ..spec(Scenario::Footprint) }).await?;
        let table = report.table();
        let watcher = figure(&report, "KiB per idle watcher (all members)");
        let lease = figure(&report, "KiB per lease (the member that grew most)");
        assert!(watcher.is_finite() && lease.is_finite(), "{table}");
        assert!(figure(&report, "RSS before, MiB (all members)") > 3.0, "{table}");
        assert!(table.contains("with 300 watchers") && table.contains("with 1000 leases too"), "{table}");
        Ok(())
    }
}

/// `--mode watch`, petkv only, paced at 300 puts/s: every watcher receives every acknowledged
/// put, the put-to-event latency is measured, and the pace holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_delivers_every_put_to_every_watcher() -> anyhow::Result<()> {
    // 16 clients: the pace holds even when the suite's other clusters slow each put down
    // (300 puts/s needs a put p50 under ~50 ms from 16 clients, not under ~13 ms as from 4).
    let spec = BenchSpec {
        mode: Mode::Watch,
        clients: 16,
        watchers: 6,
        keys: 1000,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        rate: Some(300.0),
        ..Default::default()
    };
    let report = bench::watch::run(&spec).await?;
    let table = report.table();
    let figure = |name: &str| report.median(System::Petkv, name).unwrap_or_else(|| panic!("no {name:?} in\n{table}"));
    assert_eq!(figure("events missing after the drain (all watchers)"), 0.0, "{table}");
    assert_eq!(figure("failed puts"), 0.0, "{table}");
    assert!(figure("events delivered/s (all watchers)") > 0.0, "{table}");
    let puts = figure("puts acknowledged/s");
    assert!((200.0..=330.0).contains(&puts), "paced at 300 puts/s: {table}");
    // Each put reaches all 6 watchers; the window's edges make the ratio a little uneven.
    let per_put = figure("events per put (ideal: 6)");
    assert!((5.0..=7.0).contains(&per_put), "{table}");
    let (p50, p99) = (figure("put→event p50 ms"), figure("put→event p99 ms"));
    assert!(p50 > 0.0 && p50 <= p99, "{table}");
    // An event cannot arrive before its put was sent, nor (at p50) before most puts commit.
    assert!(p50 >= figure("put acknowledged p50 ms") * 0.5, "{table}");
    assert!(table.contains("endpoints: spread over all members"), "{table}");
    Ok(())
}
