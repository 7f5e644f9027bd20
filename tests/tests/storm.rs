//! Storms: N parallel refreshes of one token, released together by a barrier, spread over two
//! server instances sharing one Redis, many rounds. The reference model of a storm is simple:
//! each round advances the family by exactly one generation, exactly one caller wins, and
//! every caller receives the winner's pair byte for byte.

use test_support::harness;
use test_support::harness::{
    RedisServer, ServerOptions, TestServer, issue, refresh_request, refresh_together,
};
use token_core::store::FamilyStatus;
use token_core::{FamilyId, Store as _};
use token_proto::v1 as pb;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;

/// HTTP/2 connections per server instance; callers share them, as services do.
const CHANNELS_PER_SERVER: usize = 4;

async fn storm(parallel: usize, rounds: usize) {
    let redis = RedisServer::start();
    let servers = [
        TestServer::start(&redis.url(), ServerOptions::default()).await,
        TestServer::start(&redis.url(), ServerOptions::default()).await,
    ];
    let mut channels: Vec<TokenServiceClient<Channel>> = Vec::new();
    for server in &servers {
        for _ in 0..CHANNELS_PER_SERVER {
            channels.push(server.tokens().await);
        }
    }
    let mut registry = servers[0].registry().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let first = issue(&mut channels[0], &client, "storm-subject").await;
    let family: FamilyId = first.family_id.parse().expect("family id");
    let store = servers[0].service.store();

    let mut token = first.refresh_token;
    let mut generation = 1;
    for round in 0..rounds {
        let responses = refresh_together(&channels, &client, &token, parallel).await;
        let winners: Vec<&pb::TokenPair> = responses.iter().filter(|p| !p.replayed).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one caller must rotate, got {}",
            winners.len()
        );
        let winner = winners[0];
        for pair in &responses {
            assert_eq!(pair.refresh_token, winner.refresh_token, "round {round}");
            assert_eq!(pair.access_token, winner.access_token, "round {round}");
            assert_eq!(pair.family_id, winner.family_id, "round {round}");
            assert_eq!(pair.scopes, winner.scopes, "round {round}");
        }
        assert_ne!(
            winner.refresh_token, token,
            "round {round}: the token must rotate"
        );

        let state = store
            .family("storm-subject", family)
            .await
            .unwrap()
            .expect("family exists");
        generation += 1;
        assert_eq!(
            state.generation, generation,
            "round {round}: one rotation per round"
        );
        assert_eq!(
            state.status,
            FamilyStatus::Active,
            "round {round}: never revoked"
        );
        token = winner.refresh_token.clone();
    }

    // The last winner's token still works, from either instance, as a plain rotation.
    let mut after = servers[1].tokens().await;
    let next = after
        .refresh_token_pair(refresh_request(&client, &token))
        .await
        .expect("the winning refresh token must work after the storm")
        .into_inner();
    assert!(!next.replayed);

    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_2_has_one_winner() {
    storm(2, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_10_has_one_winner() {
    storm(10, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_100_has_one_winner() {
    storm(100, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_1000_has_one_winner() {
    storm(1000, 5).await;
}
