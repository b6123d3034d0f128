//! The `podwire` command: `run`, `check-config`, `stats`, `bridge`, `mac-table`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podwire::config::{Config, DEFAULT_CONTROL_SOCKET};
use podwire::control::{cli, fetch_stats};
use tracing_subscriber::EnvFilter;

/// Userspace networking for Kubernetes: poll-mode forwarding between vhost-user,
/// AF_XDP and VFIO ports.
#[derive(Parser)]
#[command(name = "podwire", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the forwarding daemon until SIGINT or SIGTERM.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the running daemon's port counters.
    Stats {
        /// The daemon's control socket.
        #[arg(long, conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Take the control socket path from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the running daemon's L2 bridges.
    Bridge {
        #[command(subcommand)]
        what: BridgeCommand,
    },
    /// Print a bridge's MAC table.
    MacTable {
        /// The bridge.
        bridge: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which daemon to ask, and how to print.
#[derive(clap::Args)]
struct Target {
    /// The daemon's control socket.
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BridgeCommand {
    /// List bridges with their ports and counters.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Show one bridge.
    Show {
        /// The bridge.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Prints a CLI command's output, or its error as one line.
fn print_or_fail(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Prints an error as one line and returns failure.
fn fail(e: impl std::fmt::Display) -> ExitCode {
    let msg = e.to_string().replace('\n', " ");
    eprintln!("podwire: error: {msg}");
    ExitCode::FAILURE
}

fn init_logging(config_level: Option<&str>) {
    let from_env =
        std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty()).map(EnvFilter::try_new);
    let (filter, bad_env) = match from_env {
        Some(Ok(f)) => (f, None),
        Some(Err(e)) => (EnvFilter::new(config_level.unwrap_or("info")), Some(e)),
        None => (EnvFilter::new(config_level.unwrap_or("info")), None),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(e) = bad_env {
        tracing::warn!("ignoring RUST_LOG: {e}");
    }
}

fn run(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    init_logging(config.log_level.as_deref());
    tracing::info!(
        config = %config_path.display(),
        ports = config.ports.len(),
        xconnects = config.xconnects.len(),
        cores = ?config.workers.cores,
        "podwire {} starting",
        env!("CARGO_PKG_VERSION")
    );
    match podwire::daemon::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn check_config(config_path: &Path) -> ExitCode {
    match Config::load(config_path) {
        Ok(c) => {
            println!(
                "{}: ok (ports: {}, cross-connects: {}, worker cores: {:?})",
                config_path.display(),
                c.ports.len(),
                c.xconnects.len(),
                c.workers.cores
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn stats(socket: Option<PathBuf>, config: Option<PathBuf>, json: bool) -> ExitCode {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match Config::load(&c) {
            Ok(c) => c.control_socket,
            Err(e) => return fail(e),
        },
        (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    match fetch_stats(&socket) {
        Ok((body, stats)) => {
            if json {
                println!("{}", body.trim_end());
            } else {
                print!("{}", stats.to_table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Stats { socket, config, json } => stats(socket, config, json),
        Command::Bridge { what: BridgeCommand::List { target: t } } => {
            print_or_fail(cli::bridge_list(&t.socket, t.json))
        }
        Command::Bridge { what: BridgeCommand::Show { name, target: t } } => {
            print_or_fail(cli::bridge_show(&t.socket, &name, t.json))
        }
        Command::MacTable { bridge, target: t } => {
            print_or_fail(cli::mac_table(&t.socket, &bridge, t.json))
        }
    }
}
