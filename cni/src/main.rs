//! podwire-cni: the CNI plugin executable (see the library's docs and cni/README.md).
use std::io::Write;

const HELP: &str = "\
podwire-cni: CNI plugin attaching pods to podwire with vhost-user sockets

Run by a container runtime (or Multus), not by hand: the operation comes from the
environment (CNI_COMMAND = ADD | DEL | CHECK | STATUS | GC | VERSION, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH), the network configuration on stdin, the
result or error object on stdout. Accepts Intel's userspace-CNI network object with
\"engine\": \"podwire\" (type \"podwire\" or \"userspace\"); spec 1.1.0, 1.0.0,
0.4.0 and 0.3.x configurations. Talks to the podwire daemon on its control socket
(\"controlSocket\", default /run/podwire/podwire.sock).

Try:  echo '{}' | CNI_COMMAND=VERSION podwire-cni
Docs: cni/README.md in the podwire source.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return;
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!(
            "podwire-cni {} (CNI {})",
            env!("CARGO_PKG_VERSION"),
            podwire_cni::version::SUPPORTED.join(", ")
        );
        return;
    }
    let outcome = match podwire_cni::read_stdin() {
        Ok(stdin) => podwire_cni::invoke(&stdin),
        Err(e) => {
            podwire_cni::Outcome { stdout: e.to_json(podwire_cni::version::CURRENT), code: 1 }
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.code);
}
