//! The HTTP endpoints, one module each, all of the same shape: parse the request into a
//! plain value (pure, no I/O), call the token service through the SDK, encode the answer.
//! Errors go back as [`Error`](crate::Error), which alone decides the HTTP response.

pub mod health;
pub mod introspect;
pub mod revoke;
pub mod scope;
pub mod token;
pub mod well_known;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};

use crate::client_auth::ClientCredentials;
use crate::error::Error;
use crate::form::Form;

/// The known parameters of `body`, after the checks every endpoint makes: a readable body
/// within the size limit, form encoded, no parameter twice.
fn form(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    known: &[&'static str],
) -> Result<Form, Error> {
    let body = body.map_err(|rejection| {
        Error::InvalidRequest(format!("unreadable request body: {}", rejection.body_text()).into())
    })?;
    let content_type = single_header(headers, header::CONTENT_TYPE)?;
    Form::parse(content_type, &body, known)
}

/// The credentials the client presented, by HTTP Basic or in `form`. Every `Authorization`
/// value goes to [`ClientCredentials::from_request`] as it arrived (bytes, however many), so
/// that each way the header can fail is a failed client authentication there.
fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials, Error> {
    let authorization: Vec<&[u8]> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    let client = ClientCredentials::from_request(&authorization, form)?;
    // Which client a request was for is what an operator searches by; the id is no secret.
    tracing::Span::current().record("client_id", client.client_id.as_str());
    Ok(client)
}

/// The value of a request header that may appear at most once (`Content-Type`), as text;
/// `invalid_request` otherwise. Descriptions name the header, never its value. Not for
/// `Authorization`, whose every failure is `invalid_client` ([`client_credentials`]).
fn single_header(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, Error> {
    let mut values = headers.get_all(&name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::InvalidRequest(
            format!("header {name} is included more than once").into(),
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| Error::InvalidRequest(format!("header {name} is not visible ASCII").into()))?;
    Ok(Some(text))
}
