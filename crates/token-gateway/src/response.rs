//! JSON responses with the headers RFC 6749 section 5.1 requires of anything carrying tokens.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// `body` as JSON with `Cache-Control: no-store` and `Pragma: no-cache`. Used for every
/// OAuth response, errors included (as in the RFC's own examples): token metadata and
/// refusals must not be cached by anything between the client and here.
pub fn oauth_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An empty 200 that must not be cached either (the revocation endpoint's answer).
pub fn oauth_empty() -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
