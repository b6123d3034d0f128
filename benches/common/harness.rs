//! Summaries shared by the side-by-side harnesses (`#[path]`-included by pvp.rs and
//! afxdp.rs): min / median / max of a series of runs.

/// Min, median and max of `v` (`None` when empty).
pub fn min_med_max(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
    Some((s[0], med, s[n - 1]))
}

/// "min / med / max" with `prec` decimals, or "-".
pub fn fmt3(v: Option<(f64, f64, f64)>, prec: usize) -> String {
    match v {
        Some((a, b, c)) => format!("{a:.prec$} / {b:.prec$} / {c:.prec$}"),
        None => "-".into(),
    }
}

/// Starts `bin run` on config text `cfg` (written to `dir/podwire.toml`), logging to
/// `dir/podwire.log`; the daemon is killed if the harness dies.
pub fn spawn_podwire(
    bin: &std::path::Path,
    dir: &std::path::Path,
    cfg: &str,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let cfg_path = dir.join("podwire.toml");
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.join("podwire.log"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: runs between fork and exec and only calls prctl (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
