//! The admin HTTP server of every binary: `GET /metrics` in the Prometheus text format, on a
//! port of its own, so it can be exposed to the scraper only.

use std::future::Future;
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
