//! The one error type of the domain. Each variant is a distinct, documented outcome; the
//! server wraps it in its own error (with the refusals only the edge makes: overload, the
//! operator gate) and turns that into a gRPC status with an `ErrorInfo` reason in exactly one
//! place.

/// Why a use case refused or failed. Messages never contain a token, secret or MAC. Clone,
/// so that coalesced callers can each receive the result of one shared call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A field is missing, empty, oversize or of the wrong shape.
    #[error("{field}: {problem}")]
    Malformed {
        field: &'static str,
        problem: String,
    },

    /// The token does not parse, names an unknown key, or its MAC does not verify.
    #[error("the token is not valid")]
    TokenInvalid,

    /// Unknown client, or the secret does not match.
    #[error("client authentication failed")]
    InvalidClient,

    /// The token was issued to another client.
    #[error("the token was issued to another client")]
    ClientMismatch,

    /// The family passed its idle or absolute expiry, or the access token its own.
    #[error("the token has expired")]
    TokenExpired,

    /// The family was revoked earlier.
    #[error("the token family has been revoked")]
    TokenRevoked,

    /// A retired refresh token came back outside the grace period.
    #[error("{}", if *.family_revoked {
        "a retired refresh token was reused: the token family has been revoked"
    } else {
        "a retired refresh token was reused and refused; the token family stays active"
    })]
    TokenReused { family_revoked: bool },

    /// The requested scope is not within what may be granted.
    #[error("scope not allowed: {0}")]
    InvalidScope(String),

    /// Redis could not be reached or did not answer in time. Retrying is safe.
    #[error("the token store is unavailable")]
    StoreUnavailable(#[source] StoreError),

    /// Redis is at its memory high-water mark (or answered out-of-memory): new families are
    /// refused so that existing ones keep rotating. Nothing was written; retry later.
    #[error("the token store is at its memory high-water mark; retry later")]
    StoreFull(#[source] StoreError),

    /// Too many failed authentications for this client; retry after the given time.
    #[error("too many failed client authentications; retry later")]
    RateLimited { retry_after: std::time::Duration },

    /// `CreateClient` with an id that exists or existed.
    #[error("client {0:?} already exists or was deleted; client ids are never reused")]
    ClientExists(String),

    /// An operator RPC named a client that does not exist.
    #[error("client {0:?} not found")]
    ClientNotFound(String),

    /// `RotateClientSecret` on a public client.
    #[error("client {0:?} is public and has no secret")]
    PublicClient(String),

    /// A `jwt` client asked for, or served, while the keyring has no Ed25519 key marked
    /// `sign`: add one (`token-server keygen` writes one) and nothing else changes.
    #[error("the keyring has no ed25519 signing key, which JWT access tokens need")]
    NoJwtSigningKey,

    /// A broken invariant (corrupt store record, retired signing key). Logged in full,
    /// answered as INTERNAL without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The name the audit records for this error: the `ErrorInfo.reason` the server sends for
    /// it (tokens.proto's `ErrorReason`, which this crate cannot depend on; the server's
    /// status tests hold the two equal).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "MALFORMED_REQUEST",
            Error::TokenInvalid => "TOKEN_INVALID",
            Error::InvalidClient => "INVALID_CLIENT",
            Error::ClientMismatch => "CLIENT_MISMATCH",
            Error::TokenExpired => "TOKEN_EXPIRED",
            Error::TokenRevoked => "TOKEN_REVOKED",
            Error::TokenReused { .. } => "TOKEN_REUSED",
            Error::InvalidScope(_) => "INVALID_SCOPE",
            Error::StoreUnavailable(_) => "STORE_UNAVAILABLE",
            Error::StoreFull(_) => "STORE_FULL",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::ClientExists(_) => "CLIENT_EXISTS",
            Error::ClientNotFound(_) => "CLIENT_NOT_FOUND",
            Error::PublicClient(_) => "PUBLIC_CLIENT",
            Error::NoJwtSigningKey => "NO_JWT_SIGNING_KEY",
            Error::Internal(_) => "INTERNAL",
        }
    }

    pub(crate) fn malformed(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Malformed {
            field,
            problem: problem.into(),
        }
    }
}

/// A failure of the store itself, as opposed to a refusal by its state machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Connection refused, dropped or timed out: the operation may or may not have run, and
    /// every operation is safe to retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is at its memory high-water mark or out of memory: it refused to write, and
    /// nothing changed.
    #[error("store full: {0}")]
    Full(String),
    /// The store answered something that breaks an invariant.
    #[error("store returned an unexpected reply: {0}")]
    Corrupt(String),
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Error::StoreUnavailable(err),
            StoreError::Full(_) => Error::StoreFull(err),
            StoreError::Corrupt(detail) => Error::Internal(detail),
        }
    }
}
