//! gRPC handlers. Each has the same shape: borrow the request's fields into a domain request,
//! call the use case, record the outcome, translate the result. No logic lives here.

mod client_registry;
mod convert;
mod token_service;

pub use client_registry::ClientRegistryApi;
pub use token_service::TokenServiceApi;

use token_core::Error;
use tonic::Status;

use crate::status::{EdgeError, classify, to_status};

/// Logs a refused or failed call: the reason and ids, never a token or secret.
pub(crate) fn refused(rpc: &'static str, client_id: &str, err: Error) -> Status {
    let err = EdgeError::Domain(err);
    let (code, reason, _) = classify(&err);
    let reason = reason.as_str_name();
    tracing::Span::current().record("error.type", reason);
    match &err {
        EdgeError::Domain(Error::Internal(detail)) => {
            tracing::error!(rpc, client_id, reason, detail = %detail, "internal error");
        }
        EdgeError::Domain(Error::StoreUnavailable(source)) => {
            tracing::warn!(rpc, client_id, reason, error = %source, "store unavailable");
        }
        EdgeError::Domain(Error::TokenReused { family_revoked }) => {
            tracing::warn!(
                rpc,
                client_id,
                reason,
                family_revoked,
                "retired refresh token reused"
            );
        }
        _ => tracing::info!(rpc, client_id, reason, code = ?code, "refused"),
    }
    to_status(&err)
}
