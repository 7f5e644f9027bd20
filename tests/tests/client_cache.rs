//! The client cache's staleness is bounded and local changes are immediate: after a secret
//! rotation on instance A, A refuses the old secret at once; instance B accepts it only until
//! its cached record is older than the TTL, then refuses it too.

use std::sync::Arc;
use std::time::Duration;
use test_support::harness;

use test_support::harness::{
    RedisServer, ServerOptions, TestServer, issue, reason, refresh_request,
};
use token_core::ManualClock;
use token_proto::v1 as pb;

#[tokio::test]
async fn a_rotated_secret_stops_working_everywhere_within_the_ttl() {
    let redis = RedisServer::start();
    let clock = ManualClock::starting_now();
    let options = ServerOptions {
        clock: Arc::new(clock.clone()),
        client_cache_ttl: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    let a = TestServer::start(&redis.url(), options.clone()).await;
    let b = TestServer::start(&redis.url(), options).await;
    let client =
        harness::register_client(&mut a.registry().await, "confidential", "", &["read"]).await;
    let mut tokens_a = a.tokens().await;
    let mut tokens_b = b.tokens().await;
    let first = issue(&mut tokens_a, &client, "alice").await;
    // B reads (and caches) the client record with the old secret.
    let second = tokens_b
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .unwrap()
        .into_inner();

    a.registry()
        .await
        .rotate_client_secret(pb::RotateClientSecretRequest {
            client_id: client.client_id.clone(),
        })
        .await
        .unwrap();
    let err = tokens_a
        .refresh_token_pair(refresh_request(&client, &second.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        "INVALID_CLIENT",
        "the rotating instance forgets at once"
    );

    let third = tokens_b
        .refresh_token_pair(refresh_request(&client, &second.refresh_token))
        .await
        .expect("another instance may use its cached record within the TTL")
        .into_inner();
    clock.advance(Duration::from_secs(1));
    let err = tokens_b
        .refresh_token_pair(refresh_request(&client, &third.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(
        reason(&err),
        "INVALID_CLIENT",
        "past the TTL every instance refuses"
    );
}
