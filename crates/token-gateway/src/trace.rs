//! One `tracing` span per HTTP request, with OpenTelemetry's HTTP attribute names, continuing
//! the caller's W3C trace context (`traceparent`); the SDK carries it on to the token service.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;

/// Runs the rest of the request inside an `http.request` span and records the status code.
///
/// `url.path` is the route that matched, or `unmatched`: a raw path is whatever the caller
/// typed, and a caller may type a token. The query string is never recorded.
pub async fn http_request(request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{} {path}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %path,
        http.response.status_code = Empty,
        client_id = Empty,
    );
    telemetry::propagation::set_parent_from_headers(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    tracing::debug!(parent: &span, status, "request handled");
    response
}
