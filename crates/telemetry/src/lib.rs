//! Telemetry shared by every binary: logs, OpenTelemetry traces and metrics, and W3C trace
//! context propagation. One call at start ([`init`]), one guard to hold until exit.
//!
//! # Layout
//! - [`init`] / [`init_with`]: the global `tracing` subscriber: logs on stderr (pretty or JSON
//!   lines, each with the trace and span id of the span it was written in), filtered by
//!   `RUST_LOG` (default `info`); and spans exported as OpenTelemetry traces over OTLP/gRPC
//!   when an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; sampling from `OTEL_TRACES_SAMPLER[_ARG]`, default
//!   parent-based always-on). Trace ids are made either way, for logs and the audit, unless
//!   `OTEL_SDK_DISABLED=true`.
//! - [`propagation`]: an incoming `traceparent` (HTTP or gRPC headers), and the current trace id.
//! - [`admin`]: the admin HTTP port serving [`metrics`] at `/metrics`, for every binary.
//! - [`metrics`]: a meter provider per service instance, read by a Prometheus text endpoint
//!   and exported over OTLP when configured.
//! - [`LogFormat`]: the two log formats.

#![forbid(unsafe_code)]

pub mod admin;
mod log_format;
pub mod metrics;
pub mod propagation;

use std::io::IsTerminal as _;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::log_format::WithTraceIds;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object a line, for log pipelines.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format {s:?}: expected \"pretty\" or \"json\""
            )),
        }
    }
}

/// Everything [`init_with`] needs.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// `service.name` of the exported spans.
    pub service_name: &'static str,
    pub log_format: LogFormat,
    /// Where to export traces over OTLP/gRPC; `None` reads the standard `OTEL_*` variables,
    /// and exports nothing when they name no endpoint.
    pub otlp_endpoint: Option<String>,
}

/// Keeps telemetry alive; dropping it flushes what is buffered and stops the exporter.
#[must_use = "telemetry stops when the guard is dropped"]
pub struct Guard {
    tracer_provider: SdkTracerProvider,
}

impl Guard {
    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Err(err) = self.tracer_provider.force_flush() {
            tracing::warn!(error = %err, "flushing traces failed");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(err) = self
            .tracer_provider
            .shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("telemetry: exporting the last traces failed: {err}");
        }
    }
}

/// Installs logs and tracing for `service_name`, exporting per the `OTEL_*` variables.
/// Call once, early in `main` (the OTLP exporters run on a thread of their own).
pub fn init(service_name: &'static str, format: LogFormat) -> Guard {
    init_with(TelemetryOptions {
        service_name,
        log_format: format,
        otlp_endpoint: None,
    })
}

/// [`init`] with every option explicit.
pub fn init_with(options: TelemetryOptions) -> Guard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer_provider = tracer_provider(&options);
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a terminal: in files and log pipelines they are noise.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(true);
    let logs = match options.log_format {
        LogFormat::Pretty => logs
            .event_format(WithTraceIds::pretty(
                tracing_subscriber::fmt::format().with_ansi(ansi),
            ))
            .boxed(),
        LogFormat::Json => logs
            .event_format(WithTraceIds::json(
                tracing_subscriber::fmt::format().json().flatten_event(true),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .boxed(),
    }
    .with_filter(filter);

    // Spans go to OpenTelemetry whatever RUST_LOG says (it is about log lines), but not the
    // HTTP/2 and exporter internals: their spans are noise, and the exporter's own would
    // feed back into it.
    let spans = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF);
    // OTEL_SDK_DISABLED=true (the standard switch) leaves spans out entirely: no traces, no
    // trace ids in logs or the audit, and none of their cost.
    let traces = (!sdk_disabled()).then(|| {
        // Per span, the defaults add source location, thread and target attributes and read
        // the clock on every enter and exit (busy/idle time): measurable on a hot path of
        // two spans a request, and nothing an operator reads. The semantic attributes stay.
        // Nor is the OpenTelemetry context attached on every enter (a clone and a guard per
        // poll of each span): trace ids for logs and propagation are read from the span itself
        // (`OpenTelemetrySpanExt::context`), and no other OpenTelemetry instrumentation runs.
        tracing_opentelemetry::layer()
            .with_tracer(tracer_provider.tracer(options.service_name))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(spans)
    });

    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    tracing::debug!(service = options.service_name, "telemetry initialised");
    Guard { tracer_provider }
}

fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The OTLP endpoint for `signal` ("TRACES" or "METRICS") from the environment, if any.
pub(crate) fn endpoint_from_env(signal: &str) -> Option<String> {
    [
        format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The runtime a binary serves on, from its `--worker-threads` (validated above zero). 1 is a
/// current-thread runtime: its run queue is first in, first out, so the calls that one read
/// makes ready all queue their replies and Redis commands before a connection task writes them
/// (ARCHITECTURE.md, "Where a refresh's cost goes"). More: a multi-thread runtime with that
/// many workers.
pub fn serving_runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        threads => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
    }
}

/// Builds an OTLP exporter on a runtime of its own: its connection then never waits for the
/// runtime that serves calls. On a current-thread runtime, the final export at shutdown blocks
/// that runtime's only thread, which would otherwise be the one to drive the export.
fn on_export_runtime<T>(build: impl FnOnce() -> T) -> T {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .expect("cannot start the OTLP exporters' thread")
    });
    let _entered = runtime.enter();
    build()
}

pub(crate) fn resource(service_name: &'static str) -> Resource {
    Resource::builder().with_service_name(service_name).build()
}

fn tracer_provider(options: &TelemetryOptions) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(resource(options.service_name));
    let Some(endpoint) = options
        .otlp_endpoint
        .clone()
        .or_else(|| endpoint_from_env("TRACES"))
    else {
        return builder.build();
    };
    let exporter = on_export_runtime(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
    });
    match exporter {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(err) => {
            eprintln!("telemetry: cannot export traces to {endpoint}: {err}; not exporting");
            builder.build()
        }
    }
}
