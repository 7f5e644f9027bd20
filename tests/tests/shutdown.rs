//! Graceful shutdown drains: an RPC provably in flight when shutdown begins (its Redis call is
//! held by a stalling proxy) still completes successfully, and only then does the server stop.

use std::time::Duration;

use e2e::{RedisServer, ServerOptions, TestServer, issue, refresh_request, register_client};
use test_support::fault_proxy::{Fault, FaultProxy};

#[tokio::test]
async fn an_rpc_in_flight_at_shutdown_completes() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = TestServer::start(
        &format!("redis://{}", proxy.addr()),
        ServerOptions {
            // Health pings must not take the armed stall.
            health_interval: Duration::from_secs(3600),
            ..ServerOptions::default()
        },
    )
    .await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let mut tokens = server.tokens().await;
    // Load the rotate script and open every Redis connection first, so the refresh below sends
    // exactly one Redis command.
    let warm = issue(&mut tokens, &client, "warm-up").await;
    tokens
        .refresh_token_pair(refresh_request(&client, &warm.refresh_token))
        .await
        .unwrap();
    for _ in 0..16 {
        tokens
            .introspect_token(token_proto::v1::IntrospectTokenRequest {
                token: warm.access_token.clone(),
            })
            .await
            .unwrap();
    }
    let pair = issue(&mut tokens, &client, "alice").await;

    proxy.set_stall_for(Duration::from_millis(500));
    proxy.arm(Fault::Stall, 1);
    let in_flight = {
        let mut tokens = tokens.clone();
        let request = refresh_request(&client, &pair.refresh_token);
        tokio::spawn(async move { tokens.refresh_token_pair(request).await })
    };
    // The refresh has reached Redis's proxy: it is inside the server, mid-call.
    proxy.wait_for_injected(Fault::Stall, 1).await;
    let stopping = tokio::spawn(server.stop());

    let refreshed = in_flight
        .await
        .unwrap()
        .expect("the in-flight refresh completes during the drain")
        .into_inner();
    assert!(!refreshed.replayed);
    stopping.await.expect("the server stops once drained");
}
