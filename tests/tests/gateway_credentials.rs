//! Issue 14, the gateway's part, end to end: real redis-server, token server and gateway on
//! loopback ports, over real HTTP. Client credentials that fail in the `Authorization` header
//! are `401 invalid_client` with a Basic challenge on every endpoint (RFC 6749 section 5.2),
//! whether the gateway sees the problem itself or the token service does; the same values in
//! the body are `400 invalid_request`; and none of it changes anything: no refresh reaches the
//! audit, the family stays where it was and its refresh token still rotates.
//!
//! The gateway's own tables (every header and body shape, without a token service) are in
//! `crates/token-gateway/src/client_auth.rs`, `src/form.rs` and `tests/edge.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{self, HeaderValue};
use serde_json::Value;
use test_support::harness;
use test_support::harness::gateway::quick_retries;
use test_support::harness::{
    RedisServer, ServerOptions, TestClient, TestGateway, TestServer, issue, register_client,
};
use token_core::store::FamilyStatus;
use token_proto::v1 as pb;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;

const CHALLENGE: &str = r#"Basic realm="token-gateway""#;
const ENDPOINTS: [&str; 3] = ["/oauth/token", "/oauth/revoke", "/oauth/introspect"];

struct Env {
    gateway: TestGateway,
    server: TestServer,
    tokens: TokenServiceClient<Channel>,
    http: reqwest::Client,
    client: TestClient,
    pair: pb::TokenPair,
    /// Declared last so it is dropped last.
    _redis: RedisServer,
}

impl Env {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
        let gateway = TestGateway::in_front_of(&server, quick_retries()).await;
        let mut tokens = server.tokens().await;
        let client = register_client(
            &mut server.registry().await,
            "confidential",
            "",
            &["read", "write"],
        )
        .await;
        let pair = issue(&mut tokens, &client, "alice").await;
        Self {
            gateway,
            server,
            tokens,
            http: reqwest::Client::new(),
            client,
            pair,
            _redis: redis,
        }
    }

    /// The endpoint's own parameters, for this client's pair.
    fn params(&self, path: &str) -> Vec<(&str, &str)> {
        match path {
            "/oauth/token" => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &self.pair.refresh_token),
            ],
            "/oauth/revoke" => vec![("token", &self.pair.refresh_token)],
            _ => vec![("token", &self.pair.access_token)],
        }
    }

    /// POSTs the endpoint's parameters and `extra` (form encoded) with these `Authorization`
    /// values.
    async fn post(&self, path: &str, authorization: &[Vec<u8>], extra: &[(&str, &str)]) -> Reply {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.params(path).iter().chain(extra) {
            form.append_pair(name, value);
        }
        let mut request = self
            .http
            .post(self.gateway.url(path))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.finish());
        for value in authorization {
            request = request.header(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("a sendable header value"),
            );
        }
        let response = request.send().await.expect("the gateway answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("a body"),
        }
    }

    /// Refresh outcomes the token service recorded for the client in the last hour.
    async fn audited_refreshes(&mut self) -> u64 {
        harness::last_hour_summary(&mut self.tokens, &self.client.client_id)
            .await
            .total
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// `Basic base64(user_pass)`, the bytes as given.
fn basic(user_pass: impl AsRef<[u8]>) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
}

/// Exactly this OAuth error, RFC-shaped: status, `Cache-Control: no-store`, JSON with
/// `error` and `error_description` only, the challenge on 401 and only there, and none of
/// `secrets` in the body.
#[track_caller]
fn assert_refused(case: &str, reply: &Reply, status: u16, error: &str, secrets: &[&str]) {
    assert_eq!(reply.status, status, "{case}: {reply:?}");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "{case}");
    assert_eq!(reply.headers[header::PRAGMA], "no-cache", "{case}");
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/json",
        "{case}"
    );
    let challenge = reply.headers.get(header::WWW_AUTHENTICATE);
    if status == 401 {
        assert_eq!(
            challenge.map(|v| v.as_bytes()),
            Some(CHALLENGE.as_bytes()),
            "{case}"
        );
    } else {
        assert!(challenge.is_none(), "{case}: {reply:?}");
    }
    let body: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body["error"], error, "{case}: {reply:?}");
    assert!(body["error_description"].is_string(), "{case}: {reply:?}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{case}: {reply:?}");
    for secret in secrets {
        assert!(!reply.body.contains(secret), "{case}: echoes {secret:?}");
    }
}

/// The reported input (`Basic base64("<client id>:SEC%00RET")`) and the rest of its kind, on
/// all three endpoints: 401 invalid_client with the challenge; nothing reaches the audit, the
/// family is untouched, and the refresh token still rotates afterwards.
#[tokio::test]
async fn unusable_basic_credentials_are_401_on_every_endpoint_and_change_nothing() {
    let mut env = Env::start().await;
    let id = env.client.client_id.clone();
    let secret = env.client.client_secret.clone();
    let rows: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "the report: %00 in the secret",
            vec![basic(format!("{id}:SEC%00RET"))],
        ),
        (
            "a raw NUL in the secret",
            vec![basic(format!("{id}:SEC\0RET"))],
        ),
        (
            "%0D%0A in the secret",
            vec![basic(format!("{id}:SEC%0D%0ARET"))],
        ),
        ("%7F in the secret", vec![basic(format!("{id}:SEC%7FRET"))]),
        (
            "a control character in the id",
            vec![basic(format!("{id}%01:{secret}"))],
        ),
        (
            "a bad escape in the secret",
            vec![basic(format!("{id}:SEC%RET"))],
        ),
        (
            "a secret that is not UTF-8",
            vec![basic(format!("{id}:SEC%FFRET"))],
        ),
        (
            "an oversize secret",
            vec![basic(format!("{id}:{}", "S".repeat(257)))],
        ),
        (
            "an oversize id",
            vec![basic(format!("{}:{secret}", "i".repeat(129)))],
        ),
        ("no colon", vec![basic(format!("{id}SECRET"))]),
        ("an empty id", vec![basic(format!(":{secret}"))]),
        ("not base64", vec![b"Basic SEC*RET".to_vec()]),
        ("an unknown scheme", vec![b"Bearer SECRET".to_vec()]),
        (
            "two Authorization headers",
            vec![
                basic(format!("{id}:{secret}")),
                basic(format!("{id}:{secret}")),
            ],
        ),
    ];
    let rt = env.pair.refresh_token.clone();
    let before = harness::stored_family(&env.server.service, &rt).await;
    for path in ENDPOINTS {
        for (case, authorization) in &rows {
            let reply = env.post(path, authorization, &[]).await;
            let case = format!("{path}: {case}");
            let rt = env.pair.refresh_token.as_str();
            assert_refused(&case, &reply, 401, "invalid_client", &["SEC", rt, &secret]);
        }
    }
    // Refused before the token service: not one refresh was audited, the family is as it was.
    assert_eq!(env.audited_refreshes().await, 0);
    let after = harness::stored_family(&env.server.service, &rt).await;
    assert_eq!(after, before);
    let after = after.expect("the family exists");
    assert_eq!((after.generation, after.status), (1, FamilyStatus::Active));

    // The same client with its real credentials, by Basic: the pair rotates, not replays.
    let good = vec![basic(format!("{id}:{secret}"))];
    let reply = env.post("/oauth/token", &good, &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_ne!(body["refresh_token"], env.pair.refresh_token.as_str());
    assert_eq!(env.audited_refreshes().await, 1);
    env.gateway.stop().await;
}

/// What the gateway cannot know but the token service refuses as malformed (here its client
/// id alphabet) is still a failed authentication when it came in the header: 401. The same
/// values in the body are malformed parameters: 400. A secret up to the service's limit is
/// the service's to judge (a wrong one is its INVALID_CLIENT), one byte more the gateway's.
#[tokio::test]
async fn malformed_credentials_are_401_in_the_header_and_400_in_the_body() {
    let env = Env::start().await;
    let id = env.client.client_id.clone();
    let secret = env.client.client_secret.clone();
    for path in ENDPOINTS {
        // The service's MALFORMED_REQUEST about client_id, through Basic and through the body.
        for bad_id in ["web+app", "%7Btag%7D", "caf%C3%A9"] {
            let case = format!("{path}: Basic id {bad_id}");
            let reply = env
                .post(path, &[basic(format!("{bad_id}:{secret}"))], &[])
                .await;
            assert_refused(&case, &reply, 401, "invalid_client", &[&secret]);
            let decoded = form_urlencoded::parse(format!("x={bad_id}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned();
            let case = format!("{path}: body id {bad_id}");
            let body = [("client_id", decoded.as_str()), ("client_secret", &secret)];
            let reply = env.post(path, &[], &body).await;
            assert_refused(&case, &reply, 400, "invalid_request", &[&secret]);
        }
        // The reported secret, in the body instead of the header: a malformed parameter.
        let case = format!("{path}: NUL in the body's client_secret");
        let body = [("client_id", id.as_str()), ("client_secret", "SEC\0RET")];
        let reply = env.post(path, &[], &body).await;
        assert_refused(&case, &reply, 400, "invalid_request", &["SEC"]);
        // Both methods at once.
        let case = format!("{path}: Basic and client_secret in the body");
        let reply = env
            .post(
                path,
                &[basic(format!("{id}:{secret}"))],
                &[("client_secret", &secret)],
            )
            .await;
        assert_refused(&case, &reply, 400, "invalid_request", &[&secret]);
    }
    // At the limit the service judges the secret (wrong: its INVALID_CLIENT); past it, the
    // gateway refuses it without asking.
    let at_limit = env
        .post(
            "/oauth/token",
            &[basic(format!("{id}:{}", "S".repeat(256)))],
            &[],
        )
        .await;
    assert_refused(
        "256-byte secret",
        &at_limit,
        401,
        "invalid_client",
        &["SSSS"],
    );
    assert!(!at_limit.body.contains("256 bytes"), "{at_limit:?}");
    let past = env
        .post(
            "/oauth/token",
            &[basic(format!("{id}:{}", "S".repeat(257)))],
            &[],
        )
        .await;
    assert_refused("257-byte secret", &past, 401, "invalid_client", &["SSSS"]);
    assert!(past.body.contains("longer than 256 bytes"), "{past:?}");

    // The refresh token is untouched by all of it.
    let reply = env
        .post("/oauth/token", &[basic(format!("{id}:{secret}"))], &[])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    env.gateway.stop().await;
}
