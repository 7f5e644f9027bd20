//! Throughput: C concurrent callers, each refreshing its own families' chains with the newest
//! token, for a fixed time after a warm-up. `--introspect-share` mixes in introspection of the
//! current access token (1.0: introspection only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use token_proto::v1 as pb;

use crate::Target;
use crate::report::{CpuMeter, Errors, Latencies, peak_rss_mib};
use crate::setup::{self, BenchClient};

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    /// Token families, spread evenly over the callers.
    #[arg(long, default_value_t = 1024)]
    pub families: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Share of calls that introspect instead of refresh, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub introspect_share: f64,
    /// The same-run EVALSHA ceiling, to print the ratio against.
    #[arg(long)]
    pub ceiling_per_s: Option<f64>,
}

/// What one caller measured.
struct Measured {
    refreshes: Latencies,
    introspections: Latencies,
    errors: Errors,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let clients = setup::clients(&options.target.endpoint, options.channels).await?;
    let bench_client = setup::register(
        setup::channel(&options.target.endpoint).await?,
        "revoke-family",
    )
    .await?;
    let pairs = setup::issue_families(&clients[0], &bench_client, options.families, 64).await?;

    let concurrency = options.concurrency.max(1);
    let mut owned: Vec<Vec<pb::TokenPair>> = vec![Vec::new(); concurrency];
    for (i, pair) in pairs.into_iter().enumerate() {
        owned[i % concurrency].push(pair);
    }
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let deadline = measure_from + options.duration;
    let server_cpu = CpuMeter::start("server", options.target.server_pid);
    let redis_cpu = CpuMeter::start("redis", options.target.redis_pid);
    // Introspect every `every`-th call: a deterministic mix, the same on every run.
    let every =
        (options.introspect_share > 0.0).then(|| (1.0 / options.introspect_share).round() as u64);
    let bench_client = Arc::new(bench_client);

    let callers = owned.into_iter().enumerate().map(|(i, families)| {
        let tokens = clients[i % clients.len()].clone();
        let bench_client = bench_client.clone();
        tokio::spawn(caller(
            tokens,
            bench_client,
            families,
            every,
            measure_from,
            deadline,
        ))
    });
    let mut total = Measured {
        refreshes: Latencies::new(),
        introspections: Latencies::new(),
        errors: Errors::default(),
    };
    for joined in futures::future::join_all(callers).await {
        let measured = joined?;
        total.refreshes.merge(&measured.refreshes);
        total.introspections.merge(&measured.introspections);
        total.errors.merge(&measured.errors);
    }
    // CPU is read after the callers stop: it covers warm-up too, which is stated in the docs.
    let seconds = options.duration.as_secs_f64();
    let processes = format!(
        "{}{}{}",
        server_cpu.summary(),
        redis_cpu.summary(),
        options
            .target
            .server_pid
            .and_then(peak_rss_mib)
            .map(|mib| format!(" server_peak_rss_mib={mib:.1}"))
            .unwrap_or_default()
    );
    let shape = format!(
        "concurrency={concurrency} families={} channels={}",
        options.families, options.channels
    );
    let refresh_per_s = total.refreshes.count() as f64 / seconds;
    let introspect_per_s = total.introspections.count() as f64 / seconds;
    let errors = total.errors.summary();
    match (
        total.refreshes.count() > 0,
        total.introspections.count() > 0,
    ) {
        (true, false) => {
            let ceiling = options
                .ceiling_per_s
                .map(|c| format!(" ceiling_per_s={c:.0} ratio={:.2}", refresh_per_s / c))
                .unwrap_or_default();
            println!(
                "bench throughput: refresh_per_s={refresh_per_s:.0} {} {errors} {shape}{ceiling}{processes}",
                total.refreshes.summary(),
            );
        }
        (false, true) => println!(
            "bench introspect: introspect_per_s={introspect_per_s:.0} {} {errors} {shape}{processes}",
            total.introspections.summary(),
        ),
        _ => {
            let mut all = Latencies::new();
            all.merge(&total.refreshes);
            all.merge(&total.introspections);
            println!(
                "bench mixed: ops_per_s={:.0} refresh_per_s={refresh_per_s:.0} \
                 introspect_per_s={introspect_per_s:.0} {} {errors} {shape}{processes}",
                refresh_per_s + introspect_per_s,
                all.summary(),
            );
        }
    }
    Ok(())
}

async fn caller(
    mut tokens: token_proto::v1::token_service_client::TokenServiceClient<
        tonic::transport::Channel,
    >,
    client: Arc<BenchClient>,
    mut families: Vec<pb::TokenPair>,
    introspect_every: Option<u64>,
    measure_from: Instant,
    deadline: Instant,
) -> Measured {
    let mut measured = Measured {
        refreshes: Latencies::new(),
        introspections: Latencies::new(),
        errors: Errors::default(),
    };
    if families.is_empty() {
        return measured;
    }
    let mut call = 0u64;
    loop {
        for pair in families.iter_mut() {
            let began = Instant::now();
            if began >= deadline {
                return measured;
            }
            let recording = began >= measure_from;
            call += 1;
            if introspect_every.is_some_and(|every| call.is_multiple_of(every)) {
                let result = tokens
                    .introspect_token(pb::IntrospectTokenRequest {
                        token: pair.access_token.clone(),
                        ..Default::default()
                    })
                    .await;
                if recording {
                    match result {
                        Ok(_) => measured.introspections.record(began.elapsed()),
                        Err(status) => measured.errors.record(&status),
                    }
                }
                continue;
            }
            match tokens
                .refresh_token_pair(setup::refresh_request(&client, &pair.refresh_token))
                .await
            {
                Ok(response) => {
                    if recording {
                        measured.refreshes.record(began.elapsed());
                    }
                    *pair = response.into_inner();
                }
                // The chain keeps its token and is tried again on the next pass.
                Err(status) if recording => measured.errors.record(&status),
                Err(_) => {}
            }
        }
    }
}
