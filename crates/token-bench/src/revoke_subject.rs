//! Revoke-subject: how long revoking every session of one subject takes, and the longest any
//! one Redis command of it holds Redis, for a subject with N families (10,000 by default).
//!
//! Issues N families for one fresh subject through the service, then calls the store's
//! `revoke_subject` in-process on a `RedisStore` with the server's key prefix (what
//! `TokenService.RevokeSubjectSessions` runs: one marker write, then HSCAN and a short sweep
//! script a batch at a time). Redis's slow log, set to record every command for the call,
//! gives the longest command on the subject's hash. Then checks the answer: the count is N,
//! the hash keeps only its marker, and a refresh of one of the families is refused as revoked,
//! both through the store's rotate and over gRPC.
//!
//! Also times `subject_families` (what `ListSubjectSessions` reads) on the full hash.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use deadpool_redis::redis;
use token_core::store::{RotateOutcome, RotateRequest};
use token_core::{ReusePolicy, Store as _};
use token_store::{RedisStore, ReplicaWait, StoreConfig};
use tonic_types::StatusExt as _;

use crate::Target;
use crate::setup;

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    /// Families of the one subject.
    #[arg(long, default_value_t = 10_000)]
    pub families: usize,
    /// The server's `--key-prefix`.
    #[arg(long, default_value = "tok:")]
    pub key_prefix: String,
    /// The server's `--refresh-idle-ttl` (which families count as active).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub idle_ttl: Duration,
    /// Redis's slow log threshold during the call, us: every command of the call that takes
    /// longer is logged (0 logs all, and the logging of every command inside the sweep
    /// scripts then adds to their time).
    #[arg(long, default_value_t = 0)]
    pub slowlog_threshold_us: u64,
}

/// One slow log entry: how long, and what.
struct Logged {
    micros: u64,
    args: Vec<String>,
    /// `?:0` for a command a script called.
    client: String,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let redis_url = &options.target.redis_url;
    let tokens = setup::clients(&options.target.endpoint, 1).await?.remove(0);
    let client = setup::register(
        setup::channel(&options.target.endpoint).await?,
        "revoke-family",
    )
    .await?;
    let subject = setup::subject(u64::MAX, 0);
    let pairs =
        setup::issue_families_for(&tokens, &client, options.families, 64, |_| subject.clone())
            .await?;

    let store = RedisStore::new(&StoreConfig {
        url: redis_url.clone(),
        pool_size: 2,
        timeout: Duration::from_secs(30),
        key_prefix: options.key_prefix.clone(),
        replica_wait: ReplicaWait::default_for(redis_url),
        high_water_permille: 0,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = store.keys().subject(&subject);
    let redis = redis::Client::open(redis_url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let fields: u64 = redis::cmd("HLEN").arg(&key).query_async(&mut conn).await?;
    if fields != options.families as u64 {
        bail!(
            "the subject's hash {key} holds {fields} fields, not the {} families issued: is \
             --key-prefix {:?} the server's?",
            options.families,
            options.key_prefix
        );
    }

    let listed_at = Instant::now();
    let listed = store
        .subject_families(&subject)
        .await
        .map_err(|e| anyhow::anyhow!("subject_families: {e}"))?;
    let list_ms = listed_at.elapsed().as_secs_f64() * 1000.0;
    let Some((family, state)) = listed.first().cloned() else {
        bail!(
            "subject_families found none of the {} families",
            options.families
        );
    };

    // Every command into the slow log for the call; the settings are put back after.
    let threshold = config_get(&mut conn, "slowlog-log-slower-than").await?;
    let max_len = config_get(&mut conn, "slowlog-max-len").await?;
    config_set(
        &mut conn,
        "slowlog-log-slower-than",
        &options.slowlog_threshold_us.to_string(),
    )
    .await?;
    config_set(&mut conn, "slowlog-max-len", "100000").await?;
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await?;
    let began = Instant::now();
    let revoked = store
        .revoke_subject(&subject, None, options.idle_ttl.as_millis() as u64, None)
        .await;
    let revoke_ms = began.elapsed().as_secs_f64() * 1000.0;
    let logged = slowlog(&mut conn).await;
    config_set(&mut conn, "slowlog-log-slower-than", &threshold).await?;
    config_set(&mut conn, "slowlog-max-len", &max_len).await?;
    let revoked = revoked.map_err(|e| anyhow::anyhow!("revoke_subject: {e}"))?;
    let logged = logged?;

    // The call's own commands: those sent (not called by a script) on the subject's hash.
    let own: Vec<&Logged> = logged
        .iter()
        .filter(|l| l.client != "?:0" && l.args.iter().any(|a| a == &key))
        .collect();
    let longest = own
        .iter()
        .max_by_key(|l| l.micros)
        .context("no command on the subject's hash in the slow log")?;
    let total_us: u64 = own.iter().map(|l| l.micros).sum();

    // The answer: every family counted, only the marker left, refreshes refused.
    let count = revoked.total();
    if count != options.families as u64 {
        bail!(
            "revoke_subject counted {count} families, not {}",
            options.families
        );
    }
    let left: u64 = redis::cmd("HLEN").arg(&key).query_async(&mut conn).await?;
    let now = store
        .time()
        .await
        .map_err(|e| anyhow::anyhow!("TIME: {e}"))?;
    let outcome = store
        .rotate(&RotateRequest {
            family,
            subject: &subject,
            presented_generation: state.generation,
            presented_rotated_at_ms: state.rotated_at_ms,
            client_id: &client.client_id,
            fixed_now_ms: None,
            stamp_ms: now,
            grace_ms: 60_000,
            idle_ttl_ms: options.idle_ttl.as_millis() as u64,
            signing_key_id: &state.key_id,
            access_scope_mask: None,
            reuse_policy: ReusePolicy::RevokeFamily,
        })
        .await
        .map_err(|e| anyhow::anyhow!("rotate: {e}"))?;
    if outcome != RotateOutcome::Revoked {
        bail!("a revoked family's rotation answered {outcome:?}, not Revoked");
    }
    let mut tokens = tokens.clone();
    let refused = match tokens
        .refresh_token_pair(setup::refresh_request(&client, &pairs[0].refresh_token))
        .await
    {
        Ok(_) => bail!("a refresh of a revoked subject's family succeeded"),
        Err(status) => status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_else(|| format!("{:?}", status.code())),
    };
    if refused != "TOKEN_REVOKED" {
        bail!(
            "a refresh of a revoked subject's family was refused with {refused}, not TOKEN_REVOKED"
        );
    }

    println!(
        "bench revoke-subject: families={} revoked={count} revoke_ms={revoke_ms:.1} \
         longest_redis_command_us={} longest_command={} redis_commands={} redis_busy_ms={:.1} \
         list_ms={list_ms:.1} fields_left={left} refresh_after={refused}",
        options.families,
        longest.micros,
        command_name(&longest.args),
        own.len(),
        total_us as f64 / 1000.0,
    );
    Ok(())
}

async fn config_get(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
) -> anyhow::Result<String> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await?;
    reply
        .get(1)
        .cloned()
        .with_context(|| format!("no {name} in CONFIG GET"))
}

async fn config_set(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &str,
    value: &str,
) -> anyhow::Result<()> {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(conn)
        .await
        .with_context(|| format!("CONFIG SET {name}"))?;
    Ok(())
}

/// Every slow log entry: `[id, time, microseconds, [args...], client, name]`.
async fn slowlog(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Vec<Logged>> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await?;
    let mut logged = Vec::with_capacity(entries.len());
    for entry in entries {
        let redis::Value::Array(parts) = entry else {
            bail!("unexpected slow log entry: {entry:?}");
        };
        let micros = match parts.get(2) {
            Some(redis::Value::Int(us)) => *us as u64,
            other => bail!("unexpected slow log duration: {other:?}"),
        };
        let args = match parts.get(3) {
            Some(redis::Value::Array(args)) => args
                .iter()
                .map(|a| match a {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Value::SimpleString(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => bail!("unexpected slow log arguments: {other:?}"),
        };
        let client = match parts.get(4) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        logged.push(Logged {
            micros,
            args,
            client,
        });
    }
    Ok(logged)
}

/// A command as the line names it: scripts by their file, others by the command.
fn command_name(args: &[String]) -> String {
    let name = args
        .first()
        .map(|a| a.to_ascii_lowercase())
        .unwrap_or_default();
    if name == "evalsha" || name == "eval" {
        let sha = args.get(1).map(String::as_str).unwrap_or("");
        let scripts = [
            (
                "revoke_subject",
                token_store::script::revoke_subject::SCRIPT.get_hash(),
            ),
            (
                "revoke_subject_sweep",
                token_store::script::revoke_subject::SWEEP_SCRIPT.get_hash(),
            ),
        ];
        if let Some((script, _)) = scripts.iter().find(|(_, hash)| *hash == sha) {
            return format!("evalsha:{script}");
        }
    }
    name
}
