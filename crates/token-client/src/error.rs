//! The error every call returns: the final gRPC status, its decoded `ErrorInfo`, and how many
//! attempts the call made.

use std::time::Duration;

use token_proto::v1::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorInfo, StatusExt as _};

/// A call that failed, for good: either its status is not retryable or the attempts ran out.
///
/// The status is the one of the **last** attempt. Statuses the client made up itself (the
/// local deadline, a connection that could not be made) carry no `ErrorInfo`, so
/// [`reason`](Error::reason) is `None` for them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}{} after {attempts} attempt(s): {message}",
    .info.as_ref().map(|i| format!(" ({})", i.reason)).unwrap_or_default(),
    code = .status.code(),
    message = .status.message())]
pub struct Error {
    status: Status,
    info: Option<ErrorInfo>,
    attempts: u32,
}

impl Error {
    pub(crate) fn new(status: Status, attempts: u32) -> Self {
        let info = status.get_details_error_info();
        Self {
            status,
            info,
            attempts,
        }
    }

    /// The final status, as the server (or the transport) returned it.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The final status, by value.
    pub fn into_status(self) -> Status {
        self.status
    }

    /// The gRPC code of the final status.
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// `google.rpc.ErrorInfo.reason` of the final status (`TOKEN_REUSED`, `INVALID_CLIENT`,
    /// `STORE_UNAVAILABLE`, ...), when the server sent one.
    pub fn reason(&self) -> Option<&str> {
        self.info.as_ref().map(|info| info.reason.as_str())
    }

    /// [`reason`](Error::reason) as the contract's [`ErrorReason`], for matching. `None` also
    /// for a reason this SDK's copy of the contract does not name.
    pub fn error_reason(&self) -> Option<ErrorReason> {
        self.reason().and_then(ErrorReason::from_str_name)
    }

    /// The whole decoded `google.rpc.ErrorInfo`, including its metadata (`oauth_error`, and
    /// `family_revoked` for `TOKEN_REUSED`).
    pub fn error_info(&self) -> Option<&ErrorInfo> {
        self.info.as_ref()
    }

    /// The OAuth2 error code the server put in `ErrorInfo.metadata["oauth_error"]`.
    pub fn oauth_error(&self) -> Option<&str> {
        self.metadata("oauth_error")
    }

    /// The `google.rpc.RetryInfo` delay of the final status, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
    }

    /// How many attempts the call made, the first included (at least 1). For a refresh that
    /// joined another caller's flight, the attempts of that shared RPC.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub(crate) fn metadata(&self, key: &str) -> Option<&str> {
        self.info
            .as_ref()
            .and_then(|info| info.metadata.get(key))
            .map(String::as_str)
    }
}
