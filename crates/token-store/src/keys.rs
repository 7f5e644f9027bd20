//! Key names. A family lives in one string, `<prefix>{<family id>}`; a client in one hash,
//! `<prefix>c:{<client id>}`; its refresh audit in one stream, `<prefix>a:{<client id>}`. The family key is kept to 28 bytes with the default prefix:
//! Redis stores it in a 32-byte allocation, where 29 bytes would take 48 (memory budget). The braces are Redis Cluster hash tags: every key a script
//! touches sits in one slot. Family and client ids have no braces in their alphabets.

use token_core::FamilyId;

/// Builds key names under a prefix, so that tests and tenants can share one Redis.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// Prepended to every key; short, because it is stored once per family.
    prefix: String,
}

impl KeyLayout {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn family(&self, family: FamilyId) -> String {
        format!("{}{{{family}}}", self.prefix)
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
        let family = FamilyId::random();
        assert_eq!(layout.family(family), format!("t:{{{family}}}"));
        assert_eq!(KeyLayout::new("tok:").family(family).len(), 28);
        assert_eq!(layout.client("web"), "t:c:{web}");
        assert_eq!(layout.audit("web"), "t:a:{web}");
    }
}
