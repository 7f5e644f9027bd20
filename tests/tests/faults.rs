//! The incident this product exists for, replayed with a fault-injecting proxy between the
//! service and Redis: a rotation commits, its reply is lost, and the client retries. And the
//! instance under overload: calls beyond its limit are shed at once while admitted calls
//! complete.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::{
    RedisServer, ServerOptions, TestServer, issue, reason, refresh_request, register_client,
    stored_family, warm_up,
};
use token_core::{Lifetimes, ManualClock};
use token_server::config::DEFAULT_MAX_CONCURRENT_CALLS;
use tonic_types::StatusExt as _;

const GRACE: Duration = Duration::from_secs(60);

/// A server whose Redis traffic crosses `proxy`, on a manual clock, with health pings rare
/// enough not to consume armed faults.
async fn behind_proxy(proxy: &FaultProxy, clock: &ManualClock, max_calls: usize) -> TestServer {
    TestServer::start(
        &format!("redis://{}", proxy.addr()),
        ServerOptions {
            clock: Arc::new(clock.clone()),
            lifetimes: Lifetimes {
                grace: GRACE,
                ..Lifetimes::default()
            },
            health_interval: Duration::from_secs(3600),
            redis_timeout: Duration::from_secs(30),
            max_concurrent_calls: max_calls,
            ..ServerOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_lost_rotation_reply_is_retried_into_the_identical_pair_inside_grace() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let clock = ManualClock::starting_now();
    let server = behind_proxy(&proxy, &clock, DEFAULT_MAX_CONCURRENT_CALLS).await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let mut tokens = server.tokens().await;
    let first = issue(&mut tokens, &client, "alice").await;
    warm_up(&server, &client).await;

    // The client record is cached, so the refresh's only Redis command is the rotation.
    proxy.arm(Fault::DropAfterForward, 1);
    let err = tokens
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(proxy.injected(Fault::DropAfterForward), 1);
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(reason(&err), "STORE_UNAVAILABLE");
    assert!(err.get_details_retry_info().is_some());
    let state = stored_family(&server.service, &first.refresh_token)
        .await
        .unwrap();
    assert_eq!(
        state.generation, 2,
        "the rotation committed although its reply was lost"
    );

    // The client retries, as UNAVAILABLE tells it to, at the very end of the grace period.
    clock.advance(GRACE);
    let retry = tokens
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .expect("a retry inside grace gets the pair that was issued")
        .into_inner();
    assert!(retry.replayed);
    let again = tokens
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (&again.refresh_token, &again.access_token),
        (&retry.refresh_token, &retry.access_token)
    );
    // No fork: the family is still at generation 2 and its token rotates normally.
    let state = stored_family(&server.service, &first.refresh_token)
        .await
        .unwrap();
    assert_eq!(state.generation, 2);
    let next = tokens
        .refresh_token_pair(refresh_request(&client, &retry.refresh_token))
        .await
        .unwrap()
        .into_inner();
    assert!(!next.replayed);
}

#[tokio::test]
async fn a_lost_rotation_reply_retried_after_grace_is_reuse_as_documented() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let clock = ManualClock::starting_now();
    let server = behind_proxy(&proxy, &clock, DEFAULT_MAX_CONCURRENT_CALLS).await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let mut tokens = server.tokens().await;
    let first = issue(&mut tokens, &client, "alice").await;
    warm_up(&server, &client).await;

    proxy.arm(Fault::DropAfterForward, 1);
    tokens
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .unwrap_err();
    clock.advance(GRACE + Duration::from_millis(1));
    let err = tokens
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TOKEN_REUSED");
}

#[tokio::test]
async fn calls_beyond_the_limit_are_shed_at_once_and_admitted_calls_complete() {
    const LIMIT: usize = 8;
    const CALLS: usize = 100;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let clock = ManualClock::starting_now();
    let server = behind_proxy(&proxy, &clock, LIMIT).await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let mut tokens = server.tokens().await;
    let mut pairs = Vec::new();
    for i in 0..CALLS {
        pairs.push(issue(&mut tokens, &client, &format!("user-{i}")).await);
    }
    warm_up(&server, &client).await;

    // Redis stops answering: admitted calls hold their permits while they wait for it.
    proxy.set_stall_for(Duration::from_secs(5));
    proxy.set_probability(Fault::Stall, 1.0);
    let mut calls: FuturesUnordered<_> = pairs
        .iter()
        .map(|pair| {
            let mut tokens = tokens.clone();
            let request = refresh_request(&client, &pair.refresh_token);
            async move { tokens.refresh_token_pair(request).await }
        })
        .collect();

    // Everything beyond the limit comes back while the admitted calls are still stalled.
    for _ in 0..CALLS - LIMIT {
        let err = calls
            .next()
            .await
            .unwrap()
            .expect_err("only the admitted calls can succeed, and they are stalled");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(reason(&err), "OVERLOADED");
        assert!(err.get_details_retry_info().is_some());
    }
    proxy.set_probability(Fault::Stall, 0.0);
    // The stalled requests are forwarded when their stall ends: the admitted calls succeed.
    let mut admitted = 0;
    while let Some(result) = calls.next().await {
        let pair = result.expect("an admitted call completes").into_inner();
        assert!(!pair.replayed);
        admitted += 1;
    }
    assert_eq!(admitted, LIMIT);
}
