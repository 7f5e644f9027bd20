//! The admin HTTP server of every binary: `GET /metrics` in the Prometheus text format, on a
//! port of its own, so it can be exposed to the scraper only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::metrics::{MetricsRegistry, PROMETHEUS_CONTENT_TYPE};
use axum::Router;
use axum::http::header;
use axum::routing::get;
use tokio::net::TcpListener;

pub fn router(metrics: Arc<MetricsRegistry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                    metrics.render_prometheus(),
                )
            }
        }),
    )
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<MetricsRegistry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A listen address, or none (`off`): the admin ports' (and the token server's health-only
/// port's) flag type, shared by both binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// As the flag reads it, so `--help` shows the default as one would type it.
impl std::fmt::Display for OptionalAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for OptionalAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "off" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|addr| Self(Some(addr)))
                .map_err(|e| format!("{e}: expected host:port or `off`")),
        }
    }
}
