//! W3C trace context (`traceparent`, `tracestate`) coming in, and the current trace id. gRPC
//! metadata and HTTP headers are both an [`http::HeaderMap`] underneath (tonic's `MetadataMap`
//! derefs to one with `as_ref`), so one function serves both. Outgoing context is injected by
//! the SDK (`token-client`), which depends on the OpenTelemetry API only.

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_http::HeaderExtractor;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes `span` a child of the trace context in `headers`, when they carry one; otherwise
/// `span` starts a trace of its own.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        // Only fails when the span is disabled, in which case there is nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// The current span's trace id as 32 hex digits, or empty when there is no valid trace.
pub fn current_trace_id() -> String {
    current_span_context()
        .map(|context| context.trace_id().to_string())
        .unwrap_or_default()
}

/// The OpenTelemetry context of the current span, when it has a valid one.
pub(crate) fn current_span_context() -> Option<SpanContext> {
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let context = span.context().span().span_context().clone();
    context.is_valid().then_some(context)
}
