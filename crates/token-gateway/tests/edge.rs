//! The gateway's edge over real HTTP, without a token service: every request here is malformed
//! or carries unusable credentials, so the gateway must answer it itself, RFC-shaped, and
//! never call the token service. The "token service" is a socket nobody accepts on; at the
//! end not one connection may have reached it (a request that did would also have been 503).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{self, HeaderValue};
use token_client::ClientConfig;
use token_gateway::{INTROSPECT_PATH, REVOKE_PATH, TOKEN_PATH, Upstream, router, serve};
use tokio::net::TcpListener;

const ENDPOINTS: [&str; 3] = [TOKEN_PATH, REVOKE_PATH, INTROSPECT_PATH];
const CHALLENGE: &str = r#"Basic realm="token-gateway""#;
/// A token-shaped value, to see that it never comes back.
const TOKEN: &str = "rt1.c2VjcmV0LXRva2Vu.bWFjLW9mLXRoZS10b2tlbg";

/// The parameters each endpoint needs besides credentials, with `token` (form encoded) as its
/// token.
fn grant(path: &str, token: &str) -> String {
    if path == TOKEN_PATH {
        format!("grant_type=refresh_token&refresh_token={token}")
    } else {
        format!("token={token}")
    }
}

fn basic(user_pass: impl AsRef<[u8]>) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
}

/// One refused request: the `Authorization` values, the body after the endpoint's own
/// parameters (`&`-joined), the token those carry, and the answer: status, `error`, and
/// whether `WWW-Authenticate` is there.
struct Row {
    case: &'static str,
    authorization: Vec<Vec<u8>>,
    body: &'static str,
    token: &'static str,
    status: u16,
    error: &'static str,
    challenge: bool,
}

fn row(
    case: &'static str,
    authorization: Vec<Vec<u8>>,
    body: &'static str,
    status: u16,
    error: &'static str,
) -> Row {
    Row {
        case,
        authorization,
        body,
        token: TOKEN,
        status,
        error,
        challenge: status == 401,
    }
}

fn rows() -> Vec<Row> {
    let oversize_secret = format!("web:{}", "s".repeat(257));
    let oversize_id = format!("{}:s", "i".repeat(129));
    vec![
        // Issue 14, as reported, and the rest of its kind: the header's credentials fail.
        row(
            "NUL in the Basic secret (the report)",
            vec![basic("web:SEC%00RET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "raw NUL in the Basic secret",
            vec![basic("web:SEC\0RET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "line feed in the Basic secret",
            vec![basic("web:SEC%0ARET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "C1 control in the Basic secret",
            vec![basic("web:SEC%C2%85RET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "control character in the Basic id",
            vec![basic("w%01eb:SECRET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "oversize Basic secret",
            vec![basic(oversize_secret)],
            "",
            401,
            "invalid_client",
        ),
        row(
            "oversize Basic id",
            vec![basic(oversize_id)],
            "",
            401,
            "invalid_client",
        ),
        row(
            "empty Basic id",
            vec![basic(":SECRET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "no colon",
            vec![basic("webSECRET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "bad percent-encoding in the secret",
            vec![basic("web:SEC%RET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "secret not UTF-8",
            vec![basic("web:SEC%FFRET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "not base64",
            vec![b"Basic SEC*RET".to_vec()],
            "",
            401,
            "invalid_client",
        ),
        row(
            "Basic without credentials",
            vec![b"Basic".to_vec()],
            "",
            401,
            "invalid_client",
        ),
        row(
            "an empty Authorization header",
            vec![Vec::new()],
            "",
            401,
            "invalid_client",
        ),
        row(
            "Bearer",
            vec![b"Bearer SECRET".to_vec()],
            "",
            401,
            "invalid_client",
        ),
        row(
            "non-ASCII in the header",
            vec![b"Basic d2ViOlNFQ1JFVA\xE9".to_vec()],
            "",
            401,
            "invalid_client",
        ),
        row(
            "two Authorization headers",
            vec![basic("web:SECRET"), basic("web:SECRET")],
            "",
            401,
            "invalid_client",
        ),
        row(
            "no client authentication",
            vec![],
            "",
            401,
            "invalid_client",
        ),
        // Not the header's failure: more than one method, or a malformed body.
        row(
            "Basic and client_secret in the body",
            vec![basic("web:SECRET")],
            "client_secret=SECRET",
            400,
            "invalid_request",
        ),
        row(
            "a broken header and client_secret in the body",
            vec![basic("web:SEC%00RET")],
            "client_id=web&client_secret=SECRET",
            400,
            "invalid_request",
        ),
        row(
            "Basic and another client_id in the body",
            vec![basic("web:SECRET")],
            "client_id=other",
            400,
            "invalid_request",
        ),
        row(
            "NUL in the body's client_secret",
            vec![],
            "client_id=web&client_secret=SEC%00RET",
            400,
            "invalid_request",
        ),
        row(
            "NUL in the body's client_id",
            vec![],
            "client_id=w%00eb&client_secret=SECRET",
            400,
            "invalid_request",
        ),
        row(
            "bad percent-encoding in the body's client_secret",
            vec![],
            "client_id=web&client_secret=SEC%RET",
            400,
            "invalid_request",
        ),
        row(
            "client_secret twice",
            vec![],
            "client_id=web&client_secret=SECRET&client_secret=SECRET",
            400,
            "invalid_request",
        ),
        row(
            "client_secret without client_id",
            vec![],
            "client_secret=SECRET",
            400,
            "invalid_request",
        ),
        Row {
            token: "rt1.a%00b",
            ..row(
                "a control character in the token",
                vec![basic("web:SECRET")],
                "",
                400,
                "invalid_request",
            )
        },
        Row {
            token: "rt1.a%0",
            ..row(
                "a bad escape in the token",
                vec![basic("web:SECRET")],
                "",
                400,
                "invalid_request",
            )
        },
        row(
            "a bad escape in an unknown parameter",
            vec![basic("web:SECRET")],
            "x=100%",
            400,
            "invalid_request",
        ),
        row(
            "a body that is not UTF-8",
            vec![basic("web:SECRET")],
            "x=%C3",
            400,
            "invalid_request",
        ),
    ]
}

/// A gateway whose token service is a socket nobody accepts on.
async fn gateway() -> (String, TcpListener) {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ClientConfig {
        deadline: Duration::from_millis(500),
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        max_attempts: 1,
    };
    let upstream =
        Upstream::connect(&format!("http://{}", dead.local_addr().unwrap()), config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        router(upstream),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    (base, dead)
}

#[tokio::test]
async fn refused_at_the_edge_on_every_endpoint_without_calling_the_token_service() {
    let (base, token_service) = gateway().await;
    let http = reqwest::Client::new();
    for path in ENDPOINTS {
        for row in rows() {
            let case = format!("{path}: {}", row.case);
            let body = match row.body {
                "" => grant(path, row.token),
                extra => format!("{}&{extra}", grant(path, row.token)),
            };
            let mut request = http
                .post(format!("{base}{path}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body);
            for value in &row.authorization {
                request = request.header(
                    header::AUTHORIZATION,
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            let response = request.send().await.expect("the gateway answers");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            assert_eq!(status, row.status, "{case}: {text}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{case}");
            assert_eq!(headers[header::PRAGMA], "no-cache", "{case}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{case}");
            let challenge = headers.get(header::WWW_AUTHENTICATE);
            assert_eq!(
                challenge.is_some(),
                row.challenge,
                "{case}: WWW-Authenticate {challenge:?}"
            );
            if let Some(challenge) = challenge {
                assert_eq!(challenge, CHALLENGE, "{case}");
            }
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["error"], row.error, "{case}: {text}");
            let description = json["error_description"].as_str().expect("a description");
            assert!(
                description
                    .bytes()
                    .all(|b| (0x20..=0x7E).contains(&b) && b != b'"' && b != b'\\'),
                "{case}: {description:?}"
            );
            assert_eq!(json.as_object().unwrap().len(), 2, "{case}: {text}");
            for sent in ["SEC", "RET", TOKEN, "d2Vi"] {
                assert!(!text.contains(sent), "{case}: echoes {sent:?}: {text}");
            }
        }
    }
    let reached = tokio::time::timeout(Duration::from_millis(200), token_service.accept()).await;
    assert!(
        reached.is_err(),
        "a refused request reached the token service"
    );
}
