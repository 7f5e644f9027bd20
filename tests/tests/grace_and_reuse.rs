//! Grace replays, reuse detection under both policies, scope narrowing and expiry, over real
//! gRPC with a manual clock so that "after the grace period" needs no waiting.

use std::sync::Arc;
use std::time::Duration;

use test_support::harness::{
    RedisServer, ServerOptions, TestClient, TestServer, introspect, issue, reason, refresh_request,
    register_client,
};
use token_core::{Lifetimes, ManualClock};
use token_proto::v1 as pb;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

const GRACE: Duration = Duration::from_secs(60);

struct Fixture {
    _redis: RedisServer,
    server: TestServer,
    clock: ManualClock,
    tokens: TokenServiceClient<Channel>,
}

async fn fixture(grace: Duration) -> Fixture {
    let redis = RedisServer::start();
    let clock = ManualClock::starting_now();
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            clock: Arc::new(clock.clone()),
            lifetimes: Lifetimes {
                grace,
                access_ttl: Duration::from_secs(15 * 60),
                refresh_idle_ttl: Duration::from_secs(24 * 3600),
                refresh_absolute_ttl: Duration::from_secs(7 * 24 * 3600),
            },
            ..ServerOptions::default()
        },
    )
    .await;
    let tokens = server.tokens().await;
    Fixture {
        _redis: redis,
        server,
        clock,
        tokens,
    }
}

impl Fixture {
    async fn client(&self, policy: &str, scopes: &[&str]) -> TestClient {
        register_client(
            &mut self.server.registry().await,
            "confidential",
            policy,
            scopes,
        )
        .await
    }

    async fn refresh(
        &mut self,
        client: &TestClient,
        token: &str,
    ) -> Result<pb::TokenPair, tonic::Status> {
        self.tokens
            .refresh_token_pair(refresh_request(client, token))
            .await
            .map(|r| r.into_inner())
    }

    async fn active(&mut self, token: &str) -> bool {
        introspect(&mut self.tokens, token).await.active
    }
}

#[tokio::test]
async fn a_retry_inside_grace_gets_the_identical_pair() {
    let mut f = fixture(GRACE).await;
    let client = f.client("revoke-family", &["read"]).await;
    let first = issue(&mut f.tokens, &client, "alice").await;
    let winner = f.refresh(&client, &first.refresh_token).await.unwrap();
    assert!(!winner.replayed);

    // The response was "lost"; the client retries with the old token at the very end of grace.
    f.clock.advance(GRACE);
    let replay = f.refresh(&client, &first.refresh_token).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.refresh_token, winner.refresh_token);
    assert_eq!(replay.access_token, winner.access_token);
    assert_eq!(replay.family_id, winner.family_id);

    // The chain did not fork: the winner's token rotates normally.
    let next = f.refresh(&client, &winner.refresh_token).await.unwrap();
    assert!(!next.replayed);
}

#[tokio::test]
async fn reuse_after_grace_revokes_the_family_and_its_access_tokens() {
    let mut f = fixture(GRACE).await;
    let client = f.client("revoke-family", &["read"]).await;
    let first = issue(&mut f.tokens, &client, "alice").await;
    let current = f.refresh(&client, &first.refresh_token).await.unwrap();
    assert!(f.active(&current.access_token).await);
    assert!(f.active(&current.refresh_token).await);

    f.clock.advance(GRACE + Duration::from_millis(1));
    let err = f.refresh(&client, &first.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REUSED");
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.metadata["family_revoked"], "true");

    // Everything of the family is dead at once.
    let err = f
        .refresh(&client, &current.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REVOKED");
    assert!(!f.active(&current.access_token).await);
    assert!(!f.active(&current.refresh_token).await);
    assert!(!f.active(&first.access_token).await);
}

#[tokio::test]
async fn reject_only_refuses_the_stale_token_and_keeps_the_family() {
    let mut f = fixture(GRACE).await;
    let client = f.client("reject-only", &["read"]).await;
    let first = issue(&mut f.tokens, &client, "alice").await;
    let current = f.refresh(&client, &first.refresh_token).await.unwrap();

    f.clock.advance(GRACE + Duration::from_millis(1));
    let err = f.refresh(&client, &first.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REUSED");
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.metadata["family_revoked"], "false");

    assert!(f.active(&current.access_token).await);
    let next = f.refresh(&client, &current.refresh_token).await.unwrap();
    assert!(!next.replayed);
}

#[tokio::test]
async fn a_replay_window_closes_once_the_successor_is_used() {
    let mut f = fixture(GRACE).await;
    let client = f.client("revoke-family", &["read"]).await;
    let first = issue(&mut f.tokens, &client, "alice").await;
    let second = f.refresh(&client, &first.refresh_token).await.unwrap();
    let _third = f.refresh(&client, &second.refresh_token).await.unwrap();
    // Still inside the grace period, but `first` is no longer the immediate predecessor.
    let err = f.refresh(&client, &first.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REUSED");
}

#[tokio::test]
async fn zero_grace_turns_replays_off() {
    let mut f = fixture(Duration::ZERO).await;
    let client = f.client("reject-only", &["read"]).await;
    let first = issue(&mut f.tokens, &client, "alice").await;
    f.refresh(&client, &first.refresh_token).await.unwrap();
    let err = f.refresh(&client, &first.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REUSED");
}

#[tokio::test]
async fn narrowing_applies_to_the_access_token_only() {
    let mut f = fixture(GRACE).await;
    let client = f.client("revoke-family", &["read", "write"]).await;
    let first = issue(&mut f.tokens, &client, "alice").await;
    assert_eq!(first.scopes, ["read", "write"]);

    let mut request = refresh_request(&client, &first.refresh_token);
    request.scopes = vec!["read".to_owned()];
    let narrow = f
        .tokens
        .refresh_token_pair(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(narrow.scopes, ["read"]);
    let seen = introspect(&mut f.tokens, &narrow.access_token).await;
    assert_eq!(seen.scopes, ["read"]);
    assert_eq!(seen.token_type, "Bearer");

    // RFC 6749 section 6: the refresh token keeps the original grant.
    let wide = f.refresh(&client, &narrow.refresh_token).await.unwrap();
    assert_eq!(wide.scopes, ["read", "write"]);
}

#[tokio::test]
async fn idle_and_absolute_expiry_answer_token_expired() {
    let mut f = fixture(GRACE).await;
    let client = f.client("revoke-family", &["read"]).await;

    let idle = issue(&mut f.tokens, &client, "idle").await;
    f.clock.advance(Duration::from_secs(24 * 3600));
    let err = f.refresh(&client, &idle.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_EXPIRED");
    assert!(!f.active(&idle.refresh_token).await);

    // Used every 20 hours, a family still ends at its absolute expiry (7 days).
    let mut pair = issue(&mut f.tokens, &client, "busy").await;
    for _ in 0..8 {
        f.clock.advance(Duration::from_secs(20 * 3600));
        pair = f.refresh(&client, &pair.refresh_token).await.unwrap();
    }
    f.clock.advance(Duration::from_secs(20 * 3600));
    let err = f.refresh(&client, &pair.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "TOKEN_EXPIRED");
}

#[tokio::test]
async fn introspection_reports_what_the_token_grants() {
    let mut f = fixture(GRACE).await;
    let client = f.client("revoke-family", &["read", "write"]).await;
    let pair = issue(&mut f.tokens, &client, "alice").await;
    for (token, token_type) in [
        (&pair.access_token, "Bearer"),
        (&pair.refresh_token, "refresh_token"),
    ] {
        let seen = introspect(&mut f.tokens, token).await;
        assert!(seen.active);
        assert_eq!(seen.client_id, client.client_id);
        assert_eq!(seen.subject, "alice");
        assert_eq!(seen.family_id, pair.family_id);
        assert_eq!(seen.token_type, token_type);
        assert!(seen.exp > seen.iat);
    }
}
