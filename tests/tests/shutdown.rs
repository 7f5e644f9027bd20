//! Graceful shutdown drains: an RPC provably in flight when shutdown begins (its Redis call is
//! held by a stalling proxy) still completes successfully, and only then does the server stop.

use std::time::Duration;

use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::{
    RedisServer, ServerOptions, TestServer, issue, refresh_request, register_client, warm_up,
};

#[tokio::test]
async fn an_rpc_in_flight_at_shutdown_completes() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.addr()).await;
    let server = TestServer::start(
        &format!("redis://{}", proxy.addr()),
        ServerOptions {
            // Health pings must not take the armed stall.
            health_interval: Duration::from_secs(3600),
            // Nor a client lookup: the record stays cached however slow the machine is (this
            // server runs on the system clock, and the default TTL is 1 s).
            client_cache_ttl: Duration::from_secs(3600),
            ..ServerOptions::default()
        },
    )
    .await;
    let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let mut tokens = server.tokens().await;
    // The refresh below must send exactly one Redis command, the one the proxy stalls.
    warm_up(&server, &client).await;
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
