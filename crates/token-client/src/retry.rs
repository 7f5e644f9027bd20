//! The retry policy: which statuses are retried, and how long to wait before the next attempt.
//! Pure functions, so that the policy is tested without a network.

use std::error::Error as StdError;
use std::time::Duration;

use rand::Rng;
use token_proto::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::config::ClientConfig;

/// The `ErrorInfo.reason`s of a `RESOURCE_EXHAUSTED` worth retrying: `OVERLOADED` (the server
/// shed load) and `STORE_FULL` (Redis is at its memory high-water mark: nothing was written, so
/// the same request may be sent again after the server's `RetryInfo` delay). `RATE_LIMITED` is
/// not retried: the caller is over its own budget and retrying at once only spends more of it.
pub const RETRYABLE_EXHAUSTION: [ErrorReason; 2] =
    [ErrorReason::Overloaded, ErrorReason::StoreFull];

/// Whether a failed attempt may be tried again: `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
/// `RESOURCE_EXHAUSTED` with reason `OVERLOADED` or `STORE_FULL`, and transport failures (a status the client
/// built from a connection, HTTP/2 or I/O error rather than one the server sent). Nothing else:
/// in particular never `UNAUTHENTICATED` or `INVALID_ARGUMENT`.
pub fn is_retryable(status: &Status) -> bool {
    is_transport_failure(status)
        || match status.code() {
            Code::Unavailable | Code::DeadlineExceeded => true,
            Code::ResourceExhausted => status
                .get_details_error_info()
                .and_then(|info| ErrorReason::from_str_name(&info.reason))
                .is_some_and(|reason| RETRYABLE_EXHAUSTION.contains(&reason)),
            _ => false,
        }
}

/// A status that tonic made from a local transport error (connection refused or reset, HTTP/2
/// stream or connection error, I/O error) instead of receiving it from the server. Server-sent
/// statuses have no source; transport ones keep the error they came from.
fn is_transport_failure(status: &Status) -> bool {
    // The generated stubs turn a channel that cannot become ready into this `Unknown` status,
    // formatted from the transport error: the request was never sent.
    if status.code() == Code::Unknown && status.message().starts_with("Service was not ready") {
        return true;
    }
    // A status built on this side from an HTTP/2 or connection error keeps that error as its
    // source, whatever code tonic gave it: `Unknown` for a body broken mid-stream ("h2 protocol
    // error: error reading a body from connection"), `RESOURCE_EXHAUSTED` for an HTTP/2
    // ENHANCE_YOUR_CALM reset (seen in the chaos run). A status the server sent has no source.
    StdError::source(status).is_some()
}

/// A status tonic made because the request's own `grpc-timeout` expired on the client side
/// (its channel enforces the header it sends). tonic gives it the code `CANCELLED`.
pub(crate) fn is_client_timeout(status: &Status) -> bool {
    let mut source = StdError::source(status);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The ceiling of the wait before retry number `retry` (1 for the first retry):
/// `min(max_backoff, base_backoff × 2^(retry-1))`.
pub fn backoff_ceiling(config: &ClientConfig, retry: u32) -> Duration {
    let doublings = retry.saturating_sub(1).min(31);
    config
        .base_backoff
        .saturating_mul(1u32 << doublings)
        .min(config.max_backoff)
}

/// The wait before retry number `retry` after `status`: full jitter, uniform in
/// `[0, backoff_ceiling]`, raised to the status's `RetryInfo` delay when it has a longer one.
pub fn delay_before_retry(
    config: &ClientConfig,
    retry: u32,
    status: &Status,
    rng: &mut impl Rng,
) -> Duration {
    let ceiling = backoff_ceiling(config, retry);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    let jittered = Duration::from_nanos(rng.random_range(0..=nanos));
    let hint = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_default();
    jittered.max(hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    #[test]
    fn a_status_with_a_local_cause_is_transport_but_a_server_sent_one_is_not() {
        // Stands for an HTTP/2 error type the SDK does not name.
        #[derive(Debug)]
        struct BodyReadFailed;
        impl std::fmt::Display for BodyReadFailed {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error reading a body from connection")
            }
        }
        impl StdError for BodyReadFailed {}
        let local = Status::from_error(Box::new(BodyReadFailed));
        assert_eq!(local.code(), Code::Unknown);
        assert!(is_retryable(&local));
        assert!(!is_retryable(&Status::unknown("sent by the server")));
        let mut calm = Status::resource_exhausted("h2 protocol error: http2 error");
        calm.set_source(std::sync::Arc::new(BodyReadFailed));
        assert!(
            is_retryable(&calm),
            "a local HTTP/2 reset is transport, whatever its code"
        );
        assert!(!is_retryable(&Status::resource_exhausted(
            "RATE_LIMITED from the server"
        )));
    }

    fn with_reason(code: Code, reason: &str, retry_after: Option<Duration>) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(reason, "tokens.v1", HashMap::new());
        if let Some(delay) = retry_after {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(code, "x", details)
    }

    #[test]
    fn retries_only_transient_statuses() {
        assert!(is_retryable(&with_reason(
            Code::ResourceExhausted,
            "STORE_FULL",
            Some(Duration::from_secs(1))
        )));
        assert!(is_retryable(&with_reason(
            Code::Unavailable,
            "STORE_UNAVAILABLE",
            None
        )));
        assert!(is_retryable(&Status::unavailable("no reason")));
        assert!(is_retryable(&Status::deadline_exceeded("late")));
        assert!(is_retryable(&with_reason(
            Code::ResourceExhausted,
            "OVERLOADED",
            None
        )));
        for status in [
            with_reason(Code::ResourceExhausted, "RATE_LIMITED", None),
            Status::resource_exhausted("no reason"),
            with_reason(Code::Unauthenticated, "TOKEN_REUSED", None),
            with_reason(Code::Unauthenticated, "INVALID_CLIENT", None),
            with_reason(Code::InvalidArgument, "MALFORMED_REQUEST", None),
            with_reason(Code::InvalidArgument, "INVALID_SCOPE", None),
            Status::internal("boom"),
            Status::unknown("server said so"),
            Status::cancelled("server said so"),
            Status::failed_precondition("no"),
        ] {
            assert!(!is_retryable(&status), "{status:?} must not be retried");
        }
    }

    #[test]
    fn transport_errors_are_retried_whatever_their_code() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let status = Status::from_error(Box::new(io));
        assert!(is_retryable(&status), "{status:?}");
        assert!(is_retryable(&Status::unknown(
            "Service was not ready: transport error"
        )));
    }

    #[test]
    fn tonics_own_timeout_is_recognised() {
        let status = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(status.code(), Code::Cancelled, "what tonic reports");
        assert!(is_client_timeout(&status));
        assert!(!is_client_timeout(&Status::cancelled("server said so")));
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let config = ClientConfig::default();
        let ms = |n| backoff_ceiling(&config, n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(5), ms(6), ms(100)],
            [50, 100, 200, 800, 1600, 2000]
        );
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_honours_retry_info() {
        let config = ClientConfig::default();
        let mut rng = rand::rng();
        let plain = Status::unavailable("x");
        let hinted = with_reason(
            Code::Unavailable,
            "STORE_UNAVAILABLE",
            Some(Duration::from_millis(300)),
        );
        for retry in 1..=8 {
            for _ in 0..200 {
                let d = delay_before_retry(&config, retry, &plain, &mut rng);
                assert!(d <= backoff_ceiling(&config, retry));
                let d = delay_before_retry(&config, retry, &hinted, &mut rng);
                assert!(d >= Duration::from_millis(300), "RetryInfo is a floor");
                assert!(d <= backoff_ceiling(&config, retry).max(Duration::from_millis(300)));
            }
        }
        // Full jitter reaches well below half the ceiling (equal jitter never would).
        let low = (0..200)
            .map(|_| delay_before_retry(&config, 6, &plain, &mut rng))
            .min()
            .unwrap();
        assert!(low < backoff_ceiling(&config, 6) / 2);
    }
}
