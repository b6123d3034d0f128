//! The `podwire` command: `run`, `check-config`, `stats`, `bridge`, `mac-table`, `pci`,
//! `doctor`.

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
    /// PCI network functions: list them, give them to podwire (vfio-pci) and back.
    Pci {
        #[command(subcommand)]
        command: PciCommand,
    },
    /// Check hugepages, the IOMMU, the VFIO modules and CPU isolation, and say what
    /// to fix. Exits non-zero when something VFIO ports need is missing.
    Doctor,
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

#[derive(Subcommand)]
enum PciCommand {
    /// Ethernet functions with their driver, IOMMU group and whether podwire can use them.
    List,
    /// Bind a function to vfio-pci so that a `type = "vfio"` port can own it.
    Bind {
        /// PCI address, e.g. 0000:01:10.0.
        addr: String,
    },
    /// Give a function back to its kernel driver.
    Unbind {
        /// PCI address, e.g. 0000:01:10.0.
        addr: String,
    },
    /// Own a function (bound to vfio-pci) and answer ARP and ping for an IPv4
    /// address until Ctrl-C: checks a VF's wiring without a config.
    Echo {
        /// PCI address, e.g. 0000:01:10.0.
        addr: String,
        /// IPv4 address to answer for.
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// Queue pairs to poll.
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// Bytes of packet data per buffer (9216 for 9000-byte jumbo frames).
        #[arg(long, default_value_t = 2048)]
        buffer_size: usize,
        /// MAC address to use instead of the device's (or the PF's choice).
        #[arg(long)]
        mac: Option<String>,
        /// Stop when this file appears.
        #[arg(long)]
        stop_file: Option<PathBuf>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
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
    match podwire::daemon::run(&config, Some(config_path)) {
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

fn pci(command: PciCommand) -> ExitCode {
    use podwire_driver::pci::{PciAddress, Sysfs};
    let sysfs = Sysfs::system();
    let parse = |a: &str| a.parse::<PciAddress>();
    match command {
        PciCommand::List => {
            let nics = match sysfs.list_nics() {
                Ok(n) => n,
                Err(e) => return fail(e),
            };
            println!(
                "{:<13} {:<9} {:<10} {:<6} {:<12} podwire",
                "ADDRESS", "ID", "DRIVER", "GROUP", "INTERFACE"
            );
            for d in nics {
                let usable = match (d.podwire_driver(), d.iommu_group, d.driver.as_deref()) {
                    (None, _, _) if d.sriov_totalvfs.is_some() => format!(
                        "no: an SR-IOV PF; create VFs with `echo N > \
                         /sys/bus/pci/devices/{}/sriov_numvfs` (N <= {})",
                        d.addr,
                        d.sriov_totalvfs.unwrap_or(0)
                    ),
                    (None, _, _) => "no (no podwire driver)".to_string(),
                    (Some(drv), None, _) => format!("no ({drv}, but no IOMMU group)"),
                    (Some(drv), Some(_), Some("vfio-pci")) => format!("yes ({drv}, bound)"),
                    (Some(drv), Some(_), _) if !d.up_interfaces.is_empty() => format!(
                        "in use ({drv}): `ip link set {} down`, then `podwire pci bind {}`",
                        d.up_interfaces.join(","),
                        d.addr
                    ),
                    (Some(drv), Some(_), _) => {
                        format!("yes ({drv}) after `podwire pci bind {}`", d.addr)
                    }
                };
                let usable = match d.physfn {
                    Some(pf) => format!("{usable} [VF of {pf}]"),
                    None => usable,
                };
                println!(
                    "{:<13} {:04x}:{:04x} {:<10} {:<6} {:<12} {usable}",
                    d.addr.to_string(),
                    d.vendor,
                    d.device,
                    d.driver.as_deref().unwrap_or("-"),
                    d.iommu_group.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                    if d.interfaces.is_empty() { "-".into() } else { d.interfaces.join(",") },
                );
            }
            ExitCode::SUCCESS
        }
        PciCommand::Bind { addr } => {
            let r = parse(&addr)
                .map_err(|e| e.to_string())
                .and_then(|a| sysfs.bind_vfio(a).map_err(|e| e.to_string()));
            match r {
                Ok(d) => {
                    println!(
                        "{}: bound to vfio-pci (IOMMU group {})",
                        d.addr,
                        d.iommu_group.map(|g| g.to_string()).unwrap_or_else(|| "?".into())
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        PciCommand::Echo { addr, ip, queues, buffer_size, mac, stop_file, seconds } => {
            let pci = match parse(&addr) {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            let mac = match mac.map(|m| m.parse()).transpose() {
                Ok(m) => m,
                Err(e) => return fail(format!("--mac: {e}")),
            };
            init_logging(None);
            let o = podwire::echo::EchoOptions {
                pci,
                ip,
                queues,
                buffer_size,
                mac,
                stop_file,
                duration: seconds.map(std::time::Duration::from_secs),
            };
            match podwire::echo::run(&o) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        PciCommand::Unbind { addr } => {
            let r = parse(&addr)
                .map_err(|e| e.to_string())
                .and_then(|a| sysfs.unbind_vfio(a).map_err(|e| e.to_string()));
            match r {
                Ok(d) => {
                    println!("{}: now on {}", d.addr, d.driver.as_deref().unwrap_or("no driver"));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn doctor() -> ExitCode {
    use podwire::doctor::{report, Doctor, Status};
    let findings = Doctor::default().run();
    print!("{}", report(&findings));
    if findings.iter().any(|f| f.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Stats { socket, config, json } => stats(socket, config, json),
        Command::Pci { command } => pci(command),
        Command::Doctor => doctor(),
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
