//! Edge cases other OAuth2 servers got wrong, each closed as a kind (issue 14):
//! - a request message tonic cannot decode is INVALID_ARGUMENT / MALFORMED_REQUEST naming the
//!   field, on every service, never INTERNAL;
//! - `RevokeToken` ignores a `token_type_hint` it does not know (RFC 7009 section 2.1);
//! - a caller's deadline that passes inside the server is DEADLINE_EXCEEDED, never CANCELLED.
//!
//! The raw calls go over a plain HTTP/2 client, not tonic's: tonic's channel enforces the
//! `grpc-timeout` it sends (and would answer for the server), and encodes only valid messages.

use std::net::SocketAddr;
use std::time::Duration;
use test_support::harness;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::{RedisServer, ServerOptions, TestServer, issue, refresh_request};
use token_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;

/// One unary gRPC call with `message` as the raw protobuf bytes; the status it ends with.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    message: &[u8],
    timeout: Option<&str>,
) -> tonic::Status {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(frame))).unwrap())
        .await
        .expect("the server answers");
    let (parts, body) = response.into_parts();
    if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
        return status; // trailers-only
    }
    let trailers = body
        .collect()
        .await
        .unwrap()
        .trailers()
        .cloned()
        .unwrap_or_default();
    tonic::Status::from_header_map(&trailers).expect("a grpc-status")
}

#[tokio::test]
async fn undecodable_messages_are_malformed_requests_on_every_service() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    // (path, message bytes, the field the answer names). 0xFF is never UTF-8.
    #[rustfmt::skip]
    let cases: [(&str, &[u8], &str); 10] = [
        ("/tokens.v1.TokenService/IntrospectToken",  &[0x0a, 0x01, 0xff],       "token"),
        ("/tokens.v1.TokenService/RefreshTokenPair", &[0x0a, 0x01, 0xff],       "client_id"),
        ("/tokens.v1.TokenService/RefreshTokenPair", &[0x1a, 0x01, 0xff],       "refresh_token"),
        ("/tokens.v1.TokenService/RevokeToken",      &[0x1a, 0x02, 0xff, 0xfe], "token"),
        ("/tokens.v1.TokenService/RevokeToken",      &[0x22, 0x01, 0xff],       "token_type_hint"),
        ("/tokens.v1.TokenService/IssueTokenPair",   &[0x1a, 0x01, 0xff],       "scopes"),
        // A length past the end of the message, in field 1.
        ("/tokens.v1.TokenService/IssueTokenPair",   &[0x0a, 0x05, 0x61],       "client_id"),
        // Wire type 7 does not exist: no field can be named.
        ("/tokens.v1.TokenService/IssueTokenPair",   &[0x0f],                   "request"),
        ("/tokens.v1.ClientRegistry/CreateClient",   &[0x12, 0x01, 0xff],       "name"),
        ("/grpc.health.v1.Health/Check",             &[0x0a, 0x01, 0xff],       "service"),
    ];
    for (path, message, field) in cases {
        let case = format!("{path} {message:02x?}");
        let status = raw_call(server.addr, path, message, None).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "MALFORMED_REQUEST", "{case}");
        assert_eq!(info.metadata["oauth_error"], "invalid_request", "{case}");
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations;
        assert_eq!(violations.len(), 1, "{case}");
        assert_eq!(violations[0].field, field, "{case}");
        assert!(
            violations[0].description.starts_with("does not decode"),
            "{case}"
        );
    }
    // Control: a well-formed message to the same path is answered by the handler.
    let status = raw_call(
        server.addr,
        "/tokens.v1.TokenService/IntrospectToken",
        &[0x0a, 0x01, b'x'],
        None,
    )
    .await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
}

#[tokio::test]
async fn revocation_ignores_a_hint_it_does_not_know() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let mut registry = server.registry().await;
    let mut tokens = server.tokens().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let hints = [
        "abc",
        "ACCESS_TOKEN",
        "urn:ietf:params:oauth:token-type:id_token",
        "id_token",
        "access_token",
        "refresh_token",
        "",
    ];
    for hint in hints {
        for access in [false, true] {
            let pair = issue(&mut tokens, &client, "alice").await;
            let token = if access {
                &pair.access_token
            } else {
                &pair.refresh_token
            };
            tokens
                .revoke_token(pb::RevokeTokenRequest {
                    client_id: client.client_id.clone(),
                    client_secret: client.client_secret.clone(),
                    token: token.clone(),
                    token_type_hint: hint.to_owned(),
                })
                .await
                .unwrap_or_else(|s| panic!("hint {hint:?}: {s:?}"));
            let refused = tokens
                .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
                .await
                .expect_err("the family is revoked");
            assert_eq!(
                refused
                    .get_details_error_info()
                    .map(|i| i.reason)
                    .as_deref(),
                Some("TOKEN_REVOKED"),
                "hint {hint:?}, access token {access}"
            );
        }
    }
}

#[tokio::test]
async fn a_deadline_that_passes_in_the_server_is_deadline_exceeded() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = TestServer::start(
        &format!("redis://{}", proxy.addr()),
        ServerOptions::default(),
    )
    .await;
    let mut registry = server.registry().await;
    let mut tokens = server.tokens().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let pair = issue(&mut tokens, &client, "alice").await;
    let request = {
        use prost::Message as _;
        refresh_request(&client, &pair.refresh_token).encode_to_vec()
    };
    // Redis goes silent: every call waits far past the caller's deadline.
    proxy.set_stall_for(Duration::from_secs(5));
    proxy.set_probability(Fault::Stall, 1.0);
    for timeout in ["1m", "20m", "50m"] {
        for _ in 0..5 {
            let status = raw_call(
                server.addr,
                "/tokens.v1.TokenService/RefreshTokenPair",
                &request,
                Some(timeout),
            )
            .await;
            assert_eq!(
                status.code(),
                Code::DeadlineExceeded,
                "grpc-timeout {timeout}: {status:?}"
            );
        }
    }
    proxy.set_probability(Fault::Stall, 0.0);
}

/// A grace replay re-delivers the pair that was issued, byte for byte, whatever scope it asks
/// for: it never mints an access token the original answer did not hold (over gRPC and
/// through the HTTP gateway).
#[tokio::test]
async fn a_replay_re_delivers_the_issued_pair_whatever_scope_it_asks_for() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let gateway =
        harness::gateway::TestGateway::in_front_of(&server, harness::gateway::quick_retries())
            .await;
    let mut registry = server.registry().await;
    let mut tokens = server.tokens().await;
    let client = harness::register_client(
        &mut registry,
        "confidential",
        "revoke-family",
        &["read", "write"],
    )
    .await;
    let refresh = |token: &str, scopes: &[&str]| pb::RefreshTokenPairRequest {
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..refresh_request(&client, token)
    };
    let http = reqwest::Client::new();
    // (the scope the replay asks for, over the gateway or over gRPC)
    let replays: [(&[&str], bool); 6] = [
        (&["write"], false),
        (&[], false),
        (&["read", "write"], false),
        (&["write"], true),
        (&[], true),
        (&["read"], true),
    ];
    for (asked, over_http) in replays {
        let case = format!("replay asking for {asked:?}, over HTTP: {over_http}");
        let first = issue(&mut tokens, &client, "alice").await;
        let narrowed = tokens
            .refresh_token_pair(refresh(&first.refresh_token, &["read"]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(narrowed.scopes, ["read"]);
        let (access_token, refresh_token, scopes, replayed) = if over_http {
            let mut form = vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", first.refresh_token.clone()),
            ];
            if !asked.is_empty() {
                form.push(("scope", asked.join(" ")));
            }
            let response = http
                .post(gateway.url("/oauth/token"))
                .basic_auth(&client.client_id, Some(&client.client_secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{case}");
            let body: serde_json::Value = response.json().await.unwrap();
            let text = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
            let scopes: Vec<String> = text("scope").split(' ').map(str::to_owned).collect();
            (text("access_token"), text("refresh_token"), scopes, None)
        } else {
            let pair = tokens
                .refresh_token_pair(refresh(&first.refresh_token, asked))
                .await
                .unwrap_or_else(|s| panic!("{case}: {s:?}"))
                .into_inner();
            (
                pair.access_token,
                pair.refresh_token,
                pair.scopes,
                Some(pair.replayed),
            )
        };
        assert_eq!(
            access_token, narrowed.access_token,
            "{case}: the issued access token"
        );
        assert_eq!(refresh_token, narrowed.refresh_token, "{case}");
        assert_eq!(scopes, ["read"], "{case}");
        assert_ne!(replayed, Some(false), "{case}: marked as a replay");
        let seen = harness::introspect(&mut tokens, &access_token).await;
        assert_eq!(
            (seen.active, seen.scopes),
            (true, vec!["read".to_owned()]),
            "{case}"
        );
    }
}
