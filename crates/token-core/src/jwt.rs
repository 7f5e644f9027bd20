//! RFC 9068 JWT access tokens, for clients whose `access_token_format` is `jwt`.
//!
//! A compact JWS signed with Ed25519 (`alg` `EdDSA`, RFC 8037), assembled here from serde
//! structs rather than by a JWT library: the header and claims are serialised in a fixed field
//! order and Ed25519 signatures are deterministic (RFC 8032), so the token is a pure function
//! of (family, generation, rotation time, key, issuer, audience, subject, scopes), exactly as
//! the opaque tokens are, and a grace replay rebuilds it byte for byte on any instance.
//!
//! `jti` is `<family id>:<generation>`: unique per access token (a replay is the same token),
//! and it is how introspection and revocation find the family behind a JWT after checking the
//! signature, before touching the store.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::keyring::Keyring;
use crate::scope::Scopes;
use crate::token::FamilyId;

/// The JOSE header `typ` of an RFC 9068 access token.
pub const JWT_TYPE: &str = "at+jwt";
/// The only `alg` this service signs with: Ed25519 (RFC 8037).
pub const JWT_ALG: &str = "EdDSA";

/// `--issuer` unless configured: the HTTP gateway's address as `make run` serves it.
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";

/// Who issues the JWTs and, unless a client names its own, for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// `iss` (`--issuer`); also the RFC 8414 metadata's `issuer`.
    pub issuer: String,
    /// `aud` of a `jwt` client registered without `access_token_audience`
    /// (`--access-token-audience`; the issuer unless set).
    pub default_audience: String,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            default_audience: DEFAULT_ISSUER.to_owned(),
        }
    }
}

/// Everything a JWT access token says. Times are whole seconds since the Unix epoch (JWT
/// NumericDate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    pub family: FamilyId,
    pub generation: u64,
    /// The Ed25519 key that signs it (`kid`).
    pub key_id: String,
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    pub client_id: String,
    pub scopes: Scopes,
    pub issued_at_s: u64,
    pub expires_at_s: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// The claims in RFC 9068's order of mention; serde keeps this order, which is what makes the
/// encoding deterministic.
#[derive(Serialize, Deserialize)]
struct Payload {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    client_id: String,
    scope: String,
}

impl Keyring {
    /// Signs the JWT for these claims with the Ed25519 key they name (signing or
    /// verify-only: a replay re-signs with the key its family remembers).
    pub fn mint_jwt(&self, claims: &JwtClaims) -> Result<String, Error> {
        let pair = self.ed25519(&claims.key_id).ok_or_else(|| {
            Error::Internal(format!(
                "ed25519 key {:?} is not in the keyring",
                claims.key_id
            ))
        })?;
        let header = Header {
            alg: JWT_ALG.to_owned(),
            kid: claims.key_id.clone(),
            typ: JWT_TYPE.to_owned(),
        };
        let payload = Payload {
            iss: claims.issuer.clone(),
            sub: claims.subject.clone(),
            aud: claims.audience.clone(),
            exp: claims.expires_at_s,
            iat: claims.issued_at_s,
            jti: format!("{}:{}", claims.family, claims.generation),
            client_id: claims.client_id.clone(),
            scope: claims.scopes.to_space_separated(),
        };
        let mut signing_input = URL_SAFE_NO_PAD.encode(encode_json(&header)?);
        signing_input.push('.');
        signing_input.push_str(&URL_SAFE_NO_PAD.encode(encode_json(&payload)?));
        let signature = pair.sign(signing_input.as_bytes());
        signing_input.push('.');
        signing_input.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(signing_input)
    }

    /// Verifies a JWT access token of ours: `typ`, `alg`, a `kid` in the keyring, the
    /// signature, then the claims' shapes. Every failure is [`Error::TokenInvalid`]. Expiry
    /// and the family's state are the caller's to check.
    pub fn verify_jwt(&self, token: &str) -> Result<JwtClaims, Error> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::TokenInvalid);
        };
        let header: Header = decode_json(header_b64)?;
        if header.typ != JWT_TYPE || header.alg != JWT_ALG {
            return Err(Error::TokenInvalid);
        }
        let pair = self.ed25519(&header.kid).ok_or(Error::TokenInvalid)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| Error::TokenInvalid)?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref())
            .verify(&token.as_bytes()[..signed_len], &signature)
            .map_err(|_| Error::TokenInvalid)?;
        let payload: Payload = decode_json(payload_b64)?;
        let (family, generation) = payload.jti.split_once(':').ok_or(Error::TokenInvalid)?;
        let scopes: Vec<&str> = payload.scope.split(' ').filter(|s| !s.is_empty()).collect();
        Ok(JwtClaims {
            family: family.parse().map_err(|_| Error::TokenInvalid)?,
            generation: generation.parse().map_err(|_| Error::TokenInvalid)?,
            key_id: header.kid,
            issuer: payload.iss,
            audience: payload.aud,
            subject: payload.sub,
            client_id: payload.client_id,
            scopes: Scopes::parse("scope", &scopes).map_err(|_| Error::TokenInvalid)?,
            issued_at_s: payload.iat,
            expires_at_s: payload.exp,
        })
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Error::TokenInvalid)?;
    serde_json::from_slice(&bytes).map_err(|_| Error::TokenInvalid)
}

fn encode_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("cannot encode a JWT: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::parse(&format!(
            "{}\n{}\n",
            Keyring::generate_line("h1"),
            Keyring::generate_ed25519_line("e1")
        ))
        .unwrap()
    }

    fn claims() -> JwtClaims {
        JwtClaims {
            family: FamilyId::random(),
            generation: 3,
            key_id: "e1".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "https://api.example".into(),
            subject: "alice \"quoted\" ünïcode".into(),
            client_id: "web".into(),
            scopes: Scopes::parse("s", &["read", "write"]).unwrap(),
            issued_at_s: 1_700_000_000,
            expires_at_s: 1_700_000_900,
        }
    }

    #[test]
    fn minting_is_deterministic_and_verifies() {
        let ring = keyring();
        let claims = claims();
        let token = ring.mint_jwt(&claims).unwrap();
        assert_eq!(ring.mint_jwt(&claims).unwrap(), token);
        assert!(token.starts_with("eyJ"));
        assert_eq!(ring.verify_jwt(&token).unwrap(), claims);
        let header: Header = decode_json(token.split('.').next().unwrap()).unwrap();
        assert_eq!(
            (header.typ.as_str(), header.alg.as_str()),
            ("at+jwt", "EdDSA")
        );
    }

    #[test]
    fn another_key_or_any_changed_character_fails() {
        let ring = keyring();
        let token = ring.mint_jwt(&claims()).unwrap();
        let other = keyring();
        assert!(matches!(other.verify_jwt(&token), Err(Error::TokenInvalid)));
        for pos in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
            let mutated = String::from_utf8(bytes).unwrap();
            assert!(
                ring.verify_jwt(&mutated).is_err(),
                "accepted a change at {pos}"
            );
        }
    }
}
