//! Signing keys. A keyring file lists keys by id: HMAC keys, which seal the service's own
//! tokens (exactly one signs, all verify), and Ed25519 keys, which sign the RFC 9068 JWT
//! access tokens of `jwt` clients (at most one signs, all verify, and each one's public half
//! is published in the JWKS). Both kinds rotate the same way: introduce a key verify-only,
//! promote it, retire the old one once nothing it signed can still be in use.
//!
//! File format, one key a line, `#` starts a comment:
//! ```text
//! <key-id> <secret: URL-safe base64, at least 32 bytes> <sign|verify>
//! <key-id> ed25519:<seed: URL-safe base64, exactly 32 bytes> <sign|verify>
//! ```
//! The `ed25519:` prefix cannot be mistaken for an HMAC secret (`:` is not base64), so files
//! written before Ed25519 keys existed load unchanged. Key ids are one namespace across both
//! kinds: the id in a token or a JWT's `kid` names exactly one key.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Key ids travel inside every token, so they are short and plain.
pub const MAX_KEY_ID_LEN: usize = 32;
const MIN_SECRET_BYTES: usize = 32;
/// What marks an Ed25519 key's secret (its 32-byte seed) in the file.
pub const ED25519_PREFIX: &str = "ed25519:";
const ED25519_SEED_BYTES: usize = 32;

/// A problem in a keyring file. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[error("keyring line {line}: {problem}")]
pub struct KeyringError {
    pub line: usize,
    pub problem: String,
}

/// The public half of an Ed25519 key, as the JWKS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_id: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// Whether it signs new JWTs now (else verify-only).
    pub signing: bool,
}

impl PublicKey {
    /// The public key as a JWK's `x`: base64url without padding (RFC 8037).
    pub fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.public_key)
    }
}

/// The loaded keys. `Debug` shows ids only.
#[derive(Clone)]
pub struct Keyring {
    /// Keyed HMAC states by key id; cloned per use so the key schedule is computed once.
    macs: HashMap<String, HmacSha256>,
    /// The id of the one HMAC key that signs new tokens.
    signing: String,
    /// Ed25519 key pairs by id; shared, since a key pair is not `Clone` and never changes.
    ed25519: HashMap<String, Arc<Ed25519KeyPair>>,
    /// The id of the Ed25519 key that signs new JWTs; `None`: no `jwt` client can be served.
    jwt_signing: Option<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.macs.keys().collect();
        ids.sort();
        let mut ed_ids: Vec<&String> = self.ed25519.keys().collect();
        ed_ids.sort();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("signing", &self.signing)
            .field("ed25519_key_ids", &ed_ids)
            .field("jwt_signing", &self.jwt_signing)
            .finish()
    }
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut macs = HashMap::new();
        let mut signing = None;
        let mut ed25519 = HashMap::new();
        let mut jwt_signing = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |problem: &str| KeyringError {
                line,
                problem: problem.to_owned(),
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [id, secret, role] = fields[..] else {
                return Err(err("expected `<key-id> <secret> <sign|verify>`"));
            };
            if !is_valid_key_id(id) {
                return Err(err("key id must be 1 to 32 letters, digits, '-' or '_'"));
            }
            if macs.contains_key(id) || ed25519.contains_key(id) {
                return Err(err("duplicate key id"));
            }
            let signs = match role {
                "sign" => true,
                "verify" => false,
                _ => return Err(err("role must be `sign` or `verify`")),
            };
            if let Some(seed) = secret.strip_prefix(ED25519_PREFIX) {
                let seed = URL_SAFE_NO_PAD
                    .decode(seed.trim_end_matches('='))
                    .map_err(|_| err("ed25519 seed is not URL-safe base64"))?;
                if seed.len() != ED25519_SEED_BYTES {
                    return Err(err("ed25519 seed must be exactly 32 bytes"));
                }
                let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                    .map_err(|_| err("unusable ed25519 seed"))?;
                ed25519.insert(id.to_owned(), Arc::new(pair));
                if signs {
                    if jwt_signing.is_some() {
                        return Err(err("more than one ed25519 signing key"));
                    }
                    jwt_signing = Some(id.to_owned());
                }
                continue;
            }
            if secret.contains(':') {
                return Err(err(
                    "unknown key type (the only typed secret is `ed25519:`)",
                ));
            }
            let secret = URL_SAFE_NO_PAD
                .decode(secret.trim_end_matches('='))
                .map_err(|_| err("secret is not URL-safe base64"))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(err("secret must be at least 32 bytes"));
            }
            let mac = HmacSha256::new_from_slice(&secret).map_err(|_| err("unusable secret"))?;
            macs.insert(id.to_owned(), mac);
            if signs {
                if signing.is_some() {
                    return Err(err("more than one signing key"));
                }
                signing = Some(id.to_owned());
            }
        }
        let signing = signing.ok_or(KeyringError {
            line: 0,
            problem: "no HMAC signing key (mark exactly one HMAC key `sign`; Ed25519 keys sign only JWTs)".to_owned(),
        })?;
        Ok(Self {
            macs,
            signing,
            ed25519,
            jwt_signing,
        })
    }

    /// A new keyring line with a random 256-bit HMAC secret, ready to be written to a file.
    pub fn generate_line(key_id: &str) -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        format!("{key_id} {} sign", URL_SAFE_NO_PAD.encode(secret))
    }

    /// A new keyring line with a random Ed25519 seed, signing JWTs, ready to be written to a
    /// file.
    pub fn generate_ed25519_line(key_id: &str) -> String {
        let mut seed = [0u8; ED25519_SEED_BYTES];
        rand::rng().fill_bytes(&mut seed);
        format!(
            "{key_id} {ED25519_PREFIX}{} sign",
            URL_SAFE_NO_PAD.encode(seed)
        )
    }

    /// The id of the HMAC key that signs new tokens.
    pub fn signing_key_id(&self) -> &str {
        &self.signing
    }

    /// The id of the Ed25519 key that signs new JWT access tokens, if there is one.
    pub fn jwt_signing_key_id(&self) -> Option<&str> {
        self.jwt_signing.as_deref()
    }

    /// Every HMAC key id, signing and verify-only, sorted.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.macs.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// The public half of every Ed25519 key, signing and verify-only: the signing key
    /// first, then by id. Private keys never leave the keyring.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self
            .ed25519
            .iter()
            .map(|(id, pair)| PublicKey {
                key_id: id.clone(),
                public_key: pair.public_key().as_ref().to_vec(),
                signing: self.jwt_signing.as_deref() == Some(id.as_str()),
            })
            .collect();
        keys.sort_by(|a, b| b.signing.cmp(&a.signing).then(a.key_id.cmp(&b.key_id)));
        keys
    }

    pub(crate) fn mac(&self, key_id: &str) -> Option<HmacSha256> {
        self.macs.get(key_id).cloned()
    }

    pub(crate) fn ed25519(&self, key_id: &str) -> Option<&Ed25519KeyPair> {
        self.ed25519.get(key_id).map(Arc::as_ref)
    }
}

pub(crate) fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_lines_parse_and_sign() {
        let text = format!(
            "# comment\n{}\n{}\n",
            Keyring::generate_line("k1"),
            Keyring::generate_line("k2").replace(" sign", " verify")
        );
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.signing_key_id(), "k1");
        assert!(ring.mac("k2").is_some());
    }

    #[test]
    fn rejects_bad_files_without_echoing_secrets() {
        let line = Keyring::generate_line("k1");
        let secret = line.split(' ').nth(1).unwrap().to_owned();
        for bad in [
            String::new(),
            line.replace(" sign", " verify"),
            format!("{line}\n{line}"),
            format!("{line}\n{}", Keyring::generate_line("k2")),
            line.replace(" sign", " owner"),
            "k1 c2hvcnQ sign".to_owned(),
            "bad id! AAAA sign".to_owned(),
        ] {
            let err = Keyring::parse(&bad).unwrap_err().to_string();
            assert!(!err.contains(&secret), "error leaks the secret: {err}");
        }
    }

    #[test]
    fn ed25519_keys_load_beside_hmac_keys_with_their_own_roles() {
        let text = format!(
            "{}\n{}\n{}\n",
            Keyring::generate_line("h1"),
            Keyring::generate_ed25519_line("e1").replace(" sign", " verify"),
            Keyring::generate_ed25519_line("e2"),
        );
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.signing_key_id(), "h1");
        assert_eq!(ring.jwt_signing_key_id(), Some("e2"));
        assert_eq!(ring.key_ids(), ["h1"]);
        let public: Vec<(String, bool, usize)> = ring
            .public_keys()
            .into_iter()
            .map(|k| (k.key_id, k.signing, k.public_key.len()))
            .collect();
        assert_eq!(
            public,
            [("e2".to_owned(), true, 32), ("e1".to_owned(), false, 32)]
        );
        assert!(ring.ed25519("e1").is_some() && ring.mac("e1").is_none());
    }

    #[test]
    fn hmac_only_files_load_unchanged_with_no_jwt_key() {
        let ring = Keyring::parse(&Keyring::generate_line("k1")).unwrap();
        assert_eq!(ring.jwt_signing_key_id(), None);
        assert!(ring.public_keys().is_empty());
    }

    #[test]
    fn bad_ed25519_lines_name_their_problem_without_the_seed() {
        let hmac = Keyring::generate_line("h1");
        let ed = Keyring::generate_ed25519_line("e1");
        let seed = ed.split(' ').nth(1).unwrap().to_owned();
        // (the keyring text, a phrase its error must contain)
        let cases = [
            (
                format!("{hmac}\n{ed}\n{}", ed.replace("e1 ", "e2 ")),
                "more than one ed25519",
            ),
            (
                format!("{hmac}\n{ed}\n{}", ed.replace("e1 ", "h1 ")),
                "duplicate key id",
            ),
            (
                format!("{hmac}\ne1 ed25519:c2hvcnQ sign"),
                "exactly 32 bytes",
            ),
            (
                format!("{hmac}\ne1 ed25519:!!!! sign"),
                "not URL-safe base64",
            ),
            (format!("{hmac}\ne1 rsa:AAAA sign"), "unknown key type"),
            (
                format!("{hmac}\n{}", ed.replace(" sign", " owner")),
                "role must be",
            ),
            (ed.clone(), "no HMAC signing key"),
        ];
        for (text, expected) in cases {
            let err = Keyring::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
            assert!(!err.contains(&seed[8..]), "error leaks the seed: {err}");
        }
    }

    #[test]
    fn debug_shows_ids_only() {
        let line = Keyring::generate_line("k1");
        let secret = line.split(' ').nth(1).unwrap().to_owned();
        let ed = Keyring::generate_ed25519_line("e1");
        let seed = ed.split(' ').nth(1).unwrap()[ED25519_PREFIX.len()..].to_owned();
        let shown = format!("{:?}", Keyring::parse(&format!("{line}\n{ed}")).unwrap());
        assert!(shown.contains("k1") && shown.contains("e1"));
        assert!(!shown.contains(&secret) && !shown.contains(&seed));
    }
}
