//! The server's own protections, seen from the SDK: a call shed under load
//! (`RESOURCE_EXHAUSTED`/`OVERLOADED`) is retried until admitted; a client throttled for failed
//! authentication (`RESOURCE_EXHAUSTED`/`RATE_LIMITED`) is not retried.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;
use test_support::harness;

use common::{fixture, issue_request, refresh_request, wait_for_rpcs};
use test_support::harness::{RedisServer, ServerOptions, TestServer};
use token_client::{ClientConfig, TokenClient, pb};
use tonic::Code;

/// The process id of a redis-server, from `INFO server`.
fn redis_pid(redis: &RedisServer) -> u32 {
    fn pid_in(reply: &str) -> Option<u32> {
        let rest = &reply[reply.find("process_id:")? + "process_id:".len()..];
        rest[..rest.find("\r\n")?].parse().ok()
    }
    let mut stream = TcpStream::connect(redis.addr()).expect("connect to redis");
    stream.write_all(b"INFO server\r\n").expect("send INFO");
    let mut reply = String::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(pid) = pid_in(&reply) {
            return pid;
        }
        let n = stream.read(&mut buf).expect("read INFO");
        assert!(n > 0, "redis closed the connection before naming its pid");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

fn garbage_introspection() -> pb::IntrospectTokenRequest {
    // Fails its MAC check before any Redis call: admitted, it is answered at once.
    pb::IntrospectTokenRequest {
        token: "at1.x.y".to_owned(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_shed_as_overloaded_is_retried_until_admitted() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            max_concurrent_calls: 1,
            redis_timeout: Duration::from_secs(60),
            ..ServerOptions::default()
        },
    )
    .await;
    let client =
        harness::register_client(&mut server.registry().await, "public", "", &["read"]).await;
    let holder = TokenClient::connect(&server.endpoint(), ClientConfig::default())?;
    let pair = holder.issue_token_pair(issue_request(&client)).await?;

    // Redis stops answering (SIGSTOP: connections stay open, replies never come), so an
    // admitted refresh holds the instance's only permit until Redis resumes.
    let pid = redis_pid(&redis);
    signal(pid, "-STOP");
    let held =
        tokio::spawn(holder.refresh_token_pair(refresh_request(&client, &pair.refresh_token)));
    // Readiness: a single-attempt probe is shed, so the refresh holds the permit.
    let probe = TokenClient::connect(
        &server.endpoint(),
        ClientConfig {
            max_attempts: 1,
            ..ClientConfig::default()
        },
    )?;
    // The refresh has been handed to the transport; probe until the server holds it (each
    // probe is a round trip, so this loop paces itself). Bounded by time, not by a count of
    // probes: on a loaded machine the held refresh's connection can take many probe round
    // trips to reach the server.
    wait_for_rpcs(&holder, 1, "the held refresh is sent").await;
    let shed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match probe.introspect_token(garbage_introspection()).await {
                Err(err) if err.code() == Code::ResourceExhausted => return err,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .expect("the refresh never held the permit");
    assert_eq!(shed.reason(), Some("OVERLOADED"));
    assert!(shed.retry_delay().is_some(), "OVERLOADED carries RetryInfo");

    let sdk = TokenClient::connect(
        &server.endpoint(),
        ClientConfig {
            max_attempts: 1000,
            ..ClientConfig::default()
        },
    )?;
    let call = tokio::spawn(sdk.introspect_token(garbage_introspection()));
    // The SDK saw at least one OVERLOADED (the permit is still held) and retried.
    wait_for_rpcs(&sdk, 2, "a retry after being shed").await;
    signal(pid, "-CONT");

    let answer = call.await?.expect("admitted once the permit is free");
    assert!(!answer.active);
    assert!(sdk.rpcs_sent() > 1);
    let refreshed = held
        .await?
        .expect("the held refresh completes when Redis resumes");
    assert_eq!(refreshed.family_id, pair.family_id);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_client_throttled_for_failed_authentication_is_not_retried() -> anyhow::Result<()> {
    let fx = fixture(ServerOptions::default()).await;
    let client = fx.client("confidential", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let pair = sdk.issue_token_pair(issue_request(&client)).await?;
    let mut wrong = refresh_request(&client, &pair.refresh_token);
    wrong.client_secret = format!("{}x", client.client_secret);

    // Each failure is one attempt; after a burst of them the client is throttled.
    let mut throttled = None;
    for _ in 0..100 {
        let before = sdk.rpcs_sent();
        let err = sdk.refresh_token_pair(wrong.clone()).await.unwrap_err();
        assert_eq!((err.attempts(), sdk.rpcs_sent() - before), (1, 1), "{err}");
        if err.reason() == Some("RATE_LIMITED") {
            throttled = Some(err);
            break;
        }
        assert_eq!(err.reason(), Some("INVALID_CLIENT"));
    }
    let throttled = throttled.expect("never throttled");
    assert_eq!(throttled.code(), Code::ResourceExhausted);
    assert!(
        throttled.retry_delay().is_some(),
        "RATE_LIMITED carries RetryInfo"
    );
    fx.server.stop().await;
    Ok(())
}
