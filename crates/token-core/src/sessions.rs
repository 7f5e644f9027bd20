//! A subject's sessions: `ListSubjectSessions` and `RevokeSubjectSessions`. Each token family
//! is one session. The store keeps a subject's families together (see `Store::subject_families`
//! and `Store::revoke_subject`); this module validates the requests and pages the answer.

use crate::audit::page_size_of;
use crate::error::Error;
use crate::scope::Scopes;
use crate::token::FamilyId;
use crate::validate::{self, MAX_SUBJECT_LEN};

/// A validated `ListSubjectSessions` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionQuery {
    pub subject: String,
    /// Only this client's sessions; `None`: every client's.
    pub client_id: Option<String>,
    pub page_size: u32,
    /// Where the previous page stopped (exclusive).
    pub after: Option<SessionCursor>,
}

impl SessionQuery {
    /// Checks every field: page sizes as `ListRefreshEvents` takes them (0: 100, at most 1000).
    pub fn parse(
        subject: &str,
        client_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Self, Error> {
        validate::required("subject", subject, MAX_SUBJECT_LEN)?;
        let client_id = optional_client("client_id", client_id)?;
        let page_size = page_size_of(page_size)?;
        let after = match page_token {
            "" => None,
            token => Some(SessionCursor::parse(token).ok_or_else(|| {
                Error::malformed("page_token", "not a page token from a previous response")
            })?),
        };
        Ok(Self {
            subject: subject.to_owned(),
            client_id,
            page_size,
            after,
        })
    }
}

/// A validated `RevokeSubjectSessions` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRevokeRequest {
    pub subject: String,
    pub client_id: Option<String>,
}

impl SubjectRevokeRequest {
    pub fn parse(subject: &str, client_id: &str) -> Result<Self, Error> {
        validate::required("subject", subject, MAX_SUBJECT_LEN)?;
        Ok(Self {
            subject: subject.to_owned(),
            client_id: optional_client("client_id", client_id)?,
        })
    }
}

fn optional_client(field: &'static str, client_id: &str) -> Result<Option<String>, Error> {
    if client_id.is_empty() {
        return Ok(None);
    }
    validate::client_id(field, client_id)?;
    Ok(Some(client_id.to_owned()))
}

/// One active session (token family) of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub family: FamilyId,
    pub client_id: String,
    pub scopes: Scopes,
    pub issued_at_ms: u64,
    /// When its current generation was made (the issue time for generation 1).
    pub last_refreshed_at_ms: u64,
    pub generation: u64,
}

impl Session {
    /// Newest first; among sessions of the same millisecond, by family id, so the order is
    /// total and a page boundary never skips or repeats one.
    fn position(&self) -> SessionCursor {
        SessionCursor {
            issued_at_ms: self.issued_at_ms,
            family: self.family,
        }
    }
}

/// Where a page of sessions stopped: the last session's issue time and family id. The page
/// token is its text, `<issued at ms>.<family id>`; the order is by that pair, descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionCursor {
    issued_at_ms: u64,
    family: FamilyId,
}

impl SessionCursor {
    fn parse(token: &str) -> Option<Self> {
        let (ms, family) = token.split_once('.')?;
        if ms.is_empty() || ms.len() > 16 || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            issued_at_ms: ms.parse().ok()?,
            family: family.parse().ok()?,
        })
    }

    fn token(&self) -> String {
        format!("{}.{}", self.issued_at_ms, self.family)
    }
}

/// One page of sessions, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    /// Where the next page starts; `None` when this page holds the last session.
    pub next_page_token: Option<String>,
}

/// The page `query` asks for out of all the subject's active sessions (in any order).
pub fn page(mut sessions: Vec<Session>, query: &SessionQuery) -> SessionPage {
    sessions.sort_unstable_by_key(|s| std::cmp::Reverse(s.position()));
    let start = match query.after {
        Some(after) => sessions.partition_point(|s| s.position() >= after),
        None => 0,
    };
    let mut rest = sessions.split_off(start.min(sessions.len()));
    let more = rest.len() > query.page_size as usize;
    rest.truncate(query.page_size as usize);
    SessionPage {
        next_page_token: more
            .then(|| rest.last().map(|s| s.position().token()))
            .flatten(),
        sessions: rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::DEFAULT_PAGE_SIZE;

    fn session(issued_at_ms: u64, family: FamilyId) -> Session {
        Session {
            family,
            client_id: "web".into(),
            scopes: Scopes::default(),
            issued_at_ms,
            last_refreshed_at_ms: issued_at_ms,
            generation: 1,
        }
    }

    fn query(page_size: u32, page_token: &str) -> SessionQuery {
        SessionQuery::parse("alice", "", page_size, page_token).unwrap()
    }

    #[test]
    fn pages_walk_every_session_once_newest_first() {
        // Ties on the issue time are broken by family id.
        let sessions: Vec<Session> = (0..25)
            .map(|i| session(1_000 + i / 3, FamilyId::random()))
            .collect();
        let mut expected = sessions.clone();
        expected.sort_by_key(|s| std::cmp::Reverse((s.issued_at_ms, s.family)));
        for size in [1, 2, 7, 25, 100] {
            let (mut seen, mut token) = (Vec::new(), String::new());
            loop {
                let page = page(sessions.clone(), &query(size, &token));
                assert!(page.sessions.len() <= size as usize);
                seen.extend(page.sessions);
                match page.next_page_token {
                    Some(next) => token = next,
                    None => break,
                }
            }
            assert_eq!(seen, expected, "page size {size}");
        }
        assert_eq!(page(Vec::new(), &query(10, "")), SessionPage::default());
    }

    #[test]
    fn bad_requests_name_their_field() {
        let family = FamilyId::random();
        #[rustfmt::skip]
        let cases: [(&str, &str, u32, String, &str); 8] = [
            ("",      "",          0,    String::new(),                 "subject"),
            (&"s".repeat(MAX_SUBJECT_LEN + 1), "", 0, String::new(),    "subject"),
            ("alice", "web app",   0,    String::new(),                 "client_id"),
            ("alice", "",          1001, String::new(),                 "page_size"),
            ("alice", "",          0,    "garbage".into(),              "page_token"),
            ("alice", "",          0,    format!("x.{family}"),         "page_token"),
            ("alice", "",          0,    "12.not-a-family".into(),      "page_token"),
            ("alice", "",          0,    format!("99999999999999999.{family}"), "page_token"),
        ];
        for (subject, client, size, token, field) in cases {
            match SessionQuery::parse(subject, client, size, &token) {
                Err(Error::Malformed { field: f, .. }) => assert_eq!(f, field, "{token:?}"),
                other => panic!("{subject:?} {client:?} {size} {token:?}: {other:?}"),
            }
        }
        assert!(SubjectRevokeRequest::parse("", "").is_err());
        assert_eq!(
            SubjectRevokeRequest::parse("alice", "web")
                .unwrap()
                .client_id,
            Some("web".into())
        );
        let ok = query(0, &format!("12.{family}"));
        assert_eq!(ok.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(ok.after.unwrap().token(), format!("12.{family}"));
    }
}
