//! `token-gateway`: serves the OAuth2 endpoints until SIGTERM or Ctrl-C, then drains. A
//! second signal exits at once.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use telemetry::metrics::MetricsRegistry;
use token_gateway::{Config, GatewayMetrics, Upstream};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

// mimalloc instead of glibc's malloc, as in the token server: allocation was a sixth of the
// gateway's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate()?;
    telemetry::serving_runtime(config.worker_threads)?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("token-gateway", config.log_format);
    let upstream = match config.token_service_tls() {
        None => Upstream::connect(&config.token_service, config.client_config())
            .with_context(|| format!("invalid --token-service {:?}", config.token_service))?,
        Some(files) => {
            let (upstream, _tls, reload) = Upstream::connect_tls(
                &config.token_service,
                files,
                config.client_config(),
                config.token_service_tls_reload_interval,
            )?;
            // Runs until the process exits: a certificate may be renewed while draining too.
            tokio::spawn(reload);
            upstream
        }
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Metrics go to the admin listener's /metrics (and over OTLP when OTEL_* names an
    // endpoint), as the token server's do.
    let metrics = GatewayMetrics::new(
        Arc::new(MetricsRegistry::new("token-gateway", None)),
        upstream.tokens(),
    );
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = match config.admin_listen.0 {
        Some(addr) => {
            let admin = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --admin-listen {addr}"))?;
            tracing::info!(admin = %admin.local_addr()?, "metrics at /metrics");
            Some(tokio::spawn(token_gateway::metrics::serve_admin(
                admin,
                metrics.clone(),
                async {
                    let _ = admin_stopped.await;
                },
            )))
        }
        None => None,
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        token_service = %config.token_service,
        tls = config.token_service_tls().is_some(),
        "token-gateway serving"
    );
    token_gateway::serve(
        listener,
        token_gateway::router_with_metrics(upstream, metrics),
        shutdown_signal(),
        config.shutdown_timeout,
    )
    .await?;
    // The scraper may read the last counts until the gateway has drained.
    let _ = admin_stop.send(());
    if let Some(admin) = admin {
        admin.await.context("admin server panicked")??;
    }
    tracing::info!("token-gateway stopped");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("cannot install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("cannot install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting without draining");
        std::process::exit(130);
    });
}
