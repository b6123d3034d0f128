//! The plugin's log: one line per event appended to `logFile` (none when unset),
//! filtered by `logLevel`. Logging never fails a command.

use std::io::Write;
use std::path::PathBuf;

use crate::config::LogLevel;

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct Log {
    file: Option<PathBuf>,
    level: LogLevel,
}

impl Log {
    /// A log to `file` at `level`.
    pub fn new(file: Option<PathBuf>, level: LogLevel) -> Self {
        Self { file, level }
    }

    /// A log that writes nothing.
    pub fn none() -> Self {
        Self { file: None, level: LogLevel::Error }
    }

    fn write(&self, level: LogLevel, tag: &str, msg: &str) {
        let Some(file) = &self.file else { return };
        if level > self.level {
            return;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(file) {
            let _ = writeln!(f, "{secs:.3} podwire-cni[{}] {tag}: {msg}", std::process::id());
        }
    }

    /// An error.
    pub fn error(&self, msg: &str) {
        self.write(LogLevel::Error, "error", msg);
    }

    /// A warning.
    pub fn warn(&self, msg: &str) {
        self.write(LogLevel::Warning, "warning", msg);
    }

    /// One line per command.
    pub fn info(&self, msg: &str) {
        self.write(LogLevel::Info, "info", msg);
    }

    /// Each step.
    pub fn debug(&self, msg: &str) {
        self.write(LogLevel::Debug, "debug", msg);
    }
}
