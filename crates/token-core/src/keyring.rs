//! Signing keys. A keyring file lists keys by id; exactly one signs new tokens and all of them
//! verify, so a key can be introduced (verify-only), promoted, and retired without downtime.
//!
//! File format, one key a line, `#` starts a comment:
//! ```text
//! <key-id> <secret: URL-safe base64, at least 32 bytes> <sign|verify>
//! ```

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Key ids travel inside every token, so they are short and plain.
pub const MAX_KEY_ID_LEN: usize = 32;
const MIN_SECRET_BYTES: usize = 32;

/// A problem in a keyring file. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[error("keyring line {line}: {problem}")]
pub struct KeyringError {
    pub line: usize,
    pub problem: String,
}

/// The loaded keys. `Debug` shows ids only.
#[derive(Clone)]
pub struct Keyring {
    /// Keyed HMAC states by key id; cloned per use so the key schedule is computed once.
    macs: HashMap<String, HmacSha256>,
    /// The id of the one key that signs new tokens.
    signing: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.macs.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("signing", &self.signing)
            .finish()
    }
}

impl Keyring {
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut macs = HashMap::new();
        let mut signing = None;
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
            let secret = URL_SAFE_NO_PAD
                .decode(secret.trim_end_matches('='))
                .map_err(|_| err("secret is not URL-safe base64"))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(err("secret must be at least 32 bytes"));
            }
            let mac = HmacSha256::new_from_slice(&secret).map_err(|_| err("unusable secret"))?;
            if macs.insert(id.to_owned(), mac).is_some() {
                return Err(err("duplicate key id"));
            }
            match role {
                "sign" if signing.is_some() => return Err(err("more than one signing key")),
                "sign" => signing = Some(id.to_owned()),
                "verify" => {}
                _ => return Err(err("role must be `sign` or `verify`")),
            }
        }
        let signing = signing.ok_or(KeyringError {
            line: 0,
            problem: "no signing key (mark exactly one key `sign`)".to_owned(),
        })?;
        Ok(Self { macs, signing })
    }

    /// A new keyring line with a random 256-bit secret, ready to be written to a file.
    pub fn generate_line(key_id: &str) -> String {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        format!("{key_id} {} sign", URL_SAFE_NO_PAD.encode(secret))
    }

    /// The id of the key that signs new tokens.
    pub fn signing_key_id(&self) -> &str {
        &self.signing
    }

    /// Every key id, signing and verify-only, sorted.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.macs.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn mac(&self, key_id: &str) -> Option<HmacSha256> {
        self.macs.get(key_id).cloned()
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
    fn debug_shows_ids_only() {
        let line = Keyring::generate_line("k1");
        let secret = line.split(' ').nth(1).unwrap().to_owned();
        let shown = format!("{:?}", Keyring::parse(&line).unwrap());
        assert!(shown.contains("k1") && !shown.contains(&secret));
    }
}
