//! Connecting to the service, registering the bench client and issuing families.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Target;

/// Realistic sizes: a client id, a UUID subject and four OIDC scopes.
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))
}

/// `count` HTTP/2 connections; callers are spread over them as services share channels.
pub async fn channels(endpoint: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        channels.push(channel(endpoint).await?);
    }
    Ok(channels)
}

/// A token-service client on each of `count` HTTP/2 connections.
pub async fn clients(
    endpoint: &str,
    count: usize,
) -> anyhow::Result<Vec<TokenServiceClient<Channel>>> {
    Ok(channels(endpoint, count)
        .await?
        .into_iter()
        .map(TokenServiceClient::new)
        .collect())
}

/// Polls grpc.health.v1 until the token service reports SERVING.
pub async fn wait_ready(target: &Target, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(channel) = channel(&target.endpoint).await {
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: "tokens.v1.TokenService".to_owned(),
                })
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not report SERVING within {timeout:?}",
                target.endpoint
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The environment variable holding the operator credential the server's policy names.
pub const OPERATOR_CREDENTIAL_ENV: &str = "TOKEN_OPERATOR_CREDENTIAL";

/// `message` as an operator call: with `authorization: Bearer $TOKEN_OPERATOR_CREDENTIAL` when
/// that is set (the server refuses operator RPCs to callers its policy does not name).
fn as_operator<T>(message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Ok(credential) = std::env::var(OPERATOR_CREDENTIAL_ENV) {
        let value = format!("Bearer {credential}").parse().map_err(|_| {
            anyhow::anyhow!("{OPERATOR_CREDENTIAL_ENV} is not a valid header value")
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// A registered confidential client.
#[derive(Clone)]
pub struct BenchClient {
    pub client_id: String,
    pub client_secret: String,
}

/// Registers a fresh confidential client allowed the realistic scopes, with opaque access
/// tokens.
pub async fn register(channel: Channel, policy: &str) -> anyhow::Result<BenchClient> {
    register_with_format(channel, policy, "opaque").await
}

/// [`register`], with access tokens of `access_token_format` (`opaque` or `jwt`).
pub async fn register_with_format(
    channel: Channel,
    policy: &str,
    access_token_format: &str,
) -> anyhow::Result<BenchClient> {
    let created = ClientRegistryClient::new(channel)
        .create_client(as_operator(pb::CreateClientRequest {
            client_id: String::new(),
            name: "token-bench".to_owned(),
            client_type: "confidential".to_owned(),
            allowed_scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            reuse_policy: policy.to_owned(),
            access_token_format: access_token_format.to_owned(),
            access_token_audience: String::new(),
        })?)
        .await
        .context("CreateClient")?
        .into_inner();
    Ok(BenchClient {
        client_id: created.client_id,
        client_secret: created.client_secret,
    })
}

/// Issues `count` families, `parallel` at a time, each for its own UUID-shaped subject.
pub async fn issue_families(
    tokens: &TokenServiceClient<Channel>,
    client: &BenchClient,
    count: usize,
    parallel: usize,
) -> anyhow::Result<Vec<pb::TokenPair>> {
    issue_families_for(tokens, client, count, parallel, |i| subject(0, i)).await
}

/// Issues `count` families, `parallel` at a time, family `i` for `subject_of(i)`.
pub async fn issue_families_for(
    tokens: &TokenServiceClient<Channel>,
    client: &BenchClient,
    count: usize,
    parallel: usize,
    subject_of: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<pb::TokenPair>> {
    stream::iter(0..count)
        .map(|i| {
            let mut tokens = tokens.clone();
            let request = as_operator(pb::IssueTokenPairRequest {
                client_id: client.client_id.clone(),
                subject: subject_of(i),
                scopes: vec![],
            });
            async move {
                tokens
                    .issue_token_pair(request?)
                    .await
                    .map(|r| r.into_inner())
                    .context("IssueTokenPair")
            }
        })
        .buffer_unordered(parallel)
        .try_collect()
        .await
}

/// A UUID-shaped subject (36 characters), the `i`-th of `group`, unique to this process: the
/// store keeps a subject's families together, so runs and modes sharing a Redis must not
/// share subjects (one mode's families would land in another's hashes).
pub fn subject(group: u64, i: usize) -> String {
    static RUN: OnceLock<u64> = OnceLock::new();
    let run = *RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    let tag = run.wrapping_add(group.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & 0xffff_ffff_ffff;
    format!("{:08x}-4b1e-4c2a-9d7f-{tag:012x}", i as u32)
}

pub fn refresh_request(client: &BenchClient, refresh_token: &str) -> pb::RefreshTokenPairRequest {
    pb::RefreshTokenPairRequest {
        client_id: client.client_id.clone(),
        client_secret: client.client_secret.clone(),
        refresh_token: refresh_token.to_owned(),
        scopes: vec![],
    }
}

/// `INFO commandstats` calls of EVALSHA so far, to count Redis round trips of a mode.
pub async fn evalsha_calls(redis_url: &str) -> anyhow::Result<u64> {
    command_stat(redis_url, "evalsha", "calls").await
}

/// One figure of `INFO commandstats` for `command` (`calls`, `failed_calls`, ...): 0 when
/// Redis has not seen the command yet.
pub async fn command_stat(redis_url: &str, command: &str, field: &str) -> anyhow::Result<u64> {
    let info = redis_info(redis_url, "commandstats").await?;
    let prefix = format!("cmdstat_{command}:");
    let needle = format!("{field}=");
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(needle.as_str()))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

pub async fn redis_info(redis_url: &str, section: &str) -> anyhow::Result<String> {
    use deadpool_redis::redis;
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await?)
}
