//! `petkv-harness`: a StatefulSet on one machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "petkv-harness", version, about = "Run petkv as a StatefulSet on one machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start 3 pods, kill, restart, wipe and restart them, and verify identity and data.
    Demo {
        /// Keep the pods' volumes and logs here (default: a temporary dir, removed afterwards).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Measure failover (kill -9 the leader), single-client put latency and N-client throughput.
    Measure {
        #[arg(long, default_value_t = 5)]
        failover_runs: usize,
        #[arg(long, default_value_t = 2000)]
        latency_puts: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        throughput_secs: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { state_dir } => match petkv_harness::demo::run_fresh(state_dir.as_deref()).await {
            Ok(r) if r.identity_ok && r.data_ok => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("petkv-harness demo: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Measure { failover_runs, latency_puts, clients, throughput_secs } => {
            let spec = petkv_harness::measure::MeasureSpec {
                failover_runs,
                latency_puts,
                clients,
                throughput_for: std::time::Duration::from_secs(throughput_secs),
            };
            match petkv_harness::measure::run(&spec).await {
                Ok(m) => {
                    println!(
                        "\nsummary: failover median {:?} over {} runs (worst {:?}); put p50 {:?}, p99 {:?}; {} clients: {:.0} puts/s",
                        petkv_harness::measure::median(&m.failover_windows),
                        m.failover_windows.len(),
                        m.failover_windows.iter().max().copied().unwrap_or_default(),
                        m.put_latency_p50,
                        m.put_latency_p99,
                        m.clients,
                        m.throughput_ops
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("petkv-harness measure: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
