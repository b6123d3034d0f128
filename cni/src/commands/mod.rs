//! The CNI operations. Each takes the checked configuration and environment and
//! returns what goes on stdout (ADD's result, or nothing).

mod add;
mod check;
mod del;
mod gc;
mod status;
mod teardown;

use serde_json::Value;

use crate::config::NetConf;
use crate::control::Control;
use crate::env::{CniEnv, Command};
use crate::error::CniResult;
use crate::log::Log;
use crate::state::State;

/// What every command works with.
pub struct Ctx<'a> {
    /// The network configuration.
    pub conf: &'a NetConf,
    /// The CNI environment.
    pub env: &'a CniEnv,
    /// The log.
    pub log: &'a Log,
    /// The plugin's records and lock.
    pub state: State,
    /// The daemon.
    pub control: Control,
}

impl<'a> Ctx<'a> {
    /// The context for `conf` and `env`.
    pub fn new(conf: &'a NetConf, env: &'a CniEnv, log: &'a Log) -> Self {
        Ctx {
            conf,
            env,
            log,
            state: State::new(&conf.state_dir),
            control: Control::new(&conf.control_socket),
        }
    }
}

/// Runs `env.command` (not VERSION, which needs no configuration).
pub fn run(ctx: &Ctx<'_>) -> CniResult<Option<Value>> {
    match ctx.env.command {
        Command::Add => add::add(ctx).map(Some),
        Command::Del => del::del(ctx).map(|()| None),
        Command::Check => check::check(ctx).map(|()| None),
        Command::Gc => gc::gc(ctx).map(|()| None),
        Command::Status => status::status(ctx).map(|()| None),
        Command::Version => {
            Ok(Some(serde_json::from_str(&crate::version::version_answer()).unwrap_or_default()))
        }
    }
}
