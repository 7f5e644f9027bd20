//! Shared pieces of the SDK's end-to-end tests: a real token server over a real redis-server,
//! SDK clients over real sockets, and a bounded readiness poll.

#![allow(dead_code)] // Each test file uses a different subset.

use std::time::Duration;
use test_support::harness;

use test_support::harness::{RedisServer, ServerOptions, TestClient, TestServer};
use token_client::{ClientConfig, TokenClient, pb};

pub struct Fixture {
    pub redis: RedisServer,
    pub server: TestServer,
}

/// A throwaway Redis and one token server on it.
pub async fn fixture(options: ServerOptions) -> Fixture {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), options).await;
    Fixture { redis, server }
}

impl Fixture {
    pub async fn client(&self, client_type: &str, reuse_policy: &str) -> TestClient {
        harness::register_client(
            &mut self.server.registry().await,
            client_type,
            reuse_policy,
            &["read", "write"],
        )
        .await
    }

    /// An SDK client with its own connection to the server.
    pub fn sdk(&self, config: ClientConfig) -> TokenClient {
        TokenClient::connect(&self.server.endpoint(), config).expect("endpoint")
    }
}

pub fn issue_request(client: &TestClient) -> pb::IssueTokenPairRequest {
    pb::IssueTokenPairRequest {
        client_id: client.client_id.clone(),
        subject: "alice".to_owned(),
        scopes: vec![],
    }
}

pub fn refresh_request(client: &TestClient, refresh_token: &str) -> pb::RefreshTokenPairRequest {
    harness::refresh_request(client, refresh_token)
}

/// Waits until `sdk` has sent at least `at_least` RPC attempts: the SDK publishes each one, so
/// this is a readiness signal, not polling. Bounded (10 s), never a timing assertion.
pub async fn wait_for_rpcs(sdk: &TokenClient, at_least: u64, what: &str) {
    let mut sent = sdk.watch_rpcs_sent();
    tokio::time::timeout(Duration::from_secs(10), sent.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("never became ready: {what}"))
        .expect("the client outlives the wait");
}
