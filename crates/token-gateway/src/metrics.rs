//! The gateway's metrics, on the same OpenTelemetry-to-Prometheus stack as the token server
//! ([`telemetry::metrics::MetricsRegistry`]), served by the admin listener
//! (`--admin-listen`, `GET /metrics`). Names in the Prometheus text:
//!
//! - `http_server_request_duration_seconds` (histogram) by `http_request_method`,
//!   `http_route` (the matched route, or `unmatched`: a raw path could carry anything) and
//!   `http_response_status_code`; and `http_server_active_requests` (gauge) by
//!   `http_request_method`: OpenTelemetry's HTTP server semantic conventions.
//! - `token_gateway_oauth_errors_total` by `error`: every OAuth2 error response, by its RFC
//!   6749 `error` code.
//! - `token_gateway_token_service_calls_total` by `rpc_method` and `rpc_grpc_status_code`:
//!   each call to `tokens.v1.TokenService` as the gateway saw it end (after the SDK's
//!   retries; refreshes coalesced by the SDK count once each);
//!   `token_gateway_token_service_retries_total`: the attempts the SDK sent after a call's
//!   first.
//!
//! No label ever holds a client id, a token or a secret.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use telemetry::metrics::MetricsRegistry;
use token_client::TokenClient;
use tokio::net::TcpListener;

/// The instrumentation scope of every instrument here.
const SCOPE: &str = "token-gateway";

/// Bucket boundaries of `http.server.request.duration`, in seconds: those the semantic
/// conventions recommend.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The OAuth2 `error` code of an error response, put on the response by
/// [`crate::Error`]'s `IntoResponse` for [`http_metrics`] to count.
#[derive(Debug, Clone, Copy)]
pub struct OAuthErrorCode(pub &'static str);

/// The instruments of one gateway instance and the registry that renders them.
pub struct GatewayMetrics {
    registry: Arc<MetricsRegistry>,
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    oauth_errors: Counter<u64>,
    calls: Counter<u64>,
}

impl GatewayMetrics {
    /// Instruments on `registry`; the retries are read from `tokens` (the SDK client every
    /// call goes through) at each collection.
    pub fn new(registry: Arc<MetricsRegistry>, tokens: &TokenClient) -> Arc<Self> {
        let meter = registry.meter(SCOPE);
        let sdk = tokens.clone();
        // Registered with the meter provider, which keeps the callback for its lifetime.
        let _retries = meter
            .u64_observable_counter("token_gateway.token_service.retries")
            .with_description(
                "Attempts sent to the token service after a call's first (the SDK's retries \
                 of UNAVAILABLE, DEADLINE_EXCEEDED and the like)",
            )
            .with_unit("{attempt}")
            .with_callback(move |observer| observer.observe(sdk.retries_sent(), &[]))
            .build();
        Arc::new(Self {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_description("Duration of HTTP server requests")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_description("Number of active HTTP server requests")
                .with_unit("{request}")
                .build(),
            oauth_errors: meter
                .u64_counter("token_gateway.oauth.errors")
                .with_description("OAuth2 error responses by their RFC 6749 error code")
                .with_unit("{response}")
                .build(),
            calls: meter
                .u64_counter("token_gateway.token_service.calls")
                .with_description(
                    "Calls to tokens.v1.TokenService by method and final gRPC status code \
                     (after retries)",
                )
                .with_unit("{call}")
                .build(),
            registry,
        })
    }

    /// Counts one finished call to the token service.
    pub(crate) fn record_call<T>(
        &self,
        rpc_method: &'static str,
        result: &Result<T, token_client::Error>,
    ) {
        let code = match result {
            Ok(_) => 0,
            Err(err) => err.code() as i64,
        };
        self.calls.add(
            1,
            &[
                KeyValue::new("rpc.method", rpc_method),
                KeyValue::new("rpc.grpc.status_code", code),
            ],
        );
    }
}

/// Middleware: the request's duration, the requests in flight and the OAuth error counts.
/// Outermost, so that 404, 405 and body-limit refusals are measured too.
pub async fn http_metrics(
    axum::extract::State(metrics): axum::extract::State<Arc<GatewayMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = KeyValue::new("http.request.method", method_name(request.method()));
    // Decremented when dropped, so that a request whose connection goes away mid-way still
    // leaves the gauge.
    let in_flight = InFlight::start(&metrics.active, method.clone());
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status().as_u16();
    metrics.duration.record(
        started.elapsed().as_secs_f64(),
        &[
            method,
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    if let Some(OAuthErrorCode(code)) = response.extensions().get::<OAuthErrorCode>() {
        metrics
            .oauth_errors
            .add(1, &[KeyValue::new("error", *code)]);
    }
    response
}

/// The method as the semantic conventions name it: the known ones, else `_OTHER` (a
/// made-up method must not become a label value without bound).
fn method_name(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

struct InFlight {
    active: UpDownCounter<i64>,
    attributes: [KeyValue; 1],
}

impl InFlight {
    fn start(active: &UpDownCounter<i64>, method: KeyValue) -> Self {
        let attributes = [method];
        active.add(1, &attributes);
        Self {
            active: active.clone(),
            attributes,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.active.add(-1, &self.attributes);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves (the token server's admin
/// port, `telemetry::admin`).
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<GatewayMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    telemetry::admin::serve(listener, metrics.registry.clone(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_one_label_value() {
        let made_up = axum::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_name(&made_up), "_OTHER");
        assert_eq!(method_name(&axum::http::Method::POST), "POST");
    }
}
