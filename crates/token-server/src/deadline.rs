//! The caller's deadline (`grpc-timeout`), answered DEADLINE_EXCEEDED when it passes inside the
//! server. tonic enforces the header as well, but answers CANCELLED "Timeout expired", and the
//! retry policies of other languages' gRPC libraries retry DEADLINE_EXCEEDED, not CANCELLED.
//!
//! This layer sits inside tonic's own timeout, with the same deadline reckoned a moment later,
//! so it never ends later; and tonic polls the service before its own timer, so when both are
//! due this layer's answer is the one sent.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{Either, Map};
use tokio::time::Timeout;
use tokio::time::error::Elapsed;
use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    /// No allocation per call: the inner future, or it under a timer.
    type Future = Either<
        S::Future,
        Map<
            Timeout<S::Future>,
            fn(Result<Result<Response, S::Error>, Elapsed>) -> Result<Response, S::Error>,
        >,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let call = self.inner.call(request);
        match deadline {
            None => Either::Left(call),
            Some(timeout) => Either::Right(tokio::time::timeout(timeout, call).map(|result| {
                match result {
                    Ok(answer) => answer,
                    Err(_) => Ok(tonic::Status::deadline_exceeded(
                        "the call's deadline (grpc-timeout) passed before it finished",
                    )
                    .into_http()),
                }
            })),
        }
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per the gRPC HTTP/2
/// protocol; anything else is ignored, as tonic ignores it.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        let cases = [
            ("1m", Some(Duration::from_millis(1))),
            ("2S", Some(Duration::from_secs(2))),
            ("3H", Some(Duration::from_secs(3 * 3600))),
            ("4M", Some(Duration::from_secs(240))),
            ("500u", Some(Duration::from_micros(500))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None),
            ("m", None),
            ("", None),
            ("1x", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_grpc_timeout(value), want, "{value:?}");
        }
    }
}
