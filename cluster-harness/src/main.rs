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
    }
}
