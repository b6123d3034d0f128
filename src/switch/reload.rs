//! Reload: re-read the config file and apply only the difference to the running
//! switch. Ports, bridges and cross-connects created through the control API are
//! left alone.
//!
//! The new file is validated completely, then checked against the running state
//! (memory, workers and control socket cannot change without a restart; names and
//! sockets must not clash with ports made through the API; a bridge that goes must
//! have no API-made members). Only then is anything touched, in this order: ports
//! that go, change or move leave their bridge or cross-connect; removed and changed
//! ports are dropped; bridges that go (or whose settings changed) are deleted; new
//! bridges are created; new and changed ports are created; ports join their bridges
//! and cross-connects. Ports that did not change keep forwarding throughout.

use std::collections::{HashMap, HashSet};

use super::{ErrorKind, Origin, Switch, SwitchError};
use crate::bridge::BridgeSpec;
use crate::config::{Config, PortConfig};
use crate::control::ReloadReport;
use crate::engine::Attachment;

/// Where a config puts each of its ports.
pub(super) fn wiring(c: &Config) -> HashMap<String, Attachment> {
    let mut out: HashMap<String, Attachment> =
        c.ports.iter().map(|p| (p.name.clone(), Attachment::Idle)).collect();
    for x in &c.xconnects {
        let [a, b] = [&c.ports[x.ports[0]].name, &c.ports[x.ports[1]].name];
        out.insert(a.clone(), Attachment::Xconnect(b.clone()));
        out.insert(b.clone(), Attachment::Xconnect(a.clone()));
    }
    for br in &c.bridges {
        for (i, mode) in &br.ports {
            out.insert(c.ports[*i].name.clone(), Attachment::Bridge(br.name.clone(), mode.clone()));
        }
    }
    out
}

fn by_name(c: &Config) -> HashMap<&str, &PortConfig> {
    c.ports.iter().map(|p| (p.name.as_str(), p)).collect()
}

/// A bridge's settings without its members.
fn settings(b: &BridgeSpec) -> (u32, usize) {
    (b.mac_age_secs, b.mac_table_size)
}

fn bad(reason: String) -> SwitchError {
    SwitchError::bad_request(None, reason)
}

impl Switch {
    /// Reads the config file again and applies it (`POST /reload`, SIGHUP).
    pub fn reload_from_file(&mut self) -> Result<ReloadReport, SwitchError> {
        let Some(path) = self.config_path.clone() else {
            return Err(bad("podwire was not started from a config file".into()));
        };
        let new = Config::load(&path).map_err(|e| bad(e.to_string()))?;
        self.reload(new)
    }

    /// Applies the difference between the running file config and `new`.
    pub fn reload(&mut self, new: Config) -> Result<ReloadReport, SwitchError> {
        let old = self.config.clone();
        if new.memory != old.memory {
            return Err(bad("[memory] cannot change while podwire runs; restart it".into()));
        }
        if new.workers != old.workers {
            return Err(bad("[workers] cannot change while podwire runs; restart it".into()));
        }
        if new.control_socket != old.control_socket {
            return Err(bad("control_socket cannot change while podwire runs; restart it".into()));
        }
        if new.state_file != old.state_file {
            return Err(bad("state_file cannot change while podwire runs; restart it".into()));
        }
        let (old_ports, new_ports) = (by_name(&old), by_name(&new));
        let (old_wiring, new_wiring) = (wiring(&old), wiring(&new));
        let old_bridges: HashMap<&str, &BridgeSpec> =
            old.bridges.iter().map(|b| (b.name.as_str(), b)).collect();
        let new_bridges: HashMap<&str, &BridgeSpec> =
            new.bridges.iter().map(|b| (b.name.as_str(), b)).collect();

        // Bridges that go: gone from the file or with other settings (recreated).
        let gone_bridges: Vec<&str> = old
            .bridges
            .iter()
            .map(|b| b.name.as_str())
            .filter(|n| {
                new_bridges.get(n).is_none_or(|nb| settings(nb) != settings(old_bridges[n]))
            })
            .collect();
        let new_bridge_names: Vec<&str> = new
            .bridges
            .iter()
            .map(|b| b.name.as_str())
            .filter(|n| !old_bridges.contains_key(n) || gone_bridges.contains(n))
            .collect();

        let mut report = ReloadReport::default();
        for p in &new.ports {
            match old_ports.get(p.name.as_str()) {
                None => report.added.push(p.name.clone()),
                Some(o) if **o != *p => report.changed.push(p.name.clone()),
                Some(_) => {
                    let in_gone = matches!(&new_wiring[&p.name],
                        Attachment::Bridge(b, _) if gone_bridges.contains(&b.as_str()));
                    if old_wiring[&p.name] != new_wiring[&p.name] || in_gone {
                        report.changed.push(p.name.clone());
                    }
                }
            }
        }
        for p in &old.ports {
            if !new_ports.contains_key(p.name.as_str()) {
                report.removed.push(p.name.clone());
            }
        }
        // Ports that keep their settings but not their place are not recreated.
        let recreate: Vec<String> = report
            .changed
            .iter()
            .filter(|n| old_ports[n.as_str()] != new_ports[n.as_str()])
            .cloned()
            .collect();

        // ---- checks against the running state; nothing changed so far ----
        let api_ports: HashSet<&str> = self
            .ports
            .iter()
            .filter(|e| e.origin == Origin::Api)
            .map(|e| e.config.name.as_str())
            .collect();
        for name in &report.added {
            if api_ports.contains(name.as_str()) {
                return Err(bad(format!(
                    "ports: {name:?} exists already, created through the control API; \
                     delete it first or rename it in the file"
                )));
            }
        }
        for b in &new_bridge_names {
            if self.api_bridges.iter().any(|a| a == b) {
                return Err(bad(format!(
                    "bridge: {b:?} exists already, created through the control API"
                )));
            }
        }
        for b in &gone_bridges {
            if let Some(shared) = self.engine.bridge(b) {
                let foreign: Vec<String> = shared
                    .ports()
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| !old_ports.contains_key(n.as_str()))
                    .collect();
                if !foreign.is_empty() {
                    return Err(bad(format!(
                        "bridge: {b:?} would be removed or recreated but has ports created \
                         through the control API ({}); remove them from it first",
                        foreign.join(", ")
                    )));
                }
            }
        }
        let leaving: Vec<String> = report.removed.iter().chain(&recreate).cloned().collect();
        let mut extra = 0;
        for name in report.added.iter().chain(&recreate) {
            let cfg = new_ports[name.as_str()];
            // Created already by a reload of this file that failed half way.
            let in_place =
                self.ports.iter().any(|e| e.origin == Origin::Config && e.config == *cfg)
                    && report.added.contains(name);
            if !in_place {
                self.check_new_port(cfg, &leaving, extra).map_err(|e| bad(e.message))?;
                extra += 1;
            }
        }

        // ---- apply ----
        let mut done = Vec::new();
        let result =
            self.apply(&new, &report, &recreate, &gone_bridges, &new_bridge_names, &mut done);
        self.pool.release_thread_cache();
        match result {
            Ok(()) => {
                self.limits = new.limits;
                self.config = new;
                tracing::info!(
                    added = ?report.added,
                    removed = ?report.removed,
                    changed = ?report.changed,
                    "config reloaded"
                );
                Ok(report)
            }
            Err(e) => {
                // The running file config stays the old one: reloading again (once the
                // cause is fixed) redoes the same difference, skipping the steps that
                // are already in place.
                let applied = if done.is_empty() { "nothing".to_owned() } else { done.join("; ") };
                tracing::error!(applied = %applied, "reload failed half way: {e}");
                Err(SwitchError::new(
                    ErrorKind::Internal,
                    e.field.as_deref(),
                    format!(
                        "reload applied in part: {}. Applied before that: {applied}. \
                         Nothing else changed; reload again once the cause is fixed to \
                         apply the rest",
                        e.message
                    ),
                ))
            }
        }
    }

    fn apply(
        &mut self,
        new: &Config,
        report: &ReloadReport,
        recreate: &[String],
        gone_bridges: &[&str],
        new_bridges: &[&str],
        done: &mut Vec<String>,
    ) -> Result<(), SwitchError> {
        let op = |e| SwitchError::from_op(e, None);
        // 1. Everything that moves leaves where it is; so do members of bridges that go.
        let mut moving: Vec<String> =
            report.removed.iter().chain(&report.changed).cloned().collect();
        for b in gone_bridges {
            if let Some(shared) = self.engine.bridge(b) {
                moving.extend(shared.ports().into_iter().map(|(n, _)| n));
            }
        }
        for name in &moving {
            match self.engine.attachment(name) {
                Some(Attachment::Bridge(b, _)) => {
                    self.engine.bridge_remove_port(&b, name).map_err(op)?;
                    done.push(format!("port {name} left bridge {b}"));
                }
                Some(Attachment::Xconnect(peer)) => {
                    self.engine.remove_xconnect(name).map_err(op)?;
                    done.push(format!("cross-connect {name} <-> {peer} removed"));
                }
                _ => {}
            }
        }
        // 2. Removed and changed ports go (a port already gone, by an earlier reload
        // that failed half way, is skipped; so are the steps below when in place).
        for name in report.removed.iter().chain(recreate) {
            if self.engine.port_status(name).is_some() {
                self.destroy_port(name)?;
                done.push(format!("port {name} removed"));
            }
        }
        // 3. Bridges that go.
        for b in gone_bridges {
            if self.engine.bridge(b).is_some() {
                self.engine.delete_bridge(b).map_err(op)?;
                done.push(format!("bridge {b} deleted"));
            }
        }
        // 4. New bridges.
        for b in new.bridges.iter().filter(|b| new_bridges.contains(&b.name.as_str())) {
            if self.engine.bridge(&b.name).is_none() {
                let spec = BridgeSpec { ports: Vec::new(), ..b.clone() };
                self.engine.create_bridge(&spec).map_err(op)?;
                done.push(format!("bridge {} created", b.name));
            }
        }
        // 5. New and changed ports.
        for p in new.ports.iter() {
            if (report.added.contains(&p.name) || recreate.contains(&p.name))
                && self.engine.port_status(&p.name).is_none()
            {
                self.create_port(p.clone(), Origin::Config)?;
                done.push(format!("port {} created", p.name));
            }
        }
        // 6. Everything that moved (or is new) takes its place.
        for b in &new.bridges {
            for (i, mode) in &b.ports {
                let name = &new.ports[*i].name;
                if self.engine.attachment(name) == Some(Attachment::Idle) {
                    self.engine.bridge_add_port(&b.name, name, mode.clone()).map_err(op)?;
                    done.push(format!("port {name} joined bridge {}", b.name));
                }
            }
        }
        for x in &new.xconnects {
            let [a, b] = [&new.ports[x.ports[0]].name, &new.ports[x.ports[1]].name];
            if self.engine.attachment(a) == Some(Attachment::Idle)
                && self.engine.attachment(b) == Some(Attachment::Idle)
            {
                self.engine.add_xconnect(a, b).map_err(op)?;
                done.push(format!("cross-connect {a} <-> {b} added"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use podwire_driver::{Mempool, MempoolConfig};

    fn text(dir: &std::path::Path, ports: &[(&str, &str)]) -> String {
        let core = crate::config::allowed_cpus().and_then(|c| c.last().copied()).unwrap_or(0);
        let mut t = format!(
            "control_socket = \"{}/ctl.sock\"\n[workers]\ncores = [{core}]\n",
            dir.display()
        );
        for (name, kind) in ports {
            t += &match *kind {
                "vhost" => format!(
                    "[[ports]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}/{name}.sock\"\nmode = \"server\"\n",
                    dir.display()
                ),
                iface => format!(
                    "[[ports]]\nname = \"{name}\"\ntype = \"af-xdp\"\ninterface = \"{iface}\"\n"
                ),
            };
        }
        t
    }

    #[test]
    fn a_reload_failing_half_way_says_what_it_applied_and_a_retry_completes_it() {
        let dir = std::env::temp_dir().join(format!("pw-reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let parse = |t: &str| Config::parse(t, std::path::Path::new("t.toml")).unwrap();
        let old = parse(&text(&dir, &[("a", "vhost"), ("b", "vhost")]));
        let pool =
            Mempool::small_pages(MempoolConfig { count: 1024, ..Default::default() }).unwrap();
        let ports = crate::ports::build_ports(&old.ports, &pool).unwrap();
        let core = old.workers.cores.clone();
        let engine = Engine::start_with_bridges(ports, &[], &[], &core, Some(&pool)).unwrap();
        let mut sw = Switch::new(engine, pool, old, None);

        // b goes, c comes, d cannot be created (no such interface): b is removed and
        // c created before d fails, and the answer says so.
        let bad_file = text(&dir, &[("a", "vhost"), ("c", "vhost"), ("d", "pwnosuch0")]);
        let e = sw.reload(parse(&bad_file)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal, "{e}");
        assert!(e.message.contains("Applied before that: port b removed; port c created."), "{e}");
        assert!(sw.engine().port_status("b").is_none());
        assert!(sw.engine().port_status("c").is_some());

        // The same file again fails the same way, having nothing more to undo or redo.
        let e = sw.reload(parse(&bad_file)).unwrap_err();
        assert!(e.message.contains("Applied before that: nothing."), "{e}");

        // Fixed: the rest is applied; b and c are not touched again.
        let r = sw.reload(parse(&text(&dir, &[("a", "vhost"), ("c", "vhost")]))).unwrap();
        assert_eq!((r.added, r.removed), (vec!["c".to_owned()], vec!["b".to_owned()]));
        let mut names: Vec<String> =
            sw.engine().status().iter().map(|s| s.name().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["a", "c"]);
        drop(sw.stop());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
