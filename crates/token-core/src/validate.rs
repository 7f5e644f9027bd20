//! Limits and shapes of request fields. Every use case validates all of its input here before
//! any I/O, so a malformed request costs nothing and changes nothing.

use crate::error::Error;

pub const MAX_CLIENT_ID_LEN: usize = 128;
pub const MAX_SUBJECT_LEN: usize = 256;
pub const MAX_NAME_LEN: usize = 256;
pub const MAX_SECRET_LEN: usize = 256;
/// A refresh token (always the service's own, well under this).
pub const MAX_TOKEN_LEN: usize = 1024;
/// A token given to RevokeToken or IntrospectToken, which may be a JWT access token: the
/// largest one this service can mint (64 scopes of 128 characters, a 256-byte subject,
/// audience and issuer) is about 13 KiB.
pub const MAX_JWT_LEN: usize = 14 * 1024;
pub const MAX_SCOPE_LEN: usize = 128;
/// RFC 7009 `token_type_hint`: any value is accepted (unknown ones are ignored) up to this.
pub const MAX_HINT_LEN: usize = 128;
/// Bounded by the 64-bit scope mask an access token carries.
pub const MAX_SCOPES: usize = 64;

/// A required field: present, not longer than `max` bytes, no control characters.
pub fn required(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::malformed(field, "is required"));
    }
    optional(field, value, max)
}

/// An optional field: may be empty; otherwise as [`required`].
pub fn optional(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::malformed(
            field,
            format!("is {} bytes, the limit is {max}", value.len()),
        ));
    }
    if has_control(value) {
        return Err(Error::malformed(field, "contains control characters"));
    }
    Ok(())
}

/// Whether `value` has a control character (Unicode `Cc`). Tokens and secrets are ASCII: for
/// them a branch-free byte test (which the compiler vectorizes) does; only text beyond ASCII,
/// where C1 controls may hide, is decoded character by character (`make profile`).
fn has_control(value: &str) -> bool {
    let ascii_control = value
        .bytes()
        .fold(false, |found, b| found | (b < 0x20) | (b == 0x7f));
    ascii_control || (!value.is_ascii() && value.chars().any(char::is_control))
}

/// A client id: 1 to 128 of `A-Z a-z 0-9 . _ : -`. The narrow alphabet keeps ids safe inside
/// Redis key names and hash tags and readable in logs.
pub fn client_id(field: &'static str, value: &str) -> Result<(), Error> {
    required(field, value, MAX_CLIENT_ID_LEN)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(Error::malformed(
            field,
            "may contain only letters, digits and . _ : -",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_rejects_empty_oversize_and_control_characters() {
        assert!(required("f", "", 4).is_err());
        assert!(required("f", "12345", 4).is_err());
        assert!(required("f", "a\nb", 4).is_err());
        assert!(required("f", "abcd", 4).is_ok());
        assert!(optional("f", "", 4).is_ok());
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_beyond() {
        // (value, has a control character): the ASCII fast path and the Unicode one agree.
        let cases = [
            ("plain", false),
            ("tab\there", true),
            ("nul\0", true),
            ("unit\x1fsep", true),
            ("del\x7f", true),
            ("space ~", false),
            ("caf\u{e9}", false),
            ("nbsp\u{a0}", false),
            ("c1 \u{85} nel", true),
            ("c1 \u{9f} apc", true),
            ("\u{e9} and \n", true),
        ];
        for (value, control) in cases {
            assert_eq!(has_control(value), control, "{value:?}");
            assert_eq!(
                value.chars().any(char::is_control),
                control,
                "{value:?} per char"
            );
        }
    }

    #[test]
    fn client_ids_use_a_narrow_alphabet() {
        assert!(client_id("client_id", "web-app.prod_1:eu").is_ok());
        assert!(client_id("client_id", "has space").is_err());
        assert!(client_id("client_id", "{tag}").is_err());
        assert!(client_id("client_id", &"a".repeat(129)).is_err());
    }
}
