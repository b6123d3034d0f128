//! podwire-cni: the CNI plugin. Not implemented yet (see the CNI plugin issue).
fn main() {
    eprintln!("podwire-cni: not implemented yet; see the CNI plugin issue");
    std::process::exit(1);
}
