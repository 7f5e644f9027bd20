//! Request bodies as RFC 6749 section 3.2 wants them: `application/x-www-form-urlencoded`,
//! UTF-8, every parameter at most once. Pure functions over bytes, so the rules are tested
//! (and fuzzed: `fuzz/fuzz_targets/gateway_form.rs`) without a socket.
//!
//! Strict where a lenient decoder would guess: a `%` not followed by two hex digits, or bytes
//! that do not decode to UTF-8, make the whole body malformed (`invalid_request`) instead of
//! passing through as literal text. The same decoding ([`decode`]) reads the client id and
//! secret inside HTTP Basic (RFC 6749 section 2.3.1), where its failures are `invalid_client`.

use std::collections::HashMap;
use std::fmt;

use crate::error::Error;

/// The media type every endpoint accepts (RFC 6749 section 3.2, RFC 7009 section 2.1,
/// RFC 7662 section 2.1).
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Known parameters with a grammar of their own, whose checks give a more specific error than
/// the control-character rule would: `scope` (RFC 6749 section 3.3; a malformed scope is
/// `invalid_scope`, section 5.2).
const OWN_GRAMMAR: &[&str] = &["scope"];

/// The parameters of one request that the endpoint knows, each once, none empty.
///
/// Unknown parameters are dropped unread (RFC 6749 section 3.2: "MUST ignore unrecognized
/// request parameters"), repeated or not; they must still be well-formed form encoding. A
/// parameter sent with an empty value counts as omitted (section 3.1), so `scope=` is no scope
/// and `a=&a=x` is one `a`.
#[derive(Debug, Default)]
pub struct Form {
    values: HashMap<&'static str, String>,
}

impl Form {
    /// Parses `body` sent with `content_type`, keeping the parameters named in `known`.
    ///
    /// Fails with `invalid_request` when the media type is not form encoding; when a name or
    /// value is not strict form encoding ([`decode`]); when a known parameter appears twice
    /// (names compare after decoding: `refresh%5Ftoken` is `refresh_token`); or when a known
    /// parameter contains a control character (except those in [`OWN_GRAMMAR`], which their
    /// own parsers refuse). Error descriptions name the parameter, never its value.
    pub fn parse(
        content_type: Option<&str>,
        body: &[u8],
        known: &[&'static str],
    ) -> Result<Self, Error> {
        if !content_type.is_some_and(is_form_media_type) {
            return Err(Error::InvalidRequest(
                format!("the request body must be {FORM_CONTENT_TYPE}").into(),
            ));
        }
        let mut values = HashMap::new();
        for pair in body.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name)
                .map_err(|err| Error::InvalidRequest(format!("a parameter name {err}").into()))?;
            let known_name = known.iter().find(|k| **k == name).copied();
            let value = decode(value).map_err(|err| {
                Error::InvalidRequest(match known_name {
                    Some(name) => format!("parameter {name} {err}").into(),
                    None => format!("a parameter value {err}").into(),
                })
            })?;
            let Some(name) = known_name else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if !OWN_GRAMMAR.contains(&name) && value.chars().any(char::is_control) {
                return Err(Error::InvalidRequest(
                    format!("parameter {name} contains control characters").into(),
                ));
            }
            if values.insert(name, value).is_some() {
                return Err(Error::InvalidRequest(
                    format!("parameter {name} is included more than once").into(),
                ));
            }
        }
        Ok(Self { values })
    }

    /// The value of a known parameter, if it was sent with one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A required parameter, or `invalid_request` naming it.
    pub fn require(&self, name: &'static str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| Error::InvalidRequest(format!("parameter {name} is missing").into()))
    }
}

/// Why [`decode`] refused its input. Displays as the end of a sentence about the value
/// ("parameter token is not form encoded: ..."), never with the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A `%` without two hex digits after it.
    BadPercent,
    /// Decodes to bytes that are not UTF-8.
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::BadPercent => "is not form encoded: a '%' not followed by two hex digits",
            DecodeError::NotUtf8 => "is not UTF-8",
        })
    }
}

/// Strict `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space,
/// `%XX` (either case) is the byte XX, every other byte stands for itself, and the result must
/// be UTF-8. A `%` not followed by two hex digits is an error, not a literal `%`.
pub fn decode(encoded: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let [hi, lo, tail @ ..] = rest else {
                    return Err(DecodeError::BadPercent);
                };
                let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) else {
                    return Err(DecodeError::BadPercent);
                };
                out.push(hi << 4 | lo);
                rest = tail;
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `application/x-www-form-urlencoded`, in any case, with or without parameters such as
/// `; charset=UTF-8`.
fn is_form_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(FORM_CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["grant_type", "refresh_token", "scope"];

    fn parse(body: &str) -> Result<Form, Error> {
        Form::parse(Some(FORM_CONTENT_TYPE), body.as_bytes(), KNOWN)
    }

    /// `Ok` with the known parameters as `name=value` in the order of [`KNOWN`], or the OAuth
    /// error code and its description.
    fn outcome(body: &[u8]) -> Result<String, (&'static str, String)> {
        match Form::parse(Some(FORM_CONTENT_TYPE), body, KNOWN) {
            Ok(form) => Ok(KNOWN
                .iter()
                .filter_map(|name| form.get(name).map(|value| format!("{name}={value}")))
                .collect::<Vec<_>>()
                .join("&")),
            Err(Error::InvalidRequest(text)) => Err(("invalid_request", text.into_owned())),
            Err(other) => Err(("other", other.to_string())),
        }
    }

    #[test]
    fn bodies_as_a_table() {
        // (case, body, Ok(known parameters as parsed) or Err(fragment of the description))
        let cases: &[(&str, &[u8], Result<&str, &str>)] = &[
            (
                "percent, plus, unknown parameters repeated",
                b"grant_type=refresh_token&scope=read+write%3Aall&x=1&x=2",
                Ok("grant_type=refresh_token&scope=read write:all"),
            ),
            (
                "upper- and lower-case hex digits",
                b"refresh_token=%2a%2A",
                Ok("refresh_token=**"),
            ),
            (
                "a percent-encoded name is the same name",
                b"refresh%5Ftoken=a",
                Ok("refresh_token=a"),
            ),
            (
                "empty values and empty pairs count as omitted",
                b"&&scope=&scope=read&refresh_token=&grant_type&",
                Ok("scope=read"),
            ),
            (
                "raw UTF-8 and an encoded U+FFFD are text",
                "scope=é&refresh_token=%EF%BF%BD".as_bytes(),
                Ok("refresh_token=\u{FFFD}&scope=é"),
            ),
            (
                "only the first '=' separates",
                b"refresh_token=a=b",
                Ok("refresh_token=a=b"),
            ),
            (
                "a repeated known parameter",
                b"refresh_token=secret-a&refresh_token=secret-b",
                Err("parameter refresh_token is included more than once"),
            ),
            (
                "repeated under two spellings",
                b"refresh_token=a&refresh%5ftoken=b",
                Err("parameter refresh_token is included more than once"),
            ),
            (
                "a '%' at the end",
                b"refresh_token=abc%",
                Err("parameter refresh_token is not form encoded"),
            ),
            (
                "a '%' with one hex digit",
                b"refresh_token=abc%4",
                Err("parameter refresh_token is not form encoded"),
            ),
            (
                "a '%' with no hex digit",
                b"grant_type=refresh%zztoken",
                Err("parameter grant_type is not form encoded"),
            ),
            (
                "a bad '%' in an unknown parameter",
                b"grant_type=refresh_token&x=100%",
                Err("a parameter value is not form encoded"),
            ),
            (
                "a bad '%' in a name",
                b"refresh_token%=a",
                Err("a parameter name is not form encoded"),
            ),
            (
                "an encoded byte that is not UTF-8",
                b"scope=%FF",
                Err("parameter scope is not UTF-8"),
            ),
            (
                "a raw byte that is not UTF-8",
                b"refresh_token=a\xFFb",
                Err("parameter refresh_token is not UTF-8"),
            ),
            (
                "an encoded NUL",
                b"refresh_token=rt%00x",
                Err("parameter refresh_token contains control characters"),
            ),
            (
                "a raw tab",
                b"grant_type=refresh_token\t",
                Err("parameter grant_type contains control characters"),
            ),
            (
                "an encoded line feed",
                b"refresh_token=a%0Ab",
                Err("parameter refresh_token contains control characters"),
            ),
            (
                "DEL",
                b"refresh_token=a%7F",
                Err("parameter refresh_token contains control characters"),
            ),
            (
                "a C1 control (U+0085)",
                b"refresh_token=a%C2%85",
                Err("parameter refresh_token contains control characters"),
            ),
            (
                "control characters in scope are left to its grammar (invalid_scope)",
                b"scope=read%09write",
                Ok("scope=read\twrite"),
            ),
            (
                "control characters in an unknown parameter are ignored with it",
                b"x=%00&grant_type=refresh_token",
                Ok("grant_type=refresh_token"),
            ),
        ];
        for (case, body, expected) in cases {
            match (outcome(body), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{case}"),
                (Err(("invalid_request", text)), Err(want)) => {
                    assert!(text.starts_with(want), "{case}: {text:?}");
                    assert!(!text.contains("secret-"), "{case}: echoes: {text:?}");
                }
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn decode_is_strict_and_exact() {
        let cases: &[(&[u8], Result<&str, DecodeError>)] = &[
            (b"", Ok("")),
            (b"a+b%20c", Ok("a b c")),
            (b"%2B%2b", Ok("++")),
            (b"%3A", Ok(":")),
            (b"%", Err(DecodeError::BadPercent)),
            (b"%%41", Err(DecodeError::BadPercent)),
            (b"%G0", Err(DecodeError::BadPercent)),
            (b"%0", Err(DecodeError::BadPercent)),
            (b"%C3", Err(DecodeError::NotUtf8)),
            (b"%C3%A9", Ok("é")),
        ];
        for (input, expected) in cases {
            let got = decode(input);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                expected.as_deref().map_err(|e| *e),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_repeated_known_parameter_names_only_the_parameter() {
        let err = parse("refresh_token=secret-a&refresh_token=secret-b").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("refresh_token"), "{text}");
        assert!(!text.contains("secret-"), "{text}");
        assert!(
            parse("grant_type=x")
                .unwrap()
                .require("refresh_token")
                .is_err()
        );
    }

    #[test]
    fn only_form_encoding_is_accepted() {
        for content_type in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        ] {
            assert!(Form::parse(Some(content_type), b"scope=a", KNOWN).is_ok());
        }
        for content_type in [None, Some("application/json"), Some("text/plain")] {
            let err = Form::parse(content_type, b"scope=a", KNOWN).unwrap_err();
            assert!(matches!(err, Error::InvalidRequest(_)), "{content_type:?}");
        }
    }
}
