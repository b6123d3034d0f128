//! The `podwire` command: `run`, `check-config`, `stats`, `port`, `bridge`,
//! `xconnect`, `mac-table`, `reload`, `pci`, `doctor`, `demo`.

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

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the forwarding daemon until SIGINT or SIGTERM (SIGHUP reloads the config).
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
        #[arg(long, alias = "control", conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Take the control socket path from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the raw JSON instead of a table (with --watch: one line per sample).
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds (default 1) with packet rates, until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<f64>,
    },
    /// Add, remove and list the running daemon's ports (docs/control-api.md).
    ///
    /// A port added here is created at once (a server-mode vhost-user socket is
    /// listening when the command returns) and is polled once it is in a bridge
    /// (`--bridge`, or `podwire bridge attach`) or a cross-connect (`podwire
    /// xconnect add`). It survives reloads; it does not survive a restart (put it in
    /// the config file for that).
    Port {
        #[command(subcommand)]
        what: PortCommand,
    },
    /// Cross-connects of the running daemon: everything one port receives is sent on
    /// the other, and back.
    Xconnect {
        #[command(subcommand)]
        what: XconnectCommand,
    },
    /// Re-read the daemon's config file and apply only what changed (as SIGHUP does);
    /// ports added through the control API are left alone.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// PCI network functions: list them, give them to podwire (vfio-pci) and back.
    Pci {
        #[command(subcommand)]
        command: PciCommand,
    },
    /// Check hugepages, the IOMMU, the VFIO modules and CPU isolation, and say what
    /// to fix. Exits non-zero when something VFIO ports need is missing.
    Doctor,
    /// The running daemon's L2 bridges: list, show, add, delete; ports attach and
    /// detach.
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
    /// Show podwire switching real traffic, then clean up (root).
    ///
    /// Creates two network namespaces behind veth pairs (pwdemo-<pid>-a and -b,
    /// 10.99.0.1 and .2) and, when dpdk-testpmd is installed, a DPDK pod
    /// (testpmd with net_virtio_user in icmpecho mode, answering 10.99.0.100) in a
    /// third; starts `podwire run` with AF_XDP ports on the veths and a vhost-user
    /// port for the pod, all on one L2 bridge. Then pings the pod and between the
    /// namespaces, sends a TCP stream from a to b checking every byte, and keeps
    /// pinging for --duration seconds, with live per-port counters. Prints a
    /// summary (replies, RTTs, throughput, counters) and removes everything it
    /// created, also on error or Ctrl-C. Exits 0 only when every check passed
    /// (130 when interrupted).
    Demo {
        /// Seconds of steady pings after the checks (0: none).
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// MiB sent in the TCP transfer.
        #[arg(long, default_value_t = 8)]
        tcp_mib: u64,
        /// Leave out the DPDK pod even when dpdk-testpmd is installed.
        #[arg(long)]
        no_pod: bool,
        /// After the checks, keep everything running (live counters) until Ctrl-C.
        #[arg(long)]
        keep: bool,
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
    #[arg(long, alias = "control", default_value = DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The daemon to ask, for `podwire port` (where `--socket` is the port's).
#[derive(clap::Args)]
struct Control {
    /// The daemon's control socket.
    #[arg(long = "control", value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control: PathBuf,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum PortCommand {
    /// Create a port. Keys are those of a `[[ports]]` table of the config file,
    /// checked by the same code (e.g. `podwire port add pod1 --type vhost-user
    /// --socket /var/run/pod1.sock --bridge br0 --vlan 10`).
    Add {
        /// The port's name (letters, digits, '-', '_', '.').
        name: Option<String>,
        /// "vhost-user", "af-xdp" or "vfio".
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// vhost-user: the socket path.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// vhost-user: "server" (podwire listens; default) or "client".
        #[arg(long)]
        mode: Option<String>,
        /// Queues (pairs).
        #[arg(long)]
        queues: Option<i64>,
        /// vhost-user, vfio: the MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// vhost-user: permission bits of the socket, e.g. 0660.
        #[arg(long)]
        socket_perms: Option<String>,
        /// vhost-user: group of the socket file.
        #[arg(long)]
        socket_group: Option<String>,
        /// af-xdp: the kernel interface.
        #[arg(long)]
        interface: Option<String>,
        /// af-xdp: auto, native or generic.
        #[arg(long)]
        xdp_mode: Option<String>,
        /// af-xdp: auto, on or off.
        #[arg(long)]
        zero_copy: Option<String>,
        /// af-xdp: replace a foreign XDP program.
        #[arg(long)]
        replace_program: bool,
        /// vfio: the PCI address.
        #[arg(long)]
        pci: Option<String>,
        /// vfio: descriptors per ring.
        #[arg(long)]
        ring_size: Option<i64>,
        /// Join this (existing) bridge.
        #[arg(long)]
        bridge: Option<String>,
        /// With --bridge: access VLAN (1..=4094).
        #[arg(long, conflicts_with = "trunk")]
        vlan: Option<i64>,
        /// With --bridge: trunk VLANs, comma separated (e.g. 10,20).
        #[arg(long)]
        trunk: Option<String>,
        /// The whole request body as JSON (`POST /ports`); other flags add to it.
        #[arg(long, value_name = "BODY")]
        json: Option<String>,
        #[command(flatten)]
        control: Control,
    },
    /// Remove a port: it leaves its bridge or cross-connect, its socket file goes.
    Del {
        /// The port.
        name: String,
        #[command(flatten)]
        control: Control,
    },
    /// List ports with where they are attached and their counters.
    List {
        #[command(flatten)]
        control: Control,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one port.
    Show {
        /// The port.
        name: String,
        #[command(flatten)]
        control: Control,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum XconnectCommand {
    /// Cross-connect two ports that are in no bridge or cross-connect.
    Add {
        /// One port.
        a: String,
        /// The other.
        b: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove the cross-connect PORT is in (both ports stay, not polled).
    Del {
        /// Either port of the cross-connect.
        port: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the cross-connects.
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum BridgeCommand {
    /// Create an empty bridge (ports join with `attach` or `port add --bridge`).
    Add {
        /// The bridge's name.
        name: String,
        /// Forget an address not seen for this long (default 300).
        #[arg(long)]
        mac_age_secs: Option<u32>,
        /// Most MAC addresses (default 8192).
        #[arg(long)]
        mac_table_size: Option<u32>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a bridge; refused while it has ports.
    Del {
        /// The bridge.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// An existing port joins a bridge.
    Attach {
        /// The bridge.
        bridge: String,
        /// The port.
        port: String,
        /// Access VLAN (default 1).
        #[arg(long, conflicts_with = "trunk")]
        vlan: Option<u16>,
        /// Trunk VLANs, comma separated.
        #[arg(long, value_delimiter = ',')]
        trunk: Option<Vec<u16>>,
        /// The core whose worker polls the port (default: the least-loaded worker).
        #[arg(long)]
        worker: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
    /// A port leaves a bridge (its MAC addresses are forgotten; the port stays).
    Detach {
        /// The bridge.
        bridge: String,
        /// The port.
        port: String,
        #[command(flatten)]
        target: Target,
    },
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

fn stats(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
    watch: Option<f64>,
) -> ExitCode {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match Config::load(&c) {
            Ok(c) => c.control_socket,
            Err(e) => return fail(e),
        },
        (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    if let Some(secs) = watch {
        if !(0.1..=3600.0).contains(&secs) {
            return fail("--watch: give 0.1 to 3600 seconds");
        }
        return watch_stats(&socket, json, secs);
    }
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

/// `podwire stats --watch`: a refreshing table with rates until Ctrl-C or an error.
fn watch_stats(socket: &Path, json: bool, secs: f64) -> ExitCode {
    let tty = std::io::stdout().is_terminal();
    let mut prev: Option<(std::time::Instant, podwire::control::StatsResponse)> = None;
    loop {
        let (body, now) = match fetch_stats(socket) {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        let t = std::time::Instant::now();
        if json {
            println!("{}", body.trim_end());
        } else {
            let dt = prev.as_ref().map_or(0.0, |(t0, _)| (t - *t0).as_secs_f64());
            let table = cli::rate_table(&now, prev.as_ref().map(|(_, s)| s), dt);
            if tty {
                print!("\x1b[H\x1b[2J");
            }
            println!("podwire stats every {secs} s ({}); Ctrl-C to stop", socket.display());
            print!("{table}");
            if !tty {
                println!();
            }
        }
        prev = Some((t, now));
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    }
}

/// The body of `POST /ports` from `podwire port add`'s flags.
fn port_body(what: &PortCommand) -> Result<serde_json::Value, String> {
    let PortCommand::Add {
        name,
        kind,
        socket,
        mode,
        queues,
        mac,
        socket_perms,
        socket_group,
        interface,
        xdp_mode,
        zero_copy,
        replace_program,
        pci,
        ring_size,
        bridge,
        vlan,
        trunk,
        json,
        ..
    } = what
    else {
        return Err("not port add".into());
    };
    let mut body = match json {
        Some(j) => match serde_json::from_str::<serde_json::Value>(j) {
            Ok(v) if v.is_object() => v,
            Ok(_) => return Err("--json: the body must be a JSON object".into()),
            Err(e) => return Err(format!("--json: not valid JSON: {e}")),
        },
        None => serde_json::json!({}),
    };
    let mut set = |k: &str, v: serde_json::Value| body[k] = v;
    let s = |v: &Option<String>| v.clone().map(serde_json::Value::from);
    for (k, v) in [
        ("name", s(name)),
        ("type", s(kind)),
        ("socket", socket.as_ref().map(|p| p.display().to_string().into())),
        ("mode", s(mode)),
        ("queues", queues.map(Into::into)),
        ("mac", s(mac)),
        ("socket_perms", s(socket_perms)),
        ("socket_group", s(socket_group)),
        ("interface", s(interface)),
        ("xdp_mode", s(xdp_mode)),
        ("zero_copy", s(zero_copy)),
        ("replace_program", replace_program.then_some(true.into())),
        ("pci", s(pci)),
        ("ring_size", ring_size.map(Into::into)),
        ("bridge", s(bridge)),
        ("vlan", vlan.map(Into::into)),
    ] {
        if let Some(v) = v {
            set(k, v);
        }
    }
    if let Some(t) = trunk {
        let ids: Result<Vec<i64>, _> = t.split(',').map(|x| x.trim().parse::<i64>()).collect();
        match ids {
            Ok(ids) => set("trunk", ids.into()),
            Err(_) => {
                return Err(format!("--trunk: {t:?} is not a comma-separated list of VLAN ids"))
            }
        }
    }
    if body.get("name").is_none() {
        return Err("give the port's name (podwire port add NAME --type ...)".into());
    }
    if body.get("type").is_none() {
        return Err("give --type vhost-user, af-xdp or vfio".into());
    }
    Ok(body)
}

fn port(what: PortCommand) -> ExitCode {
    match what {
        PortCommand::Add { ref control, .. } => match port_body(&what) {
            Ok(body) => print_or_fail(cli::port_add(&control.control, &body)),
            Err(e) => fail(e),
        },
        PortCommand::Del { name, control } => print_or_fail(cli::port_del(&control.control, &name)),
        PortCommand::List { control, json } => {
            print_or_fail(cli::port_list(&control.control, json))
        }
        PortCommand::Show { name, control, json } => {
            print_or_fail(cli::port_show(&control.control, &name, json))
        }
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
        Command::Stats { socket, config, json, watch } => stats(socket, config, json, watch),
        Command::Port { what } => port(what),
        Command::Reload { target: t } => print_or_fail(cli::reload(&t.socket)),
        Command::Xconnect { what: XconnectCommand::Add { a, b, target: t } } => {
            print_or_fail(cli::xconnect_add(&t.socket, &a, &b))
        }
        Command::Xconnect { what: XconnectCommand::Del { port, target: t } } => {
            print_or_fail(cli::xconnect_del(&t.socket, &port))
        }
        Command::Xconnect { what: XconnectCommand::List { target: t } } => {
            print_or_fail(cli::xconnect_list(&t.socket, t.json))
        }
        Command::Bridge {
            what: BridgeCommand::Add { name, mac_age_secs, mac_table_size, target: t },
        } => print_or_fail(cli::bridge_add(&t.socket, &name, mac_age_secs, mac_table_size)),
        Command::Bridge { what: BridgeCommand::Del { name, target: t } } => {
            print_or_fail(cli::bridge_del(&t.socket, &name))
        }
        Command::Bridge {
            what: BridgeCommand::Attach { bridge, port, vlan, trunk, worker, target: t },
        } => print_or_fail(cli::bridge_attach(
            &t.socket,
            &bridge,
            &port,
            cli::Placement { vlan, trunk: trunk.as_deref(), worker },
        )),
        Command::Bridge { what: BridgeCommand::Detach { bridge, port, target: t } } => {
            print_or_fail(cli::bridge_detach(&t.socket, &bridge, &port))
        }
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
        Command::Demo { duration, tcp_mib, no_pod, keep } => {
            if tcp_mib == 0 || tcp_mib > 4096 {
                return fail("--tcp-mib: give 1 to 4096");
            }
            podwire::demo::main(&podwire::demo::DemoOptions {
                duration: std::time::Duration::from_secs(duration),
                tcp_bytes: tcp_mib << 20,
                no_pod,
                keep,
            })
        }
    }
}
