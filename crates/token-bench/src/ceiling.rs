//! The ceiling: how fast Redis alone runs the service's own rotate script, measured by
//! `redis-benchmark` (EVALSHA) at the same concurrency as the service benchmark.
//!
//! Every call presents generation 1 of a random pre-created family: the first call on a family
//! rotates it, later ones replay (a read-only path). With 4x more families than requests,
//! about 88% of calls are full rotations; the line reports the expected fraction.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Args;
use deadpool_redis::redis;

/// Prefixed with token-store's prelude at run time, for its family record encoder.
const POPULATE: &str = include_str!("../lua/populate.lua");
const DEPOPULATE: &str = include_str!("../lua/depopulate.lua");
const KEY_PREFIX: &str = "bench:f:{";
const CLIENT: &str = "bench-ceiling-client";
const CHUNK: usize = 50_000;

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Concurrent connections, as the service benchmark's callers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 200_000)]
    pub requests: usize,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let (host, port) = host_port(&options.redis_url)?;
    let client = redis::Client::open(options.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(token_store::script::rotate::SOURCE)
        .query_async(&mut conn)
        .await
        .context("SCRIPT LOAD of rotate.lua")?;

    let families = options.requests * 4;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let absolute_expiry = now + 90 * 24 * 3600 * 1000;
    let populate = redis::Script::new(&token_store::script::prefixed_with_prelude(POPULATE));
    for first in (0..families).step_by(CHUNK) {
        let last = (first + CHUNK).min(families);
        let _: u64 = populate
            .arg(KEY_PREFIX)
            .arg(first)
            .arg(last)
            .arg(now)
            .arg(absolute_expiry)
            .arg(CLIENT)
            .invoke_async(&mut conn)
            .await
            .context("populating families")?;
    }

    let key = format!("{KEY_PREFIX}__rand_int__}}");
    let output = Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port.to_string()])
        .args(["-c", &options.concurrency.to_string()])
        .args(["-n", &options.requests.to_string()])
        .args(["-r", &families.to_string()])
        .arg("--csv")
        .args(["EVALSHA", &sha, "1", &key, "1", CLIENT, &now.to_string()])
        .args(["60000", "2592000000", "k1", "revoke-family"])
        .output()
        .context("cannot run redis-benchmark (Debian package redis-tools)")?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let csv = String::from_utf8_lossy(&output.stdout);
    let row = csv
        .lines()
        .rfind(|l| l.starts_with("\"EVALSHA"))
        .context("no EVALSHA row in redis-benchmark's output")?;
    let fields: Vec<f64> = row
        .split("\",\"")
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    let [rps, _avg, _min, p50, _p95, p99, max] = fields[..] else {
        bail!("unexpected redis-benchmark row: {row}");
    };
    let n = options.requests as f64;
    let rotate_fraction = families as f64 * (1.0 - (-n / families as f64).exp()) / n;

    // Leave nothing behind: the Redis may be shared, and the memory mode measures it.
    let depopulate = redis::Script::new(DEPOPULATE);
    for first in (0..families).step_by(CHUNK) {
        let _: u64 = depopulate
            .arg(KEY_PREFIX)
            .arg(first)
            .arg((first + CHUNK).min(families))
            .invoke_async(&mut conn)
            .await
            .context("removing families")?;
    }
    println!(
        "bench ceiling: evalsha_per_s={rps:.0} p50_ms={p50:.2} p99_ms={p99:.2} max_ms={max:.2} \
         concurrency={} requests={} rotate_fraction={rotate_fraction:.2}",
        options.concurrency, options.requests
    );
    Ok(())
}

fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("redis://")
        .context("the ceiling needs a redis:// URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "6379"));
    Ok((host.to_owned(), port.parse().context("Redis port")?))
}
