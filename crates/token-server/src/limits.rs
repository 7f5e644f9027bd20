//! The bound on a whole request message. Every field has its own limit (token-core's
//! `validate`), the largest legitimate request (CreateClient with 64 scopes) is under 10 KiB,
//! and without a bound each of the 2,048 concurrent calls could make the server buffer tonic's
//! default of 4 MiB. A larger message is refused before it is decoded, and answered like any
//! oversize field: INVALID_ARGUMENT / MALFORMED_REQUEST (tonic itself would say OUT_OF_RANGE
//! with no ErrorInfo).

use std::task::{Context, Poll};

use futures::TryFutureExt as _;
use futures::future::MapOk;
use tower::{Layer, Service};

/// The largest request message the token services decode.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Rewrites tonic's OUT_OF_RANGE "message too large" into the contract's MALFORMED_REQUEST.
/// No handler of ours answers OUT_OF_RANGE, so the code identifies tonic's size check.
#[derive(Clone, Copy, Default)]
pub struct OversizeAsMalformedLayer;

impl<S> Layer<S> for OversizeAsMalformedLayer {
    type Service = OversizeAsMalformed<S>;

    fn layer(&self, inner: S) -> OversizeAsMalformed<S> {
        OversizeAsMalformed { inner }
    }
}

#[derive(Clone)]
pub struct OversizeAsMalformed<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for OversizeAsMalformed<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    /// No allocation per call: the inner future, its response looked at on the way out.
    type Future = MapOk<S::Future, fn(S::Response) -> S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.inner.call(request).map_ok(malformed_if_oversize)
    }
}

/// A refused decode is a trailers-only response: the status is in the headers.
fn malformed_if_oversize(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == OUT_OF_RANGE.as_bytes());
    if !out_of_range {
        return response;
    }
    crate::status::to_status(&token_core::Error::Malformed {
        field: "request",
        problem: format!("the request message is larger than {MAX_REQUEST_BYTES} bytes"),
    })
    .into_http()
}

/// `grpc-status` of OUT_OF_RANGE.
const OUT_OF_RANGE: &str = "11";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_grpc_status_11() {
        assert_eq!(OUT_OF_RANGE, (tonic::Code::OutOfRange as i32).to_string());
    }
}
