//! Rust SDK for `tokens.v1.TokenService`: per-attempt deadlines, retries with exponential
//! backoff and full jitter on transient failures, single-flight refreshes within a process,
//! and a shared-cache hook ([`PairStore`], [`Session`]) for processes that share one pair.
//!
//! # Layout
//! - [`TokenClient`]: the four `TokenService` calls over a tonic [`Channel`](tonic::transport::Channel),
//!   each with a deadline and retries; identical refreshes in flight share one RPC. Its
//!   channel can be replaced while it runs (`replace_channel`: a renewed TLS certificate).
//! - [`ClientConfig`]: deadline, backoff and attempt settings.
//! - [`Error`]: a failed call: its final [`tonic::Status`], `ErrorInfo` reason, and attempts.
//! - [`retry`]: the retry policy as pure functions (which statuses, how long to wait).
//! - [`Session`], [`PairStore`], [`MemoryPairStore`]: refresh a saved pair, and recover when
//!   another process sharing the store rotated it first.
//! - [`pb`]: the generated `tokens.v1` messages, re-exported.
//!
//! # Retry policy
//! An attempt is retried when it fails with `UNAVAILABLE`, `DEADLINE_EXCEEDED` (from the
//! server, or the local deadline), `RESOURCE_EXHAUSTED` whose `ErrorInfo.reason` is
//! `OVERLOADED` or `STORE_FULL`, or a transport failure (connection refused or reset, HTTP/2 error). Nothing
//! else is retried: `UNAUTHENTICATED`, `INVALID_ARGUMENT`, `RATE_LIMITED` and the rest go back
//! to the caller after one attempt. Before retry *n* the client sleeps a uniformly random time
//! in `[0, min(max_backoff, base_backoff × 2^(n-1))]` (full jitter), or the status's
//! `RetryInfo` delay if that is longer. At most `max_attempts` attempts are made.
//!
//! # Example
//! ```no_run
//! use token_client::{ClientConfig, TokenClient, pb};
//!
//! # async fn run() -> Result<(), token_client::Error> {
//! let client = TokenClient::connect("http://127.0.0.1:50051", ClientConfig::default())
//!     .expect("valid endpoint");
//! let pair = client
//!     .issue_token_pair(pb::IssueTokenPairRequest {
//!         client_id: "web".into(),
//!         subject: "alice".into(),
//!         scopes: vec![],
//!     })
//!     .await?;
//! let next = client
//!     .refresh_token_pair(pb::RefreshTokenPairRequest {
//!         client_id: "web".into(),
//!         client_secret: String::new(), // a public client
//!         refresh_token: pair.refresh_token,
//!         scopes: vec![],
//!     })
//!     .await
//!     .map_err(|err| {
//!         eprintln!("refresh failed: {:?} after {} attempts", err.reason(), err.attempts());
//!         err
//!     })?;
//! println!("family {} replayed={}", next.family_id, next.replayed);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod client;
mod config;
mod error;
pub mod retry;
mod session;
mod single_flight;
mod trace_context;

pub use client::TokenClient;
pub use config::ClientConfig;
pub use error::Error;
pub use session::{MemoryPairStore, PairStore, PairStoreError, Session, SessionError};

/// The generated `tokens.v1` messages and stubs (from the `token-proto` crate).
pub use token_proto::v1 as pb;
