//! Single-flight refreshes in one process: identical refreshes in flight share one RPC and one
//! result, and the in-flight map empties when flights end or their callers go away.

mod common;

use std::time::Duration;

use common::{fixture, issue_request, refresh_request, wait_for_rpcs};
use test_support::harness::ServerOptions;
use token_client::{ClientConfig, TokenClient, pb};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_refreshes_of_one_token_send_one_rpc() -> anyhow::Result<()> {
    let fx = fixture(ServerOptions::default()).await;
    let client = fx.client("confidential", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let pair = sdk.issue_token_pair(issue_request(&client)).await?;
    let request = refresh_request(&client, &pair.refresh_token);

    let before = sdk.rpcs_sent();
    // Every call joins the flight when it is made; half of them through clones of the client,
    // which share the flights. None is polled before all have joined, so they all overlap
    // by construction, whatever the scheduler does next.
    let calls: Vec<_> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                sdk.refresh_token_pair(request.clone())
            } else {
                sdk.clone().refresh_token_pair(request.clone())
            }
        })
        .collect();
    assert_eq!(sdk.refreshes_in_flight(), 1);
    let tasks: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?.expect("refresh"));
    }

    assert_eq!(sdk.rpcs_sent() - before, 1, "one RPC for the hundred");
    assert!(
        results.iter().all(|r| *r == results[0]),
        "one result for all"
    );
    assert_eq!(results[0].family_id, pair.family_id);
    assert!(!results[0].replayed, "the rotation itself, not a replay");
    assert_eq!(sdk.refreshes_in_flight(), 0, "no entry left behind");

    // A later refresh of the same token is a new flight, answered by the server's grace replay.
    let again = sdk.refresh_token_pair(request).await?;
    assert_eq!(sdk.rpcs_sent() - before, 2);
    assert!(again.replayed);
    assert_eq!(again.refresh_token, results[0].refresh_token);
    fx.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn different_requests_do_not_coalesce() -> anyhow::Result<()> {
    let fx = fixture(ServerOptions::default()).await;
    let client = fx.client("confidential", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let pair = sdk.issue_token_pair(issue_request(&client)).await?;

    let before = sdk.rpcs_sent();
    let plain = sdk.refresh_token_pair(refresh_request(&client, &pair.refresh_token));
    let mut narrowed = refresh_request(&client, &pair.refresh_token);
    narrowed.scopes = vec!["read".to_owned()];
    let narrowed = sdk.refresh_token_pair(narrowed);
    assert_eq!(sdk.refreshes_in_flight(), 2);
    let (plain, narrowed) = futures::join!(plain, narrowed);
    assert_eq!(sdk.rpcs_sent() - before, 2);
    // One of the two won the rotation; the other is the server's replay of exactly the pair
    // it issued (whatever scope the replay asks for), never a second rotation. Which one the
    // server sees first is up to the scheduler and the network, so either may win.
    let (plain, narrowed) = (plain?, narrowed?);
    assert_ne!(plain.replayed, narrowed.replayed);
    assert_eq!(plain.refresh_token, narrowed.refresh_token);
    assert_eq!(plain.access_token, narrowed.access_token);
    assert_eq!(plain.scopes, narrowed.scopes);
    let winner_asked = if narrowed.replayed {
        pair.scopes.clone() // the plain refresh keeps the family's scopes
    } else {
        vec!["read".to_owned()]
    };
    assert_eq!(
        narrowed.scopes, winner_asked,
        "the winner's scopes, for both"
    );
    fx.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn cancelled_refreshes_leave_no_entry_and_survivors_keep_the_rpc() -> anyhow::Result<()> {
    // A server that accepts and never answers keeps the flight open as long as we like.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let sdk = TokenClient::connect(
        &format!("http://{addr}"),
        ClientConfig {
            deadline: Duration::from_secs(3600),
            ..ClientConfig::default()
        },
    )?;
    let request = pb::RefreshTokenPairRequest {
        client_id: "c".to_owned(),
        client_secret: String::new(),
        refresh_token: "rt1.x.y".to_owned(),
        scopes: vec![],
    };

    let starter = tokio::spawn(sdk.refresh_token_pair(request.clone()));
    let follower = tokio::spawn(sdk.refresh_token_pair(request.clone()));
    wait_for_rpcs(&sdk, 1, "the RPC is sent").await;

    starter.abort();
    assert!(starter.await.unwrap_err().is_cancelled());
    assert_eq!(sdk.refreshes_in_flight(), 1, "the follower still waits");
    // A newcomer joins the same, still running, RPC.
    let newcomer = sdk.refresh_token_pair(request.clone());
    assert_eq!(sdk.refreshes_in_flight(), 1);
    drop(newcomer);

    follower.abort();
    assert!(follower.await.unwrap_err().is_cancelled());
    assert_eq!(
        sdk.refreshes_in_flight(),
        0,
        "the last waiter removed the entry"
    );
    assert_eq!(sdk.rpcs_sent(), 1);

    // Created and dropped without ever being polled: no entry, no RPC.
    drop(sdk.refresh_token_pair(request));
    assert_eq!(sdk.refreshes_in_flight(), 0);
    assert_eq!(sdk.rpcs_sent(), 1);
    Ok(())
}
