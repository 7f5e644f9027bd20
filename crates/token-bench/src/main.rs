//! `token-bench`: measures the token service over real gRPC, and the Redis ceiling it is
//! compared with, in the same run. Every mode ends with one machine-readable line
//! (`bench <mode>: key=value ...`) so runs can be compared.
//!
//! # Layout
//! - [`ceiling`]: `redis-benchmark` running EVALSHA of the service's own rotate script.
//! - [`throughput`]: C callers refreshing their own chains (optionally mixed with, or replaced
//!   by, introspection); with `--echo-duration`, first the echo ceiling of the same server.
//! - [`storm`]: N parallel refreshes of one token, many rounds.
//! - [`memory`]: Redis bytes per active family with realistic ids and scopes, for several
//!   numbers of families per subject.
//! - [`revoke_subject`]: the time to revoke every session of a subject with 10,000, and the
//!   longest Redis command of it.
//! - [`issue`]: a client and N families written to a file, for load generators elsewhere
//!   (the gateway's wrk run).
//! - [`setup`]: connecting, registering the bench client, issuing families, readiness.
//! - [`report`]: latency histograms, error counts by reason, process CPU and memory.

#![forbid(unsafe_code)]

mod ceiling;
mod issue;
mod memory;
mod report;
mod revoke_subject;
mod setup;
mod storm;
mod throughput;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "token-bench",
    about = "Load, storm and memory benchmarks for token-server"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// Where the service and its Redis are, and which processes to read CPU time from.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The token service.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub endpoint: String,
    /// The Redis behind it (for call counts and memory).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The token-server process, to report its CPU time and peak RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The redis-server process, to report its CPU time.
    #[arg(long)]
    pub redis_pid: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Wait until the service reports SERVING.
    WaitReady {
        #[command(flatten)]
        target: Target,
    },
    /// The ceiling: redis-benchmark running EVALSHA of the rotate script.
    Ceiling(ceiling::Options),
    /// Refreshes (or introspections) per second and latency at a given concurrency.
    Throughput(throughput::Options),
    /// N parallel refreshes of one token, many rounds.
    Storm(storm::Options),
    /// Redis bytes per active family.
    Memory(memory::Options),
    /// A client and N families, written to a file for other load generators.
    Issue(issue::Options),
    /// The time to revoke every session of one subject with N families.
    RevokeSubject(revoke_subject::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::WaitReady { target } => setup::wait_ready(&target, Duration::from_secs(60)).await,
        Mode::Ceiling(options) => ceiling::run(options).await,
        Mode::Throughput(options) => throughput::run(options).await,
        Mode::Storm(options) => storm::run(options).await,
        Mode::Memory(options) => memory::run(options).await,
        Mode::Issue(options) => issue::run(options).await,
        Mode::RevokeSubject(options) => revoke_subject::run(options).await,
    }
}
