//! W3C trace context on outgoing calls. Uses the OpenTelemetry API only (the application
//! chooses the SDK and exporter, and installs the global propagator): with none installed,
//! nothing is injected.

use opentelemetry_http::HeaderInjector;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Writes `span`'s trace context (`traceparent`, `tracestate`) into `headers`.
pub(crate) fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers))
    });
}
