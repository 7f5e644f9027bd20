//! `token-server`: serves `tokens.v1` until SIGTERM or Ctrl-C, then drains. A second signal
//! exits at once.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser as _;
use token_core::Keyring;
use token_server::{App, Cli, Command};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

// mimalloc instead of glibc's malloc: allocation and free were a seventh of the server's CPU
// under load, mostly short-lived request buffers and futures (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Keygen { key_id }) = cli.command {
        let key_id = key_id.unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            format!("k{}", now.as_secs())
        });
        // One HMAC key (the service's own tokens) and one Ed25519 key (JWT access tokens),
        // both signing: such a file serves every client, opaque or jwt, with no more setup.
        let text = format!(
            "# token-server keyring: <key-id> <secret> <sign|verify>; keep this file secret\n\
             # HMAC key, then the Ed25519 key that signs JWT access tokens (`ed25519:<seed>`)\n\
             {}\n{}\n",
            Keyring::generate_line(&key_id),
            Keyring::generate_ed25519_line(&format!("{key_id}-ed"))
        );
        Keyring::parse(&text).context("--key-id: 1 to 29 letters, digits, '-' or '_'")?;
        // `keygen | head -1` closes the pipe early; that is not an error worth a panic.
        return match std::io::stdout().write_all(text.as_bytes()) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
            _ => Ok(()),
        };
    }

    let config = cli.config;
    // Checked before the runtime is built, which takes its thread count from it.
    config.validate()?;
    telemetry::serving_runtime(config.worker_threads)?.block_on(serve(config))
}

async fn serve(config: token_server::Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(token_server::SERVICE_NAME, config.log_format);
    let mut app = App::from_config(&config)?;
    if config.operator_policy.is_none() {
        tracing::warn!(
            rpcs = %token_server::authz::operator_rpc_names()
                .collect::<Vec<_>>()
                .join(", "),
            "no --operator-policy: the operator RPCs are refused to every caller"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if let Some(admin) = config.admin_listen.0 {
        let admin = TcpListener::bind(admin)
            .await
            .with_context(|| format!("cannot listen on {admin} (--admin-listen)"))?;
        tracing::info!(admin = %admin.local_addr()?, "metrics at http://{}/metrics", admin.local_addr()?);
        app = app.with_admin_listener(admin);
    }
    if let Some(health) = config.health_listen.0 {
        let health = TcpListener::bind(health)
            .await
            .with_context(|| format!("cannot listen on {health} (--health-listen)"))?;
        tracing::info!(health = %health.local_addr()?, "grpc.health.v1 alone, plaintext");
        app = app.with_health_listener(health);
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        redis = %config.redis_url_redacted(),
        grace = ?config.grace_period,
        exposure = %app.describe_exposure(),
        "token-server serving"
    );
    token_server::run(listener, app, shutdown_signal()).await?;
    tracing::info!("token-server stopped");
    // Dropping the guard exports the last spans.
    drop(_telemetry);
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
