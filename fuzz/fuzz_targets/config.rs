//! The config file parser (src/config.rs): `Config::parse` on any UTF-8 text.
//!
//! Beyond "no panic":
//! - an error's message is one line (the documented contract: operators read it in
//!   a log line) and names the file;
//! - an accepted config is consistent: cross-connects join two different existing
//!   ports, a port is in at most one cross-connect or bridge, bridge ports exist,
//!   access VLANs are 1..=4094, trunks are sorted, unique and in range, queue counts
//!   are 1..=16 (AF_XDP: 1..=64), port names are unique.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use podwire::bridge::VlanMode;
use podwire::config::{Config, PortKind, MAX_QUEUES, MAX_XDP_QUEUES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\r'), "error on several lines: {msg:?}");
            assert!(msg.starts_with("fuzz.toml"), "error does not name the file: {msg:?}");
        }
        Ok(c) => check(&c),
    }
});

fn check(c: &Config) {
    let n = c.ports.len();
    let names: HashSet<&str> = c.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), n, "duplicate port names");
    for p in &c.ports {
        let (q, max) = match &p.kind {
            PortKind::VhostUser(v) => (v.queues, MAX_QUEUES),
            PortKind::AfXdp(a) => (a.queues, MAX_XDP_QUEUES),
            PortKind::Vfio(v) => (v.queues, MAX_QUEUES),
        };
        assert!((1..=max).contains(&q), "port {} has {q} queues", p.name);
    }
    let mut used = HashSet::new();
    for x in &c.xconnects {
        let [a, b] = x.ports;
        assert!(a < n && b < n && a != b, "xconnect {a} <-> {b} of {n} ports");
        assert!(used.insert(a) && used.insert(b), "port in two forwarding roles");
    }
    for br in &c.bridges {
        assert!(!br.ports.is_empty());
        for (i, mode) in &br.ports {
            assert!(*i < n, "bridge port {i} of {n}");
            assert!(used.insert(*i), "port in two forwarding roles");
            match mode {
                VlanMode::Access(v) => assert!((1..=4094).contains(v), "access vlan {v}"),
                VlanMode::Trunk(ids) => {
                    assert!(ids.windows(2).all(|w| w[0] < w[1]), "trunk {ids:?} not sorted/unique");
                    assert!(ids.iter().all(|v| (1..=4094).contains(v)), "trunk {ids:?}");
                }
            }
        }
    }
    assert!(!c.workers.cores.is_empty());
    assert!(c.memory.buffers > 0);
}
