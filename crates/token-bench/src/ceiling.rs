//! The ceiling: how fast Redis alone runs the service's own rotate script, measured by
//! `redis-benchmark` (EVALSHA) at the same concurrency as the service benchmark.
//!
//! Every call presents generation 1 of a random pre-created family: the first call on a family
//! rotates it, later ones replay (a read-only path). With 4x more families than requests,
//! about 88% of calls are full rotations. Families live as the store keeps them, each a field
//! of its subject's hash; redis-benchmark can randomise only the key, so each hash is one
//! subject with one family (the common case) under a fixed family id.
//!
//! The run must have measured rotations, not refusals: one call with the benchmark's own
//! arguments is checked to rotate and then replay before the run, and afterwards every family
//! is read back. The printed `rotate_fraction` is the families found at generation 2 over the
//! calls (the expected fraction is checked); any family missing, revoked or at another
//! generation, or any failed EVALSHA, fails the mode.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Args;
use deadpool_redis::redis;

use crate::setup;

/// Prefixed with token-store's prelude at run time, for its family record encoder.
const POPULATE: &str = include_str!("../lua/populate.lua");
const DEPOPULATE: &str = include_str!("../lua/depopulate.lua");
const KEY_PREFIX: &str = "bench:s:{";
const CLIENT: &str = "bench-ceiling-client";
/// The family field of every hash: 22 base64url characters, as a real family id.
const FAMILY: &str = "Q2VpbGluZ0ZhbWlseTAwMQ";
/// Families per populate or depopulate call: each call blocks Redis (and must answer within
/// the client's response timeout), so a few tens of milliseconds of work at most.
const CHUNK: usize = 10_000;
/// The service's defaults: 60 s grace, 30 days idle, 90 days absolute.
const GRACE_MS: u64 = 60_000;
const IDLE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
const ABSOLUTE_TTL_MS: u64 = 90 * 24 * 3600 * 1000;

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
    let absolute_expiry = now + ABSOLUTE_TTL_MS;
    // One more family than redis-benchmark draws from (`-r`): the pre-flight's.
    let populated = families + 1;
    let populate = redis::Script::new(&token_store::script::prefixed_with_prelude(POPULATE));
    for first in (0..populated).step_by(CHUNK) {
        let last = (first + CHUNK).min(populated);
        let _: u64 = populate
            .arg(KEY_PREFIX)
            .arg(first)
            .arg(last)
            .arg(now)
            .arg(absolute_expiry)
            .arg(CLIENT)
            .arg(FAMILY)
            .arg(IDLE_TTL_MS)
            .invoke_async(&mut conn)
            .await
            .context("populating families")?;
    }

    // rotate.lua's KEYS and ARGV as the store sends them (token-store's script/rotate.rs),
    // with `now` fixed at the families' rotation time so that every later call replays
    // within grace however long the run takes.
    let now_text = now.to_string();
    let args = |key: String| -> Vec<String> {
        [
            "EVALSHA",
            &sha,
            "1",
            &key,
            "1",
            CLIENT,
            &now_text,
            &GRACE_MS.to_string(),
            &IDLE_TTL_MS.to_string(),
            "k1",
            "revoke-family",
            &now_text,
            "",
            FAMILY,
            &now_text,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    // Pre-flight on the extra family, outside redis-benchmark's range: these very arguments
    // must rotate, then replay.
    let preflight = args(format!("{KEY_PREFIX}{families:012}}}"));
    for expected in ["rotated", "replayed"] {
        let mut cmd = redis::cmd(&preflight[0]);
        for arg in &preflight[1..] {
            cmd.arg(arg);
        }
        let reply: Vec<redis::Value> = cmd
            .query_async(&mut conn)
            .await
            .context("pre-flight call of rotate.lua with the ceiling's arguments")?;
        let outcome = match reply.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        if outcome != expected {
            bail!("the ceiling's rotate.lua call answered {outcome:?}, not {expected:?}");
        }
    }

    let evalsha_before = setup::command_stat(&options.redis_url, "evalsha", "calls").await?;
    let failed_before = setup::command_stat(&options.redis_url, "evalsha", "failed_calls").await?;
    let output = Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port.to_string()])
        .args(["-c", &options.concurrency.to_string()])
        .args(["-n", &options.requests.to_string()])
        .args(["-r", &families.to_string()])
        .arg("--csv")
        .args(args(format!("{KEY_PREFIX}__rand_int__}}")))
        .output()
        .context("cannot run redis-benchmark (Debian package redis-tools)")?;
    if !output.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let evalsha =
        setup::command_stat(&options.redis_url, "evalsha", "calls").await? - evalsha_before;
    let failed =
        setup::command_stat(&options.redis_url, "evalsha", "failed_calls").await? - failed_before;
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

    // Leave nothing behind (the Redis may be shared, and the memory mode measures it), and
    // read what the calls did to the families on the way.
    let depopulate = redis::Script::new(&token_store::script::prefixed_with_prelude(DEPOPULATE));
    let (mut deleted, mut rotated, mut other) = (0u64, 0u64, 0u64);
    for first in (0..populated).step_by(CHUNK) {
        let (d, r, _untouched, o): (u64, u64, u64, u64) = depopulate
            .arg(KEY_PREFIX)
            .arg(first)
            .arg((first + CHUNK).min(populated))
            .arg(FAMILY)
            .invoke_async(&mut conn)
            .await
            .context("removing families")?;
        deleted += d;
        rotated += r;
        other += o;
    }
    // The pre-flight's family is among the rotated ones.
    let rotated = rotated.saturating_sub(1);
    let n = options.requests as f64;
    let expected = families as f64 * (1.0 - (-n / families as f64).exp()) / n;
    let rotate_fraction = rotated as f64 / n;
    if failed > 0 || other > 0 || deleted != populated as u64 {
        bail!(
            "the ceiling's calls did not all rotate or replay: {failed} failed EVALSHA, \
             {other} families missing or changed otherwise, {deleted} of {populated} hashes found"
        );
    }
    if evalsha < options.requests as u64 || (rotate_fraction - expected).abs() > 0.05 {
        bail!(
            "the ceiling's calls did not reach their families: {evalsha} EVALSHA for {} \
             requests, rotate fraction {rotate_fraction:.3} where {expected:.3} was expected",
            options.requests
        );
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
