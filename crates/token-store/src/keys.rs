//! Key names. A family lives in one hash, `<prefix>f:{<family id>}`; a client in one hash,
//! `<prefix>c:{<client id>}`. The braces are Redis Cluster hash tags: every key a script
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
        format!("{}f:{{{family}}}", self.prefix)
    }

    pub fn client(&self, client_id: &str) -> String {
        format!("{}c:{{{client_id}}}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_one_hash_tag() {
        let layout = KeyLayout::new("t:");
        let family = FamilyId::random();
        assert_eq!(layout.family(family), format!("t:f:{{{family}}}"));
        assert_eq!(layout.client("web"), "t:c:{web}");
    }
}
