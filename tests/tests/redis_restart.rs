//! Redis killed (SIGKILL) and restarted from its append-only file while SDK clients refresh:
//! the service reports NOT_SERVING while Redis is down, recovers without a restart of its
//! own, and no acknowledged rotation is lost: every client's last pair is its family's
//! current generation, and refreshes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use test_support::harness;

use test_support::harness::{
    KEYRING, RedisServer, ServerOptions, ServingStatus, TestServer, issue, register_client,
};
use token_client::{ClientConfig, TokenClient};
use token_core::store::FamilyStatus;
use token_core::token::Claims;
use token_core::{FamilyId, Store as _};
use tokio::sync::watch;

/// Every acknowledged write reaches the disk before Redis answers.
const DURABLE: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--save",
    "",
];
const FAMILIES: usize = 16;

/// Waits until at least `at_least` refreshes were acknowledged: the workers publish each one.
async fn wait_for_count(acknowledged: &watch::Sender<u64>, at_least: u64) {
    let mut seen = acknowledged.subscribe();
    tokio::time::timeout(Duration::from_secs(60), seen.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("only {} of {at_least} refreshes", *acknowledged.borrow()))
        .expect("the counter lives as long as the test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_rotation_is_lost_when_redis_restarts() {
    let mut redis = RedisServer::start_with(&DURABLE);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            redis_timeout: Duration::from_millis(300),
            ..ServerOptions::default()
        },
    )
    .await;
    server.wait_for_health(ServingStatus::Serving).await;
    let client = register_client(&mut server.registry().await, "confidential", "", &["read"]).await;
    let mut direct = server.tokens().await;
    let mut pairs = Vec::new();
    for i in 0..FAMILIES {
        pairs.push(issue(&mut direct, &client, &format!("restart-{i}")).await);
    }
    let sdk = TokenClient::connect(
        &server.endpoint(),
        ClientConfig {
            deadline: Duration::from_secs(1),
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_attempts: 200,
        },
    )
    .unwrap();

    let acknowledged = Arc::new(watch::Sender::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = pairs
        .into_iter()
        .map(|mut pair| {
            let (sdk, client) = (sdk.clone(), client.clone());
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = harness::refresh_request(&client, &pair.refresh_token);
                    match sdk.refresh_token_pair(request).await {
                        Ok(next) => {
                            pair = next;
                            acknowledged.send_modify(|n| *n += 1);
                        }
                        Err(err) => panic!("family {}: {err}", pair.family_id),
                    }
                }
                pair
            })
        })
        .collect();

    wait_for_count(&acknowledged, 200).await;
    redis.kill();
    server.wait_for_health(ServingStatus::NotServing).await;
    let during_outage = *acknowledged.borrow();
    redis.restart(&DURABLE);
    server.wait_for_health(ServingStatus::Serving).await;
    wait_for_count(&acknowledged, during_outage + 200).await;
    stop.store(true, Ordering::Relaxed);

    let store = server.service.store();
    for worker in workers {
        let pair = worker.await.expect("a refresh failed for good");
        let Ok(Claims::Refresh(claims)) = KEYRING.verify("refresh_token", &pair.refresh_token)
        else {
            panic!("not a refresh token");
        };
        let family: FamilyId = pair.family_id.parse().unwrap();
        let state = store
            .family(&claims.subject, family)
            .await
            .unwrap()
            .expect("family survived");
        assert_eq!(
            state.generation, claims.generation,
            "family {family}: the client's acknowledged generation is the current one"
        );
        assert_eq!(state.status, FamilyStatus::Active);
        sdk.refresh_token_pair(harness::refresh_request(&client, &pair.refresh_token))
            .await
            .expect("the last acknowledged pair refreshes");
    }
    println!(
        "redis restart: {} refreshes acknowledged, {} before the outage",
        *acknowledged.borrow(),
        during_outage
    );
}
