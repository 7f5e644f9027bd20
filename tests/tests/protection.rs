//! Protection of the instance and of clients: repeated failed authentication is throttled per
//! client without locking the real client out.

use test_support::harness::{
    RedisServer, ServerOptions, TestServer, issue, reason, refresh_request, register_client,
};
use token_core::service::AUTH_FAILURE_BURST;
use tonic_types::StatusExt as _;

#[tokio::test]
async fn repeated_failed_authentication_is_rate_limited_but_the_right_secret_still_works() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let client = register_client(&mut server.registry().await, "confidential", "", &["read"]).await;
    let mut tokens = server.tokens().await;
    let pair = issue(&mut tokens, &client, "alice").await;
    let mut wrong = refresh_request(&client, &pair.refresh_token);
    wrong.client_secret = format!("{}x", client.client_secret);

    for attempt in 0..AUTH_FAILURE_BURST {
        let err = tokens.refresh_token_pair(wrong.clone()).await.unwrap_err();
        assert_eq!(reason(&err), "INVALID_CLIENT", "attempt {attempt}");
    }
    let err = tokens.refresh_token_pair(wrong).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert!(
        err.get_details_retry_info().is_some(),
        "RATE_LIMITED carries RetryInfo"
    );

    // Whoever holds the real secret is not locked out by someone else's failures.
    let next = tokens
        .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
        .await
        .expect("the right secret still works while the client is throttled")
        .into_inner();
    assert!(!next.replayed);
}
