//! Metrics for one service instance: an OpenTelemetry meter provider whose instruments are
//! read by a Prometheus registry (rendered as text for a scrape endpoint) and, when an OTLP
//! endpoint is configured, exported over OTLP/gRPC every `OTEL_METRIC_EXPORT_INTERVAL`
//! (default 60 s). Per instance rather than global, so that several instances in one process
//! (tests) count separately.

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder as _, TextEncoder};

/// The meter provider of one service instance and its Prometheus view.
pub struct MetricsRegistry {
    provider: SdkMeterProvider,
    prometheus: prometheus::Registry,
}

/// The content type of [`MetricsRegistry::render_prometheus`].
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl MetricsRegistry {
    /// A registry for `service_name`, exporting over OTLP to `otlp_endpoint` (or the
    /// `OTEL_*` variables' endpoint when `None`; nowhere when they name none).
    pub fn new(service_name: &'static str, otlp_endpoint: Option<String>) -> Self {
        let prometheus = prometheus::Registry::new();
        let mut builder = SdkMeterProvider::builder().with_resource(crate::resource(service_name));
        match opentelemetry_prometheus::exporter()
            .with_registry(prometheus.clone())
            .scope_info_enabled(false)
            .build()
        {
            Ok(reader) => builder = builder.with_reader(reader),
            Err(err) => eprintln!("telemetry: no Prometheus metrics: {err}"),
        }
        if let Some(endpoint) = otlp_endpoint.or_else(|| crate::endpoint_from_env("METRICS")) {
            let exporter = crate::on_export_runtime(|| {
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .build()
            });
            match exporter {
                Ok(exporter) => {
                    builder = builder.with_reader(PeriodicReader::builder(exporter).build());
                }
                Err(err) => {
                    eprintln!("telemetry: cannot export metrics to {endpoint}: {err}");
                }
            }
        }
        Self {
            provider: builder.build(),
            prometheus,
        }
    }

    /// The meter instruments of `scope` (a crate or component name) are made with.
    pub fn meter(&self, scope: &'static str) -> Meter {
        self.provider.meter(scope)
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut text = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.prometheus.gather(), &mut text) {
            tracing::warn!(error = %err, "rendering Prometheus metrics failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }

    /// Exports what OTLP readers hold now.
    pub fn flush(&self) {
        if let Err(err) = self.provider.force_flush() {
            tracing::debug!(error = %err, "flushing metrics failed");
        }
    }
}

impl Drop for MetricsRegistry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}
