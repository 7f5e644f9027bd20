//! Telemetry setup shared by every binary: one call at start, one guard to hold until exit.
//!
//! # Layout
//! - [`init`]: installs the global `tracing` subscriber: `EnvFilter` from `RUST_LOG`
//!   (default `info`), pretty (coloured only on a terminal) or JSON lines on stderr.
//! - [`LogFormat`]: the two output formats.

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object a line, for log pipelines.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format {s:?}: expected \"pretty\" or \"json\""
            )),
        }
    }
}

/// Keeps telemetry alive; dropping it flushes what is buffered.
#[must_use = "telemetry stops when the guard is dropped"]
pub struct Guard {
    _private: (),
}

/// Installs the global subscriber for `service_name`. Call once, early in `main`.
pub fn init(service_name: &'static str, format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in files and log pipelines they are noise.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(true);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    tracing::debug!(service = service_name, "telemetry initialised");
    Guard { _private: () }
}
