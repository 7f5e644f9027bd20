//! Memory: Redis bytes per active family, with realistic sizes (a generated client id, a UUID
//! subject, four OIDC scopes), each family refreshed once so every field holds a real value.

use clap::Args;
use futures::stream::{self, StreamExt as _};

use crate::Target;
use crate::setup;

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 100_000)]
    pub families: usize,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let tokens = setup::clients(&options.target.endpoint, 1).await?.remove(0);
    let client = setup::register(
        setup::channel(&options.target.endpoint).await?,
        "revoke-family",
    )
    .await?;
    let before = used_memory(&options.target.redis_url).await?;
    let pairs = setup::issue_families(&tokens, &client, options.families, 64).await?;
    let refreshed: Vec<bool> = stream::iter(pairs)
        .map(|pair| {
            let mut tokens = tokens.clone();
            let request = setup::refresh_request(&client, &pair.refresh_token);
            async move { tokens.refresh_token_pair(request).await.is_ok() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let after = used_memory(&options.target.redis_url).await?;
    let failed = refreshed.iter().filter(|ok| !**ok).count();
    let per_family = after.saturating_sub(before) as f64 / options.families as f64;
    println!(
        "bench memory: bytes_per_family={per_family:.0} families={} used_memory_delta={} errors={failed} \
         client_id_len={} subject_len=36 scopes={}",
        options.families,
        after.saturating_sub(before),
        client.client_id.len(),
        setup::SCOPES.join(" ").len(),
    );
    Ok(())
}

async fn used_memory(redis_url: &str) -> anyhow::Result<u64> {
    let info = setup::redis_info(redis_url, "memory").await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no used_memory in INFO memory"))
}
