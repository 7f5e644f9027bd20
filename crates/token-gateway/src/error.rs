//! The gateway's one error type, and the one place where an error becomes an HTTP response
//! ([`IntoResponse`] below). Every status is chosen on purpose: RFC 6749 section 5.2 for the
//! OAuth errors, RFC 7009 section 2.2.1 for 503 with `Retry-After`, and 429 for the token
//! service's `RATE_LIMITED`.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use token_client::pb::ErrorReason;

use crate::response::oauth_json;

/// The `WWW-Authenticate` challenge sent with every `invalid_client` (RFC 6749 section 5.2:
/// Basic is the scheme this gateway accepts).
pub const CHALLENGE: &str = r#"Basic realm="token-gateway""#;

/// `Retry-After` when the token service gave no `RetryInfo` (it was unreachable).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a request was refused or could not be served. The `String`s are `error_description`s:
/// written here or by the token service (whose messages never carry a token or secret), and
/// never a value the caller sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing, repeated or malformed parameter, or a body that is not form encoded.
    #[error("{0}")]
    InvalidRequest(Cow<'static, str>),
    /// No, unusable or wrong client credentials.
    #[error("{0}")]
    InvalidClient(Cow<'static, str>),
    /// The refresh token is invalid, expired, revoked, reused or another client's.
    #[error("{0}")]
    InvalidGrant(Cow<'static, str>),
    /// A scope that is malformed or wider than what was granted.
    #[error("{0}")]
    InvalidScope(Cow<'static, str>),
    /// A `grant_type` other than `refresh_token`: this gateway only refreshes.
    #[error("only grant_type=refresh_token is supported here")]
    UnsupportedGrantType,
    /// The token service throttled this client after too many failed authentications.
    #[error("too many failed client authentications; retry later")]
    RateLimited { retry_after: Duration },
    /// The token service could not be reached, was overloaded, or its store was: the request
    /// may or may not have taken effect, and sending the same request again is safe (a
    /// refresh retried inside the grace period gets the pair that was issued).
    #[error("the token service is temporarily unavailable; retry the same request")]
    Unavailable {
        retry_after: Duration,
        /// What the SDK saw last, for the log (`None` only where no call was made). Boxed: it
        /// is large, and every `Result` of the gateway would pay for its size.
        cause: Option<Box<token_client::Error>>,
    },
    /// The token service reported a broken invariant (details are in its log).
    #[error("the token service failed")]
    Internal(#[source] Box<token_client::Error>),
}

impl Error {
    /// The OAuth2 `error` code and HTTP status of each error.
    fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            Error::InvalidRequest(_) => ("invalid_request", StatusCode::BAD_REQUEST),
            Error::InvalidClient(_) => ("invalid_client", StatusCode::UNAUTHORIZED),
            Error::InvalidGrant(_) => ("invalid_grant", StatusCode::BAD_REQUEST),
            Error::InvalidScope(_) => ("invalid_scope", StatusCode::BAD_REQUEST),
            Error::UnsupportedGrantType => ("unsupported_grant_type", StatusCode::BAD_REQUEST),
            Error::RateLimited { .. } => ("temporarily_unavailable", StatusCode::TOO_MANY_REQUESTS),
            Error::Unavailable { .. } => {
                ("temporarily_unavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
            Error::Internal(_) => ("server_error", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        match &self {
            Error::Unavailable {
                cause: Some(cause), ..
            } => tracing::warn!(error = code, cause = %cause, "token service unavailable"),
            Error::Unavailable { cause: None, .. } => {
                tracing::warn!(error = code, "token service unavailable")
            }
            Error::Internal(cause) => {
                tracing::error!(error = code, cause = %cause, "token service failed")
            }
            _ => tracing::debug!(error = code, description = %self, "refused"),
        }
        let body = serde_json::json!({
            "error": code,
            "error_description": description(&self.to_string()),
        });
        let mut response = oauth_json(status, &body);
        // For the metrics middleware, which counts error responses by code.
        response
            .extensions_mut()
            .insert(crate::metrics::OAuthErrorCode(code));
        let headers = response.headers_mut();
        match &self {
            Error::InvalidClient(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE),
                );
            }
            Error::RateLimited { retry_after } | Error::Unavailable { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(seconds(*retry_after)),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<token_client::Error> for Error {
    /// The token service's verdict, from `ErrorInfo.metadata["oauth_error"]`. A failure the
    /// service did not classify (no answer, a transport error, a status without `ErrorInfo`)
    /// is `Unavailable`: the gateway cannot know whether a refresh committed, so it must not
    /// answer anything that makes the client give up on its refresh token.
    fn from(err: token_client::Error) -> Self {
        let said = || Cow::Owned(err.status().message().to_owned());
        match err.oauth_error() {
            Some("invalid_request") => Error::InvalidRequest(said()),
            Some("invalid_client") => Error::InvalidClient(said()),
            Some("invalid_grant") => Error::InvalidGrant(said()),
            Some("invalid_scope") => Error::InvalidScope(said()),
            Some("temporarily_unavailable") => {
                let retry_after = err.retry_delay().unwrap_or(DEFAULT_RETRY_AFTER);
                if err.error_reason() == Some(ErrorReason::RateLimited) {
                    Error::RateLimited { retry_after }
                } else {
                    Error::Unavailable {
                        retry_after,
                        cause: Some(Box::new(err)),
                    }
                }
            }
            Some("server_error") => Error::Internal(Box::new(err)),
            _ => Error::Unavailable {
                retry_after: err.retry_delay().unwrap_or(DEFAULT_RETRY_AFTER),
                cause: Some(Box::new(err)),
            },
        }
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least one.
fn seconds(delay: Duration) -> u64 {
    delay.as_millis().div_ceil(1000).max(1) as u64
}

/// An `error_description` within the characters RFC 6749 section 5.2 allows
/// (`%x20-21 / %x23-5B / %x5D-7E`): quotes become apostrophes, anything else outside is `?`.
fn description(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::from_millis(200)), 1);
        assert_eq!(seconds(Duration::ZERO), 1);
        assert_eq!(seconds(Duration::from_millis(1001)), 2);
        assert_eq!(seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn descriptions_keep_to_the_rfc_alphabet() {
        assert_eq!(
            description("must be \"access_token\" or \\ é\n"),
            "must be 'access_token' or / ??"
        );
    }

    #[test]
    fn every_error_has_the_status_of_its_rfc() {
        let cases = [
            (Error::InvalidRequest("x".into()), 400, "invalid_request"),
            (Error::InvalidClient("x".into()), 401, "invalid_client"),
            (Error::InvalidGrant("x".into()), 400, "invalid_grant"),
            (Error::InvalidScope("x".into()), 400, "invalid_scope"),
            (Error::UnsupportedGrantType, 400, "unsupported_grant_type"),
            (
                Error::RateLimited {
                    retry_after: Duration::from_secs(2),
                },
                429,
                "temporarily_unavailable",
            ),
            (
                Error::Unavailable {
                    retry_after: Duration::from_secs(1),
                    cause: None,
                },
                503,
                "temporarily_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(
                err.code_and_status(),
                (code, StatusCode::from_u16(status).unwrap())
            );
        }
    }
}
