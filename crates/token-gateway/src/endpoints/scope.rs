//! The `scope` parameter (RFC 6749 section 3.3): space-delimited scope tokens.

use crate::error::Error;

/// The scope tokens of `value`, in order. Runs of spaces are tolerated; a token with a
/// character outside `%x21 / %x23-5B / %x5D-7E` is `invalid_scope` ("malformed", section
/// 5.2). Whether the scopes may be granted is the token service's decision.
pub fn parse(value: &str) -> Result<Vec<String>, Error> {
    value
        .split(' ')
        .filter(|token| !token.is_empty())
        .map(|token| {
            let valid = token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if valid {
                Ok(token.to_owned())
            } else {
                Err(Error::InvalidScope(
                    "the scope is malformed: space-separated tokens of printable ASCII without \
                     quotes or backslashes"
                        .into(),
                ))
            }
        })
        .collect()
}

/// The `scope` value for a list of scopes.
pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_spaces_and_refuses_malformed_tokens() {
        assert_eq!(parse("read  write:all").unwrap(), ["read", "write:all"]);
        assert!(parse("").unwrap().is_empty());
        for bad in ["read\twrite", "a\"b", "a\\b", "é"] {
            assert!(matches!(parse(bad), Err(Error::InvalidScope(_))), "{bad:?}");
        }
    }
}
