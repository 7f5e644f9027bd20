//! One clock: two `token-server` processes over one Redis, the second with its wall clock set
//! apart by libfaketime (±90 s, ±1 h: an NTP step, a paused VM, a drifting node). Every
//! outcome must be what one instance alone would answer, whichever instance serves which
//! call, in both directions: grace replays, reuse detection (still revokes), idle expiry
//! (neither early nor late), introspection's `iat`/`exp`, and storms across both.

mod support;

use std::sync::Arc;

use deadpool_redis::redis;
use support::{ServerProcess, Setup, TestClient, Tokens, family_revoked, reason, redis_time_ms};
use test_support::RedisServer;
use token_proto::v1 as pb;
use tokio::sync::Barrier;

/// How far the second instance's clock is from the machine's, in libfaketime's syntax.
const SKEWS: [&str; 4] = ["+90s", "-90s", "+1h", "-1h"];
const GRACE_S: u64 = 60;
const ACCESS_TTL_S: i64 = 60;
const IDLE_TTL_MS: u64 = 30 * 60 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_skewed_clocks_answer_as_one() {
    let redis = RedisServer::start();
    let setup = Setup::new();
    let start = |name: &str, offset: Option<&str>| {
        let (mut command, addr, log) = setup.command(&redis.url(), name);
        command
            .env("TOKEN_GRACE_PERIOD", format!("{GRACE_S}s"))
            .env("TOKEN_ACCESS_TTL", format!("{ACCESS_TTL_S}s"))
            .env("TOKEN_REFRESH_IDLE_TTL", "30m");
        if let Some(offset) = offset {
            support::with_clock_offset(&mut command, offset);
        }
        ServerProcess::start(command, addr, log)
    };
    let on_time = start("on-time", None).await;
    let mut registry = on_time.registry().await;
    let client = TestClient::register(&mut registry, "skew").await;

    for skew in SKEWS {
        let skewed = start(&format!("skewed{skew}"), Some(skew)).await;
        let mut pair = [on_time.tokens().await, skewed.tokens().await];
        for direction in ["on time, then skewed", "skewed, then on time"] {
            let case = format!("{skew}, {direction}");
            let [on_time, skewed] = &mut pair;
            let (first, second) = match direction {
                "on time, then skewed" => (on_time, skewed),
                _ => (skewed, on_time),
            };
            grace_replay(first, second, &client, &case).await;
            reuse_revokes(first, second, &client, &case).await;
            introspection(first, second, &client, &redis.url(), &case).await;
            idle_expiry(first, second, &client, &redis.url(), &case).await;
        }
        storm(&pair, &client, skew).await;
    }
}

async fn issue(tokens: &mut Tokens, client: &TestClient) -> pb::TokenPair {
    tokens
        .issue_token_pair(client.issue("alice"))
        .await
        .expect("issued")
        .into_inner()
}

async fn refresh(
    tokens: &mut Tokens,
    client: &TestClient,
    token: &str,
) -> Result<pb::TokenPair, tonic::Status> {
    tokens
        .refresh_token_pair(client.refresh(token))
        .await
        .map(|r| r.into_inner())
}

/// A rotation whose answer was lost, retried on the other instance at once: the same pair.
async fn grace_replay(first: &mut Tokens, second: &mut Tokens, client: &TestClient, case: &str) {
    let issued = issue(first, client).await;
    let rotated = refresh(first, client, &issued.refresh_token).await.unwrap();
    assert!(!rotated.replayed, "{case}");
    let replay = refresh(second, client, &issued.refresh_token)
        .await
        .unwrap_or_else(|s| {
            panic!(
                "{case}: the retry must be a grace replay, got {}",
                reason(&s)
            )
        });
    assert!(replay.replayed, "{case}");
    assert_eq!(
        (&replay.access_token, &replay.refresh_token),
        (&rotated.access_token, &rotated.refresh_token),
        "{case}: a replay is byte-identical"
    );
    let next = refresh(second, client, &rotated.refresh_token)
        .await
        .unwrap();
    assert!(!next.replayed, "{case}: the family lives on");
}

/// A token two generations old, presented on the other instance: theft, the family revoked.
async fn reuse_revokes(first: &mut Tokens, second: &mut Tokens, client: &TestClient, case: &str) {
    let issued = issue(first, client).await;
    let g2 = refresh(first, client, &issued.refresh_token).await.unwrap();
    let g3 = refresh(first, client, &g2.refresh_token).await.unwrap();
    let reused = refresh(second, client, &issued.refresh_token)
        .await
        .expect_err("a reuse");
    assert_eq!(
        (reason(&reused), family_revoked(&reused)),
        ("TOKEN_REUSED".to_owned(), Some("true".to_owned())),
        "{case}"
    );
    let after = refresh(first, client, &g3.refresh_token)
        .await
        .expect_err("revoked");
    assert_eq!(reason(&after), "TOKEN_REVOKED", "{case}");
}

/// Issued on one instance, introspected on the other: active, `iat` Redis's time of issue,
/// `exp - iat` the access lifetime.
async fn introspection(
    first: &mut Tokens,
    second: &mut Tokens,
    client: &TestClient,
    redis_url: &str,
    case: &str,
) {
    let before = redis_time_ms(redis_url) / 1000;
    let issued = issue(first, client).await;
    let after = redis_time_ms(redis_url) / 1000;
    assert_eq!(issued.expires_in, ACCESS_TTL_S, "{case}");
    for token in [&issued.access_token, &issued.refresh_token] {
        let seen = second
            .introspect_token(pb::IntrospectTokenRequest {
                token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(seen.active, "{case}: {}", seen.token_type);
        assert!(
            (before..=after).contains(&(seen.iat as u64)),
            "{case}: iat {} is Redis's time of issue ({before}..={after})",
            seen.iat
        );
        if seen.token_type == "Bearer" {
            assert_eq!(seen.exp - seen.iat, ACCESS_TTL_S, "{case}");
        }
    }
}

/// Expiry by Redis's clock alone: a family unused for just under the idle lifetime rotates
/// on either instance, one unused for just over it is expired on both.
async fn idle_expiry(
    first: &mut Tokens,
    second: &mut Tokens,
    client: &TestClient,
    redis_url: &str,
    case: &str,
) {
    for (unused_for_ms, expired) in [(IDLE_TTL_MS - 60_000, false), (IDLE_TTL_MS + 1_000, true)] {
        let issued = issue(first, client).await;
        set_rotated_at(
            redis_url,
            &issued.family_id,
            redis_time_ms(redis_url) - unused_for_ms,
        );
        let results = [
            refresh(second, client, &issued.refresh_token).await,
            refresh(first, client, &issued.refresh_token).await,
        ];
        let outcomes: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(pair) if pair.replayed => "replayed".to_owned(),
                Ok(_) => "rotated".to_owned(),
                Err(status) => reason(status),
            })
            .collect();
        let want = if expired {
            ["TOKEN_EXPIRED", "TOKEN_EXPIRED"]
        } else {
            ["rotated", "replayed"]
        };
        assert_eq!(outcomes, want, "{case}: unused for {unused_for_ms} ms");
    }
}

/// Moves the family's rotation time into the past, as if it had not been used since.
fn set_rotated_at(redis_url: &str, family_id: &str, rotated_at_ms: u64) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let key = token_store::keys::KeyLayout::new("tok:").subject("alice");
    let record: String = redis::cmd("HGET")
        .arg(&key)
        .arg(family_id)
        .query(&mut conn)
        .unwrap();
    let mut family = token_store::family_record::decode(&record).unwrap();
    family.rotated_at_ms = rotated_at_ms;
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg(family_id)
        .arg(token_store::family_record::encode(&family))
        .query(&mut conn)
        .unwrap();
}

/// 40 parallel refreshes of one token, half on each instance, released together: one
/// rotation, every caller the same pair.
async fn storm(pair: &[Tokens; 2], client: &TestClient, skew: &str) {
    const CALLERS: usize = 40;
    let mut first = pair[0].clone();
    let issued = issue(&mut first, client).await;
    let barrier = Arc::new(Barrier::new(CALLERS));
    let calls = (0..CALLERS).map(|i| {
        let mut tokens = pair[i % 2].clone();
        let (barrier, client, token) = (
            barrier.clone(),
            client.clone(),
            issued.refresh_token.clone(),
        );
        tokio::spawn(async move {
            barrier.wait().await;
            refresh(&mut tokens, &client, &token).await
        })
    });
    let answers: Vec<pb::TokenPair> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| {
            joined
                .unwrap()
                .unwrap_or_else(|s| panic!("{skew}: {}", reason(&s)))
        })
        .collect();
    let winners = answers.iter().filter(|p| !p.replayed).count();
    assert_eq!(winners, 1, "{skew}: exactly one rotation");
    assert!(
        answers
            .iter()
            .all(|p| p.refresh_token == answers[0].refresh_token
                && p.access_token == answers[0].access_token),
        "{skew}: every caller gets the winner's pair"
    );
}
