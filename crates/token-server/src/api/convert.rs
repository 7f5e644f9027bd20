//! Domain types to wire types, in one module.

use std::time::Duration;

use token_core::audit::{EventPage, EventSummary, RefreshOutcome, SummaryQuery};
use token_core::jwt::JWT_ALG;
use token_core::keyring::PublicKey;
use token_core::service::{IssuedSecret, TOKEN_TYPE_ACCESS};
use token_core::sessions::SessionPage;
use token_core::store::Rotation;
use token_core::{Client, Error, Introspection, TokenPair};
use token_proto::v1 as pb;

pub fn token_pair(pair: TokenPair) -> pb::TokenPair {
    pb::TokenPair {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        token_type: TOKEN_TYPE_ACCESS.to_owned(),
        expires_in: pair.expires_in_s,
        refresh_expires_in: pair.refresh_expires_in_s,
        scopes: pair.scopes.to_vec(),
        family_id: pair.family.to_string(),
        replayed: pair.rotation == Rotation::Replayed,
    }
}

pub fn introspection(found: Option<Introspection>) -> pb::IntrospectTokenResponse {
    let Some(token) = found else {
        return pb::IntrospectTokenResponse::default();
    };
    pb::IntrospectTokenResponse {
        active: true,
        client_id: token.client_id,
        subject: token.subject,
        scopes: token.scopes.to_vec(),
        exp: token.exp_s,
        iat: token.iat_s,
        token_type: token.token_type.to_owned(),
        family_id: token.family.to_string(),
    }
}

pub fn client(client: Client) -> pb::Client {
    pb::Client {
        client_id: client.client_id,
        name: client.name,
        client_type: client.client_type.as_str().to_owned(),
        allowed_scopes: client.allowed_scopes.to_vec(),
        reuse_policy: client.reuse_policy.as_str().to_owned(),
        created_at: (client.created_at_ms / 1000) as i64,
        access_token_format: client.access_token_format.as_str().to_owned(),
        access_token_audience: client.access_token_audience,
    }
}

/// The public keys as RFC 7517 JWKs (RFC 8037's `OKP` / `Ed25519`), and the issuer.
pub fn jwks(issuer: &str, keys: &[PublicKey]) -> pb::GetJwksResponse {
    pb::GetJwksResponse {
        issuer: issuer.to_owned(),
        keys: keys
            .iter()
            .map(|key| pb::Jwk {
                kid: key.key_id.clone(),
                kty: "OKP".to_owned(),
                crv: "Ed25519".to_owned(),
                x: key.x(),
                alg: JWT_ALG.to_owned(),
                r#use: "sig".to_owned(),
            })
            .collect(),
    }
}

pub fn created_client(issued: IssuedSecret) -> pb::CreateClientResponse {
    pb::CreateClientResponse {
        client_id: issued.client_id,
        client_secret: issued.client_secret,
    }
}

pub fn rotated_secret(issued: IssuedSecret) -> pb::RotateClientSecretResponse {
    pb::RotateClientSecretResponse {
        client_id: issued.client_id,
        client_secret: issued.client_secret,
    }
}

/// Milliseconds since the Unix epoch of an optional timestamp field; before 1970 or with
/// out-of-range nanoseconds is malformed.
pub fn optional_time_ms(
    field: &'static str,
    time: Option<&prost_types::Timestamp>,
) -> Result<Option<u64>, Error> {
    let Some(time) = time else {
        return Ok(None);
    };
    let ms = u64::try_from(time.seconds)
        .ok()
        .filter(|_| (0..1_000_000_000).contains(&time.nanos))
        .and_then(|s| s.checked_mul(1000))
        .and_then(|ms| ms.checked_add((time.nanos / 1_000_000) as u64));
    match ms {
        Some(ms) => Ok(Some(ms)),
        None => Err(Error::Malformed {
            field,
            problem: "must be a valid time after 1970-01-01T00:00:00Z".into(),
        }),
    }
}

/// An optional duration field; negative or out-of-range nanoseconds is malformed.
pub fn optional_duration(
    field: &'static str,
    duration: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, Error> {
    let Some(duration) = duration else {
        return Ok(None);
    };
    if duration.seconds < 0 || !(0..1_000_000_000).contains(&duration.nanos) {
        return Err(Error::Malformed {
            field,
            problem: "must be a positive duration".into(),
        });
    }
    Ok(Some(Duration::new(
        duration.seconds as u64,
        duration.nanos as u32,
    )))
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub fn event_page(page: EventPage) -> pb::ListRefreshEventsResponse {
    pb::ListRefreshEventsResponse {
        events: page
            .events
            .into_iter()
            .map(|e| pb::RefreshEvent {
                event_id: e.event_id,
                time: Some(timestamp(e.at_ms)),
                client_id: e.client_id,
                family_id: e.family,
                generation: e.generation,
                outcome: e.outcome,
                reason: e.reason,
                detail: e.detail,
                trace_id: e.trace_id,
            })
            .collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }
}

pub fn session_page(page: SessionPage) -> pb::ListSubjectSessionsResponse {
    pb::ListSubjectSessionsResponse {
        sessions: page
            .sessions
            .into_iter()
            .map(|s| pb::SubjectSession {
                family_id: s.family.to_string(),
                client_id: s.client_id,
                scopes: s.scopes.to_vec(),
                issued_at: Some(timestamp(s.issued_at_ms)),
                last_refreshed_at: Some(timestamp(s.last_refreshed_at_ms)),
                generation: s.generation,
            })
            .collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }
}

pub fn event_summary(query: &SummaryQuery, summary: EventSummary) -> pb::RefreshEventSummary {
    // Every outcome is listed, so a reader can tell "none" from "not reported".
    let mut outcomes: std::collections::HashMap<String, u64> = RefreshOutcome::ALL
        .iter()
        .map(|o| (o.as_str().to_owned(), 0))
        .collect();
    for (outcome, count) in summary.counts {
        *outcomes.entry(outcome).or_default() += count;
    }
    pb::RefreshEventSummary {
        client_id: query.client_id.clone(),
        since: Some(timestamp(query.since_ms)),
        until: Some(timestamp(query.until_ms)),
        total: outcomes.values().sum(),
        outcomes,
        first_event: summary.first_event_ms.map(timestamp),
        last_event: summary.last_event_ms.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_the_millisecond_range_are_malformed_not_wrapped() {
        let at = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(
            optional_time_ms("since", Some(&at(1, 500_000_000))).unwrap(),
            Some(1_500)
        );
        assert_eq!(optional_time_ms("since", None).unwrap(), None);
        for bad in [
            at(-1, 0),
            at(0, -1),
            at(0, 1_000_000_000),
            at(i64::MAX, 999_000_000),
        ] {
            assert!(
                matches!(
                    optional_time_ms("since", Some(&bad)),
                    Err(Error::Malformed { field: "since", .. })
                ),
                "{bad:?}"
            );
        }
    }
}
