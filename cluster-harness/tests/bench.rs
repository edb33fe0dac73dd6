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

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn compare_etcd_without_the_feature_says_how_to_enable_it() {
    let spec = BenchSpec { compare: Some(bench::Compare::Etcd), ..Default::default() };
    let err = bench::run(&spec).await.expect_err("no etcd support in this build");
    assert!(format!("{err:#}").contains("--features etcd"), "{err:#}");
}
