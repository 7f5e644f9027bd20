//! Redis is the database, not a cache. A policy that can evict is refused at start (unless
//! overridden) and reported if it appears while serving; a Redis that fills up refuses new
//! families with RESOURCE_EXHAUSTED / STORE_FULL before anything else, and every family that
//! exists keeps rotating. Real `token-server` processes over real redis-server processes with
//! a small `maxmemory`.

mod support;

use std::time::{Duration, Instant};

use deadpool_redis::redis;
use support::{ServerProcess, Setup, TestClient, reason};
use test_support::RedisServer;
use tonic_types::StatusExt as _;

/// Rotations of every family once Redis is past its high-water mark.
const ROTATIONS_WHEN_FULL: usize = 100;
/// Families that rotate that often (the first ones issued); every other rotates once.
const BUSY_FAMILIES: usize = 100;

fn redis_command(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd(args[0])
        .arg(&args[1..])
        .query(&mut conn)
        .unwrap()
}

fn info_field(url: &str, name: &str) -> u64 {
    let redis::Value::BulkString(text) = redis_command(url, &["INFO"]) else {
        panic!("INFO is text");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO has {name}"))
}

/// Waits (bounded: 30 s) for the process to exit by itself.
fn exit_status(mut process: std::process::Child) -> Option<std::process::ExitStatus> {
    let (exited, status) = std::sync::mpsc::channel();
    let pid = process.id();
    std::thread::spawn(move || {
        let _ = exited.send(process.wait().ok());
    });
    let status = status.recv_timeout(Duration::from_secs(30)).ok().flatten();
    if status.is_none() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    status
}

#[tokio::test]
async fn an_evicting_policy_is_refused_at_start_unless_overridden() {
    let setup = Setup::new();
    for policy in ["volatile-lru", "allkeys-lru", "volatile-ttl"] {
        let redis = RedisServer::start_with(&[
            "--save",
            "",
            "--maxmemory",
            "3mb",
            "--maxmemory-policy",
            policy,
        ]);
        let (mut command, _, log) = setup.command(&redis.url(), &format!("refused-{policy}"));
        let child = command.spawn().unwrap();
        let status = exit_status(child).expect("the server refuses to start");
        assert!(!status.success(), "{policy}: {status}");
        let said = std::fs::read_to_string(&log).unwrap();
        for words in [
            "maxmemory-policy",
            &format!("{policy:?}"),
            "maxmemory-policy noeviction",
            "--redis-allow-eviction",
        ] {
            assert!(
                said.contains(words),
                "{policy}: the error names {words}:\n{said}"
            );
        }

        // With the override it serves, and says what it is risking.
        let (mut command, addr, log) = setup.command(&redis.url(), &format!("allowed-{policy}"));
        command.env("TOKEN_REDIS_ALLOW_EVICTION", "true");
        let server = ServerProcess::start(command, addr, log).await;
        server.issues("evictable").await;
        assert!(
            server.log_text().contains("can evict token families"),
            "{policy}"
        );
    }
}

#[tokio::test]
async fn a_policy_that_turns_evicting_while_serving_is_reported_and_serving_goes_on() {
    let redis = RedisServer::start_with(&["--save", "", "--maxmemory", "64mb"]);
    let setup = Setup::new();
    let admin = format!("127.0.0.1:{}", test_support::free_port());
    let (mut command, addr, log) = setup.command(&redis.url(), "changed");
    command.env("TOKEN_ADMIN_LISTEN", &admin);
    let server = ServerProcess::start(command, addr, log).await;
    let gauge = || async {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("tokens_redis_eviction_policy_evicting"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(gauge().await.as_deref(), Some("0"));

    let _ = redis_command(
        &redis.url(),
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    // The next health look (every 100 ms) reports it; bounded wait on the log.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log_text().contains("changed to one that can evict") {
        assert!(
            Instant::now() < deadline,
            "no error logged:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.log_text().contains("allkeys-lru"));
    assert_eq!(gauge().await.as_deref(), Some("1"));
    server.issues("still-serving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_new_families_and_every_existing_one_keeps_rotating() {
    let redis = RedisServer::start_with(&["--save", "", "--maxmemory-policy", "noeviction"]);
    let setup = Setup::new();
    let (command, addr, log) = setup.command(&redis.url(), "full");
    let server = ServerProcess::start(command, addr, log).await;
    let mut registry = server.registry().await;
    let client = TestClient::register(&mut registry, "filler").await;
    let mut tokens = server.tokens().await;
    // Room for some hundreds of families (connection buffers make it vary) below the (default, 90%) high-water mark, above what
    // Redis uses with the server connected and its scripts loaded.
    let mut families = vec![
        tokens
            .issue_token_pair(client.issue("alice"))
            .await
            .unwrap()
            .into_inner()
            .refresh_token,
    ];
    let baseline = info_field(&redis.url(), "used_memory");
    let limit = ((baseline + 64 * 1024) * 10 / 9).to_string();
    let _ = redis_command(&redis.url(), &["CONFIG", "SET", "maxmemory", &limit]);

    let refusal = loop {
        match tokens.issue_token_pair(client.issue("alice")).await {
            Ok(pair) => families.push(pair.into_inner().refresh_token),
            Err(status) => break status,
        }
        assert!(families.len() < 100_000, "never refused");
    };
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert_eq!(reason(&refusal), "STORE_FULL");
    assert!(refusal.get_details_retry_info().is_some(), "with RetryInfo");
    assert!(!families.is_empty());

    // Every family rotates on, concurrently: the first hundred 100 times each, the rest once.
    let workers = 16;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let mut tokens = tokens.clone();
        let client = client.clone();
        let mine: Vec<(usize, String)> = families
            .iter()
            .cloned()
            .enumerate()
            .skip(worker)
            .step_by(workers)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut rotations = 0;
            for (n, mut token) in mine {
                let times = if n < BUSY_FAMILIES {
                    ROTATIONS_WHEN_FULL
                } else {
                    1
                };
                for _ in 0..times {
                    let pair = tokens
                        .refresh_token_pair(client.refresh(&token))
                        .await
                        .unwrap_or_else(|s| panic!("a family failed to rotate: {}", reason(&s)))
                        .into_inner();
                    assert!(!pair.replayed);
                    token = pair.refresh_token;
                    rotations += 1;
                }
            }
            rotations
        }));
    }
    let mut rotations = 0;
    for task in tasks {
        rotations += task.await.unwrap();
    }
    assert_eq!(info_field(&redis.url(), "evicted_keys"), 0);
    let busy = families.len().min(BUSY_FAMILIES);
    assert_eq!(
        rotations,
        busy * ROTATIONS_WHEN_FULL + (families.len() - busy),
        "every family rotated every time"
    );
    eprintln!(
        "maxmemory {limit} B (baseline {baseline} B): {} families issued before STORE_FULL, \
         then {rotations} rotations, none refused; used_memory now {} B",
        families.len(),
        info_field(&redis.url(), "used_memory")
    );
}
