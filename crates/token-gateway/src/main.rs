//! `token-gateway`: serves the OAuth2 endpoints until SIGTERM or Ctrl-C, then drains. A
//! second signal exits at once.

use anyhow::Context as _;
use clap::Parser as _;
use token_gateway::{Config, Upstream};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.validate()?;
    let _telemetry = telemetry::init("token-gateway", config.log_format);
    let upstream = Upstream::connect(&config.token_service, config.client_config())
        .with_context(|| format!("invalid --token-service {:?}", config.token_service))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        token_service = %config.token_service,
        "token-gateway serving"
    );
    token_gateway::serve(
        listener,
        token_gateway::router(upstream),
        shutdown_signal(),
        config.shutdown_timeout,
    )
    .await?;
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
