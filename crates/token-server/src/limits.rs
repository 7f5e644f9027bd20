//! The bound on a whole request message. Every field has its own limit (token-core's
//! `validate`), the largest legitimate request (CreateClient with 64 scopes) is under 10 KiB,
//! and without a bound each of the 2,048 concurrent calls could make the server buffer tonic's
//! default of 4 MiB. A larger message is refused before it is decoded, and answered like any
//! oversize field: INVALID_ARGUMENT / MALFORMED_REQUEST (tonic itself would say OUT_OF_RANGE
//! with no ErrorInfo).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Code;
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
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A refused decode is a trailers-only response: the status is in the headers.
            let out_of_range = response.headers().get("grpc-status").is_some_and(|code| {
                code.as_bytes() == (Code::OutOfRange as i32).to_string().as_bytes()
            });
            if !out_of_range {
                return Ok(response);
            }
            let status = crate::status::to_status(&token_core::Error::Malformed {
                field: "request",
                problem: format!("the request message is larger than {MAX_REQUEST_BYTES} bytes"),
            });
            Ok(status.into_http())
        })
    }
}
