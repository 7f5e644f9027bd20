//! Scope sets. A set is validated once, kept sorted and deduplicated, so that the same grant
//! always has the same stored form and the same access-token scope mask.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::Error;
use crate::validate::{MAX_SCOPE_LEN, MAX_SCOPES};

/// A validated, sorted, duplicate-free set of scope tokens (RFC 6749 section 3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Validates scope tokens from a request: each 1 to 128 printable ASCII characters other
    /// than space, `"` and `\`; at most 64 of them.
    pub fn parse<S: AsRef<str>>(field: &'static str, items: &[S]) -> Result<Self, Error> {
        if items.len() > MAX_SCOPES {
            return Err(Error::malformed(
                field,
                format!("has {} entries, the limit is {MAX_SCOPES}", items.len()),
            ));
        }
        let mut set = BTreeSet::new();
        for item in items {
            let item = item.as_ref();
            if item.is_empty() || item.len() > MAX_SCOPE_LEN {
                return Err(Error::malformed(
                    field,
                    format!("each scope must be 1 to {MAX_SCOPE_LEN} characters"),
                ));
            }
            if !item
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(Error::malformed(
                    field,
                    "scopes are printable ASCII without spaces, quotes or backslashes",
                ));
            }
            set.insert(item.to_owned());
        }
        Ok(Self(set))
    }

    /// Reads the space-separated form written by [`Scopes::to_space_separated`].
    /// `None` when there are more than the limit: the access-token scope mask has one bit per
    /// scope, so a stored set beyond it is corrupt, never truncated.
    pub fn from_space_separated(stored: &str) -> Option<Self> {
        let scopes: BTreeSet<String> = stored
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (scopes.len() <= MAX_SCOPES).then_some(Self(scopes))
    }

    pub fn to_space_separated(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }

    /// `Ok` when every scope of `self` is in `allowed`; otherwise the offending scopes.
    pub fn check_within(&self, allowed: &Scopes) -> Result<(), Error> {
        let extra: Vec<&str> = self.0.difference(&allowed.0).map(String::as_str).collect();
        if extra.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidScope(extra.join(" ")))
        }
    }

    /// The bit mask of `subset` over this (sorted) set: bit i is set when the i-th scope is
    /// granted. Access tokens carry it so that narrowing needs no extra state.
    pub fn mask_of(&self, subset: &Scopes) -> u64 {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, s)| subset.0.contains(*s))
            .fold(0, |mask, (i, _)| mask | (1u64 << i))
    }

    /// The subset of this set selected by `mask`.
    pub fn select(&self, mask: u64) -> Scopes {
        Self(
            self.0
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1u64 << i) != 0)
                .map(|(_, s)| s.clone())
                .collect(),
        )
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_space_separated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sorts_and_deduplicates() {
        let s = Scopes::parse("scopes", &["write", "read", "write"]).unwrap();
        assert_eq!(s.to_space_separated(), "read write");
        assert_eq!(Scopes::from_space_separated("read write"), Some(s));
        let too_many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert_eq!(Scopes::from_space_separated(&too_many.join(" ")), None);
    }

    #[test]
    fn parse_rejects_bad_tokens() {
        assert!(Scopes::parse("scopes", &[""]).is_err());
        assert!(Scopes::parse("scopes", &["a b"]).is_err());
        assert!(Scopes::parse("scopes", &["quote\""]).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(Scopes::parse("scopes", &many).is_err());
    }

    #[test]
    fn mask_round_trips_and_subset_check_names_the_extra_scope() {
        let family = Scopes::parse("s", &["a", "b", "c"]).unwrap();
        let narrow = Scopes::parse("s", &["c", "a"]).unwrap();
        assert_eq!(family.mask_of(&narrow), 0b101);
        assert_eq!(family.select(0b101), narrow);
        let wide = Scopes::parse("s", &["a", "z"]).unwrap();
        match wide.check_within(&family) {
            Err(Error::InvalidScope(extra)) => assert_eq!(extra, "z"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_set_of_64_has_a_full_mask() {
        let all: Vec<String> = (0..64).map(|i| format!("s{i:02}")).collect();
        let s = Scopes::parse("s", &all).unwrap();
        assert_eq!(s.mask_of(&s), u64::MAX);
        assert_eq!(s.select(u64::MAX), s);
    }
}
