//! The one place where domain errors become gRPC statuses. Every code is chosen on purpose
//! (DESIGN.md, the reasons table); every status carries a `google.rpc.ErrorInfo` whose reason
//! names what happened and whose metadata carries the OAuth2 error code.

use std::collections::HashMap;
use std::time::Duration;

use token_core::Error;
use token_proto::v1::ErrorReason;
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

/// What a call can fail with here: a refusal of the domain, or one of the edge's own, made
/// before a request reaches a use case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Domain(#[from] Error),

    /// The instance is at its concurrency limit; retry shortly (with RetryInfo).
    #[error("the service is overloaded; retry shortly")]
    Overloaded,

    /// An operator RPC from a caller the operator policy does not name.
    #[error("{0} is an operator RPC and this caller is not in the operator policy")]
    NotAuthorized(&'static str),
}

/// The gRPC status for an error.
pub fn to_status(err: &EdgeError) -> Status {
    let (code, reason, oauth_error) = classify(err);
    let mut metadata = HashMap::from([(OAUTH_ERROR_KEY.to_owned(), oauth_error.to_owned())]);
    let mut details = ErrorDetails::new();
    match err {
        EdgeError::Domain(Error::Malformed { field, problem }) => {
            details.add_bad_request_violation(*field, problem.clone());
        }
        EdgeError::Domain(Error::TokenReused { family_revoked }) => {
            metadata.insert("family_revoked".to_owned(), family_revoked.to_string());
        }
        EdgeError::Domain(Error::StoreUnavailable(_)) => {
            details.set_retry_info(Some(STORE_RETRY_DELAY));
        }
        EdgeError::Domain(Error::StoreFull(_)) => {
            details.set_retry_info(Some(STORE_FULL_RETRY_DELAY));
        }
        EdgeError::Overloaded => {
            details.set_retry_info(Some(OVERLOAD_RETRY_DELAY));
        }
        EdgeError::Domain(Error::RateLimited { retry_after }) => {
            details.set_retry_info(Some(*retry_after));
        }
        _ => {}
    }
    details.set_error_info(reason.as_str_name(), ERROR_DOMAIN, metadata);
    // Internal details are logged by the caller, never sent.
    let message = match err {
        EdgeError::Domain(Error::Internal(_)) => "internal error".to_owned(),
        other => other.to_string(),
    };
    Status::with_error_details(code, message, details)
}

/// MALFORMED_REQUEST for `field`, as an HTTP response: for requests refused before a handler
/// (too large, undecodable), whose field names are only known at run time.
pub fn malformed(field: &str, problem: &str) -> http::Response<tonic::body::Body> {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, problem);
    let err = EdgeError::Domain(Error::Malformed {
        field: "request",
        problem: String::new(),
    });
    let (code, reason, oauth_error) = classify(&err);
    details.set_error_info(
        reason.as_str_name(),
        ERROR_DOMAIN,
        HashMap::from([(OAUTH_ERROR_KEY.to_owned(), oauth_error.to_owned())]),
    );
    Status::with_error_details(code, format!("{field}: {problem}"), details).into_http()
}

/// The status code, `ErrorInfo.reason` and OAuth2 error code of each error.
pub fn classify(err: &EdgeError) -> (Code, ErrorReason, &'static str) {
    use ErrorReason as R;
    let err = match err {
        EdgeError::Domain(err) => err,
        EdgeError::Overloaded => {
            return (
                Code::ResourceExhausted,
                R::Overloaded,
                "temporarily_unavailable",
            );
        }
        EdgeError::NotAuthorized(_) => {
            return (
                Code::PermissionDenied,
                R::CallerNotAuthorized,
                "access_denied",
            );
        }
    };
    match err {
        Error::Malformed { .. } => (
            Code::InvalidArgument,
            R::MalformedRequest,
            "invalid_request",
        ),
        Error::TokenInvalid => (Code::Unauthenticated, R::TokenInvalid, "invalid_grant"),
        Error::InvalidClient => (Code::Unauthenticated, R::InvalidClient, "invalid_client"),
        Error::ClientMismatch => (Code::Unauthenticated, R::ClientMismatch, "invalid_grant"),
        Error::TokenExpired => (Code::Unauthenticated, R::TokenExpired, "invalid_grant"),
        Error::TokenRevoked => (Code::Unauthenticated, R::TokenRevoked, "invalid_grant"),
        Error::TokenReused { .. } => (Code::Unauthenticated, R::TokenReused, "invalid_grant"),
        Error::InvalidScope(_) => (Code::InvalidArgument, R::InvalidScope, "invalid_scope"),
        Error::StoreUnavailable(_) => (
            Code::Unavailable,
            R::StoreUnavailable,
            "temporarily_unavailable",
        ),
        Error::StoreFull(_) => (
            Code::ResourceExhausted,
            R::StoreFull,
            "temporarily_unavailable",
        ),
        Error::RateLimited { .. } => (
            Code::ResourceExhausted,
            R::RateLimited,
            "temporarily_unavailable",
        ),
        Error::ClientExists(_) => (Code::AlreadyExists, R::ClientExists, "invalid_request"),
        Error::ClientNotFound(_) => (Code::NotFound, R::ClientNotFound, "invalid_request"),
        Error::PublicClient(_) => (Code::FailedPrecondition, R::PublicClient, "invalid_request"),
        // The server's keyring lacks what the client's registration needs: the operator's to
        // fix, not the caller's.
        Error::NoJwtSigningKey => (Code::FailedPrecondition, R::NoJwtSigningKey, "server_error"),
        Error::Internal(_) => (Code::Internal, R::Internal, "server_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_core::StoreError;

    #[test]
    fn statuses_carry_reason_domain_and_oauth_error() {
        let status = to_status(
            &Error::TokenReused {
                family_revoked: true,
            }
            .into(),
        );
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "TOKEN_REUSED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["oauth_error"], "invalid_grant");
        assert_eq!(info.metadata["family_revoked"], "true");
    }

    #[test]
    fn unavailable_carries_retry_info_and_internal_hides_detail() {
        let status =
            to_status(&Error::StoreUnavailable(StoreError::Unavailable("x".into())).into());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_details_retry_info().is_some());
        let status = to_status(&Error::StoreFull(StoreError::Full("OOM".into())).into());
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "STORE_FULL"
        );
        assert!(status.get_details_retry_info().is_some());
        let status = to_status(&Error::Internal("secret detail".into()).into());
        assert_eq!(status.message(), "internal error");
    }

    /// One error of each kind, the edge's included.
    fn every_error() -> Vec<EdgeError> {
        let mut all: Vec<EdgeError> = [
            Error::Malformed {
                field: "client_id",
                problem: "empty".into(),
            },
            Error::TokenInvalid,
            Error::InvalidClient,
            Error::ClientMismatch,
            Error::TokenExpired,
            Error::TokenRevoked,
            Error::TokenReused {
                family_revoked: false,
            },
            Error::InvalidScope("admin".into()),
            Error::StoreUnavailable(StoreError::Unavailable("x".into())),
            Error::StoreFull(StoreError::Full("x".into())),
            Error::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            Error::ClientExists("c".into()),
            Error::ClientNotFound("c".into()),
            Error::PublicClient("c".into()),
            Error::NoJwtSigningKey,
            Error::Internal("x".into()),
        ]
        .into_iter()
        .map(EdgeError::from)
        .collect();
        all.extend([EdgeError::Overloaded, EdgeError::NotAuthorized("GetClient")]);
        all
    }

    #[test]
    fn the_audit_records_the_reason_the_caller_receives() {
        for err in every_error() {
            if let EdgeError::Domain(domain) = &err {
                assert_eq!(classify(&err).1.as_str_name(), domain.reason(), "{err:?}");
            }
        }
    }

    #[test]
    fn every_reason_of_the_contract_is_sent_for_some_error() {
        let sent: std::collections::BTreeSet<i32> =
            every_error().iter().map(|e| classify(e).1 as i32).collect();
        let declared: std::collections::BTreeSet<i32> = (1..)
            .map_while(|n| ErrorReason::try_from(n).ok())
            .map(|r| r as i32)
            .collect();
        assert_eq!(sent, declared);
        assert!(!sent.contains(&(ErrorReason::Unspecified as i32)));
    }
}
