//! `GET /.well-known/jwks.json` (RFC 7517 JWK Set) and `GET /.well-known/oauth-authorization-server`
//! (RFC 8414 metadata), for resource servers that verify `jwt` clients' access tokens locally.
//!
//! Both come from one `GetJwks` call to the token service, which owns the keys and the issuer,
//! so the gateway can never publish a key or an issuer the service does not sign with. Only
//! public keys ever cross: the RPC has no field that could carry a private one.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use token_client::pb;

use crate::error::Error;
use crate::upstream::Upstream;
use crate::{INTROSPECT_PATH, JWKS_PATH, REVOKE_PATH, TOKEN_PATH};

/// How long a resource server may cache either document. A new Ed25519 key is published
/// verify-only before it signs (deploy/README.md, "Rotate the signing key"), so a cache this
/// old still holds every key in use once each step waits longer than this.
pub const MAX_AGE_SECONDS: u64 = 300;

/// The client authentication methods every endpoint accepts: HTTP Basic, the form body, and
/// public clients by id alone (not for introspection, which needs a confidential client).
const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];
const INTROSPECTION_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post"];

pub async fn jwks(State(upstream): State<Upstream>) -> Result<Response, Error> {
    let found = fetch(&upstream).await?;
    Ok(cacheable(&jwk_set(&found)))
}

pub async fn metadata(State(upstream): State<Upstream>) -> Result<Response, Error> {
    let found = fetch(&upstream).await?;
    Ok(cacheable(&authorization_server_metadata(&found.issuer)))
}

async fn fetch(upstream: &Upstream) -> Result<pb::GetJwksResponse, Error> {
    let result = upstream.tokens.get_jwks().await;
    Ok(upstream.observed("GetJwks", result)?)
}

/// RFC 7517 section 5: `{"keys": [...]}`, each an RFC 8037 `OKP` key.
fn jwk_set(found: &pb::GetJwksResponse) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = found
        .keys
        .iter()
        .map(|key| {
            serde_json::json!({
                "kty": key.kty,
                "crv": key.crv,
                "x": key.x,
                "kid": key.kid,
                "alg": key.alg,
                "use": key.r#use,
            })
        })
        .collect();
    serde_json::json!({ "keys": keys })
}

/// RFC 8414 section 2, for this gateway's endpoints under `issuer`.
fn authorization_server_metadata(issuer: &str) -> serde_json::Value {
    let base = issuer.trim_end_matches('/');
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "revocation_endpoint": format!("{base}{REVOKE_PATH}"),
        "introspection_endpoint": format!("{base}{INTROSPECT_PATH}"),
        "jwks_uri": format!("{base}{JWKS_PATH}"),
        "grant_types_supported": ["refresh_token"],
        // REQUIRED by RFC 8414 section 2; empty because there is no authorization endpoint
        // (tokens come from IssueTokenPair), so no response_type is supported.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
    })
}

/// Public documents: cacheable for [`MAX_AGE_SECONDS`], unlike every OAuth response.
fn cacheable(body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let cache = format!("public, max-age={MAX_AGE_SECONDS}");
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).expect("a valid header value"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_every_endpoint_under_the_issuer() {
        let doc = authorization_server_metadata("https://auth.example/");
        assert_eq!(doc["issuer"], "https://auth.example/");
        assert_eq!(doc["token_endpoint"], "https://auth.example/oauth/token");
        assert_eq!(
            doc["jwks_uri"],
            "https://auth.example/.well-known/jwks.json"
        );
        assert_eq!(
            doc["grant_types_supported"],
            serde_json::json!(["refresh_token"])
        );
        assert_eq!(doc["response_types_supported"], serde_json::json!([]));
    }

    #[test]
    fn jwk_set_carries_public_fields_only() {
        let found = pb::GetJwksResponse {
            issuer: "i".into(),
            keys: vec![pb::Jwk {
                kid: "e1".into(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: "AAAA".into(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            }],
        };
        let set = jwk_set(&found);
        let key = set["keys"][0].as_object().unwrap();
        let mut names: Vec<&str> = key.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
    }
}
