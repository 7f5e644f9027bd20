//! `token-gateway`: the token service's OAuth2 front door over HTTP. It refreshes (RFC 6749
//! section 6), revokes (RFC 7009) and introspects (RFC 7662) by calling `tokens.v1.TokenService`
//! through the SDK, whose retries and single-flight it inherits, and holds no state of its own.
//!
//! # Layout
//! - [`router`]: the endpoints, `POST /oauth/token`, `/oauth/revoke`, `/oauth/introspect`,
//!   `GET /healthz`, and `GET /.well-known/jwks.json` and `/.well-known/oauth-authorization-server`
//!   (the public keys and RFC 8414 metadata of JWT access tokens), over an [`Upstream`].
//! - [`serve`]: serves a router until the shutdown future resolves, then drains.
//! - [`upstream`]: the token service as the gateway reaches it (SDK client and health stub).
//! - [`tls`]: TLS or mutual TLS to the token service, its certificate files re-read while the
//!   gateway runs so that a renewed certificate is used without a restart.
//! - [`endpoints`]: one module per endpoint, each parse → call → encode.
//! - [`form`], [`client_auth`], [`endpoints::scope`]: request parsing as pure functions:
//!   form encoding with no repeated parameter, client credentials by Basic or body, scopes.
//! - [`error`]: the one error type and the one place it becomes an HTTP response.
//! - [`response`]: JSON with `Cache-Control: no-store`.
//! - [`trace`]: a span per request, continuing the caller's `traceparent`.
//! - [`config`]: every setting, from flags and `GATEWAY_*` environment variables.
//! - [`metrics`]: HTTP server metrics (OpenTelemetry semantic conventions), OAuth error and
//!   token-service call counts, recorded by [`router_with_metrics`] and served on
//!   `--admin-listen` by [`metrics::serve_admin`] (`telemetry::admin`).
//!
//! # Starting it in a test
//! ```no_run
//! # async fn demo(token_service: &str) -> anyhow::Result<()> {
//! use token_client::ClientConfig;
//! use token_gateway::{Upstream, router, serve};
//!
//! let upstream = Upstream::connect(token_service, ClientConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let shutdown = async { let _ = stopped.await; };
//! tokio::spawn(serve(listener, router(upstream), shutdown, std::time::Duration::from_secs(5)));
//! // ... talk HTTP to the listener's address, then:
//! let _ = stop.send(());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod client_auth;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod form;
pub mod metrics;
pub mod response;
pub mod tls;
pub mod trace;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{Config, ConfigError};
pub use error::Error;
pub use metrics::GatewayMetrics;
pub use upstream::Upstream;

/// RFC 6749 token endpoint (refresh grant only).
pub const TOKEN_PATH: &str = "/oauth/token";
/// RFC 7009 revocation endpoint.
pub const REVOKE_PATH: &str = "/oauth/revoke";
/// RFC 7662 introspection endpoint.
pub const INTROSPECT_PATH: &str = "/oauth/introspect";
/// 200 when the token service is SERVING, 503 otherwise.
pub const HEALTH_PATH: &str = "/healthz";
/// RFC 7517 JWK Set: the public keys of JWT access tokens.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// RFC 8414 authorization server metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Largest request body read. A refresh is a few hundred bytes; anything near this is not a
/// client of ours.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The gateway's routes over `upstream`. Other methods on these paths get 405 with `Allow`;
/// other paths 404.
pub fn router(upstream: Upstream) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(endpoints::token::handle))
        .route(REVOKE_PATH, post(endpoints::revoke::handle))
        .route(INTROSPECT_PATH, post(endpoints::introspect::handle))
        .route(HEALTH_PATH, get(endpoints::health::handle))
        .route(JWKS_PATH, get(endpoints::well_known::jwks))
        .route(METADATA_PATH, get(endpoints::well_known::metadata))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Added last, so outermost: the span covers everything above, 405s and limits included.
        .layer(axum::middleware::from_fn(trace::http_request))
        .with_state(upstream)
}

/// [`router`], measured into `metrics` (the admin listener serves them): request durations
/// and requests in flight by route, method and status, OAuth error responses, and calls to
/// the token service.
pub fn router_with_metrics(mut upstream: Upstream, metrics: Arc<GatewayMetrics>) -> Router {
    upstream.metrics = Some(metrics.clone());
    router(upstream).layer(axum::middleware::from_fn_with_state(
        metrics,
        metrics::http_metrics,
    ))
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish (idle keep-alive connections are closed), and returns once they
/// have, or once `drain_timeout` has passed with some still running.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    let (draining_tx, mut draining) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = draining_tx.send(true);
    };
    // Responses are small and written at once; without TCP_NODELAY, Nagle and the client's
    // delayed ACK can hold the last segment back by 40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let serving = axum::serve(listener, router).with_graceful_shutdown(signal);
    let deadline = async move {
        let _ = draining.wait_for(|draining| *draining).await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        result = serving.into_future() => result,
        () = deadline => {
            tracing::warn!(timeout = ?drain_timeout, "shutdown timeout passed with requests in flight");
            Ok(())
        }
    }
}
