//! `POST /oauth/revoke`: RFC 7009. Revoking either token of a pair revokes its whole family.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use token_client::pb;

use crate::client_auth::{CLIENT_ID, CLIENT_SECRET, ClientCredentials};
use crate::error::Error;
use crate::form::Form;
use crate::response::oauth_empty;
use crate::upstream::Upstream;

const KNOWN: &[&str] = &["token", "token_type_hint", CLIENT_ID, CLIENT_SECRET];

/// A revocation as the client asked for it.
#[derive(Debug)]
pub struct Revocation {
    pub client: ClientCredentials,
    pub token: String,
    /// `access_token`, `refresh_token`, or empty. Any other value is dropped: "an invalid
    /// token type hint value is ignored" (RFC 7009 section 2.1); the token's own prefix
    /// decides anyway.
    pub token_type_hint: &'static str,
}

impl Revocation {
    pub fn from_form(form: &Form, client: ClientCredentials) -> Result<Self, Error> {
        Ok(Self {
            client,
            token: form.require("token")?.to_owned(),
            token_type_hint: match form.get("token_type_hint") {
                Some("access_token") => "access_token",
                Some("refresh_token") => "refresh_token",
                _ => "",
            },
        })
    }
}

/// 200 with an empty body when the token was revoked, was already, or is unknown (RFC 7009
/// section 2.2: an invalid token is not an error).
pub async fn handle(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let form = super::form(&headers, body, KNOWN)?;
    let client = super::client_credentials(&headers, &form)?;
    let revocation = Revocation::from_form(&form, client)?;
    let method = revocation.client.method;
    let result = upstream
        .tokens
        .revoke_token(pb::RevokeTokenRequest {
            client_id: revocation.client.client_id,
            client_secret: revocation.client.client_secret,
            token: revocation.token,
            token_type_hint: revocation.token_type_hint.to_owned(),
        })
        .await;
    upstream
        .observed("RevokeToken", result)
        .map_err(|err| method.refusal(err))?;
    Ok(oauth_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::FORM_CONTENT_TYPE;

    #[test]
    fn unknown_hints_are_ignored() {
        for (hint, expected) in [
            ("access_token", "access_token"),
            ("refresh_token", "refresh_token"),
            ("id_token", ""),
        ] {
            let body = format!("token=t&token_type_hint={hint}");
            let form = Form::parse(Some(FORM_CONTENT_TYPE), body.as_bytes(), KNOWN).unwrap();
            let client = ClientCredentials {
                client_id: "web".to_owned(),
                client_secret: String::new(),
                method: crate::client_auth::Method::Body,
            };
            let revocation = Revocation::from_form(&form, client).unwrap();
            assert_eq!(revocation.token_type_hint, expected);
        }
    }
}
