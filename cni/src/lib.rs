//! podwire-cni: the CNI plugin that attaches pods to podwire with vhost-user
//! sockets. It accepts Intel's userspace-CNI network object (with
//! `"engine": "podwire"`), speaks CNI 1.1.0 (and 1.0.0, 0.4.0, 0.3.x configs) and
//! drives the running daemon through its control socket (docs/control-api.md).
//!
//! Modules, in the order an ADD uses them: [`env`] (CNI_* variables), [`config`]
//! (the network object), [`naming`] (socket and port names), [`state`] (records and
//! the lock), [`ipam`] (delegation to host-local & co), [`control`] (the daemon's
//! HTTP API), [`files`] (configData and device-info), [`result`] (the versioned
//! result), [`kube`] (the pod's annotations when a kubeconfig is given), [`commands`]
//! (ADD, DEL, CHECK, GC, STATUS), [`log`] (`logFile`), [`error`] (the spec's codes).
//! `cni/README.md` is the user's reference.

pub mod commands;
pub mod config;
pub mod control;
pub mod env;
pub mod error;
pub mod files;
pub mod ipam;
pub mod kube;
pub mod log;
pub mod naming;
pub mod result;
pub mod state;
pub mod version;

use std::io::Read;

use crate::error::{CniError, DECODE_FAILURE, IO_FAILURE};

/// Largest configuration read from stdin.
pub const MAX_STDIN: u64 = 1 << 20;

/// What one invocation prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// stdout (a result, an error object, or nothing).
    pub stdout: String,
    /// The exit status.
    pub code: i32,
}

/// Runs one CNI invocation: `env` from the process, `stdin` as read.
pub fn invoke(stdin: &[u8]) -> Outcome {
    let fail = |e: CniError, version: &str| Outcome { stdout: e.to_json(version), code: 1 };
    let env = match env::CniEnv::from_process() {
        Ok(e) => e,
        Err(e) => return fail(e, &config::version_of(stdin)),
    };
    if env.command == env::Command::Version {
        return Outcome { stdout: version::version_answer(), code: 0 };
    }
    let conf = match config::NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return fail(e, &config::version_of(stdin)),
    };
    let log = log::Log::new(conf.log_file.clone(), conf.log_level);
    let ctx = commands::Ctx::new(&conf, &env, &log);
    match commands::run(&ctx) {
        Ok(Some(v)) => Outcome { stdout: v.to_string(), code: 0 },
        Ok(None) => Outcome { stdout: String::new(), code: 0 },
        Err(e) => {
            log.error(&format!(
                "{} {}/{}: {e}",
                env.command.as_str(),
                env.container_id,
                env.ifname
            ));
            fail(e, &conf.cni_version)
        }
    }
}

/// Reads stdin (at most [`MAX_STDIN`] bytes).
pub fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut buf).map_err(|e| {
        CniError::new(IO_FAILURE, format!("reading the configuration on stdin: {e}"))
    })?;
    if buf.len() as u64 > MAX_STDIN {
        return Err(CniError::new(
            DECODE_FAILURE,
            format!("the configuration is larger than {MAX_STDIN} bytes"),
        ));
    }
    Ok(buf)
}
