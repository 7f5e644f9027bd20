//! Deadlines and retries against a real token server over a real redis-server: what is
//! retried (UNAVAILABLE during a Redis outage, a server that never answers, a refused
//! connection) and what is not (UNAUTHENTICATED, INVALID_ARGUMENT).

mod common;

use std::time::Duration;
use test_support::harness;

use common::{fixture, issue_request, refresh_request, wait_for_rpcs};
use test_support::harness::{RedisServer, ServerOptions, TestServer};
use token_client::{ClientConfig, TokenClient, pb};
use tokio::net::TcpListener;
use tonic::Code;

/// Redis that survives SIGKILL with everything it acknowledged: the outage loses no family.
const DURABLE: &[&str] = &[
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--save",
    "",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_a_redis_outage_succeeds_once_redis_is_back() -> anyhow::Result<()> {
    let mut redis = RedisServer::start_with(DURABLE);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            redis_timeout: Duration::from_millis(500),
            ..ServerOptions::default()
        },
    )
    .await;
    let client =
        harness::register_client(&mut server.registry().await, "public", "", &["read"]).await;
    // Enough attempts to outlast a Redis restart by far; each waits at least the server's
    // RetryInfo delay, so this bounds the test, it does not time it.
    let sdk = TokenClient::connect(
        &server.endpoint(),
        ClientConfig {
            max_attempts: 300,
            ..ClientConfig::default()
        },
    )?;
    let pair = sdk.issue_token_pair(issue_request(&client)).await?;

    redis.kill();
    let before = sdk.rpcs_sent();
    let refresh =
        tokio::spawn(sdk.refresh_token_pair(refresh_request(&client, &pair.refresh_token)));
    // A second attempt is only ever sent after the first one failed: the SDK has seen the
    // outage. Only then does Redis come back, from another task.
    wait_for_rpcs(&sdk, before + 2, "a retry after a failed attempt").await;
    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart(DURABLE);
        redis
    })
    .await?;

    let next = refresh
        .await?
        .expect("the refresh succeeds once Redis is back");
    let attempts = sdk.rpcs_sent() - before;
    assert!(attempts > 1, "attempts = {attempts}");
    assert_eq!(next.family_id, pair.family_id);
    assert_ne!(next.refresh_token, pair.refresh_token, "rotated");
    // The chain is intact: the new pair is live and rotates further.
    let introspected = sdk
        .introspect_token(pb::IntrospectTokenRequest {
            token: next.access_token.clone(),
            ..Default::default()
        })
        .await?;
    assert!(introspected.active);
    let after = sdk
        .refresh_token_pair(refresh_request(&client, &next.refresh_token))
        .await?;
    assert_eq!(after.family_id, pair.family_id);
    assert!(!after.replayed);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_is_not_retried() -> anyhow::Result<()> {
    let fx = fixture(ServerOptions::default()).await;
    let client = fx.client("confidential", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let pair = sdk.issue_token_pair(issue_request(&client)).await?;

    let before = sdk.rpcs_sent();
    let mut request = refresh_request(&client, &pair.refresh_token);
    request.client_secret = "not-the-secret".to_owned();
    let err = sdk.refresh_token_pair(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.reason(), Some("INVALID_CLIENT"));
    assert_eq!(err.oauth_error(), Some("invalid_client"));
    assert_eq!(err.attempts(), 1);
    assert_eq!(sdk.rpcs_sent() - before, 1);

    // The same through a call that is not single-flight.
    let before = sdk.rpcs_sent();
    let err = sdk
        .revoke_token(pb::RevokeTokenRequest {
            client_id: client.client_id.clone(),
            client_secret: "not-the-secret".to_owned(),
            token: pair.access_token.clone(),
            token_type_hint: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!((err.attempts(), sdk.rpcs_sent() - before), (1, 1));
    fx.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn invalid_arguments_are_not_retried() -> anyhow::Result<()> {
    let fx = fixture(ServerOptions::default()).await;
    let client = fx.client("public", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let pair = sdk
        .issue_token_pair(pb::IssueTokenPairRequest {
            scopes: vec!["read".to_owned()],
            ..issue_request(&client)
        })
        .await?;

    let before = sdk.rpcs_sent();
    let err = sdk
        .refresh_token_pair(refresh_request(&client, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.reason(), Some("MALFORMED_REQUEST"));
    assert_eq!((err.attempts(), sdk.rpcs_sent() - before), (1, 1));

    // Widening the family's scopes on refresh.
    let before = sdk.rpcs_sent();
    let mut widen = refresh_request(&client, &pair.refresh_token);
    widen.scopes = vec!["write".to_owned()];
    let err = sdk.refresh_token_pair(widen).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.reason(), Some("INVALID_SCOPE"));
    assert_eq!((err.attempts(), sdk.rpcs_sent() - before), (1, 1));

    let before = sdk.rpcs_sent();
    let err = sdk
        .issue_token_pair(pb::IssueTokenPairRequest {
            subject: String::new(),
            ..issue_request(&client)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!((err.attempts(), sdk.rpcs_sent() - before), (1, 1));
    fx.server.stop().await;
    Ok(())
}

/// A TCP server that accepts connections and never sends a byte (nor closes them).
async fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test]
async fn a_server_that_never_answers_costs_max_attempts_deadlines() -> anyhow::Result<()> {
    let addr = silent_server().await;
    let config = ClientConfig {
        deadline: Duration::from_millis(100),
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        max_attempts: 3,
    };
    let sdk = TokenClient::connect(&format!("http://{addr}"), config)?;

    let err = sdk
        .refresh_token_pair(pb::RefreshTokenPairRequest {
            client_id: "c".to_owned(),
            client_secret: String::new(),
            refresh_token: "rt1.x.y".to_owned(),
            scopes: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{err}"
    );
    assert_eq!(err.attempts(), 3);
    assert_eq!(sdk.rpcs_sent(), 3);
    assert_eq!(err.reason(), None, "made up by the client: no ErrorInfo");

    // Every call has the deadline, not only refreshes.
    let err = sdk
        .introspect_token(pb::IntrospectTokenRequest {
            token: "at1.x.y".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(err.attempts(), 3);
    assert_eq!(sdk.rpcs_sent(), 6);
    Ok(())
}

#[tokio::test]
async fn a_refused_connection_is_a_retried_transport_failure() -> anyhow::Result<()> {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = ClientConfig {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        max_attempts: 4,
        ..ClientConfig::default()
    };
    let sdk = TokenClient::connect(&format!("127.0.0.1:{port}"), config)?;
    let err = sdk
        .introspect_token(pb::IntrospectTokenRequest {
            token: "at1.x.y".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!((err.attempts(), sdk.rpcs_sent()), (4, 4));
    Ok(())
}
