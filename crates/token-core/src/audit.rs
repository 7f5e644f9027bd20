//! The refresh audit: what became of every refresh request, per client. The service reports
//! each outcome to a [`RefreshObserver`] (the server counts it and appends it to the audit
//! log); operators read the log back through an [`AuditStore`], with an [`EventQuery`] or a
//! summary over a window.
//! Events carry ids, outcomes and reasons, never a token or secret.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, StoreError};
use crate::store::{Reuse, Rotation};
use crate::token::FamilyId;
use crate::validate;

/// What became of one refresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefreshOutcome {
    /// The family advanced one generation.
    Rotated,
    /// The current pair was delivered again (grace replay or a coalesced duplicate).
    Replayed,
    /// The store had lost a generation we issued; the family moved past it.
    RolledForward,
    /// A retired refresh token came back outside grace.
    Reused,
    /// The family passed its idle or absolute expiry.
    Expired,
    /// The family was revoked earlier.
    Revoked,
    /// Client authentication failed, the token belongs to another client, or the client is
    /// throttled.
    InvalidClient,
    /// The refresh token does not verify.
    InvalidToken,
    /// The request itself was refused (malformed field, scope not allowed).
    Rejected,
    /// The store or the instance could not serve it (unavailable, overloaded, internal).
    Unavailable,
    /// Not a refresh: an operator revoked the client's sessions of one subject
    /// (`RevokeSubjectSessions`); the detail says how many.
    SessionsRevoked,
}

impl RefreshOutcome {
    pub const ALL: [RefreshOutcome; 11] = [
        RefreshOutcome::Rotated,
        RefreshOutcome::Replayed,
        RefreshOutcome::RolledForward,
        RefreshOutcome::Reused,
        RefreshOutcome::Expired,
        RefreshOutcome::Revoked,
        RefreshOutcome::InvalidClient,
        RefreshOutcome::InvalidToken,
        RefreshOutcome::Rejected,
        RefreshOutcome::Unavailable,
        RefreshOutcome::SessionsRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Rotated => "rotated",
            RefreshOutcome::Replayed => "replayed",
            RefreshOutcome::RolledForward => "rolled_forward",
            RefreshOutcome::Reused => "reused",
            RefreshOutcome::Expired => "expired",
            RefreshOutcome::Revoked => "revoked",
            RefreshOutcome::InvalidClient => "invalid_client",
            RefreshOutcome::InvalidToken => "invalid_token",
            RefreshOutcome::Rejected => "rejected",
            RefreshOutcome::Unavailable => "unavailable",
            RefreshOutcome::SessionsRevoked => "sessions_revoked",
        }
    }

    /// The outcome of a refused refresh.
    pub fn of_error(err: &Error) -> Self {
        match err {
            Error::TokenReused { .. } => RefreshOutcome::Reused,
            Error::TokenExpired => RefreshOutcome::Expired,
            Error::TokenRevoked => RefreshOutcome::Revoked,
            Error::InvalidClient | Error::ClientMismatch | Error::RateLimited { .. } => {
                RefreshOutcome::InvalidClient
            }
            Error::TokenInvalid => RefreshOutcome::InvalidToken,
            Error::Malformed { .. }
            | Error::InvalidScope(_)
            | Error::ClientExists(_)
            | Error::ClientNotFound(_)
            | Error::PublicClient(_) => RefreshOutcome::Rejected,
            Error::StoreUnavailable(_)
            | Error::StoreFull(_)
            | Error::NoJwtSigningKey
            | Error::Internal(_) => RefreshOutcome::Unavailable,
        }
    }

    pub(crate) fn of_rotation(rotation: Rotation) -> Self {
        match rotation {
            Rotation::Rotated => RefreshOutcome::Rotated,
            Rotation::Replayed => RefreshOutcome::Replayed,
            Rotation::RolledForward => RefreshOutcome::RolledForward,
        }
    }
}

impl fmt::Display for RefreshOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RefreshOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RefreshOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = RefreshOutcome::ALL.iter().map(|o| o.as_str()).collect();
                format!(
                    "unknown outcome {s:?}; expected one of {}",
                    known.join(", ")
                )
            })
    }
}

/// The `detail` of a refresh answered from an identical one in flight on the same instance.
pub const DETAIL_COALESCED: &str = "coalesced with an identical refresh";

/// Why a refresh turned out the way it did, in a few words (for the audit's `detail`; short,
/// since every event stores it).
pub(crate) fn detail_of_reuse(reuse: Reuse) -> &'static str {
    match reuse {
        Reuse::FamilyRevoked => "family revoked",
        Reuse::Refused => "refused, family kept (reject-only)",
        Reuse::StaleDuplicate => "late duplicate, family kept",
    }
}

/// The `detail` of a `SessionsRevoked` event.
pub(crate) fn detail_of_sessions_revoked(count: u64) -> String {
    match count {
        1 => "1 session of one subject revoked by an operator".to_owned(),
        n => format!("{n} sessions of one subject revoked by an operator"),
    }
}

/// One refresh request and what became of it, as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshEvent {
    pub at_ms: u64,
    /// As the caller sent it (validated for size); may name no registered client.
    pub client_id: String,
    /// Whether `client_id` named a registered client when it was looked up; `None` when the
    /// refresh was refused before the lookup (bad token, malformed request).
    pub client_registered: Option<bool>,
    /// The family and generation of the presented token, when it verified.
    pub family: Option<FamilyId>,
    pub generation: u64,
    pub outcome: RefreshOutcome,
    /// The `ErrorInfo` reason of a refused refresh; empty when it succeeded.
    pub reason: &'static str,
    /// A few words on why (e.g. "grace replay").
    pub detail: Cow<'static, str>,
}

/// Told about every refresh, on the request's own task, after its result is known. Must
/// not block: implementations count and queue.
pub trait RefreshObserver: Send + Sync + 'static {
    fn refreshed(&self, event: RefreshEvent);

    /// An operator revoked `count` sessions of one subject held by `event.client_id`
    /// (outcome `SessionsRevoked`): for the audit, not the refresh counts.
    fn sessions_revoked(&self, event: RefreshEvent, count: u64) {
        let _ = (event, count);
    }
}

/// An event as the audit log returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedEvent {
    /// Unique within the client's log, ordered like the events.
    pub event_id: String,
    pub at_ms: u64,
    pub client_id: String,
    pub family: String,
    pub generation: u64,
    pub outcome: String,
    pub reason: String,
    pub detail: String,
    pub trace_id: String,
}

/// The largest page `ListRefreshEvents` returns, and the page size when none is asked for.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The window `SummarizeRefreshEvents` counts when none is given.
pub const DEFAULT_SUMMARY_WINDOW: Duration = Duration::from_secs(3600);
/// Page tokens are event ids (`<ms>-<seq>`); anything longer is not one of ours.
const MAX_PAGE_TOKEN_LEN: usize = 48;

/// A validated `ListRefreshEvents` request: one client's events in `[since_ms, until_ms)`,
/// newest first, continuing before `before_event` when paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub client_id: String,
    /// Empty: every outcome.
    pub outcomes: Vec<RefreshOutcome>,
    pub since_ms: u64,
    pub until_ms: u64,
    pub page_size: u32,
    /// The last event id of the previous page (exclusive), from its page token.
    pub before_event: Option<String>,
}

impl EventQuery {
    /// Checks every field. `since_ms`/`until_ms` of `None` mean "as far back as kept" and
    /// "now".
    pub fn parse(
        client_id: &str,
        outcomes: &[String],
        since_ms: Option<u64>,
        until_ms: Option<u64>,
        page_size: u32,
        page_token: &str,
        now_ms: u64,
    ) -> Result<Self, Error> {
        validate::client_id("client_id", client_id)?;
        let outcomes = outcomes
            .iter()
            .map(|o| o.parse().map_err(|e| Error::malformed("outcomes", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let since_ms = since_ms.unwrap_or(0);
        // `until` is exclusive; "now" includes events of this very millisecond.
        let until_ms = until_ms.unwrap_or(now_ms + 1);
        if since_ms >= until_ms {
            return Err(Error::malformed("since", "must be before until"));
        }
        let page_size = page_size_of(page_size)?;
        let before_event = match page_token {
            "" => None,
            token if is_event_id(token) => Some(token.to_owned()),
            _ => {
                return Err(Error::malformed(
                    "page_token",
                    "not a page token from a previous response",
                ));
            }
        };
        Ok(Self {
            client_id: client_id.to_owned(),
            outcomes,
            since_ms,
            until_ms,
            page_size,
            before_event,
        })
    }
}

/// A list RPC's `page_size`: 0 means [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`].
pub(crate) fn page_size_of(requested: u32) -> Result<u32, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(Error::malformed(
            "page_size",
            format!("at most {MAX_PAGE_SIZE}"),
        )),
        n => Ok(n),
    }
}

/// `<ms>-<seq>`, a Redis stream id after the first possible one (`0-0` starts no page).
fn is_event_id(token: &str) -> bool {
    let number = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse::<u64>().ok())
            .flatten()
    };
    token.len() <= MAX_PAGE_TOKEN_LEN
        && token
            .split_once('-')
            .and_then(|(ms, seq)| Some((number(ms)?, number(seq)?)))
            .is_some_and(|id| id != (0, 0))
}

/// One page of events, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<AuditedEvent>,
    /// Where the next page starts; `None` when nothing older matches.
    pub next_page_token: Option<String>,
}

/// A validated `SummarizeRefreshEvents` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryQuery {
    pub client_id: String,
    pub since_ms: u64,
    pub until_ms: u64,
}

impl SummaryQuery {
    pub fn parse(
        client_id: &str,
        window: Option<Duration>,
        retention: Duration,
        now_ms: u64,
    ) -> Result<Self, Error> {
        validate::client_id("client_id", client_id)?;
        let window = window.unwrap_or(DEFAULT_SUMMARY_WINDOW);
        if window.is_zero() || window > retention {
            return Err(Error::malformed(
                "window",
                format!(
                    "must be positive and at most the audit retention ({}s)",
                    retention.as_secs()
                ),
            ));
        }
        let until_ms = now_ms + 1;
        Ok(Self {
            client_id: client_id.to_owned(),
            since_ms: until_ms.saturating_sub(window.as_millis() as u64),
            until_ms,
        })
    }
}

/// Outcome counts of one client over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventSummary {
    /// `(outcome, count)` for the outcomes that occurred.
    pub counts: Vec<(String, u64)>,
    pub first_event_ms: Option<u64>,
    pub last_event_ms: Option<u64>,
}

/// The audit log as its readers reach it: `token-store` implements it over Redis Streams, and
/// the server's audit RPCs call it, so that they depend on the domain, not on Redis.
pub trait AuditStore: Send + Sync + 'static {
    /// How long events are kept: the widest window a summary may ask for.
    fn retention(&self) -> Duration;

    /// One page of a client's events, newest first.
    fn list(
        &self,
        query: &EventQuery,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send;

    /// Counts of a client's events by outcome over the query's window.
    fn summarize(
        &self,
        query: &SummaryQuery,
    ) -> impl Future<Output = Result<EventSummary, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_names() {
        for outcome in RefreshOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<RefreshOutcome>(), Ok(outcome));
        }
        assert!("stolen".parse::<RefreshOutcome>().is_err());
    }

    #[test]
    fn queries_refuse_bad_fields() {
        let parse = |outcomes: &[&str], since, until, size, token: &str| {
            let outcomes: Vec<String> = outcomes.iter().map(|s| s.to_string()).collect();
            EventQuery::parse("web", &outcomes, since, until, size, token, 1_000)
        };
        let ok = parse(&["reused"], None, None, 0, "").unwrap();
        assert_eq!(ok.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!((ok.since_ms, ok.until_ms), (0, 1_001));
        assert!(parse(&["bogus"], None, None, 0, "").is_err());
        assert!(parse(&[], Some(5), Some(5), 0, "").is_err());
        assert!(parse(&[], None, None, MAX_PAGE_SIZE + 1, "").is_err());
        assert!(parse(&[], None, None, 0, "12-x").is_err());
        assert!(parse(&[], None, None, 0, "12-3").is_ok());
        assert!(parse(&[], None, None, 0, "0-0").is_err());
        assert!(parse(&[], None, None, 0, "1-99999999999999999999999").is_err());
        assert!(parse(&[], None, None, 0, "-1").is_err());
        assert!(EventQuery::parse("", &[], None, None, 0, "", 1).is_err());
    }

    #[test]
    fn summary_window_is_bounded_by_retention() {
        let day = Duration::from_secs(86_400);
        let q = SummaryQuery::parse("web", None, day, 10_000_000).unwrap();
        assert_eq!(q.until_ms - q.since_ms, 3_600_000);
        assert!(SummaryQuery::parse("web", Some(day * 2), day, 1).is_err());
        assert!(SummaryQuery::parse("web", Some(Duration::ZERO), day, 1).is_err());
    }
}
