//! Request bodies as RFC 6749 section 3.2 wants them: `application/x-www-form-urlencoded`,
//! UTF-8, every parameter at most once. Pure functions over bytes, so the rules are tested
//! without a socket.

use std::collections::HashMap;

use crate::error::Error;

/// The media type every endpoint accepts (RFC 6749 section 3.2, RFC 7009 section 2.1,
/// RFC 7662 section 2.1).
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The parameters of one request that the endpoint knows, each once, none empty.
///
/// Unknown parameters are dropped unread (RFC 6749 section 3.2: "MUST ignore unrecognized
/// request parameters"), repeated or not. A parameter sent with an empty value counts as
/// omitted (section 3.1), so `scope=` is no scope and `a=&a=x` is one `a`.
#[derive(Debug, Default)]
pub struct Form {
    values: HashMap<&'static str, String>,
}

impl Form {
    /// Parses `body` sent with `content_type`, keeping the parameters named in `known`.
    ///
    /// Fails with `invalid_request` when the media type is not form encoding, the body is not
    /// UTF-8 once decoded, or a known parameter appears twice. Error descriptions name the
    /// parameter, never its value.
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
        for (name, value) in form_urlencoded::parse(body) {
            // The decoder replaces bytes that are not UTF-8 with U+FFFD rather than failing.
            if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err(Error::InvalidRequest(
                    "the request body is not UTF-8".into(),
                ));
            }
            let Some(&name) = known.iter().find(|k| **k == name) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if values.insert(name, value.into_owned()).is_some() {
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

    #[test]
    fn decodes_percent_and_plus_and_ignores_unknown_parameters() {
        let form = parse("grant_type=refresh_token&scope=read+write%3Aall&x=1&x=2").unwrap();
        assert_eq!(form.get("grant_type"), Some("refresh_token"));
        assert_eq!(form.get("scope"), Some("read write:all"));
        assert_eq!(form.get("x"), None);
        assert!(form.require("refresh_token").is_err());
    }

    #[test]
    fn a_repeated_known_parameter_is_invalid_request_and_names_only_the_parameter() {
        let err = parse("refresh_token=secret-a&refresh_token=secret-b").unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("refresh_token"), "{text}");
        assert!(!text.contains("secret-"), "{text}");
    }

    #[test]
    fn empty_values_count_as_omitted() {
        let form = parse("scope=&scope=read&refresh_token=").unwrap();
        assert_eq!(form.get("scope"), Some("read"));
        assert_eq!(form.get("refresh_token"), None);
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

    #[test]
    fn bytes_that_are_not_utf8_are_invalid_request() {
        let err = Form::parse(Some(FORM_CONTENT_TYPE), b"scope=%FF", KNOWN).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    }
}
