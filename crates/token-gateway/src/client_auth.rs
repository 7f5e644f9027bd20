//! Who the caller says it is (RFC 6749 section 2.3.1): HTTP Basic with the form-encoded client
//! id and secret, or the body parameters `client_id` and `client_secret`; one method per
//! request (section 2.3). Only *presented* here: the token service checks the secret.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::Error;
use crate::form::Form;

/// Body parameters that carry client credentials.
pub const CLIENT_ID: &str = "client_id";
pub const CLIENT_SECRET: &str = "client_secret";

/// Standard base64; padding optional, since some clients leave it out.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A client id and the secret presented with it. Never printed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// Never empty: a request without one is refused before it gets here.
    pub client_id: String,
    /// Empty for a public client, which authenticates by its id alone.
    pub client_secret: String,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// The credentials of a request with `authorization` (the one `Authorization` header, if
    /// any) and `form` (parsed with [`CLIENT_ID`] and [`CLIENT_SECRET`] among its known
    /// parameters).
    ///
    /// - Basic: `invalid_client` if the header is not Basic or does not decode to `id:secret`.
    ///   A `client_secret` in the body as well is two methods at once: `invalid_request`. A
    ///   `client_id` in the body is tolerated when it names the same client (some libraries
    ///   add it), `invalid_request` otherwise.
    /// - Body: `client_id`, and `client_secret` unless the client is public.
    /// - Neither: `invalid_client` ("no client authentication included", section 5.2).
    pub fn from_request(authorization: Option<&str>, form: &Form) -> Result<Self, Error> {
        let Some(authorization) = authorization else {
            return match (form.get(CLIENT_ID), form.get(CLIENT_SECRET)) {
                (Some(id), secret) => Ok(Self {
                    client_id: id.to_owned(),
                    client_secret: secret.unwrap_or_default().to_owned(),
                }),
                (None, Some(_)) => Err(Error::InvalidRequest(
                    "parameter client_secret is sent without client_id".into(),
                )),
                (None, None) => Err(Error::InvalidClient(
                    "client authentication is required: HTTP Basic, or client_id and \
                     client_secret in the body"
                        .into(),
                )),
            };
        };
        let credentials = parse_basic(authorization)?;
        if form.get(CLIENT_SECRET).is_some() {
            return Err(Error::InvalidRequest(
                "the client used more than one authentication method: HTTP Basic and \
                 client_secret in the body"
                    .into(),
            ));
        }
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
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`. Descriptions never echo the header.
fn parse_basic(header: &str) -> Result<ClientCredentials, Error> {
    let malformed = || Error::InvalidClient("malformed HTTP Basic credentials".into());
    let (scheme, encoded) = header.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Error::InvalidClient(
            "unsupported authentication scheme: use HTTP Basic".into(),
        ));
    }
    let decoded = BASIC.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    // Encoded ids and secrets cannot contain a raw ':', so the first one separates them.
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let client_id = form_decode(id).ok_or_else(malformed)?;
    if client_id.is_empty() {
        return Err(malformed());
    }
    Ok(ClientCredentials {
        client_id,
        client_secret: form_decode(secret).ok_or_else(malformed)?,
    })
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space), as RFC 6749
/// section 2.3.1 asks of Basic credentials. `None` if the result is not UTF-8.
fn form_decode(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
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

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    fn credentials(id: &str, secret: &str) -> ClientCredentials {
        ClientCredentials {
            client_id: id.to_owned(),
            client_secret: secret.to_owned(),
        }
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_the_first_colon() {
        let got = ClientCredentials::from_request(Some(&basic("web%3Aeu:s3cr+et%2B")), &form(""));
        assert_eq!(got.unwrap(), credentials("web:eu", "s3cr et+"));
        // A public client over Basic: an empty password.
        let got = ClientCredentials::from_request(Some(&basic("app:")), &form(""));
        assert_eq!(got.unwrap(), credentials("app", ""));
        // Lower-case scheme, padding left out.
        let got = ClientCredentials::from_request(Some("basic YTpi"), &form(""));
        assert_eq!(got.unwrap(), credentials("a", "b"));
    }

    #[test]
    fn body_credentials_and_public_clients() {
        let got = ClientCredentials::from_request(None, &form("client_id=web&client_secret=s"));
        assert_eq!(got.unwrap(), credentials("web", "s"));
        let got = ClientCredentials::from_request(None, &form("client_id=app"));
        assert_eq!(got.unwrap(), credentials("app", ""));
    }

    #[test]
    fn two_methods_at_once_are_invalid_request() {
        let err = ClientCredentials::from_request(Some(&basic("web:s")), &form("client_secret=s"))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
        let err = ClientCredentials::from_request(Some(&basic("web:s")), &form("client_id=other"))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
        // The same id in the body is only identification.
        let got = ClientCredentials::from_request(Some(&basic("web:s")), &form("client_id=web"));
        assert_eq!(got.unwrap(), credentials("web", "s"));
    }

    #[test]
    fn missing_or_unusable_credentials_are_invalid_client_without_echo() {
        for header in [
            None,
            Some("Bearer abc".to_owned()),
            Some("Basic !!!not-base64".to_owned()),
            Some(basic("no-colon-secret")),
            Some(basic(":secret-without-id")),
            Some("Basic".to_owned()),
        ] {
            let err = ClientCredentials::from_request(header.as_deref(), &form("")).unwrap_err();
            assert!(
                matches!(err, Error::InvalidClient(_)),
                "{header:?}: {err:?}"
            );
            let text = err.to_string();
            for sent in ["abc", "not-base64", "no-colon", "without-id"] {
                assert!(!text.contains(sent), "{text}");
            }
        }
        let err = ClientCredentials::from_request(None, &form("client_secret=s")).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", credentials("web", "hunter2"));
        assert!(
            shown.contains("web") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
