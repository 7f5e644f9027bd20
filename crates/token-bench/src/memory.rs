//! Memory: Redis bytes per active family, with realistic sizes (a generated client id, a UUID
//! subject, four OIDC scopes), each family refreshed once so every field holds a real value.
//!
//! The store keeps a subject's families as fields of one hash, so the cost of a family depends
//! on how many its subject has: measured for each `--per-subject` distribution in turn (each
//! its own subjects, `used_memory` before and after), then for `--one-subject` families of a
//! single subject (a hash past Redis's compact listpack encoding). Every figure includes
//! everything the families add (keys, hashes, TTLs and the keyspace's own tables as they grow)
//! except the client's refresh audit stream: its growth (each refresh appends an event, about
//! 96 bytes, up to the stream's cap) is measured with `MEMORY USAGE` and left out, so that the
//! figures do not depend on the order they are measured in. The 1-per-subject figure with it
//! included, as this mode printed before families lived in subject hashes, is
//! `bytes_per_family_with_audit`.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use deadpool_redis::redis;
use futures::stream::{self, StreamExt as _};
use token_proto::v1::token_service_client::TokenServiceClient;
use token_store::keys::KeyLayout;
use tonic::transport::Channel;

use crate::Target;
use crate::setup::{self, BenchClient};

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    /// Families issued for each `--per-subject` distribution.
    #[arg(long, default_value_t = 100_000)]
    pub families: usize,
    /// Families per subject, one distribution each, measured in this order. 1 prints as
    /// `bytes_per_family`, n > 1 as `bytes_per_family_<n>_per_subject`.
    #[arg(long, value_delimiter = ',', default_value = "1,5,100")]
    pub per_subject: Vec<usize>,
    /// Families of one single subject, measured last (`bytes_per_family_<n>_one_subject`);
    /// 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    pub one_subject: usize,
    /// The server's `--key-prefix`, to find the subjects' hashes and the audit stream.
    #[arg(long, default_value = "tok:")]
    pub key_prefix: String,
}

/// What one distribution added to Redis.
struct Measured {
    families: usize,
    used_memory_delta: u64,
    /// What the client's audit stream grew by meanwhile (part of `used_memory_delta`).
    audit_delta: u64,
    errors: usize,
    /// How Redis encodes the first subject's hash: `listpack` (compact) or `hashtable`.
    encoding: String,
}

impl Measured {
    /// Without the audit stream's growth.
    fn per_family(&self) -> f64 {
        self.used_memory_delta.saturating_sub(self.audit_delta) as f64 / self.families.max(1) as f64
    }

    fn per_family_with_audit(&self) -> f64 {
        self.used_memory_delta as f64 / self.families.max(1) as f64
    }
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let tokens = setup::clients(&options.target.endpoint, 1).await?.remove(0);
    let client = setup::register(
        setup::channel(&options.target.endpoint).await?,
        "revoke-family",
    )
    .await?;

    let mut line = String::new();
    let mut errors = 0;
    for (group, &per_subject) in options.per_subject.iter().enumerate() {
        let per_subject = per_subject.max(1);
        let measured = measure(&options, &tokens, &client, options.families, |i| {
            setup::subject(group as u64 + 1, i / per_subject)
        })
        .await?;
        errors += measured.errors;
        if per_subject == 1 {
            line.push_str(&format!(
                " bytes_per_family={:.0} families={} used_memory_delta={} \
                 bytes_per_family_with_audit={:.0} audit_stream_delta={} encoding={}",
                measured.per_family(),
                measured.families,
                measured.used_memory_delta,
                measured.per_family_with_audit(),
                measured.audit_delta,
                measured.encoding,
            ));
        } else {
            line.push_str(&format!(
                " bytes_per_family_{per_subject}_per_subject={:.0} \
                 encoding_{per_subject}_per_subject={}",
                measured.per_family(),
                measured.encoding
            ));
        }
    }
    if options.one_subject > 0 {
        let group = options.per_subject.len() as u64 + 1;
        let measured = measure(&options, &tokens, &client, options.one_subject, |_| {
            setup::subject(group, 0)
        })
        .await?;
        errors += measured.errors;
        line.push_str(&format!(
            " bytes_per_family_{n}_one_subject={:.0} encoding_{n}_one_subject={}",
            measured.per_family(),
            measured.encoding,
            n = options.one_subject,
        ));
    }
    // Past this record length Redis keeps even a one-family hash as a hashtable.
    let listpack_value = {
        let client = redis::Client::open(options.target.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("hash-max-listpack-value")
            .query_async(&mut conn)
            .await?;
        reply.get(1).cloned().unwrap_or_default()
    };
    println!(
        "bench memory:{line} errors={errors} client_id_len={} subject_len=36 scopes={} \
         hash_max_listpack_value={listpack_value}",
        client.client_id.len(),
        setup::SCOPES.join(" ").len(),
    );
    Ok(())
}

/// Issues `families` families (family `i` for `subject_of(i)`), refreshes each once, and
/// measures what Redis's memory grew by.
async fn measure(
    options: &Options,
    tokens: &TokenServiceClient<Channel>,
    client: &BenchClient,
    families: usize,
    subject_of: impl Fn(usize) -> String,
) -> anyhow::Result<Measured> {
    let redis_url = &options.target.redis_url;
    let keys = KeyLayout::new(options.key_prefix.clone());
    let audit = keys.audit(&client.client_id);
    let first_subject = keys.subject(&subject_of(0));
    let audit_before = memory_usage(redis_url, &audit).await?;
    let before = used_memory(redis_url).await?;
    let pairs = setup::issue_families_for(tokens, client, families, 64, subject_of).await?;
    let refreshed: Vec<bool> = stream::iter(pairs)
        .map(|pair| {
            let mut tokens = tokens.clone();
            let request = setup::refresh_request(client, &pair.refresh_token);
            async move { tokens.refresh_token_pair(request).await.is_ok() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    // The audit writer appends in batches a few ms apart: let the last one land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = used_memory(redis_url).await?;
    let audit_after = memory_usage(redis_url, &audit).await?;
    if families > 0 && memory_usage(redis_url, &first_subject).await? == 0 {
        bail!(
            "no hash {first_subject}: is --key-prefix {:?} the server's?",
            options.key_prefix
        );
    }
    let encoding = object_encoding(redis_url, &first_subject).await?;
    Ok(Measured {
        families,
        used_memory_delta: after.saturating_sub(before),
        audit_delta: audit_after.saturating_sub(audit_before),
        encoding,
        errors: refreshed.iter().filter(|ok| !**ok).count(),
    })
}

/// `MEMORY USAGE key SAMPLES 0` (every element counted); 0 when the key does not exist.
async fn memory_usage(redis_url: &str, key: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await?;
    Ok(bytes.unwrap_or(0))
}

async fn object_encoding(redis_url: &str, key: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query_async(&mut conn)
        .await?)
}

async fn used_memory(redis_url: &str) -> anyhow::Result<u64> {
    let info = setup::redis_info(redis_url, "memory").await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO memory"))
}
