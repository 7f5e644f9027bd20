//! Who the caller says it is (RFC 6749 section 2.3.1): HTTP Basic with the form-encoded client
//! id and secret, or the body parameters `client_id` and `client_secret`; one method per
//! request (section 2.3). Only *presented* here: the token service checks the secret.
//!
//! The two methods fail differently, on purpose:
//!
//! - **Basic**: any failure of the header's credentials themselves is a failed client
//!   authentication through the `Authorization` header, so `401 invalid_client` with
//!   `WWW-Authenticate` (section 5.2): an unknown scheme, two `Authorization` headers, bytes
//!   that are not base64, no `:`, a `%` that is not an escape, text that is not UTF-8, an empty
//!   id, control characters or an oversize id or secret ([`BasicError`]); and, should the token
//!   service still find the id or secret malformed, that too ([`Method::refusal`]).
//! - **Body**: `client_id` and `client_secret` are request parameters like any other; a
//!   malformed one is `400 invalid_request` ([`Form::parse`]), a wrong one `401 invalid_client`
//!   from the token service.
//! - **Both** (an `Authorization` header, whatever it holds, and `client_secret` in the body) is
//!   more than one method: `400 invalid_request`, decided before the header is decoded. A
//!   `client_id` in the body next to Basic is only identification (some libraries add it): it
//!   must name the same client, or the request is `400 invalid_request`.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use token_client::pb::ErrorReason;

use crate::error::Error;
use crate::form::{self, DecodeError, Form};

/// Body parameters that carry client credentials.
pub const CLIENT_ID: &str = "client_id";
pub const CLIENT_SECRET: &str = "client_secret";

/// The longest client id and secret the token service accepts, in bytes once decoded
/// (`MAX_CLIENT_ID_LEN` and `MAX_SECRET_LEN` in `crates/token-core/src/validate.rs`). Longer
/// ones in a Basic header are refused here; should the service's limits ever shrink below
/// these, its `MALFORMED_REQUEST` is still `invalid_client` ([`Method::refusal`]).
pub const MAX_CLIENT_ID_BYTES: usize = 128;
pub const MAX_SECRET_BYTES: usize = 256;

/// Standard base64; padding optional, since some clients leave it out (but when present it
/// must be whole: [`parse_basic`]). Trailing bits must be zero, so a credential has one
/// spelling with padding and one without.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How the client presented its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// HTTP Basic (`client_secret_basic`).
    Basic,
    /// `client_id` (and `client_secret`) in the body (`client_secret_post`, or a public client).
    Body,
}

/// A client id and the secret presented with it. Never printed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// Never empty: a request without one is refused before it gets here.
    pub client_id: String,
    /// Empty for a public client, which authenticates by its id alone.
    pub client_secret: String,
    pub method: Method,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// The credentials of a request whose `Authorization` headers are `authorization` (every
    /// value, in order; usually none or one) and whose `form` was parsed with [`CLIENT_ID`]
    /// and [`CLIENT_SECRET`] among its known parameters. See the module documentation for
    /// what each failure is.
    pub fn from_request(authorization: &[&[u8]], form: &Form) -> Result<Self, Error> {
        let header = match authorization {
            [] => return Self::from_body(form),
            _ if form.get(CLIENT_SECRET).is_some() => {
                return Err(Error::InvalidRequest(
                    "the client used more than one authentication method: the Authorization \
                     header and client_secret in the body"
                        .into(),
                ));
            }
            [one] => *one,
            _ => return Err(BasicError::Repeated.into()),
        };
        let credentials = parse_basic(header)?;
        if form
            .get(CLIENT_ID)
            .is_some_and(|id| id != credentials.client_id)
        {
            return Err(Error::InvalidRequest(
                "client_id in the body names another client than HTTP Basic".into(),
            ));
        }
        Ok(credentials)
    }

    /// `client_id`, and `client_secret` unless the client is public; neither is
    /// `invalid_client` ("no client authentication included", section 5.2).
    fn from_body(form: &Form) -> Result<Self, Error> {
        match (form.get(CLIENT_ID), form.get(CLIENT_SECRET)) {
            (Some(id), secret) => Ok(Self {
                client_id: id.to_owned(),
                client_secret: secret.unwrap_or_default().to_owned(),
                method: Method::Body,
            }),
            (None, Some(_)) => Err(Error::InvalidRequest(
                "parameter client_secret is sent without client_id".into(),
            )),
            (None, None) => Err(Error::InvalidClient(
                "client authentication is required: HTTP Basic, or client_id and \
                 client_secret in the body"
                    .into(),
            )),
        }
    }
}

impl Method {
    /// The token service's refusal of a call made with credentials presented this way, as the
    /// gateway answers it. As [`Error::from`], except that a `MALFORMED_REQUEST` about
    /// `client_id` or `client_secret` is `invalid_client` when they came from the
    /// `Authorization` header: a failed authentication through the header is 401 (RFC 6749
    /// section 5.2), whatever the service's rule was (its client id alphabet, say).
    pub fn refusal(self, err: token_client::Error) -> Error {
        let about_credentials = self == Method::Basic
            && malformed_credentials(err.error_reason(), err.status().message());
        match Error::from(err) {
            Error::InvalidRequest(text) if about_credentials => Error::InvalidClient(text),
            other => other,
        }
    }
}

/// Whether a status with this `ErrorInfo.reason` and message is the token service's
/// `MALFORMED_REQUEST` about a client credential (its messages are `<field>: <problem>`).
fn malformed_credentials(reason: Option<ErrorReason>, message: &str) -> bool {
    reason == Some(ErrorReason::MalformedRequest)
        && [CLIENT_ID, CLIENT_SECRET].iter().any(|field| {
            message
                .strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
}

/// Why an `Authorization` header does not hold usable HTTP Basic credentials. Every one is
/// `invalid_client`; the descriptions are fixed texts that never include the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicError {
    /// More than one `Authorization` header.
    Repeated,
    /// A scheme other than Basic (Bearer, Digest, ...), or none.
    UnsupportedScheme,
    /// `Basic` with nothing after it.
    Missing,
    /// Not (standard, canonical) base64.
    NotBase64,
    /// No `:` between id and secret.
    NoColon,
    /// The id or secret is not form-urlencoded (`%` without two hex digits) or not UTF-8.
    NotFormEncoded { secret: bool, why: DecodeError },
    /// The id is empty.
    EmptyId,
    /// The id or secret holds a control character (NUL, CR, LF, tab, DEL, C1, ...).
    ControlCharacters { secret: bool },
    /// The id or secret is longer than the token service accepts.
    TooLong { secret: bool },
}

impl BasicError {
    /// Every description a [`BasicError`] can have, for tests and the fuzz targets.
    pub const ALL: &[BasicError] = &[
        BasicError::Repeated,
        BasicError::UnsupportedScheme,
        BasicError::Missing,
        BasicError::NotBase64,
        BasicError::NoColon,
        BasicError::NotFormEncoded {
            secret: false,
            why: DecodeError::BadPercent,
        },
        BasicError::NotFormEncoded {
            secret: false,
            why: DecodeError::NotUtf8,
        },
        BasicError::NotFormEncoded {
            secret: true,
            why: DecodeError::BadPercent,
        },
        BasicError::NotFormEncoded {
            secret: true,
            why: DecodeError::NotUtf8,
        },
        BasicError::EmptyId,
        BasicError::ControlCharacters { secret: false },
        BasicError::ControlCharacters { secret: true },
        BasicError::TooLong { secret: false },
        BasicError::TooLong { secret: true },
    ];
}

fn which(secret: bool) -> &'static str {
    if secret { "client secret" } else { "client id" }
}

impl fmt::Display for BasicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BasicError::Repeated => {
                f.write_str("the Authorization header is included more than once")
            }
            BasicError::UnsupportedScheme => {
                f.write_str("unsupported authentication scheme: use HTTP Basic")
            }
            BasicError::Missing => {
                f.write_str("malformed HTTP Basic credentials: none after the scheme")
            }
            BasicError::NotBase64 => f.write_str("malformed HTTP Basic credentials: not base64"),
            BasicError::NoColon => {
                f.write_str("malformed HTTP Basic credentials: no ':' between client id and secret")
            }
            BasicError::NotFormEncoded { secret, why } => write!(
                f,
                "malformed HTTP Basic credentials: the {} {why}",
                which(secret)
            ),
            BasicError::EmptyId => {
                f.write_str("malformed HTTP Basic credentials: the client id is empty")
            }
            BasicError::ControlCharacters { secret } => write!(
                f,
                "malformed HTTP Basic credentials: the {} contains control characters",
                which(secret)
            ),
            BasicError::TooLong { secret } => write!(
                f,
                "malformed HTTP Basic credentials: the {} is longer than {} bytes",
                which(secret),
                if secret {
                    MAX_SECRET_BYTES
                } else {
                    MAX_CLIENT_ID_BYTES
                }
            ),
        }
    }
}

impl From<BasicError> for Error {
    fn from(err: BasicError) -> Self {
        Error::InvalidClient(err.to_string().into())
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 7617 with RFC 6749 section
/// 2.3.1), from the raw header value.
pub fn parse_basic(header: &[u8]) -> Result<ClientCredentials, BasicError> {
    let header = header.trim_ascii();
    let (scheme, encoded) = match header.iter().position(|&b| b == b' ') {
        Some(at) => (&header[..at], header[at..].trim_ascii()),
        None => (header, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(BasicError::UnsupportedScheme);
    }
    if encoded.is_empty() {
        return Err(BasicError::Missing);
    }
    // Padding present but short of the last quantum ("YQ=") is a broken encoder, not a choice.
    if encoded.ends_with(b"=") && encoded.len() % 4 != 0 {
        return Err(BasicError::NotBase64);
    }
    let decoded = BASIC.decode(encoded).map_err(|_| BasicError::NotBase64)?;
    // Encoded ids and secrets cannot contain a raw ':', so the first one separates them.
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(BasicError::NoColon)?;
    let field = |bytes: &[u8], secret: bool, max: usize| {
        let text = form::decode(bytes).map_err(|why| BasicError::NotFormEncoded { secret, why })?;
        if text.chars().any(char::is_control) {
            return Err(BasicError::ControlCharacters { secret });
        }
        if text.len() > max {
            return Err(BasicError::TooLong { secret });
        }
        Ok(text)
    };
    let client_id = field(&decoded[..colon], false, MAX_CLIENT_ID_BYTES)?;
    if client_id.is_empty() {
        return Err(BasicError::EmptyId);
    }
    let client_secret = field(&decoded[colon + 1..], true, MAX_SECRET_BYTES)?;
    Ok(ClientCredentials {
        client_id,
        client_secret,
        method: Method::Basic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::FORM_CONTENT_TYPE;

    fn form(body: &str) -> Form {
        Form::parse(
            Some(FORM_CONTENT_TYPE),
            body.as_bytes(),
            &[CLIENT_ID, CLIENT_SECRET],
        )
        .unwrap()
    }

    /// `Basic base64(user_pass)`, bytes as given (no form encoding).
    fn basic(user_pass: impl AsRef<[u8]>) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    /// What a request with these `Authorization` values and body gets: `Ok((id, secret,
    /// method))`, or `Err((status, error, WWW-Authenticate present))`.
    type Outcome = Result<(String, String, Method), (u16, &'static str, bool)>;

    fn outcome(headers: &[&str], body: &str) -> (Outcome, String) {
        let headers: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        match ClientCredentials::from_request(&headers, &form(body)) {
            Ok(c) => (Ok((c.client_id, c.client_secret, c.method)), String::new()),
            Err(err) => {
                let text = err.to_string();
                let response = axum::response::IntoResponse::into_response(err);
                let status = response.status().as_u16();
                let challenge = response
                    .headers()
                    .contains_key(axum::http::header::WWW_AUTHENTICATE);
                let code = match status {
                    401 => "invalid_client",
                    400 => "invalid_request",
                    _ => "other",
                };
                (Err((status, code, challenge)), text)
            }
        }
    }

    fn ok(id: &str, secret: &str, method: Method) -> Outcome {
        Ok((id.to_owned(), secret.to_owned(), method))
    }

    const CLIENT_401: Outcome = Err((401, "invalid_client", true));
    const REQUEST_400: Outcome = Err((400, "invalid_request", false));

    /// The reported input and the whole kind around it: every way header credentials can
    /// fail is 401 `invalid_client` with a challenge; the body's own problems stay 400.
    #[test]
    fn credentials_as_a_table() {
        let long_id = "i".repeat(MAX_CLIENT_ID_BYTES);
        let long_secret = "s".repeat(MAX_SECRET_BYTES);
        let cases: Vec<(&str, Vec<String>, &str, Outcome)> = vec![
            // Accepted.
            (
                "Basic",
                vec![basic("web:s3cret")],
                "",
                ok("web", "s3cret", Method::Basic),
            ),
            (
                "Basic, form-decoded after the first colon",
                vec![basic("web%3Aeu:s3cr+et%2B%3a")],
                "",
                ok("web:eu", "s3cr et+:", Method::Basic),
            ),
            (
                "Basic, a raw colon in the secret",
                vec![basic("web:a:b")],
                "",
                ok("web", "a:b", Method::Basic),
            ),
            (
                "public client over Basic",
                vec![basic("app:")],
                "",
                ok("app", "", Method::Basic),
            ),
            (
                "lower-case scheme, no padding, extra spaces",
                vec!["basic   YTpi  ".to_owned()],
                "",
                ok("a", "b", Method::Basic),
            ),
            (
                "raw UTF-8 (a client that does not form-encode)",
                vec![basic("wéb:sé")],
                "",
                ok("wéb", "sé", Method::Basic),
            ),
            (
                "id and secret at their limits",
                vec![basic(format!("{long_id}:{long_secret}"))],
                "",
                ok(&long_id, &long_secret, Method::Basic),
            ),
            (
                "Basic and the same client_id in the body",
                vec![basic("web:s")],
                "client_id=web",
                ok("web", "s", Method::Basic),
            ),
            (
                "body",
                vec![],
                "client_id=web&client_secret=s",
                ok("web", "s", Method::Body),
            ),
            (
                "body, public client",
                vec![],
                "client_id=app",
                ok("app", "", Method::Body),
            ),
            // The reported input: a NUL (and any control character) in the decoded secret.
            (
                "NUL in the secret, encoded",
                vec![basic("web:SEC%00RET")],
                "",
                CLIENT_401,
            ),
            (
                "NUL in the secret, raw",
                vec![basic("web:SEC\0RET")],
                "",
                CLIENT_401,
            ),
            (
                "line feed in the secret",
                vec![basic("web:a%0Ab")],
                "",
                CLIENT_401,
            ),
            ("tab in the secret", vec![basic("web:a\tb")], "", CLIENT_401),
            ("DEL in the secret", vec![basic("web:a%7F")], "", CLIENT_401),
            (
                "C1 control in the secret",
                vec![basic("web:a%C2%85")],
                "",
                CLIENT_401,
            ),
            ("NUL in the id", vec![basic("w%00eb:s")], "", CLIENT_401),
            (
                "carriage return in the id",
                vec![basic("web\r:s")],
                "",
                CLIENT_401,
            ),
            // Every other way the header can fail.
            (
                "no scheme, no credentials",
                vec![String::new()],
                "",
                CLIENT_401,
            ),
            ("Basic alone", vec!["Basic".to_owned()], "", CLIENT_401),
            (
                "Basic and spaces",
                vec!["Basic   ".to_owned()],
                "",
                CLIENT_401,
            ),
            ("Bearer", vec!["Bearer abc".to_owned()], "", CLIENT_401),
            (
                "Digest",
                vec!["Digest username=\"web\"".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "scheme glued to the credentials",
                vec!["BasicYTpi".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "a tab after the scheme",
                vec!["Basic\tYTpi".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "not base64",
                vec!["Basic !!!not-base64".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "URL-safe base64 alphabet",
                vec!["Basic d2ViOj8_Pw".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "base64 with partial padding",
                vec!["Basic YTpiYw=".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "base64 with padding",
                vec!["Basic YTpiYw==".to_owned()],
                "",
                ok("a", "bc", Method::Basic),
            ),
            (
                "base64 with nonzero trailing bits",
                vec!["Basic YTp".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "two base64 words",
                vec!["Basic YTpi YTpi".to_owned()],
                "",
                CLIENT_401,
            ),
            (
                "non-ASCII in the header",
                vec!["Basic YTpi\u{e9}".to_owned()],
                "",
                CLIENT_401,
            ),
            ("no colon", vec![basic("no-colon-secret")], "", CLIENT_401),
            (
                "empty id",
                vec![basic(":secret-without-id")],
                "",
                CLIENT_401,
            ),
            ("empty id and secret", vec![basic(":")], "", CLIENT_401),
            (
                "bad percent in the secret",
                vec![basic("web:50%")],
                "",
                CLIENT_401,
            ),
            (
                "bad percent in the id",
                vec![basic("web%zz:s")],
                "",
                CLIENT_401,
            ),
            (
                "half an escape in the secret",
                vec![basic("web:ab%4")],
                "",
                CLIENT_401,
            ),
            (
                "secret not UTF-8 once decoded",
                vec![basic("web:%FF")],
                "",
                CLIENT_401,
            ),
            (
                "secret not UTF-8, raw",
                vec![basic(b"web:\xC3")],
                "",
                CLIENT_401,
            ),
            ("id not UTF-8", vec![basic(b"w\xFFb:s")], "", CLIENT_401),
            (
                "oversize id",
                vec![basic(format!("{long_id}i:s"))],
                "",
                CLIENT_401,
            ),
            (
                "oversize secret",
                vec![basic(format!("web:{long_secret}s"))],
                "",
                CLIENT_401,
            ),
            (
                "two Authorization headers",
                vec![basic("web:s"), basic("web:s")],
                "",
                CLIENT_401,
            ),
            ("no credentials at all", vec![], "", CLIENT_401),
            // Two methods, or a body that contradicts the header: the request's fault.
            (
                "Basic and client_secret in the body",
                vec![basic("web:s")],
                "client_secret=s",
                REQUEST_400,
            ),
            (
                "a broken header and client_secret in the body",
                vec![basic("web:SEC%00RET")],
                "client_id=web&client_secret=s",
                REQUEST_400,
            ),
            (
                "Bearer and client_secret in the body",
                vec!["Bearer abc".to_owned()],
                "client_id=web&client_secret=s",
                REQUEST_400,
            ),
            (
                "Basic and another client_id in the body",
                vec![basic("web:s")],
                "client_id=other",
                REQUEST_400,
            ),
            (
                "client_secret in the body without client_id",
                vec![],
                "client_secret=s",
                REQUEST_400,
            ),
        ];
        for (case, headers, body, expected) in &cases {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let (got, text) = outcome(&headers, body);
            assert_eq!(&got, expected, "{case}: {text}");
            for sent in [
                "SEC",
                "RET",
                "not-base64",
                "no-colon",
                "without-id",
                "YTpi",
                "s3cret",
            ] {
                assert!(!text.contains(sent), "{case}: echoes {sent:?}: {text}");
            }
        }
    }

    /// Each failure has its own description, from the fixed list.
    #[test]
    fn each_basic_failure_says_what_it_is() {
        let cases: &[(&[u8], BasicError)] = &[
            (b"Bearer x", BasicError::UnsupportedScheme),
            (b"Basic", BasicError::Missing),
            (b"Basic *", BasicError::NotBase64),
            (b"Basic YWI", BasicError::NoColon),
            (b"Basic OnM", BasicError::EmptyId),
            (
                b"Basic JTph",
                BasicError::NotFormEncoded {
                    secret: false,
                    why: DecodeError::BadPercent,
                },
            ),
            (
                b"Basic YTolRkY",
                BasicError::NotFormEncoded {
                    secret: true,
                    why: DecodeError::NotUtf8,
                },
            ),
            (
                b"Basic YTolMDA",
                BasicError::ControlCharacters { secret: true },
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                parse_basic(header).map(|c| c.client_id),
                Err(*expected),
                "{:?}",
                String::from_utf8_lossy(header)
            );
        }
        let texts: Vec<String> = BasicError::ALL.iter().map(ToString::to_string).collect();
        for (i, text) in texts.iter().enumerate() {
            assert!(!texts[..i].contains(text), "{text} twice");
        }
    }

    #[test]
    fn only_the_services_malformed_credentials_become_invalid_client() {
        let cases = [
            (
                Some(ErrorReason::MalformedRequest),
                "client_id: may contain only letters",
                true,
            ),
            (
                Some(ErrorReason::MalformedRequest),
                "client_secret: contains control characters",
                true,
            ),
            (
                Some(ErrorReason::MalformedRequest),
                "client_secret: is 300 bytes, the limit is 256",
                true,
            ),
            (
                Some(ErrorReason::MalformedRequest),
                "refresh_token: is required",
                false,
            ),
            (
                Some(ErrorReason::MalformedRequest),
                "token: contains control characters",
                false,
            ),
            (Some(ErrorReason::MalformedRequest), "client_ids: x", false),
            (Some(ErrorReason::InvalidScope), "client_id: x", false),
            (None, "client_id: x", false),
        ];
        for (reason, message, expected) in cases {
            assert_eq!(
                malformed_credentials(reason, message),
                expected,
                "{reason:?} {message}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let credentials = ClientCredentials {
            client_id: "web".to_owned(),
            client_secret: "hunter2".to_owned(),
            method: Method::Basic,
        };
        let shown = format!("{credentials:?}");
        assert!(
            shown.contains("web") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
