//! Key names. A subject's families live in one hash, `<prefix>s:{<subject hash>}` (field: the
//! family id; value: its record, see `family_record`), with the subject's revocation markers;
//! a client in one hash, `<prefix>c:{<client id>}`; its refresh audit in one stream,
//! `<prefix>a:{<client id>}`. The braces are Redis Cluster hash tags: every key a script
//! touches sits in one slot, and all of a subject's sessions sit in one, so revoking them is
//! one atomic write. Client ids have no braces in their alphabet.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Builds key names under a prefix, so that tests and tenants can share one Redis.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// Prepended to every key; short, because it is stored once per subject.
    prefix: String,
}

impl KeyLayout {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The hash of `subject`'s families. The subject is named by 128 bits of its SHA-256
    /// (22 characters, fixed length, no braces), not stored: subjects may be long, contain
    /// braces, or be personal data.
    pub fn subject(&self, subject: &str) -> String {
        let digest = Sha256::digest(subject.as_bytes());
        format!(
            "{}s:{{{}}}",
            self.prefix,
            URL_SAFE_NO_PAD.encode(&digest[..16])
        )
    }

    pub fn client(&self, client_id: &str) -> String {
        format!("{}c:{{{client_id}}}", self.prefix)
    }

    /// The client's refresh audit stream: the client's hash tag, so that appending can check
    /// the client record in the same slot.
    pub fn audit(&self, client_id: &str) -> String {
        format!("{}a:{{{client_id}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_one_hash_tag() {
        let layout = KeyLayout::new("t:");
        let alice = layout.subject("alice@example.com");
        assert_eq!(alice, layout.subject("alice@example.com"));
        assert_ne!(alice, layout.subject("bob@example.com"));
        assert!(alice.starts_with("t:s:{") && alice.ends_with('}'));
        // Fixed length, whatever the subject holds.
        let odd = layout.subject(&format!("{{}} {}", "x".repeat(256)));
        assert_eq!((alice.len(), odd.len()), (28, 28));
        assert_eq!(odd.matches(['{', '}']).count(), 2);
        assert_eq!(layout.client("web"), "t:c:{web}");
        assert_eq!(layout.audit("web"), "t:a:{web}");
    }
}
