//! Registered clients and their authentication. A confidential client's secret is generated
//! here, shown once, and stored only as its SHA-256 hash: the secret is 256 random bits, so a
//! fast hash is as strong as a slow one and keeps authentication off the CPU budget.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::Error;
use crate::scope::Scopes;

/// How a client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// Holds a server-generated secret.
    Confidential,
    /// Has no secret; authenticates by its id alone (RFC 6749 section 2.1).
    Public,
}

impl ClientType {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientType::Confidential => "confidential",
            ClientType::Public => "public",
        }
    }
}

impl FromStr for ClientType {
    type Err = Error;

    /// Empty means confidential, the safer default.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "" | "confidential" => Ok(ClientType::Confidential),
            "public" => Ok(ClientType::Public),
            _ => Err(Error::malformed(
                "client_type",
                "must be \"confidential\" or \"public\"",
            )),
        }
    }
}

/// What a reused retired refresh token does to its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReusePolicy {
    /// Revoke the whole family (RFC 9700 section 4.14.2). The default.
    RevokeFamily,
    /// Refuse the stale token and keep the family; still audited.
    RejectOnly,
}

impl ReusePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReusePolicy::RevokeFamily => "revoke-family",
            ReusePolicy::RejectOnly => "reject-only",
        }
    }
}

impl FromStr for ReusePolicy {
    type Err = Error;

    /// Empty means the default, `revoke-family`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "" | "revoke-family" => Ok(ReusePolicy::RevokeFamily),
            "reject-only" => Ok(ReusePolicy::RejectOnly),
            _ => Err(Error::malformed(
                "reuse_policy",
                "must be \"revoke-family\" or \"reject-only\"",
            )),
        }
    }
}

/// What a client's access tokens are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokenFormat {
    /// The service's own `at1.` token, checked by introspection. The default.
    Opaque,
    /// An RFC 9068 JWT signed with the keyring's Ed25519 key, verifiable locally.
    Jwt,
}

impl AccessTokenFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessTokenFormat::Opaque => "opaque",
            AccessTokenFormat::Jwt => "jwt",
        }
    }
}

impl FromStr for AccessTokenFormat {
    type Err = Error;

    /// Empty means the default, `opaque`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "" | "opaque" => Ok(AccessTokenFormat::Opaque),
            "jwt" => Ok(AccessTokenFormat::Jwt),
            _ => Err(Error::malformed(
                "access_token_format",
                "must be \"opaque\" or \"jwt\"",
            )),
        }
    }
}

/// The longest `access_token_audience` accepted.
pub const MAX_AUDIENCE_LEN: usize = 256;

/// Checks a JWT audience (`aud`, RFC 7519 StringOrURI): 1 to 256 printable ASCII characters
/// without spaces, quotes or backslashes (a URL or a plain name).
pub fn validate_audience(field: &'static str, audience: &str) -> Result<(), Error> {
    if audience.is_empty() || audience.len() > MAX_AUDIENCE_LEN {
        return Err(Error::malformed(
            field,
            format!("must be 1 to {MAX_AUDIENCE_LEN} characters"),
        ));
    }
    if !audience
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(Error::malformed(
            field,
            "must be printable ASCII without spaces, quotes or backslashes",
        ));
    }
    Ok(())
}

/// A registered client as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub client_type: ClientType,
    /// What `IssueTokenPair` may grant to this client.
    pub allowed_scopes: Scopes,
    pub reuse_policy: ReusePolicy,
    /// SHA-256 of the secret, URL-safe base64; empty for public clients.
    pub secret_hash: String,
    pub created_at_ms: u64,
    /// What its access tokens are; fixed at registration, so a family's tokens never change
    /// kind.
    pub access_token_format: AccessTokenFormat,
    /// The `aud` of its JWT access tokens; empty: the server's `--access-token-audience`.
    /// Always empty for opaque clients.
    pub access_token_audience: String,
}

impl fmt::Debug for Client {
    /// Leaves the secret hash out: it is not the secret, but it has no business in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("client_type", &self.client_type)
            .field("allowed_scopes", &self.allowed_scopes)
            .field("reuse_policy", &self.reuse_policy)
            .field("access_token_format", &self.access_token_format)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the presented secret. Public clients must present none; confidential clients
    /// must present theirs. Compared as hashes, in constant time.
    pub fn authenticate(&self, presented_secret: &str) -> Result<(), Error> {
        match self.client_type {
            ClientType::Public if presented_secret.is_empty() => Ok(()),
            ClientType::Public => Err(Error::InvalidClient),
            ClientType::Confidential if presented_secret.is_empty() => Err(Error::InvalidClient),
            ClientType::Confidential => {
                let presented = hash_secret(presented_secret);
                if bool::from(presented.as_bytes().ct_eq(self.secret_hash.as_bytes())) {
                    Ok(())
                } else {
                    Err(Error::InvalidClient)
                }
            }
        }
    }
}

/// A new client secret (256 random bits) and the hash to store for it.
pub fn generate_secret() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_secret(&secret);
    (secret, hash)
}

/// A new client id, for `CreateClient` without one.
pub fn generate_client_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("client-{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash_secret(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn audiences_are_plain_printable_strings() {
        for good in ["https://api.example.com", "orders", "urn:example:api"] {
            assert!(super::validate_audience("a", good).is_ok(), "{good}");
        }
        let long = "a".repeat(super::MAX_AUDIENCE_LEN + 1);
        for bad in [
            "",
            "two words",
            "quote\"",
            "back\\slash",
            "tab\t",
            long.as_str(),
        ] {
            assert!(super::validate_audience("a", bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    fn client(client_type: ClientType, secret_hash: String) -> Client {
        Client {
            client_id: "c".into(),
            name: "n".into(),
            client_type,
            allowed_scopes: Scopes::default(),
            reuse_policy: ReusePolicy::RevokeFamily,
            secret_hash,
            created_at_ms: 0,
            access_token_format: AccessTokenFormat::Opaque,
            access_token_audience: String::new(),
        }
    }

    #[test]
    fn confidential_clients_need_their_own_secret() {
        let (secret, hash) = generate_secret();
        let c = client(ClientType::Confidential, hash);
        assert!(c.authenticate(&secret).is_ok());
        assert!(c.authenticate("").is_err());
        assert!(c.authenticate(&generate_secret().0).is_err());
    }

    #[test]
    fn public_clients_present_no_secret() {
        let c = client(ClientType::Public, String::new());
        assert!(c.authenticate("").is_ok());
        assert!(c.authenticate("anything").is_err());
    }

    #[test]
    fn names_parse_with_safe_defaults() {
        assert_eq!("".parse::<ClientType>().unwrap(), ClientType::Confidential);
        assert_eq!(
            "".parse::<ReusePolicy>().unwrap(),
            ReusePolicy::RevokeFamily
        );
        assert_eq!(
            "reject-only".parse::<ReusePolicy>().unwrap(),
            ReusePolicy::RejectOnly
        );
        assert_eq!(
            "".parse::<AccessTokenFormat>().unwrap(),
            AccessTokenFormat::Opaque
        );
        assert_eq!(
            "jwt".parse::<AccessTokenFormat>().unwrap(),
            AccessTokenFormat::Jwt
        );
        assert!("JWT".parse::<AccessTokenFormat>().is_err());
        assert!("Public".parse::<ClientType>().is_err());
        assert!("revoke".parse::<ReusePolicy>().is_err());
    }
}
