//! Requests tonic refuses before any handler sees them, answered as the contract answers bad
//! input: INVALID_ARGUMENT / MALFORMED_REQUEST with a `BadRequest` naming the field.
//!
//! - The bound on a whole request message. Every field has its own limit (token-core's
//!   `validate`), the largest legitimate request (CreateClient with 64 scopes) is under 10
//!   KiB, and without a bound each of the 2,048 concurrent calls could make the server buffer
//!   tonic's default of 4 MiB. A larger message is refused before it is decoded (tonic itself
//!   would say OUT_OF_RANGE with no ErrorInfo).
//! - A message that does not decode (a string field that is not UTF-8, a truncated varint, a
//!   wrong wire type): tonic says INTERNAL, which is reserved for our broken invariants. The
//!   field is named when prost names it, else `request`.

use std::task::{Context, Poll};

use futures::TryFutureExt as _;
use futures::future::MapOk;
use tower::{Layer, Service};

/// The largest request message the token services decode.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Rewrites tonic's OUT_OF_RANGE "message too large" and INTERNAL "failed to decode Protobuf
/// message" into the contract's MALFORMED_REQUEST. No handler of ours answers OUT_OF_RANGE, and
/// ours answer INTERNAL only with the message "internal error", so each is tonic's own.
#[derive(Clone, Copy, Default)]
pub struct MalformedRequestLayer;

impl<S> Layer<S> for MalformedRequestLayer {
    type Service = MalformedRequest<S>;

    fn layer(&self, inner: S) -> MalformedRequest<S> {
        MalformedRequest { inner }
    }
}

#[derive(Clone)]
pub struct MalformedRequest<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for MalformedRequest<S>
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
        self.inner
            .call(request)
            .map_ok(malformed_if_refused_undecoded)
    }
}

/// A refused decode is a trailers-only response: the status is in the headers.
fn malformed_if_refused_undecoded(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let code = response.headers().get("grpc-status").map(|c| c.as_bytes());
    let (field, problem) = match code {
        Some(OUT_OF_RANGE) => (
            "request".to_owned(),
            format!("the request message is larger than {MAX_REQUEST_BYTES} bytes"),
        ),
        Some(INTERNAL) => {
            let Some(status) = tonic::Status::from_header_map(response.headers()) else {
                return response;
            };
            let Some(detail) = status.message().strip_prefix(DECODE_FAILED) else {
                return response;
            };
            let (field, problem) = undecodable(detail);
            tracing::info!(field = %field, problem = %problem, "request message does not decode");
            (field, problem)
        }
        _ => return response,
    };
    crate::status::malformed(&field, &problem)
}

/// The field and the problem in prost's description of a failed decode,
/// `<Message>.<field>: <problem>` (the field missing when prost could not tell).
fn undecodable(detail: &str) -> (String, String) {
    // prost writes its stack of `Message.field` first (outermost first), then the problem.
    let is_field_path = |segment: &str| {
        segment.split_once('.').is_some_and(|(message, field)| {
            [message, field].iter().all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        })
    };
    let mut field = "request";
    let mut rest = detail;
    while let Some((segment, after)) = rest.split_once(": ")
        && is_field_path(segment)
    {
        field = segment.rsplit_once('.').map_or(field, |(_, f)| f);
        rest = after;
    }
    (field.to_owned(), format!("does not decode: {rest}"))
}

/// `grpc-status` of OUT_OF_RANGE and of INTERNAL.
const OUT_OF_RANGE: &[u8] = b"11";
const INTERNAL: &[u8] = b"13";
/// How tonic's prost codec begins the message of a decode error.
const DECODE_FAILED: &str = "failed to decode Protobuf message: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_grpc_statuses_11_and_13() {
        assert_eq!(
            OUT_OF_RANGE,
            (tonic::Code::OutOfRange as i32).to_string().as_bytes()
        );
        assert_eq!(
            INTERNAL,
            (tonic::Code::Internal as i32).to_string().as_bytes()
        );
    }

    #[test]
    fn prost_descriptions_name_the_field() {
        let cases = [
            (
                "IntrospectTokenRequest.token: invalid string value: data is not UTF-8 encoded",
                "token",
                "does not decode: invalid string value: data is not UTF-8 encoded",
            ),
            (
                "RefreshTokenPairRequest.scopes: invalid string value: data is not UTF-8 encoded",
                "scopes",
                "does not decode: invalid string value: data is not UTF-8 encoded",
            ),
            (
                "buffer underflow",
                "request",
                "does not decode: buffer underflow",
            ),
            (
                "Outer.inner: Inner.name: invalid string value: data is not UTF-8 encoded",
                "name",
                "does not decode: invalid string value: data is not UTF-8 encoded",
            ),
            (
                "invalid wire type: LengthDelimited (expected Varint)",
                "request",
                "does not decode: invalid wire type: LengthDelimited (expected Varint)",
            ),
        ];
        for (detail, field, problem) in cases {
            assert_eq!(
                undecodable(detail),
                (field.to_owned(), problem.to_owned()),
                "{detail}"
            );
        }
    }
}
