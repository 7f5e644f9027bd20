//! One `tracing` span per HTTP request, with OpenTelemetry's HTTP attribute names, and the
//! hook where the caller's trace context will parent it.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;

/// Runs the rest of the request inside an `http.request` span and records the status code.
///
/// `url.path` is the route that matched, or `unmatched`: a raw path is whatever the caller
/// typed, and a caller may type a token. The query string is never recorded.
pub async fn http_request(request: Request, next: Next) -> Response {
    // TODO(telemetry): keep the context, `let parent = parent_context(..)`, and parent the
    // span below with it (`span.set_parent(parent)` from tracing-opentelemetry).
    parent_context(request.headers());
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        http.request.method = %request.method(),
        url.path = %path,
        http.response.status_code = Empty,
        client_id = Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    tracing::debug!(parent: &span, status, "request handled");
    response
}

/// HOOK for trace propagation: the trace context the caller sent with this request, so that
/// the gateway's span (and, through the SDK, the token service's) joins the caller's trace.
///
/// TODO(telemetry): extract the W3C `traceparent` (and `tracestate`) header from `headers`
/// with the global OpenTelemetry propagator and return the resulting context. A no-op until
/// the `telemetry` crate brings OpenTelemetry in; nothing else in the gateway needs to change.
fn parent_context(headers: &HeaderMap) {
    let _ = headers;
}
