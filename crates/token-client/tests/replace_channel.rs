//! `TokenClient::replace_channel`, as a renewed TLS certificate uses it: calls from then on go
//! over the new channel, in every clone, while a call already on the old one finishes there.
//! Each channel reaches the real server through its own fault proxy, whose counters say which
//! channel carried what.

mod common;

use std::time::Duration;

use common::{fixture, issue_request, refresh_request};
use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::ServerOptions;
use token_client::{ClientConfig, TokenClient};
use tonic::transport::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_calls_take_the_new_channel_and_a_call_in_flight_finishes_on_the_old() {
    let fx = fixture(ServerOptions::default()).await;
    let client = fx.client("public", "").await;
    let old_path = FaultProxy::start(fx.server.addr).await;
    let new_path = FaultProxy::start(fx.server.addr).await;
    // One attempt with a long deadline: the held call must finish on its own, not by retry.
    let config = ClientConfig {
        deadline: Duration::from_secs(30),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let sdk = TokenClient::connect(&format!("http://{}", old_path.addr()), config).unwrap();
    let clone = sdk.clone();
    let pair = sdk
        .issue_token_pair(issue_request(&client))
        .await
        .expect("a call over the old channel");

    // The next call on the old connection is held back a while (a slow network), then goes on.
    old_path.set_stall_for(Duration::from_secs(2));
    old_path.arm(Fault::Stall, 1);
    let in_flight =
        tokio::spawn(sdk.refresh_token_pair(refresh_request(&client, &pair.refresh_token)));
    tokio::time::timeout(
        Duration::from_secs(10),
        old_path.wait_for_injected(Fault::Stall, 1),
    )
    .await
    .expect("the refresh never reached the old connection");

    sdk.replace_channel(
        Endpoint::from_shared(format!("http://{}", new_path.addr()))
            .unwrap()
            .connect_lazy(),
    );
    assert_eq!(new_path.connections(), 0);
    // A clone made before the replacement follows it.
    clone
        .issue_token_pair(issue_request(&client))
        .await
        .expect("a call over the new channel");
    assert_eq!(new_path.connections(), 1);
    assert!(new_path.bytes_forwarded() > 0);

    let refreshed = in_flight
        .await
        .expect("the refresh task")
        .expect("the call in flight finished on the old channel");
    assert_eq!(refreshed.family_id, pair.family_id);
    assert_eq!(
        old_path.connections(),
        1,
        "the old channel did not reconnect"
    );
}
