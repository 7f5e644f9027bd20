//! A server span and a duration measurement for every RPC. The span continues the caller's
//! trace (W3C `traceparent` in the request metadata) and carries the OpenTelemetry RPC
//! attributes; handlers add the outcome (`tokens.outcome`) and the refusal reason
//! (`error.type`) as they learn them.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::field::Empty;

/// Adds [`RpcTrace`] around the server's routes.
#[derive(Clone)]
pub struct RpcTraceLayer {
    duration: Histogram<f64>,
}

impl RpcTraceLayer {
    pub fn new(meter: &Meter) -> Self {
        Self {
            duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_description("Time to answer an RPC, by service, method and status code")
                .with_unit("s")
                .with_boundaries(vec![
                    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5,
                ])
                .build(),
        }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> RpcTrace<S> {
        RpcTrace {
            inner,
            duration: self.duration.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcTrace<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, B, R> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // gRPC paths are `/<package.Service>/<Method>`; known ones name their attributes with
        // static strings (no allocation per call), others by copies.
        let path = request.uri().path();
        let (service, method) = static_names(path).unwrap_or_else(|| {
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or(("", path));
            (
                Cow::Owned(service.to_owned()),
                Cow::Owned(method.to_owned()),
            )
        });
        let span = tracing::info_span!(
            "rpc",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = &*service,
            rpc.method = &*method,
            rpc.grpc.status_code = Empty,
            error.type = Empty,
            tokens.outcome = Empty,
        );
        telemetry::propagation::set_parent_from_headers(&span, request.headers());
        let started = Instant::now();
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let duration = self.duration.clone();
        Box::pin(
            async move {
                let result = response.await;
                // Refusals are "trailers-only" responses: their status is in the headers. A
                // response without one carries OK in its trailers (unary calls fail first or
                // not at all).
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0),
                    Err(_) => tonic::Code::Unknown as i64,
                };
                let span = tracing::Span::current();
                span.record("rpc.grpc.status_code", code);
                if is_server_error(code) {
                    span.record("otel.status_code", "ERROR");
                }
                duration.record(
                    started.elapsed().as_secs_f64(),
                    &[
                        KeyValue::new("rpc.service", service),
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.grpc.status_code", code),
                    ],
                );
                result
            }
            .instrument(span),
        )
    }
}

/// The service and method of this server's own RPCs, as static strings.
fn static_names(path: &str) -> Option<(Cow<'static, str>, Cow<'static, str>)> {
    // Read once from the contract's descriptors, so no RPC added to the proto is missed;
    // leaked, since they live as long as the process.
    static NAMES: LazyLock<Vec<(&'static str, &'static str, &'static str)>> = LazyLock::new(|| {
        token_proto::access::methods()
            .into_iter()
            .filter_map(|method| {
                let path: &'static str = Box::leak(method.path.into_boxed_str());
                let (service, name) = path.strip_prefix('/')?.split_once('/')?;
                Some((path, service, name))
            })
            .collect()
    });
    let (_, service, method) = NAMES.iter().find(|(known, _, _)| *known == path)?;
    Some((Cow::Borrowed(*service), Cow::Borrowed(*method)))
}

/// Statuses that mean the server failed, as OpenTelemetry's gRPC conventions list them for
/// server spans; a refused token (UNAUTHENTICATED) is the server working.
fn is_server_error(code: i64) -> bool {
    use tonic::Code;
    [
        Code::Unknown,
        Code::DeadlineExceeded,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
    ]
    .iter()
    .any(|c| *c as i64 == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_contract_is_named_without_allocating() {
        let methods = token_proto::access::methods();
        assert!(methods.len() >= 13, "{methods:?}");
        for method in methods {
            let (service, name) = static_names(&method.path).expect(&method.path);
            assert!(matches!(service, Cow::Borrowed(_)) && matches!(name, Cow::Borrowed(_)));
            assert_eq!(format!("/{service}/{name}"), method.path);
        }
        assert!(static_names("/tokens.v1.TokenService/Nope").is_none());
        assert!(static_names("/grpc.health.v1.Health/Check").is_none());
    }
}
