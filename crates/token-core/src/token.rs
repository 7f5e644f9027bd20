//! The token format: `prefix . payload . mac`, each part URL-safe base64 without padding.
//!
//! The payload holds everything needed to re-derive the token: the pair of generation g is a
//! pure function of (key, family, g, issue time, subject), so a grace replay rebuilds
//! byte-identical tokens from the family state and nothing secret is ever stored. The subject
//! travels in the token (MAC-protected) rather than in Redis, which keeps a family within its
//! memory budget. The MAC covers the prefix too, so an access token never passes as a refresh
//! token.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use rand::RngCore as _;

use crate::error::Error;
use crate::jwt::JwtClaims;
use crate::keyring::{Keyring, is_valid_key_id};
use crate::validate::MAX_JWT_LEN;

pub const REFRESH_PREFIX: &str = "rt1";
pub const ACCESS_PREFIX: &str = "at1";

const FAMILY_ID_BYTES: usize = 16;
/// Fixed-width fields plus the key id's and the subject's length prefixes.
const REFRESH_FIXED: usize = FAMILY_ID_BYTES + 8 + 8 + 1 + 2;
const ACCESS_FIXED: usize = FAMILY_ID_BYTES + 8 + 8 + 8 + 8 + 1 + 2;

/// A token family's id: 128 random bits, shown as 22 URL-safe base64 characters (an alphabet
/// with no braces, so it sits safely inside a Redis hash tag).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FamilyId([u8; FAMILY_ID_BYTES]);

impl FamilyId {
    pub fn random() -> Self {
        let mut bytes = [0u8; FAMILY_ID_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FamilyId({self})")
    }
}

impl FromStr for FamilyId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| <[u8; FAMILY_ID_BYTES]>::try_from(b).ok())
            .ok_or_else(|| Error::malformed("family_id", "is not a family id"))?;
        Ok(Self(bytes))
    }
}

/// What a refresh token says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshClaims {
    pub family: FamilyId,
    pub generation: u64,
    pub issued_at_ms: u64,
    /// The key that signed it; the family remembers it so replays stay identical.
    pub key_id: String,
    /// The resource owner, as given to `IssueTokenPair`.
    pub subject: String,
}

/// What an access token says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub family: FamilyId,
    pub generation: u64,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    /// Which of the family's (sorted) scopes this token grants; narrowing needs no state.
    pub scope_mask: u64,
    pub key_id: String,
    pub subject: String,
}

/// A verified token of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claims {
    Refresh(RefreshClaims),
    Access(AccessClaims),
    /// An RFC 9068 JWT access token (a `jwt` client's).
    Jwt(JwtClaims),
}

impl Claims {
    pub fn family(&self) -> FamilyId {
        match self {
            Claims::Refresh(c) => c.family,
            Claims::Access(c) => c.family,
            Claims::Jwt(c) => c.family,
        }
    }

    pub fn subject(&self) -> &str {
        match self {
            Claims::Refresh(c) => &c.subject,
            Claims::Access(c) => &c.subject,
            Claims::Jwt(c) => &c.subject,
        }
    }
}

impl Keyring {
    /// Mints the refresh token for these claims with the key they name.
    pub fn mint_refresh(&self, claims: &RefreshClaims) -> Result<String, Error> {
        let mut payload =
            Vec::with_capacity(REFRESH_FIXED + claims.key_id.len() + claims.subject.len());
        payload.extend_from_slice(&claims.family.0);
        payload.extend_from_slice(&claims.generation.to_be_bytes());
        payload.extend_from_slice(&claims.issued_at_ms.to_be_bytes());
        push_key_id(&mut payload, &claims.key_id);
        push_subject(&mut payload, &claims.subject)?;
        self.seal(REFRESH_PREFIX, &payload, &claims.key_id)
    }

    /// Mints the access token for these claims with the key they name.
    pub fn mint_access(&self, claims: &AccessClaims) -> Result<String, Error> {
        let mut payload =
            Vec::with_capacity(ACCESS_FIXED + claims.key_id.len() + claims.subject.len());
        payload.extend_from_slice(&claims.family.0);
        payload.extend_from_slice(&claims.generation.to_be_bytes());
        payload.extend_from_slice(&claims.issued_at_ms.to_be_bytes());
        payload.extend_from_slice(&claims.expires_at_ms.to_be_bytes());
        payload.extend_from_slice(&claims.scope_mask.to_be_bytes());
        push_key_id(&mut payload, &claims.key_id);
        push_subject(&mut payload, &claims.subject)?;
        self.seal(ACCESS_PREFIX, &payload, &claims.key_id)
    }

    /// Parses and verifies a token of any kind: ours by their prefix, anything else as a JWT.
    /// Every failure is [`Error::TokenInvalid`]
    /// (oversize input is [`Error::Malformed`]); which check failed is not revealed.
    pub fn verify(&self, field: &'static str, token: &str) -> Result<Claims, Error> {
        if token.len() > MAX_JWT_LEN {
            return Err(Error::malformed(
                field,
                format!("is {} bytes, the limit is {MAX_JWT_LEN}", token.len()),
            ));
        }
        if !token.starts_with("rt1.") && !token.starts_with("at1.") {
            return self.verify_jwt(token).map(Claims::Jwt);
        }
        let mut parts = token.split('.');
        let (Some(prefix), Some(payload_b64), Some(mac_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::TokenInvalid);
        };
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| Error::TokenInvalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| Error::TokenInvalid)?;
        let mut reader = Reader(&payload);
        let claims = match prefix {
            REFRESH_PREFIX => Claims::Refresh(RefreshClaims {
                family: reader.family()?,
                generation: reader.u64()?,
                issued_at_ms: reader.u64()?,
                key_id: reader.key_id()?,
                subject: reader.subject()?,
            }),
            ACCESS_PREFIX => Claims::Access(AccessClaims {
                family: reader.family()?,
                generation: reader.u64()?,
                issued_at_ms: reader.u64()?,
                expires_at_ms: reader.u64()?,
                scope_mask: reader.u64()?,
                key_id: reader.key_id()?,
                subject: reader.subject()?,
            }),
            _ => return Err(Error::TokenInvalid),
        };
        if !reader.0.is_empty() {
            return Err(Error::TokenInvalid);
        }
        let key_id = match &claims {
            Claims::Refresh(c) => &c.key_id,
            Claims::Access(c) => &c.key_id,
            Claims::Jwt(_) => return Err(Error::TokenInvalid),
        };
        let mut hmac = self.mac(key_id).ok_or(Error::TokenInvalid)?;
        hmac.update(prefix.as_bytes());
        hmac.update(b".");
        hmac.update(payload_b64.as_bytes());
        // `verify_slice` compares in constant time.
        hmac.verify_slice(&mac).map_err(|_| Error::TokenInvalid)?;
        Ok(claims)
    }

    fn seal(&self, prefix: &str, payload: &[u8], key_id: &str) -> Result<String, Error> {
        let mut hmac = self
            .mac(key_id)
            .ok_or_else(|| Error::Internal(format!("key {key_id:?} is not in the keyring")))?;
        let payload_b64 = URL_SAFE_NO_PAD.encode(payload);
        hmac.update(prefix.as_bytes());
        hmac.update(b".");
        hmac.update(payload_b64.as_bytes());
        let mac_b64 = URL_SAFE_NO_PAD.encode(hmac.finalize().into_bytes());
        Ok(format!("{prefix}.{payload_b64}.{mac_b64}"))
    }
}

fn push_key_id(payload: &mut Vec<u8>, key_id: &str) {
    // Key ids are validated to at most 32 bytes when the keyring loads.
    payload.push(key_id.len() as u8);
    payload.extend_from_slice(key_id.as_bytes());
}

fn push_subject(payload: &mut Vec<u8>, subject: &str) -> Result<(), Error> {
    let len = u16::try_from(subject.len())
        .map_err(|_| Error::malformed("subject", "is too long for a token"))?;
    payload.extend_from_slice(&len.to_be_bytes());
    payload.extend_from_slice(subject.as_bytes());
    Ok(())
}

/// Reads fixed-width fields off the front of a payload.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        if self.0.len() < n {
            return Err(Error::TokenInvalid);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn family(&mut self) -> Result<FamilyId, Error> {
        let bytes = self.take(FAMILY_ID_BYTES)?;
        Ok(FamilyId(bytes.try_into().map_err(|_| Error::TokenInvalid)?))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let bytes = self.take(8)?;
        Ok(u64::from_be_bytes(
            bytes.try_into().map_err(|_| Error::TokenInvalid)?,
        ))
    }

    fn key_id(&mut self) -> Result<String, Error> {
        let len = self.take(1)?[0] as usize;
        let raw = self.take(len)?;
        let id = std::str::from_utf8(raw).map_err(|_| Error::TokenInvalid)?;
        if !is_valid_key_id(id) {
            return Err(Error::TokenInvalid);
        }
        Ok(id.to_owned())
    }

    fn subject(&mut self) -> Result<String, Error> {
        let len = self.take(2)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| Error::TokenInvalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Keyring {
        Keyring::parse(&Keyring::generate_line("k1")).unwrap()
    }

    fn refresh(ring: &Keyring) -> (RefreshClaims, String) {
        let claims = RefreshClaims {
            family: FamilyId::random(),
            generation: 7,
            issued_at_ms: 1_700_000_000_123,
            key_id: ring.signing_key_id().to_owned(),
            subject: "alice@example.com".to_owned(),
        };
        let token = ring.mint_refresh(&claims).unwrap();
        (claims, token)
    }

    #[test]
    fn minting_is_deterministic_and_verifies() {
        let ring = ring();
        let (claims, token) = refresh(&ring);
        assert_eq!(ring.mint_refresh(&claims).unwrap(), token);
        assert!(token.starts_with("rt1."));
        assert_eq!(ring.verify("t", &token).unwrap(), Claims::Refresh(claims));
    }

    #[test]
    fn access_tokens_round_trip() {
        let ring = ring();
        let claims = AccessClaims {
            family: FamilyId::random(),
            generation: 2,
            issued_at_ms: 10,
            expires_at_ms: 20,
            scope_mask: 0b101,
            key_id: "k1".into(),
            subject: "a subject with spaces, ünïcode".into(),
        };
        let token = ring.mint_access(&claims).unwrap();
        assert_eq!(ring.verify("t", &token).unwrap(), Claims::Access(claims));
    }

    #[test]
    fn another_key_or_a_swapped_prefix_fails() {
        let ring = ring();
        let (_, token) = refresh(&ring);
        let other = Keyring::parse(&Keyring::generate_line("k1")).unwrap();
        assert!(matches!(
            other.verify("t", &token),
            Err(Error::TokenInvalid)
        ));
        let swapped = token.replacen("rt1", "at1", 1);
        assert!(matches!(
            ring.verify("t", &swapped),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn oversize_is_malformed_not_invalid() {
        let long = "a".repeat(MAX_JWT_LEN + 1);
        assert!(matches!(
            ring().verify("t", &long),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn family_ids_round_trip_through_text() {
        let id = FamilyId::random();
        assert_eq!(id.to_string().len(), 22);
        assert_eq!(id.to_string().parse::<FamilyId>().unwrap(), id);
    }

    proptest! {
        /// Any single-character change anywhere in a token makes it invalid.
        #[test]
        fn every_mutation_is_rejected(pos in 0usize..200, replacement in "[A-Za-z0-9_.-]") {
            let ring = ring();
            let (_, token) = refresh(&ring);
            let pos = pos % token.len();
            let mut mutated = token.clone();
            mutated.replace_range(pos..pos + 1, &replacement);
            prop_assume!(mutated != token);
            prop_assert!(ring.verify("t", &mutated).is_err());
        }

        /// Arbitrary input never panics and never verifies.
        #[test]
        fn garbage_never_verifies(input in ".{0,300}") {
            prop_assert!(ring().verify("t", &input).is_err());
        }
    }
}
