//! Health follows Redis: NOT_SERVING while it is unreachable, SERVING again once it is back,
//! with no restart of the service; calls meanwhile get UNAVAILABLE with RetryInfo.

use std::time::Duration;
use test_support::harness::{
    RedisServer, ServerOptions, ServingStatus, TestServer, issue, reason, refresh_request,
    register_client,
};
use tonic_types::StatusExt as _;

#[tokio::test]
async fn health_follows_redis_and_the_service_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            redis_timeout: Duration::from_millis(500),
            ..ServerOptions::default()
        },
    )
    .await;
    server.wait_for_health(ServingStatus::Serving).await;

    let mut tokens = server.tokens().await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let pair = issue(&mut tokens, &client, "alice").await;

    redis.kill();
    server.wait_for_health(ServingStatus::NotServing).await;
    let err = tokens
        .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(reason(&err), "STORE_UNAVAILABLE");
    assert!(
        err.get_details_retry_info().is_some(),
        "UNAVAILABLE carries RetryInfo"
    );

    // Redis comes back empty (no persistence here): the client must be registered again, and
    // the service answers without having been restarted.
    redis.restart(&["--save", "", "--appendonly", "no"]);
    server.wait_for_health(ServingStatus::Serving).await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let pair = issue(&mut tokens, &client, "alice").await;
    tokens
        .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
        .await
        .expect("refresh works again after Redis is back");
    server.stop().await;
}
