//! The domain of the token service: what a token is, who may hold one, and how a family of
//! refresh tokens moves from one generation to the next. Nothing here knows about gRPC or Redis;
//! storage is reached through the [`Store`] trait, which `token-store` implements.
//!
//! # Layout
//! - [`token`]: the keyed token format (`rt1.` / `at1.` + payload + HMAC) and its claims.
//! - [`keyring`]: signing keys by id, loaded from a file (HMAC, and Ed25519 for JWTs); one of
//!   each kind signs, all verify.
//! - [`jwt`]: RFC 9068 JWT access tokens (Ed25519), for clients that ask for them.
//! - [`client`]: registered clients, their secrets (stored only as hashes) and authentication.
//! - [`audit`]: refresh outcomes as events, the observer told of each, audit queries, and
//!   the [`AuditStore`](audit::AuditStore) trait they are answered through.
//! - [`auth_throttle`]: repeated failed client authentication answered RATE_LIMITED.
//! - [`client_cache`]: a short-TTL cache of client records, saving a Redis call per refresh.
//! - [`scope`]: validated scope sets, subset checks and the access-token scope mask.
//! - [`validate`]: size and shape limits for every request field.
//! - [`store`]: the [`Store`] trait and the family state it returns.
//! - [`service`]: the use cases (issue, refresh, revoke, introspect, client registry).
//! - [`single_flight`]: identical in-flight refreshes share one store call ([`single_flight::TakeoverFlight`]).
//! - [`clock`]: the one clock every decision reads.
//! - [`error`]: the one error enum; the server maps it to gRPC statuses.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth_throttle;
pub mod client;
pub mod client_cache;
pub mod clock;
pub mod error;
pub mod jwt;
pub mod keyring;
pub mod scope;
pub mod service;
pub mod sessions;
pub mod single_flight;
pub mod store;
pub mod token;
pub mod validate;

pub use client::{AccessTokenFormat, Client, ClientType, ReusePolicy};
pub use clock::{Clock, ManualClock, SyncedClock, SystemClock};
pub use error::{Error, StoreError};
pub use keyring::Keyring;
pub use scope::Scopes;
pub use service::{
    DEFAULT_ACCESS_TTL, DEFAULT_GRACE, DEFAULT_REFRESH_ABSOLUTE_TTL, DEFAULT_REFRESH_IDLE_TTL,
    IntrospectRequest, Introspection, IssueRequest, Lifetimes, NewClient, RefreshRequest,
    RevokeRequest, TokenPair, TokenService,
};
pub use store::Store;
pub use token::FamilyId;
