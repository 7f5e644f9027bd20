//! Throughput: C concurrent callers, each refreshing its own families' chains with the newest
//! token, for a fixed time after a warm-up. `--introspect-share` mixes in introspection of the
//! current access token (1.0: introspection only).
//!
//! `--echo-duration` first measures the gRPC ceiling of this very server: the same callers on
//! the same channels calling `grpc.health.v1.Health/Check`, a no-op unary RPC through the same
//! server stack. A refresh needs one such RPC plus one EVALSHA on the same cores, so with the
//! EVALSHA ceiling `e` and the echo ceiling `r` the combined ceiling is `1 / (1/e + 1/r)`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use token_proto::v1 as pb;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

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
    /// The bench client's access tokens: `opaque` (the service's own) or `jwt` (RFC 9068,
    /// Ed25519-signed: what signing costs per refresh).
    #[arg(long, default_value = "opaque")]
    pub access_token_format: String,
    /// Measure the echo ceiling (Health/Check) for this long first; 0 skips it.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub echo_duration: Duration,
}

/// What one caller measured.
struct Measured {
    refreshes: Latencies,
    introspections: Latencies,
    errors: Errors,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let channels = setup::channels(&options.target.endpoint, options.channels).await?;
    let clients: Vec<_> = channels
        .iter()
        .cloned()
        .map(TokenServiceClient::new)
        .collect();
    let bench_client = setup::register_with_format(
        setup::channel(&options.target.endpoint).await?,
        "revoke-family",
        &options.access_token_format,
    )
    .await?;
    let pairs = setup::issue_families(&clients[0], &bench_client, options.families, 64).await?;

    let concurrency = options.concurrency.max(1);
    let mut owned: Vec<Vec<pb::TokenPair>> = vec![Vec::new(); concurrency];
    for (i, pair) in pairs.into_iter().enumerate() {
        owned[i % concurrency].push(pair);
    }
    let echo = if options.echo_duration.is_zero() {
        None
    } else {
        Some(echo(&options, &channels, concurrency).await)
    };
    let (measure_from, deadline) = window(options.warmup, options.duration);
    let cpu = WindowCpu::start(&options.target, measure_from);
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
    let (server_cpu, redis_cpu) = cpu.finish().await;
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
        "concurrency={concurrency} families={} channels={} access_token_format={}",
        options.families, options.channels, options.access_token_format
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
            let combined = match (options.ceiling_per_s, echo) {
                (Some(evalsha), Some(echo)) => {
                    let combined = 1.0 / (1.0 / evalsha + 1.0 / echo);
                    format!(
                        " echo_per_s={echo:.0} combined_ceiling_per_s={combined:.0} \
                         ratio_to_combined={:.2}",
                        refresh_per_s / combined
                    )
                }
                (None, Some(echo)) => format!(" echo_per_s={echo:.0}"),
                _ => String::new(),
            };
            println!(
                "bench throughput: refresh_per_s={refresh_per_s:.0} {} {errors} {shape}{ceiling}{combined}{}{processes}",
                total.refreshes.summary(),
                server_cpu.per_call("refresh", total.refreshes.count()),
            );
        }
        (false, true) => println!(
            "bench introspect: introspect_per_s={introspect_per_s:.0} {} {errors} {shape}{}{processes}",
            total.introspections.summary(),
            server_cpu.per_call("introspection", total.introspections.count()),
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

/// The warm-up's end and the measured run's end, from now.
fn window(warmup: Duration, duration: Duration) -> (Instant, Instant) {
    let measure_from = Instant::now() + warmup;
    (measure_from, measure_from + duration)
}

/// Server and Redis CPU over the measured window only (read when it opens, and after the
/// callers stop), so that per-call figures are not diluted or inflated by the warm-up.
struct WindowCpu(tokio::task::JoinHandle<(CpuMeter, CpuMeter)>);

impl WindowCpu {
    fn start(target: &Target, measure_from: Instant) -> Self {
        let (server, redis) = (target.server_pid, target.redis_pid);
        Self(tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            (
                CpuMeter::start("server", server),
                CpuMeter::start("redis", redis),
            )
        }))
    }

    async fn finish(self) -> (CpuMeter, CpuMeter) {
        self.0.await.expect("the CPU reader does not panic")
    }
}

/// The echo ceiling: Health/Check calls per second, the same callers on the same channels.
/// Prints its own `bench echo:` line and returns the rate.
async fn echo(options: &Options, channels: &[Channel], concurrency: usize) -> f64 {
    let (measure_from, deadline) = window(options.warmup, options.echo_duration);
    let cpu = WindowCpu::start(&options.target, measure_from);
    let callers = (0..concurrency).map(|i| {
        let mut health = HealthClient::new(channels[i % channels.len()].clone());
        tokio::spawn(async move {
            let mut measured = (Latencies::new(), Errors::default());
            loop {
                let began = Instant::now();
                if began >= deadline {
                    return measured;
                }
                let result = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if began >= measure_from {
                    match result {
                        Ok(_) => measured.0.record(began.elapsed()),
                        Err(status) => measured.1.record(&status),
                    }
                }
            }
        })
    });
    let (mut latencies, mut errors) = (Latencies::new(), Errors::default());
    for joined in futures::future::join_all(callers).await {
        let (l, e) = joined.expect("an echo caller does not panic");
        latencies.merge(&l);
        errors.merge(&e);
    }
    let (server_cpu, _) = cpu.finish().await;
    let per_s = latencies.count() as f64 / options.echo_duration.as_secs_f64();
    println!(
        "bench echo: echo_per_s={per_s:.0} {} {} concurrency={concurrency} channels={}{}{}",
        latencies.summary(),
        errors.summary(),
        channels.len(),
        server_cpu.per_call("echo", latencies.count()),
        server_cpu.summary(),
    );
    per_s
}

async fn caller(
    mut tokens: TokenServiceClient<Channel>,
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
