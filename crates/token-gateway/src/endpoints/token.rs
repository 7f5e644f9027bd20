//! `POST /oauth/token`: the refresh grant (RFC 6749 section 6), the only grant served here.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use token_client::pb;

use super::scope;
use crate::client_auth::{CLIENT_ID, CLIENT_SECRET, ClientCredentials};
use crate::error::Error;
use crate::form::Form;
use crate::response::oauth_json;
use crate::upstream::Upstream;

/// The parameters this endpoint reads; any other is ignored.
const KNOWN: &[&str] = &[
    "grant_type",
    "refresh_token",
    "scope",
    CLIENT_ID,
    CLIENT_SECRET,
];

/// A refresh as the client asked for it.
#[derive(Debug)]
pub struct Refresh {
    pub client: ClientCredentials,
    pub refresh_token: String,
    /// Empty: keep the scopes of the family. Otherwise a narrowing the service checks.
    pub scopes: Vec<String>,
}

impl Refresh {
    /// The grant's own parameters, for a request already known to be a refresh grant from
    /// `client`.
    pub fn from_form(form: &Form, client: ClientCredentials) -> Result<Self, Error> {
        let refresh_token = form.require("refresh_token")?.to_owned();
        let scopes = form.get("scope").map(scope::parse).transpose()?;
        Ok(Self {
            client,
            refresh_token,
            scopes: scopes.unwrap_or_default(),
        })
    }
}

/// `grant_type` must be there, and be `refresh_token`: the other grants start a family,
/// which is not this gateway's business.
pub fn check_grant_type(form: &Form) -> Result<(), Error> {
    match form.require("grant_type")? {
        "refresh_token" => Ok(()),
        _ => Err(Error::UnsupportedGrantType),
    }
}

/// Checks in the order a client can act on: the grant type, who is asking, then the grant's
/// own parameters.
pub async fn handle(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let form = super::form(&headers, body, KNOWN)?;
    check_grant_type(&form)?;
    let client = super::client_credentials(&headers, &form)?;
    let refresh = Refresh::from_form(&form, client)?;
    let method = refresh.client.method;
    let result = upstream
        .tokens
        .refresh_token_pair(pb::RefreshTokenPairRequest {
            client_id: refresh.client.client_id,
            client_secret: refresh.client.client_secret,
            refresh_token: refresh.refresh_token,
            scopes: refresh.scopes,
        })
        .await;
    let pair = upstream
        .observed("RefreshTokenPair", result)
        .map_err(|err| method.refusal(err))?;
    Ok(token_response(&pair))
}

/// RFC 6749 section 5.1. `scope` is always sent when there is one, narrowed or not, so the
/// client never has to remember what it asked for.
fn token_response(pair: &pb::TokenPair) -> Response {
    let mut body = serde_json::json!({
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
    });
    if !pair.scopes.is_empty() {
        body["scope"] = scope::join(&pair.scopes).into();
    }
    oauth_json(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::FORM_CONTENT_TYPE;

    fn refresh(body: &str) -> Result<Refresh, Error> {
        let form = Form::parse(Some(FORM_CONTENT_TYPE), body.as_bytes(), KNOWN)?;
        check_grant_type(&form)?;
        let client = ClientCredentials::from_request(&[], &form)?;
        Refresh::from_form(&form, client)
    }

    #[test]
    fn a_refresh_grant_with_narrowed_scope() {
        let got = refresh("grant_type=refresh_token&refresh_token=rt&scope=read&client_id=web");
        let got = got.unwrap();
        assert_eq!(got.refresh_token, "rt");
        assert_eq!(got.scopes, ["read"]);
        assert_eq!(got.client.client_id, "web");
    }

    #[test]
    fn other_grants_are_unsupported_before_anything_else_is_checked() {
        for grant in ["authorization_code", "password", "client_credentials", "x"] {
            let err = refresh(&format!("grant_type={grant}")).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedGrantType),
                "{grant}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_pieces() {
        let cases = [
            ("refresh_token=rt&client_id=web", "invalid_request"),
            (
                "grant_type=refresh_token&refresh_token=rt",
                "invalid_client",
            ),
            ("grant_type=refresh_token&client_id=web", "invalid_request"),
        ];
        for (body, expected) in cases {
            let err = refresh(body).unwrap_err();
            let code = match err {
                Error::InvalidRequest(_) => "invalid_request",
                Error::InvalidClient(_) => "invalid_client",
                _ => "other",
            };
            assert_eq!(code, expected, "{body}");
        }
    }
}
