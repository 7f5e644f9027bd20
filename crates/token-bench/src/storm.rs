//! Storms: N parallel refreshes of one token released together, many rounds. Reports latency
//! over all calls, rotations per round (exactly one is the guarantee) and Redis EVALSHA calls
//! per round (N without coalescing, fewer with it).

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use tokio::sync::Barrier;

use crate::Target;
use crate::report::{CpuMeter, Errors, Latencies};
use crate::setup;

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    /// Parallel refreshes of the same token per round.
    #[arg(long, default_value_t = 1000)]
    pub parallel: usize,
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let clients = setup::clients(&options.target.endpoint, options.channels).await?;
    let client = setup::register(
        setup::channel(&options.target.endpoint).await?,
        "revoke-family",
    )
    .await?;
    let mut pair = setup::issue_families(&clients[0], &client, 1, 1)
        .await?
        .remove(0);
    let mut latencies = Latencies::new();
    let mut errors = Errors::default();
    let mut rotations = 0usize;
    let calls_before = setup::evalsha_calls(&options.target.redis_url).await?;
    let server_cpu = CpuMeter::start("server", options.target.server_pid);
    let redis_cpu = CpuMeter::start("redis", options.target.redis_pid);

    for _ in 0..options.rounds {
        let barrier = Arc::new(Barrier::new(options.parallel));
        let calls = (0..options.parallel).map(|i| {
            let mut tokens = clients[i % clients.len()].clone();
            let request = setup::refresh_request(&client, &pair.refresh_token);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let began = Instant::now();
                let result = tokens.refresh_token_pair(request).await;
                (began.elapsed(), result)
            })
        });
        let mut winner = None;
        for joined in futures::future::join_all(calls).await {
            let (elapsed, result) = joined?;
            match result {
                Ok(response) => {
                    latencies.record(elapsed);
                    let next = response.into_inner();
                    if !next.replayed {
                        rotations += 1;
                    }
                    winner = Some(next);
                }
                Err(status) => errors.record(&status),
            }
        }
        let Some(next) = winner else {
            bail!("a storm round got no answer at all: {}", errors.summary());
        };
        pair = next;
    }
    let calls = setup::evalsha_calls(&options.target.redis_url).await? - calls_before;
    println!(
        "bench storm: n={} rounds={} rotations_per_round={:.2} redis_evalsha_per_round={:.1} {} {}{}{}",
        options.parallel,
        options.rounds,
        rotations as f64 / options.rounds as f64,
        calls as f64 / options.rounds as f64,
        latencies.summary(),
        errors.summary(),
        server_cpu.summary(),
        redis_cpu.summary(),
    );
    Ok(())
}
