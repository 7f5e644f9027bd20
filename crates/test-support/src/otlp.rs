//! A test OTLP/gRPC receiver: what a collector would get, kept in memory for assertions.
//! Spans and metric points arrive as the exporters send them; tests wait for what they
//! expect with [`OtlpReceiver::wait_for_spans`] / [`OtlpReceiver::wait_for_metrics`], which
//! wake on every export (no polling).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::watch;

/// One exported span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    pub name: String,
    /// Lowercase hex, as W3C `traceparent` writes them.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub attributes: HashMap<String, String>,
    pub events: Vec<ReceivedEvent>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub name: String,
    pub attributes: HashMap<String, String>,
}

/// One data point of an exported counter or gauge (histograms give their count).
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub service: String,
    pub metric: String,
    pub attributes: HashMap<String, String>,
    pub value: f64,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    points: Vec<ReceivedPoint>,
}

#[derive(Clone)]
struct Collector {
    received: Arc<Mutex<Received>>,
    /// Bumped on every export, to wake waiters.
    exports: Arc<watch::Sender<u64>>,
}

/// An OTLP/gRPC receiver on a loopback port, running on the current Tokio runtime.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    collector: Collector,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind a loopback port");
        let addr = listener.local_addr().expect("receiver address");
        let collector = Collector {
            received: Arc::default(),
            exports: Arc::new(watch::channel(0).0),
        };
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        Self { addr, collector }
    }

    /// The endpoint to give an OTLP/gRPC exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector.received.lock().unwrap().spans.clone()
    }

    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.collector.received.lock().unwrap().points.clone()
    }

    /// Waits (at most 30 s) until the spans received so far satisfy `done`; returns them.
    pub async fn wait_for_spans(
        &self,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        self.wait(what, || {
            let spans = self.spans();
            done(&spans).then_some(spans)
        })
        .await
    }

    /// Waits (at most 30 s) until the metric points received so far satisfy `done`.
    pub async fn wait_for_metrics(
        &self,
        what: &str,
        done: impl Fn(&[ReceivedPoint]) -> bool,
    ) -> Vec<ReceivedPoint> {
        self.wait(what, || {
            let points = self.points();
            done(&points).then_some(points)
        })
        .await
    }

    async fn wait<T>(&self, what: &str, check: impl Fn() -> Option<T>) -> T {
        let mut exports = self.collector.exports.subscribe();
        let waited = async {
            loop {
                if let Some(found) = check() {
                    return found;
                }
                exports.changed().await.expect("receiver stopped");
            }
        };
        tokio::time::timeout(Duration::from_secs(30), waited)
            .await
            .unwrap_or_else(|_| panic!("the OTLP receiver never got {what}"))
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| attributes(&r.attributes).remove("service.name"))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    status_code: span.status.map(|s| s.code).unwrap_or(0),
                    attributes: attributes(&span.attributes),
                    events: span
                        .events
                        .into_iter()
                        .map(|e| ReceivedEvent {
                            name: e.name,
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                });
            }
        }
        self.received.lock().unwrap().spans.extend(spans);
        self.exports.send_modify(|n| *n += 1);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let number = |v: &Option<number_data_point::Value>| match v {
            Some(number_data_point::Value::AsDouble(d)) => *d,
            Some(number_data_point::Value::AsInt(i)) => *i as f64,
            None => 0.0,
        };
        let mut points = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for m in resource_metrics
                .scope_metrics
                .into_iter()
                .flat_map(|s| s.metrics)
            {
                let values: Vec<(&[KeyValue], f64)> = match &m.data {
                    Some(metric::Data::Sum(sum)) => sum
                        .data_points
                        .iter()
                        .map(|p| (&p.attributes[..], number(&p.value)))
                        .collect(),
                    Some(metric::Data::Gauge(gauge)) => gauge
                        .data_points
                        .iter()
                        .map(|p| (&p.attributes[..], number(&p.value)))
                        .collect(),
                    Some(metric::Data::Histogram(histogram)) => histogram
                        .data_points
                        .iter()
                        .map(|p| (&p.attributes[..], p.count as f64))
                        .collect(),
                    _ => Vec::new(),
                };
                for (attrs, value) in values {
                    points.push(ReceivedPoint {
                        service: service.clone(),
                        metric: m.name.clone(),
                        attributes: attributes(attrs),
                        value,
                    });
                }
            }
        }
        self.received.lock().unwrap().points.extend(points);
        self.exports.send_modify(|n| *n += 1);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}
