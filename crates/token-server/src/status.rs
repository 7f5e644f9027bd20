//! The one place where domain errors become gRPC statuses. Every code is chosen on purpose
//! (DESIGN.md, the reasons table); every status carries a `google.rpc.ErrorInfo` whose reason
//! names what happened and whose metadata carries the OAuth2 error code.

use std::collections::HashMap;
use std::time::Duration;

use token_core::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "tokens.v1";
/// The `ErrorInfo.metadata` key holding the OAuth2 error code.
pub const OAUTH_ERROR_KEY: &str = "oauth_error";
/// Suggested wait before retrying after the store was unavailable.
const STORE_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Suggested wait before retrying when Redis is at its memory high-water mark: room comes back
/// as families expire or an operator adds memory, not within milliseconds.
const STORE_FULL_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Suggested wait before retrying a call shed under load.
const OVERLOAD_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The gRPC status for a domain error.
pub fn to_status(err: &Error) -> Status {
    let (code, reason, oauth_error) = classify(err);
    let mut metadata = HashMap::from([(OAUTH_ERROR_KEY.to_owned(), oauth_error.to_owned())]);
    let mut details = ErrorDetails::new();
    match err {
        Error::Malformed { field, problem } => {
            details.add_bad_request_violation(*field, problem.clone());
        }
        Error::TokenReused { family_revoked } => {
            metadata.insert("family_revoked".to_owned(), family_revoked.to_string());
        }
        Error::StoreUnavailable(_) => {
            details.set_retry_info(Some(STORE_RETRY_DELAY));
        }
        Error::StoreFull(_) => {
            details.set_retry_info(Some(STORE_FULL_RETRY_DELAY));
        }
        Error::Overloaded => {
            details.set_retry_info(Some(OVERLOAD_RETRY_DELAY));
        }
        Error::RateLimited { retry_after } => {
            details.set_retry_info(Some(*retry_after));
        }
        _ => {}
    }
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    // Internal details are logged by the caller, never sent.
    let message = match err {
        Error::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    Status::with_error_details(code, message, details)
}

/// MALFORMED_REQUEST for `field`, as an HTTP response: for requests refused before a handler
/// (too large, undecodable), whose field names are only known at run time.
pub fn malformed(field: &str, problem: &str) -> http::Response<tonic::body::Body> {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, problem);
    let err = Error::Malformed {
        field: "request",
        problem: String::new(),
    };
    let (code, reason, oauth_error) = classify(&err);
    details.set_error_info(
        reason,
        ERROR_DOMAIN,
        HashMap::from([(OAUTH_ERROR_KEY.to_owned(), oauth_error.to_owned())]),
    );
    Status::with_error_details(code, format!("{field}: {problem}"), details).into_http()
}

/// The status code, `ErrorInfo.reason` and OAuth2 error code of each error.
pub fn classify(err: &Error) -> (Code, &'static str, &'static str) {
    let (code, oauth_error) = match err {
        Error::Malformed { .. } => (Code::InvalidArgument, "invalid_request"),
        Error::TokenInvalid
        | Error::ClientMismatch
        | Error::TokenExpired
        | Error::TokenRevoked
        | Error::TokenReused { .. } => (Code::Unauthenticated, "invalid_grant"),
        Error::InvalidClient => (Code::Unauthenticated, "invalid_client"),
        Error::InvalidScope(_) => (Code::InvalidArgument, "invalid_scope"),
        Error::StoreUnavailable(_) => (Code::Unavailable, "temporarily_unavailable"),
        Error::StoreFull(_) | Error::Overloaded | Error::RateLimited { .. } => {
            (Code::ResourceExhausted, "temporarily_unavailable")
        }
        Error::NotAuthorized(_) => (Code::PermissionDenied, "access_denied"),
        Error::ClientExists(_) => (Code::AlreadyExists, "invalid_request"),
        Error::ClientNotFound(_) => (Code::NotFound, "invalid_request"),
        Error::PublicClient(_) => (Code::FailedPrecondition, "invalid_request"),
        Error::Internal(_) => (Code::Internal, "server_error"),
    };
    (code, err.reason(), oauth_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_core::StoreError;

    #[test]
    fn statuses_carry_reason_domain_and_oauth_error() {
        let status = to_status(&Error::TokenReused {
            family_revoked: true,
        });
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "TOKEN_REUSED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["oauth_error"], "invalid_grant");
        assert_eq!(info.metadata["family_revoked"], "true");
    }

    #[test]
    fn unavailable_carries_retry_info_and_internal_hides_detail() {
        let status = to_status(&Error::StoreUnavailable(StoreError::Unavailable(
            "x".into(),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_details_retry_info().is_some());
        let status = to_status(&Error::StoreFull(StoreError::Full("OOM".into())));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "STORE_FULL"
        );
        assert!(status.get_details_retry_info().is_some());
        let status = to_status(&Error::Internal("secret detail".into()));
        assert_eq!(status.message(), "internal error");
    }
}
