//! Redis with replicas, from real processes: a Cluster (3 primaries, 3 replicas) through
//! `redis+cluster://` and a Sentinel-managed primary through `redis+sentinel://`.
//!
//! - The storm guarantees hold on the Cluster, with families on every primary.
//! - A primary killed while callers refresh through the SDK: every call succeeds (the SDK's
//!   retries absorb the answers given while no primary exists), no family is revoked, and
//!   tokens whose rotation the promoted replica never received still refresh (rolled forward).
//! - Revocations wait (WAIT) for a replica; when none confirms in time the revocation stands
//!   and `tokens_redis_wait_unmet_total` counts it.

use std::net::SocketAddr;
use std::time::Duration;
use test_support::harness;

use futures::future::join_all;
use test_support::harness::load::RefreshLoad;
use test_support::harness::{
    ServerOptions, TestClient, TestServer, issue, refresh_request, refresh_together,
};
use test_support::topology::{self, RedisCluster, RedisSentinel};
use token_client::{ClientConfig, TokenClient};
use token_core::store::FamilyStatus;
use token_proto::v1 as pb;
use token_store::family_record;

/// Callers refreshing their own family, one after another, through the failover.
const CALLERS: usize = 12;
/// Refreshes each caller makes before the primary is killed, and again after the failover.
const REFRESHES_PER_PHASE: u64 = 20;
/// Families whose last rotation only the killed primary gets.
const PROBES: usize = 4;

/// Servers as production runs them: 1 s per Redis call (the default).
fn server_options() -> ServerOptions {
    ServerOptions {
        redis_timeout: Duration::from_secs(1),
        admin: true,
        ..ServerOptions::default()
    }
}

/// Enough attempts to outlast a failover (a few seconds): backoff 50 ms doubling to 1 s, 12
/// attempts.
fn sdk_config() -> ClientConfig {
    ClientConfig {
        max_backoff: Duration::from_secs(1),
        max_attempts: 12,
        ..ClientConfig::default()
    }
}

/// A Redis deployment with replicas, driven from blocking admin calls.
enum Deployment {
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

impl Deployment {
    async fn start_cluster() -> Self {
        Self::Cluster(blocking(RedisCluster::start).await)
    }

    async fn start_sentinel() -> Self {
        Self::Sentinel(blocking(RedisSentinel::start).await)
    }

    fn url(&self) -> String {
        match self {
            Deployment::Cluster(cluster) => cluster.seed_url(),
            Deployment::Sentinel(sentinel) => sentinel.url(),
        }
    }

    fn primary_for(&self, key: &str) -> SocketAddr {
        match self {
            Deployment::Cluster(cluster) => cluster.primary_for_slot(RedisCluster::slot_of(key)),
            Deployment::Sentinel(sentinel) => sentinel.primary(),
        }
    }

    fn replicas_of(&self, primary: SocketAddr) -> Vec<SocketAddr> {
        match self {
            Deployment::Cluster(cluster) => cluster.replicas_of(primary),
            Deployment::Sentinel(sentinel) => vec![sentinel.replica()],
        }
    }

    /// SIGKILLs `primary` and waits for Redis' own failover. Returns the promoted replica.
    async fn kill_and_fail_over(self, primary: SocketAddr) -> (Self, SocketAddr) {
        blocking(move || match self {
            Deployment::Cluster(mut cluster) => {
                cluster.kill(primary);
                let promoted = cluster.wait_for_failover(primary);
                (Deployment::Cluster(cluster), promoted)
            }
            Deployment::Sentinel(mut sentinel) => {
                assert_eq!(sentinel.primary(), primary);
                sentinel.kill_primary();
                let promoted = sentinel.wait_for_failover();
                (Deployment::Sentinel(sentinel), promoted)
            }
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("admin task panicked")
}

/// The key of `subject`'s families under the harness's prefix: it decides their shard.
fn subject_key(subject: &str) -> String {
    token_store::keys::KeyLayout::new("t:").subject(subject)
}

/// Issues families until `want` of them live on `primary`; returns those.
async fn families_on(
    deployment: &Deployment,
    server: &TestServer,
    client: &TestClient,
    primary: SocketAddr,
    want: usize,
) -> Vec<pb::TokenPair> {
    let mut tokens = server.tokens().await;
    let mut found = Vec::new();
    for attempt in 0..400 {
        let subject = format!("subject-{attempt}");
        if deployment.primary_for(&subject_key(&subject)) == primary {
            found.push(issue(&mut tokens, client, &subject).await);
            if found.len() == want {
                return found;
            }
        }
    }
    panic!("fewer than {want} of 400 families landed on {primary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storms_on_a_cluster_have_one_winner_on_every_primary() {
    let deployment = Deployment::start_cluster().await;
    let Deployment::Cluster(cluster) = &deployment else {
        unreachable!()
    };
    let servers = [
        TestServer::start(&deployment.url(), server_options()).await,
        TestServer::start(&deployment.url(), server_options()).await,
    ];
    let mut channels = Vec::new();
    for server in &servers {
        for _ in 0..4 {
            channels.push(server.tokens().await);
        }
    }
    let mut registry = servers[0].registry().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    // Two families on each primary, so every shard's copy of the script takes storms.
    let mut families = Vec::new();
    for primary in cluster.primaries() {
        families.extend(families_on(&deployment, &servers[0], &client, primary, 2).await);
    }
    let service = &servers[0].service;

    let storms = families.iter().map(|first| {
        let channels = channels.clone();
        let client = client.clone();
        async move {
            let family = first.family_id.clone();
            let mut token = first.refresh_token.clone();
            for round in 0..5 {
                let responses = refresh_together(&channels, &client, &token, 100).await;
                let winners: Vec<_> = responses.iter().filter(|p| !p.replayed).collect();
                assert_eq!(
                    winners.len(),
                    1,
                    "family {family} round {round}: one winner"
                );
                for pair in &responses {
                    assert_eq!(pair.refresh_token, winners[0].refresh_token);
                    assert_eq!(pair.access_token, winners[0].access_token);
                }
                let state = harness::stored_family(service, &token)
                    .await
                    .expect("family exists");
                assert_eq!(state.generation, round + 2, "family {family}: one rotation");
                assert_eq!(state.status, FamilyStatus::Active);
                token = winners[0].refresh_token.clone();
            }
        }
    });
    join_all(storms).await;

    // The core storm's size, 1000 callers at once, on a fresh family.
    let first = issue(&mut channels[0].clone(), &client, "storm-1000").await;
    let mut token = first.refresh_token;
    for round in 0..2 {
        let responses = refresh_together(&channels, &client, &token, 1000).await;
        let winners: Vec<_> = responses.iter().filter(|p| !p.replayed).collect();
        assert_eq!(winners.len(), 1, "storm of 1000, round {round}: one winner");
        assert!(
            responses
                .iter()
                .all(|p| p.refresh_token == winners[0].refresh_token)
        );
        token = winners[0].refresh_token.clone();
        let state = harness::stored_family(service, &token).await.unwrap();
        assert_eq!(state.generation, round + 2);
    }
    for server in servers {
        server.stop().await;
    }
}

async fn failover_under_load(deployment: Deployment, name: &str) {
    let server = TestServer::start(&deployment.url(), server_options()).await;
    let mut registry = server.registry().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mut tokens = server.tokens().await;
    let sdk = TokenClient::connect(&server.endpoint(), sdk_config()).unwrap();

    // The primary to kill holds the probes; callers' families fall wherever they hash.
    let first = issue(&mut tokens, &client, "first").await;
    let victim = deployment.primary_for(&subject_key("first"));
    let probes = families_on(&deployment, &server, &client, victim, PROBES).await;
    let mut callers_first = vec![first];
    for i in 1..CALLERS {
        callers_first.push(issue(&mut tokens, &client, &format!("caller-{i}")).await);
    }

    let mut load = RefreshLoad::start(
        std::slice::from_ref(&sdk),
        &client,
        callers_first
            .iter()
            .map(|p| p.refresh_token.clone())
            .collect(),
        REFRESHES_PER_PHASE,
    );
    load.progress().await;

    // The probes' last rotation reaches the primary only, then the primary dies: the promoted
    // replica has each probe one generation behind the token its caller holds.
    let replicas = deployment.replicas_of(victim);
    blocking(move || topology::cut_replication(victim, &replicas)).await;
    let mut probe_tokens = Vec::new();
    for probe in &probes {
        let pair = sdk
            .refresh_token_pair(refresh_request(&client, &probe.refresh_token))
            .await
            .expect("probe rotation");
        probe_tokens.push((probe.family_id.clone(), pair.refresh_token));
    }
    let (refreshes_before_kill, _) = load.counts();
    let (deployment, promoted) = deployment.kill_and_fail_over(victim).await;

    // The probes' tokens (generation 2) refresh on the promoted replica (generation 1).
    for (_, token) in &probe_tokens {
        let pair = sdk
            .refresh_token_pair(refresh_request(&client, token))
            .await
            .expect("a token issued just before the failover must still refresh");
        assert!(!pair.replayed);
        let state = harness::stored_family(&server.service, token)
            .await
            .expect("probe family");
        assert_eq!(
            state.generation, 3,
            "rolled forward past the lost generation 2"
        );
    }

    // Everyone keeps refreshing on the new primary.
    load.progress().await;
    let (refreshes, _) = load.counts();
    let last_tokens = load.stop().await;

    // No family revoked; every caller's last token still works.
    for (pair, token) in callers_first.iter().zip(&last_tokens) {
        let family = &pair.family_id;
        let state = harness::stored_family(&server.service, token)
            .await
            .expect("caller family");
        assert_eq!(state.status, FamilyStatus::Active, "family {family}");
        sdk.refresh_token_pair(refresh_request(&client, token))
            .await
            .expect("the caller's last token refreshes");
    }
    for (_, token) in &probe_tokens {
        let state = harness::stored_family(&server.service, token)
            .await
            .unwrap();
        assert_eq!(state.status, FamilyStatus::Active);
    }

    let summary = harness::last_hour_summary(&mut tokens, &client.client_id).await;
    let count = |outcome: &str| summary.outcomes.get(outcome).copied().unwrap_or(0);
    assert!(
        count("rolled_forward") >= PROBES as u64,
        "{:?}",
        summary.outcomes
    );
    assert_eq!(count("reused"), 0, "{:?}", summary.outcomes);
    assert_eq!(count("revoked"), 0, "{:?}", summary.outcomes);
    println!(
        "{name} failover ({victim} killed, {promoted} promoted): {} refreshes by {CALLERS} \
         callers through the SDK ({} before the kill), 0 failed, 0 families revoked; \
         server outcomes: rotated {}, replayed {}, rolled_forward {} ({PROBES} probes), \
         unavailable {} (absorbed by SDK retries)",
        refreshes,
        refreshes_before_kill,
        count("rotated"),
        count("replayed"),
        count("rolled_forward"),
        count("unavailable"),
    );
    server.stop().await;
    drop(deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_primary_killed_under_load_locks_nobody_out() {
    failover_under_load(Deployment::start_cluster().await, "cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_primary_killed_under_load_locks_nobody_out() {
    failover_under_load(Deployment::start_sentinel().await, "sentinel").await;
}

/// `tokens_redis_wait_unmet_total` from the server's `/metrics` (0 before the first).
async fn wait_unmet(server: &TestServer) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", server.admin_addr.unwrap()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("tokens_redis_wait_unmet_total "))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// The status of `subject`'s family as `replica` has it (the record's raw form, decoded).
async fn status_on(
    deployment: &Deployment,
    replica: SocketAddr,
    subject: &str,
    family: &str,
) -> FamilyStatus {
    let key = subject_key(subject);
    let family = family.to_owned();
    // A Cluster replica answers reads only on a connection that asked for READONLY.
    let read_only = matches!(deployment, Deployment::Cluster(_));
    let mut replies = blocking(move || {
        let get: &[&str] = &["HGET", &key, &family];
        if read_only {
            topology::pipeline(replica, &[&["READONLY"], get])
        } else {
            topology::pipeline(replica, &[get])
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let record = replies.pop().expect("a reply to HGET");
    family_record::decode(record.text().expect("a family record"))
        .expect("a valid record")
        .status
}

async fn revocations_wait_for_a_replica(deployment: Deployment) {
    let server = TestServer::start(&deployment.url(), server_options()).await;
    let mut registry = server.registry().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mut tokens = server.tokens().await;
    let revoke = |pair: &pb::TokenPair| pb::RevokeTokenRequest {
        token: pair.refresh_token.clone(),
        client_id: client.client_id.clone(),
        client_secret: client.client_secret.clone(),
        ..Default::default()
    };

    // With the replica linked, the revocation is on it when the call returns.
    let kept = issue(&mut tokens, &client, "kept").await;
    let primary = deployment.primary_for(&subject_key("kept"));
    let replicas = deployment.replicas_of(primary);
    tokens.revoke_token(revoke(&kept)).await.expect("revoke");
    assert!(matches!(
        status_on(&deployment, replicas[0], "kept", &kept.family_id).await,
        FamilyStatus::Revoked { .. }
    ));
    assert_eq!(wait_unmet(&server).await, 0);

    // With no replica to confirm it, the revocation stands on the primary, is answered after
    // the bounded wait, and is counted.
    let lonely_subject = (0..)
        .map(|n| format!("lonely-{n}"))
        .find(|subject| deployment.primary_for(&subject_key(subject)) == primary)
        .expect("some subject on that primary");
    let lonely = issue(&mut tokens, &client, &lonely_subject).await;
    let cut = replicas.clone();
    blocking(move || topology::cut_replication(primary, &cut)).await;
    tokens.revoke_token(revoke(&lonely)).await.expect("revoke");
    assert_eq!(wait_unmet(&server).await, 1);
    let state = harness::stored_family(&server.service, &lonely.refresh_token).await;
    assert!(matches!(
        state.unwrap().status,
        FamilyStatus::Revoked { .. }
    ));
    let refused = tokens
        .refresh_token_pair(refresh_request(&client, &lonely.refresh_token))
        .await
        .expect_err("a revoked family refreshes no more");
    assert_eq!(harness::reason(&refused), "TOKEN_REVOKED");
    server.stop().await;
    drop(deployment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_revocations_wait_for_a_replica() {
    revocations_wait_for_a_replica(Deployment::start_cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_revocations_wait_for_a_replica() {
    revocations_wait_for_a_replica(Deployment::start_sentinel().await).await;
}
