//! The HTTP gateway end to end: real redis-server, token server and gateway in this process on
//! loopback ports, driven over real HTTP by authlib (a Python OAuth2 client nobody here wrote,
//! `tests/python/authlib_client.py`) and by reqwest for every error path, checked by status,
//! headers and JSON body.

use std::sync::Arc;
use std::time::Duration;
use test_support::harness;

use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::free_port;
use test_support::harness::gateway::{quick_retries, upstream_at};
use test_support::harness::{
    RedisServer, ServerOptions, ServingStatus, TestClient, TestGateway, TestServer, issue,
    register_client, warm_up,
};
use token_client::{ClientConfig, TokenClient};
use token_core::ManualClock;
use token_gateway::Upstream;
use token_proto::v1 as pb;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::{Channel, Endpoint};

/// What every test client may be granted.
const SCOPES: &[&str] = &["read", "write"];

/// One Redis, one token server, one gateway in front of it, and the clients to drive them.
struct Env {
    gateway: TestGateway,
    server: TestServer,
    /// Direct gRPC, for what the gateway does not do (issuing) and for checking state.
    tokens: TokenServiceClient<Channel>,
    http: reqwest::Client,
    /// Declared last so it is dropped last.
    redis: RedisServer,
}

impl Env {
    async fn start() -> Self {
        Self::start_with(ServerOptions::default(), quick_retries()).await
    }

    async fn start_with(options: ServerOptions, sdk: ClientConfig) -> Self {
        let redis = RedisServer::start();
        let server = TestServer::start(&redis.url(), options).await;
        let gateway = TestGateway::in_front_of(&server, sdk).await;
        let tokens = server.tokens().await;
        Self {
            gateway,
            server,
            tokens,
            http: reqwest::Client::new(),
            redis,
        }
    }

    async fn client(&self, client_type: &str) -> TestClient {
        register_client(&mut self.server.registry().await, client_type, "", SCOPES).await
    }

    async fn issue(&mut self, client: &TestClient) -> pb::TokenPair {
        issue(&mut self.tokens, client, "alice").await
    }

    fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    /// POSTs `params` form encoded (in this order, repeats kept) with `auth`.
    async fn post(&self, path: &str, auth: Auth<'_>, params: &[(&str, &str)]) -> Reply {
        post(&self.http, &self.url(path), auth, params).await
    }

    async fn refresh(&self, client: &TestClient, refresh_token: &str) -> Reply {
        refresh_at(&self.http, &self.url("/oauth/token"), client, refresh_token).await
    }

    async fn introspect(&self, caller: &TestClient, token: &str) -> Value {
        let reply = self
            .post(
                "/oauth/introspect",
                Auth::Basic(caller),
                &[("token", token)],
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()
    }
}

/// How a request authenticates its client.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// HTTP Basic (client_secret_basic).
    Basic(&'a TestClient),
    /// `client_id` and `client_secret` in the body (client_secret_post).
    Post(&'a TestClient),
}

/// A refused request: what it is, how it authenticates, its parameters, and the expected
/// status and OAuth error.
type Case<'a> = (&'a str, Auth<'a>, Vec<(&'a str, &'a str)>, u16, &'a str);

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {:?}", self.body))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header: {self:?}"))
            .to_str()
            .expect("visible ASCII")
    }
}

async fn post(http: &reqwest::Client, url: &str, auth: Auth<'_>, params: &[(&str, &str)]) -> Reply {
    let mut request = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(auth, params));
    if let Auth::Basic(client) = auth {
        request = request.basic_auth(&client.client_id, Some(&client.client_secret));
    }
    send(request).await
}

/// `params` form encoded, in this order and with repeats kept, after the client's credentials
/// when `auth` puts them in the body.
fn form_body(auth: Auth<'_>, params: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    if let Auth::Post(client) = auth {
        form.append_pair("client_id", &client.client_id);
        form.append_pair("client_secret", &client.client_secret);
    }
    for (name, value) in params {
        form.append_pair(name, value);
    }
    form.finish()
}

/// A refresh grant for `client` by HTTP Basic.
async fn refresh_at(http: &reqwest::Client, url: &str, client: &TestClient, rt: &str) -> Reply {
    let params = [("grant_type", "refresh_token"), ("refresh_token", rt)];
    post(http, url, Auth::Basic(client), &params).await
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the gateway answers");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a readable body"),
    }
}

/// A JSON response that must not be cached (RFC 6749 section 5.1).
#[track_caller]
fn assert_no_store_json(reply: &Reply) {
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(reply.header(header::PRAGMA), "no-cache");
}

/// Exactly this OAuth error: status, the JSON body with `error` and an `error_description`
/// (and nothing else), and the headers its status requires.
#[track_caller]
fn assert_oauth_error(case: &str, reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status, status, "{case}: {reply:?}");
    assert_no_store_json(reply);
    let body = reply.json();
    assert_eq!(body["error"], error, "{case}: {reply:?}");
    let description = body["error_description"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no error_description: {reply:?}"));
    assert!(
        description
            .bytes()
            .all(|b| (0x20..=0x7E).contains(&b) && b != b'"' && b != b'\\'),
        "{case}: error_description outside RFC 6749's alphabet: {description:?}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{case}: {body}");
    match status {
        401 => assert_eq!(
            reply.header(header::WWW_AUTHENTICATE),
            r#"Basic realm="token-gateway""#,
            "{case}"
        ),
        429 | 503 => {
            let seconds: u64 = reply
                .header(header::RETRY_AFTER)
                .parse()
                .unwrap_or_else(|_| panic!("{case}: Retry-After is not delta-seconds"));
            assert!(seconds >= 1, "{case}: {seconds}");
        }
        _ => {}
    }
}

/// No secret or token the request carried comes back in the body.
#[track_caller]
fn assert_no_echo(case: &str, reply: &Reply, sent: &[&str]) {
    for value in sent.iter().filter(|v| !v.is_empty()) {
        assert!(
            !reply.body.contains(value),
            "{case}: echoes {value:?}: {reply:?}"
        );
    }
}

/// Runs `tests/python/authlib_client.py` with `request` and returns what it printed.
async fn authlib(request: Value) -> Value {
    let limit = Duration::from_secs(300);
    let stdout =
        harness::run_python("authlib_client.py", request.to_string().as_bytes(), limit).await;
    serde_json::from_slice(&stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(&stdout)))
}

/// An authlib request for `client` with `auth` (`client_secret_basic`, `client_secret_post`).
fn authlib_request(env: &Env, op: &str, client: &TestClient, auth: &str) -> Value {
    json!({
        "op": op,
        "gateway": env.url(""),
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "auth": auth,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_refreshes_introspects_and_revokes_with_both_client_auth_methods() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let resource_server = env.client("confidential").await;
    let first = env.issue(&client).await;

    // client_secret_basic.
    let mut request = authlib_request(&env, "refresh", &client, "client_secret_basic");
    request["refresh_token"] = first.refresh_token.clone().into();
    let second = authlib(request).await;
    let second = &second["token"];
    assert_eq!(second["token_type"], "Bearer", "{second}");
    assert_eq!(second["scope"], "read write");
    assert!(second["expires_in"].as_i64().unwrap() > 0);
    assert_ne!(second["refresh_token"], first.refresh_token.as_str());
    assert_ne!(second["access_token"], first.access_token.as_str());

    // client_secret_post, with a narrower scope for the new access token.
    let mut request = authlib_request(&env, "refresh", &client, "client_secret_post");
    request["refresh_token"] = second["refresh_token"].clone();
    request["scope"] = "read".into();
    let third = authlib(request).await;
    let third = &third["token"];
    assert_eq!(third["scope"], "read", "{third}");

    // Introspection by a resource server, both ways; the token is described as RFC 7662 says.
    for auth in ["client_secret_basic", "client_secret_post"] {
        let mut request = authlib_request(&env, "introspect", &resource_server, auth);
        request["token"] = third["access_token"].clone();
        let reply = authlib(request).await;
        assert_eq!(reply["status"], 200, "{auth}: {reply}");
        let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["active"], true, "{auth}: {body}");
        assert_eq!(body["client_id"], client.client_id.as_str());
        assert_eq!(body["sub"], "alice");
        assert_eq!(body["scope"], "read");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["family_id"], first.family_id.as_str());
        assert!(body["exp"].as_i64().unwrap() > body["iat"].as_i64().unwrap());
    }

    // Revocation (client_secret_post here; authlib uses the same method for both endpoints).
    let mut request = authlib_request(&env, "revoke", &client, "client_secret_post");
    request["token"] = third["refresh_token"].clone();
    request["token_type_hint"] = "refresh_token".into();
    let reply = authlib(request).await;
    assert_eq!(reply["status"], 200, "{reply}");
    let mut request = authlib_request(&env, "introspect", &resource_server, "client_secret_basic");
    request["token"] = third["access_token"].clone();
    let reply = authlib(request).await;
    assert_eq!(reply["body"], r#"{"active":false}"#, "{reply}");

    // A revoked family refuses to refresh, which authlib raises as the OAuth error.
    let mut request = authlib_request(&env, "refresh", &client, "client_secret_basic");
    request["refresh_token"] = third["refresh_token"].clone();
    let refused = authlib(request).await;
    assert_eq!(refused["error"], "invalid_grant", "{refused}");
    env.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_public_client_refreshes_with_its_id_in_the_body() {
    let mut env = Env::start().await;
    let client = env.client("public").await;
    let first = env.issue(&client).await;
    let mut request = authlib_request(&env, "refresh", &client, "none");
    request["refresh_token"] = first.refresh_token.clone().into();
    let next = authlib(request).await;
    assert_eq!(next["token"]["token_type"], "Bearer", "{next}");
    assert_ne!(next["token"]["refresh_token"], first.refresh_token.as_str());
    env.gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_authlib_threads_refreshing_one_token_all_get_the_same_new_pair() {
    const THREADS: usize = 32;
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let first = env.issue(&client).await;

    let mut request = authlib_request(&env, "parallel_refresh", &client, "client_secret_basic");
    request["refresh_token"] = first.refresh_token.clone().into();
    request["threads"] = THREADS.into();
    let results = authlib(request).await;
    let results = results["results"].as_array().expect("a result per thread");
    assert_eq!(results.len(), THREADS);
    let winner = &results[0]["token"];
    assert!(winner.is_object(), "thread 0 failed: {}", results[0]);
    for (i, result) in results.iter().enumerate() {
        let token = &result["token"];
        assert!(token.is_object(), "thread {i} failed: {result}");
        assert_eq!(token["access_token"], winner["access_token"], "thread {i}");
        assert_eq!(
            token["refresh_token"], winner["refresh_token"],
            "thread {i}"
        );
    }
    assert_ne!(winner["refresh_token"], first.refresh_token.as_str());

    // One rotation happened: the family is at generation 2, and the shared pair rotates on.
    let family = harness::stored_family(&env.server.service, &first.refresh_token)
        .await
        .expect("the family exists");
    assert_eq!(family.generation, 2, "exactly one winner");
    let next = env
        .refresh(&client, winner["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(next.status, 200, "{next:?}");
    env.gateway.stop().await;
}

#[tokio::test]
async fn a_refresh_answers_the_rfc_token_response_and_replays_inside_grace() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let first = env.issue(&client).await;

    let reply = env.refresh(&client, &first.refresh_token).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_no_store_json(&reply);
    let body = reply.json();
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ],
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write");

    // The same refresh again (a client whose response was lost): the same pair, not a fork.
    let again = env.refresh(&client, &first.refresh_token).await.json();
    assert_eq!(
        (&again["access_token"], &again["refresh_token"]),
        (&body["access_token"], &body["refresh_token"])
    );

    // The narrowed scope goes to the access token; the client form works the same.
    let narrowed = env
        .post(
            "/oauth/token",
            Auth::Post(&client),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", body["refresh_token"].as_str().unwrap()),
                ("scope", "write"),
            ],
        )
        .await;
    assert_eq!(narrowed.status, 200, "{narrowed:?}");
    assert_eq!(narrowed.json()["scope"], "write");
    env.gateway.stop().await;
}

#[tokio::test]
async fn every_malformed_token_request_is_refused_as_the_rfc_says() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let rt = pair.refresh_token.as_str();
    let grant = ("grant_type", "refresh_token");

    // Not form encoded.
    let reply = send(
        env.http
            .post(env.url("/oauth/token"))
            .basic_auth(&client.client_id, Some(&client.client_secret))
            .json(&json!({"grant_type": "refresh_token", "refresh_token": rt})),
    )
    .await;
    assert_oauth_error("a JSON body", &reply, 400, "invalid_request");
    assert_no_echo("a JSON body", &reply, &[rt, &client.client_secret]);
    let reply = send(
        env.http
            .post(env.url("/oauth/token"))
            .basic_auth(&client.client_id, Some(&client.client_secret)),
    )
    .await;
    assert_oauth_error("no body at all", &reply, 400, "invalid_request");

    let cases: Vec<Case> = vec![
        (
            "no grant_type",
            Auth::Basic(&client),
            vec![("refresh_token", rt)],
            400,
            "invalid_request",
        ),
        (
            "grant_type twice",
            Auth::Basic(&client),
            vec![grant, grant, ("refresh_token", rt)],
            400,
            "invalid_request",
        ),
        (
            "refresh_token twice",
            Auth::Basic(&client),
            vec![grant, ("refresh_token", rt), ("refresh_token", rt)],
            400,
            "invalid_request",
        ),
        (
            "scope twice",
            Auth::Basic(&client),
            vec![
                grant,
                ("refresh_token", rt),
                ("scope", "read"),
                ("scope", "read"),
            ],
            400,
            "invalid_request",
        ),
        (
            "client_id twice",
            Auth::Post(&client),
            vec![
                grant,
                ("refresh_token", rt),
                ("client_id", &client.client_id),
            ],
            400,
            "invalid_request",
        ),
        (
            "no refresh_token",
            Auth::Basic(&client),
            vec![grant],
            400,
            "invalid_request",
        ),
        (
            "an empty refresh_token counts as none",
            Auth::Basic(&client),
            vec![grant, ("refresh_token", "")],
            400,
            "invalid_request",
        ),
        (
            "Basic and client_secret in the body",
            Auth::Basic(&client),
            vec![
                grant,
                ("refresh_token", rt),
                ("client_secret", &client.client_secret),
            ],
            400,
            "invalid_request",
        ),
        (
            "authorization_code",
            Auth::Basic(&client),
            vec![
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", "https://a"),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            "password",
            Auth::Basic(&client),
            vec![
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "pw"),
            ],
            400,
            "unsupported_grant_type",
        ),
        (
            "client_credentials",
            Auth::Basic(&client),
            vec![("grant_type", "client_credentials")],
            400,
            "unsupported_grant_type",
        ),
        (
            "no client authentication",
            Auth::None,
            vec![grant, ("refresh_token", rt)],
            401,
            "invalid_client",
        ),
        (
            "a garbled refresh token",
            Auth::Basic(&client),
            vec![grant, ("refresh_token", "rt1.garbage.garbage")],
            400,
            "invalid_grant",
        ),
        (
            "a malformed scope",
            Auth::Basic(&client),
            vec![grant, ("refresh_token", rt), ("scope", "read \"write\"")],
            400,
            "invalid_scope",
        ),
        (
            "a widened scope",
            Auth::Basic(&client),
            vec![grant, ("refresh_token", rt), ("scope", "admin")],
            400,
            "invalid_scope",
        ),
    ];
    for (case, auth, params, status, error) in cases {
        let reply = env.post("/oauth/token", auth, &params).await;
        assert_oauth_error(case, &reply, status, error);
        assert_no_echo(case, &reply, &[rt, &client.client_secret]);
    }

    // Unknown parameters are ignored, repeated or not; the token still rotates.
    let reply = env
        .post(
            "/oauth/token",
            Auth::Basic(&client),
            &[grant, ("refresh_token", rt), ("extra", "1"), ("extra", "2")],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    env.gateway.stop().await;
}

#[tokio::test]
async fn client_authentication_failures_are_401_with_a_basic_challenge() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let other = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let rt = pair.refresh_token.as_str();
    let wrong = TestClient {
        client_id: client.client_id.clone(),
        client_secret: "not-the-secret".to_owned(),
    };
    let unknown = TestClient {
        client_id: "no-such-client".to_owned(),
        client_secret: "whatever".to_owned(),
    };
    let grant = [("grant_type", "refresh_token"), ("refresh_token", rt)];
    for (case, auth) in [
        ("a wrong secret by Basic", Auth::Basic(&wrong)),
        ("a wrong secret in the body", Auth::Post(&wrong)),
        ("an unknown client", Auth::Basic(&unknown)),
    ] {
        let reply = env.post("/oauth/token", auth, &grant).await;
        assert_oauth_error(case, &reply, 401, "invalid_client");
        assert_no_echo(case, &reply, &[rt, "not-the-secret", "whatever"]);
    }
    for (case, authorization) in [
        ("a Bearer header", "Bearer abc"),
        ("Basic that is not base64", "Basic !!!"),
        ("Basic without a colon", "Basic bm9jb2xvbg=="),
    ] {
        let reply = send(
            env.http
                .post(env.url("/oauth/token"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, authorization)
                .body(format!("grant_type=refresh_token&refresh_token={rt}")),
        )
        .await;
        assert_oauth_error(case, &reply, 401, "invalid_client");
    }

    // Another client's token is not this client's grant.
    let reply = env.refresh(&other, rt).await;
    assert_oauth_error("another client's token", &reply, 400, "invalid_grant");

    // The family was untouched by all of it.
    let reply = env.refresh(&client, rt).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    env.gateway.stop().await;
}

#[tokio::test]
async fn repeated_wrong_secrets_are_throttled_with_429_and_retry_after() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let wrong = TestClient {
        client_id: client.client_id.clone(),
        client_secret: "not-the-secret".to_owned(),
    };
    // The token service allows a burst of failures, then throttles: look for the first 429.
    let mut throttled = None;
    for _ in 0..60 {
        let reply = env.refresh(&wrong, &pair.refresh_token).await;
        match reply.status {
            401 => continue,
            _ => {
                throttled = Some(reply);
                break;
            }
        }
    }
    let reply = throttled.expect("the token service throttles repeated failures");
    assert_oauth_error("throttled", &reply, 429, "temporarily_unavailable");
    // The right secret always passes.
    let reply = env.refresh(&client, &pair.refresh_token).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    env.gateway.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_is_invalid_grant_and_ends_the_family() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let first = env.issue(&client).await;
    let second = env.refresh(&client, &first.refresh_token).await.json();
    let third = env
        .refresh(&client, second["refresh_token"].as_str().unwrap())
        .await
        .json();
    // Two generations back: theft, whatever the grace period.
    let reply = env.refresh(&client, &first.refresh_token).await;
    assert_oauth_error("reuse", &reply, 400, "invalid_grant");
    let reply = env
        .refresh(&client, third["refresh_token"].as_str().unwrap())
        .await;
    assert_oauth_error(
        "after reuse the family is revoked",
        &reply,
        400,
        "invalid_grant",
    );
    env.gateway.stop().await;
}

#[tokio::test]
async fn revocation_follows_rfc_7009() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let other = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let others = env.issue(&other).await;

    // Unknown tokens and unknown hints are not errors.
    for (case, params) in [
        ("a garbage token", vec![("token", "garbage")]),
        (
            "an unknown hint",
            vec![("token", "garbage"), ("token_type_hint", "id_token")],
        ),
    ] {
        let reply = env
            .post("/oauth/revoke", Auth::Basic(&client), &params)
            .await;
        assert_eq!(reply.status, 200, "{case}: {reply:?}");
        assert_eq!(reply.body, "", "{case}");
    }

    let errors: Vec<Case> = vec![
        (
            "no token",
            Auth::Basic(&client),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "token twice",
            Auth::Basic(&client),
            vec![("token", &pair.access_token), ("token", &pair.access_token)],
            400,
            "invalid_request",
        ),
        (
            "no client",
            Auth::None,
            vec![("token", &pair.access_token)],
            401,
            "invalid_client",
        ),
        (
            "another client's token",
            Auth::Basic(&client),
            vec![("token", &others.refresh_token)],
            400,
            "invalid_grant",
        ),
    ];
    for (case, auth, params, status, error) in errors {
        let reply = env.post("/oauth/revoke", auth, &params).await;
        assert_oauth_error(case, &reply, status, error);
        assert_no_echo(case, &reply, &[&pair.access_token, &others.refresh_token]);
    }
    let reply = send(env.http.get(env.url("/oauth/revoke"))).await;
    assert_eq!(reply.status, 405, "{reply:?}");

    // Revoking the access token ends the whole family, refresh token included.
    let reply = env
        .post(
            "/oauth/revoke",
            Auth::Post(&client),
            &[
                ("token", &pair.access_token),
                ("token_type_hint", "access_token"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    assert_eq!(
        env.introspect(&other, &pair.refresh_token).await,
        json!({"active": false})
    );
    let reply = env.refresh(&client, &pair.refresh_token).await;
    assert_oauth_error("refresh after revoke", &reply, 400, "invalid_grant");
    // The other client's family is untouched.
    assert_eq!(
        env.introspect(&client, &others.access_token).await["active"],
        true
    );
    env.gateway.stop().await;
}

#[tokio::test]
async fn introspection_needs_an_authenticated_confidential_caller() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let resource_server = env.client("confidential").await;
    let public = env.client("public").await;
    let pair = env.issue(&client).await;

    let seen = env.introspect(&resource_server, &pair.refresh_token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["token_type"], "refresh_token");
    assert_eq!(seen["family_id"], pair.family_id.as_str());
    for garbage in ["garbage", "at1.x.y", "rt1.x.y"] {
        let reply = env
            .post(
                "/oauth/introspect",
                Auth::Basic(&resource_server),
                &[("token", garbage)],
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_no_store_json(&reply);
        assert_eq!(
            reply.body, r#"{"active":false}"#,
            "exactly that and nothing else"
        );
    }

    let wrong = TestClient {
        client_id: resource_server.client_id.clone(),
        client_secret: "not-the-secret".to_owned(),
    };
    let token = [("token", pair.access_token.as_str())];
    for (case, auth) in [
        ("no caller", Auth::None),
        ("a wrong secret", Auth::Basic(&wrong)),
        ("a public client", Auth::Post(&public)),
    ] {
        let reply = env.post("/oauth/introspect", auth, &token).await;
        assert_oauth_error(case, &reply, 401, "invalid_client");
        assert_no_echo(case, &reply, &[&pair.access_token, "alice"]);
    }
    let reply = env
        .post("/oauth/introspect", Auth::Basic(&resource_server), &[])
        .await;
    assert_oauth_error("no token", &reply, 400, "invalid_request");
    let reply = send(env.http.put(env.url("/oauth/introspect"))).await;
    assert_eq!(reply.status, 405, "{reply:?}");
    env.gateway.stop().await;
}

#[tokio::test]
async fn wrong_methods_paths_and_oversize_bodies() {
    let env = Env::start().await;
    for (method, path) in [
        (reqwest::Method::GET, "/oauth/token"),
        (reqwest::Method::PUT, "/oauth/token"),
        (reqwest::Method::DELETE, "/oauth/introspect"),
        (reqwest::Method::POST, "/healthz"),
    ] {
        let reply = send(env.http.request(method.clone(), env.url(path))).await;
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        assert!(reply.headers.contains_key(header::ALLOW), "{reply:?}");
    }
    let reply = send(env.http.post(env.url("/oauth/authorize"))).await;
    assert_eq!(reply.status, 404, "{reply:?}");

    let huge = "x".repeat(token_gateway::MAX_BODY_BYTES + 1);
    let reply = env
        .post(
            "/oauth/token",
            Auth::None,
            &[("grant_type", "refresh_token"), ("pad", &huge)],
        )
        .await;
    assert_oauth_error("an oversize body", &reply, 400, "invalid_request");
    env.gateway.stop().await;
}

#[tokio::test]
async fn healthz_follows_the_token_service_health() {
    let mut env = Env::start().await;
    env.server.wait_for_health(ServingStatus::Serving).await;
    let reply = send(env.http.get(env.url("/healthz"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json(), json!({"token_service": "SERVING"}));

    // Without Redis the token service reports NOT_SERVING, and so does the gateway.
    env.redis.kill();
    env.server.wait_for_health(ServingStatus::NotServing).await;
    let reply = send(env.http.get(env.url("/healthz"))).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json(), json!({"token_service": "NOT_SERVING"}));
    env.gateway.stop().await;
}

#[tokio::test]
async fn a_store_outage_is_503_with_retry_after() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;
    env.redis.kill();
    let reply = env.refresh(&client, &pair.refresh_token).await;
    assert_oauth_error(
        "refresh without Redis",
        &reply,
        503,
        "temporarily_unavailable",
    );
    assert_no_echo("refresh without Redis", &reply, &[&pair.refresh_token]);
    let reply = env
        .post(
            "/oauth/revoke",
            Auth::Basic(&client),
            &[("token", &pair.access_token)],
        )
        .await;
    // The client record is cached for a second; either way the store is needed and gone.
    assert_oauth_error(
        "revoke without Redis",
        &reply,
        503,
        "temporarily_unavailable",
    );
    env.gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_token_service_is_503_with_retry_after_from_every_endpoint() {
    // Nothing listens on this port. The gateway is given its own SDK client, as a test that
    // needs particular SDK settings would.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let channel = Endpoint::from_shared(endpoint).unwrap().connect_lazy();
    let sdk = TokenClient::from_channel(channel.clone(), quick_retries());
    let gateway = TestGateway::start(Upstream::new(sdk.clone(), channel)).await;
    let http = reqwest::Client::new();
    let client = TestClient {
        client_id: "web".to_owned(),
        client_secret: "secret".to_owned(),
    };

    let cases = [
        (
            "/oauth/token",
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt1.a.b"),
            ],
        ),
        ("/oauth/revoke", vec![("token", "rt1.a.b")]),
        ("/oauth/introspect", vec![("token", "rt1.a.b")]),
    ];
    for (path, params) in cases {
        let before = sdk.rpcs_sent();
        let reply = post(&http, &gateway.url(path), Auth::Basic(&client), &params).await;
        assert_oauth_error(path, &reply, 503, "temporarily_unavailable");
        assert_eq!(
            sdk.rpcs_sent() - before,
            u64::from(quick_retries().max_attempts),
            "{path}: the SDK retried before giving up"
        );
    }
    let reply = send(http.get(gateway.url("/healthz"))).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json(), json!({"token_service": "UNREACHABLE"}));
    gateway.stop().await;
}

/// A token server whose Redis traffic crosses `proxy`, with health pings rare enough not to
/// consume armed faults, and a gateway in front of it with `sdk` settings.
async fn behind_redis_proxy(
    redis: &RedisServer,
    sdk: ClientConfig,
) -> (FaultProxy, TestServer, TestGateway) {
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = TestServer::start(
        &format!("redis://{}", proxy.addr()),
        ServerOptions {
            clock: Arc::new(ManualClock::starting_now()),
            health_interval: Duration::from_secs(3600),
            redis_timeout: Duration::from_secs(30),
            ..ServerOptions::default()
        },
    )
    .await;
    let gateway = TestGateway::in_front_of(&server, sdk).await;
    (proxy, server, gateway)
}

#[tokio::test]
async fn a_refresh_whose_reply_was_lost_is_503_then_the_retry_gets_the_committed_pair() {
    let redis = RedisServer::start();
    // One attempt: the SDK may not hide the loss, so the gateway has to say something.
    let one_attempt = ClientConfig {
        max_attempts: 1,
        ..quick_retries()
    };
    let (proxy, server, gateway) = behind_redis_proxy(&redis, one_attempt).await;
    let client = register_client(&mut server.registry().await, "confidential", "", SCOPES).await;
    let first = issue(&mut server.tokens().await, &client, "alice").await;
    warm_up(&server, &client).await;
    let http = reqwest::Client::new();
    let url = gateway.url("/oauth/token");

    // The rotation commits in Redis and its reply is lost on the way back.
    proxy.arm(Fault::DropAfterForward, 1);
    let reply = refresh_at(&http, &url, &client, &first.refresh_token).await;
    assert_eq!(proxy.injected(Fault::DropAfterForward), 1);
    assert_oauth_error("the lost reply", &reply, 503, "temporarily_unavailable");
    let family = harness::stored_family(&server.service, &first.refresh_token)
        .await
        .unwrap();
    assert_eq!(
        family.generation, 2,
        "the rotation committed although the client saw 503"
    );

    // The client retries as 503 + Retry-After tells it to: it gets the pair that was issued,
    // every time, and that pair rotates on.
    let retried = refresh_at(&http, &url, &client, &first.refresh_token).await;
    assert_eq!(retried.status, 200, "{retried:?}");
    let again = refresh_at(&http, &url, &client, &first.refresh_token).await;
    assert_eq!(retried.json(), again.json(), "byte-identical replays");
    let rotated = retried.json()["refresh_token"].as_str().unwrap().to_owned();
    let next = refresh_at(&http, &url, &client, &rotated).await;
    assert_eq!(next.status, 200, "{next:?}");
    gateway.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_refresh_whose_reply_was_lost_is_retried_by_the_sdk_and_answered_200() {
    let redis = RedisServer::start();
    let (proxy, server, gateway) = behind_redis_proxy(&redis, quick_retries()).await;
    let client = register_client(&mut server.registry().await, "confidential", "", SCOPES).await;
    let first = issue(&mut server.tokens().await, &client, "alice").await;
    warm_up(&server, &client).await;

    proxy.arm(Fault::DropAfterForward, 1);
    let http = reqwest::Client::new();
    let url = gateway.url("/oauth/token");
    let reply = refresh_at(&http, &url, &client, &first.refresh_token).await;
    assert_eq!(proxy.injected(Fault::DropAfterForward), 1);
    assert_eq!(
        reply.status, 200,
        "the retry inside grace got the pair: {reply:?}"
    );
    let family = harness::stored_family(&server.service, &first.refresh_token)
        .await
        .unwrap();
    assert_eq!(family.generation, 2, "one rotation, no fork");
    gateway.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_completes() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let client = register_client(&mut server.registry().await, "confidential", "", SCOPES).await;
    let first = issue(&mut server.tokens().await, &client, "alice").await;
    // Calls from the gateway to the token service cross a proxy that can hold them.
    let proxy = FaultProxy::start(server.addr).await;
    let mut gateway = TestGateway::start(upstream_at(
        &format!("http://{}", proxy.addr()),
        quick_retries(),
    ))
    .await;
    let http = reqwest::Client::new();
    // Opens the gateway's connection to the token service, so the next chunk is the refresh.
    let reply = send(http.get(gateway.url("/healthz"))).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    proxy.arm(Fault::Stall, 1);
    let in_flight = tokio::spawn({
        let url = gateway.url("/oauth/token");
        let client = client.clone();
        let rt = first.refresh_token.clone();
        let http = http.clone();
        async move { refresh_at(&http, &url, &client, &rt).await }
    });
    proxy.wait_for_injected(Fault::Stall, 1).await;

    // The refresh is held inside the gateway. Shut down, and wait until new connections are
    // refused: the gateway is draining.
    gateway.begin_shutdown();
    wait_until_refused(gateway.addr).await;

    // Released (the held attempt is dropped, the SDK retries), the request completes.
    proxy.clear();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    gateway.stopped().await;
    server.stop().await;
}

/// Readiness probe for "stopped accepting": connects until the port refuses. Bounded.
async fn wait_until_refused(addr: std::net::SocketAddr) {
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} still accepts connections");
}
