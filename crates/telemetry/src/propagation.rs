//! W3C trace context (`traceparent`, `tracestate`) across process boundaries. gRPC metadata
//! and HTTP headers are both an [`http::HeaderMap`] underneath (tonic's `MetadataMap` derefs
//! to one with `as_ref`/`as_mut`), so one pair of functions serves both.

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
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

/// Writes the current span's trace context into `headers`, for a call to another service.
pub fn inject_current(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers))
    });
}

/// The current span's trace id as 32 hex digits, or empty when there is no valid trace.
pub fn current_trace_id() -> String {
    let span = tracing::Span::current();
    if span.is_none() {
        return String::new();
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}
