//! `POST /oauth/introspect`: RFC 7662, for resource servers registered as confidential
//! clients. Any authenticated confidential client may introspect any token.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use token_client::pb;

use super::scope;
use crate::client_auth::{CLIENT_ID, CLIENT_SECRET};
use crate::error::Error;
use crate::response::oauth_json;
use crate::upstream::Upstream;

/// `token_type_hint` is known so that a repeated one is refused, and otherwise ignored
/// (RFC 7662 section 2.1 allows it: the token's own prefix says what it is).
const KNOWN: &[&str] = &["token", "token_type_hint", CLIENT_ID, CLIENT_SECRET];

/// The caller is authenticated by the token service before it looks at the token, so an
/// unauthenticated caller learns nothing (RFC 7662 section 4, token scanning).
pub async fn handle(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let form = super::form(&headers, body, KNOWN)?;
    let caller = super::client_credentials(&headers, &form)?;
    let token = form.require("token")?.to_owned();
    let method = caller.method;
    let result = upstream
        .tokens
        .introspect_token(pb::IntrospectTokenRequest {
            token,
            client_id: caller.client_id,
            client_secret: caller.client_secret,
        })
        .await;
    let found = upstream
        .observed("IntrospectToken", result)
        .map_err(|err| method.refusal(err))?;
    Ok(oauth_json(StatusCode::OK, &introspection(&found)))
}

/// RFC 7662 section 2.2: `{"active":false}` and nothing else for any inactive token;
/// otherwise the registered claims, plus `family_id` (the token family, which a revocation
/// or a detected reuse ends as a whole).
fn introspection(found: &pb::IntrospectTokenResponse) -> serde_json::Value {
    if !found.active {
        return serde_json::json!({ "active": false });
    }
    let mut body = serde_json::json!({
        "active": true,
        "client_id": found.client_id,
        "sub": found.subject,
        "exp": found.exp,
        "iat": found.iat,
        "token_type": found.token_type,
        "family_id": found.family_id,
    });
    if !found.scopes.is_empty() {
        body["scope"] = scope::join(&found.scopes).into();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_says_nothing_else() {
        let found = pb::IntrospectTokenResponse {
            client_id: "leak".to_owned(),
            ..Default::default()
        };
        assert_eq!(introspection(&found).to_string(), r#"{"active":false}"#);
    }

    #[test]
    fn active_uses_the_rfc_names() {
        let found = pb::IntrospectTokenResponse {
            active: true,
            client_id: "web".to_owned(),
            subject: "alice".to_owned(),
            scopes: vec!["read".to_owned(), "write".to_owned()],
            exp: 20,
            iat: 10,
            token_type: "Bearer".to_owned(),
            family_id: "f".to_owned(),
        };
        let body = introspection(&found);
        assert_eq!(body["sub"], "alice");
        assert_eq!(body["scope"], "read write");
        assert_eq!(body["family_id"], "f");
        assert_eq!(body["exp"], 20);
    }
}
