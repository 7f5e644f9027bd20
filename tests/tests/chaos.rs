//! Chaos: many families refreshed in chains by concurrent SDK clients over two server
//! instances, while fault-injecting proxies in front of each instance and between each
//! instance and Redis refuse connections, drop requests before and after forwarding, stall
//! and reset mid-stream. At the end no family is revoked, no client ever saw a refusal of its
//! token, and every client's pair refreshes.
//!
//! `make test` injects at least `CHAOS_FAULTS` (default 25) faults of each kind; `make chaos`
//! runs it with 1,000 in release mode (`CHAOS_PERMILLE` sets the per-request probability of
//! each request-level fault, default 10, and `CHAOS_SECONDS` bounds the run, default 240).
//! Counts are printed either way (`--nocapture`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use test_support::harness;

use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::{RedisServer, ServerOptions, TestServer, issue, register_client};
use token_client::{ClientConfig, TokenClient};
use token_core::store::FamilyStatus;
use token_proto::v1 as pb;

const FAMILIES: usize = 24;
const WORKERS: usize = 12;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the callers saw.
#[derive(Default)]
struct Tally {
    rotations: AtomicU64,
    replays: AtomicU64,
    /// Calls whose retries all failed, by final gRPC code; the chain keeps its pair and
    /// tries again.
    gave_up: std::sync::Mutex<BTreeMap<String, u64>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_family_is_lost_or_revoked_under_injected_faults() {
    let target = env_number("CHAOS_FAULTS", 25);
    let time_cap = Duration::from_secs(env_number("CHAOS_SECONDS", 240));
    // Per request chunk, for each of the four request-level faults.
    let probability = env_number("CHAOS_PERMILLE", 10) as f64 / 1000.0;
    let redis = RedisServer::start();

    let mut servers = Vec::new();
    let mut proxies = Vec::new();
    let mut clients = Vec::new();
    let config = ClientConfig {
        deadline: Duration::from_millis(1000),
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        max_attempts: 30,
    };
    for _ in 0..2 {
        let to_redis = FaultProxy::start(redis.addr()).await;
        let server = TestServer::start(
            &format!("redis://{}", to_redis.addr()),
            ServerOptions {
                redis_timeout: Duration::from_millis(300),
                ..ServerOptions::default()
            },
        )
        .await;
        let in_front = FaultProxy::start(server.addr).await;
        clients.push(TokenClient::connect(&format!("http://{}", in_front.addr()), config).unwrap());
        proxies.push(to_redis);
        proxies.push(in_front);
        servers.push(server);
    }

    // Set-up before the faults start.
    let client = register_client(
        &mut servers[0].registry().await,
        "confidential",
        "",
        &["read"],
    )
    .await;
    let mut direct = servers[0].tokens().await;
    let mut pairs = Vec::new();
    for i in 0..FAMILIES {
        pairs.push(issue(&mut direct, &client, &format!("chaos-{i}")).await);
    }

    for proxy in &proxies {
        proxy.set_seed(7);
        proxy.set_stall_for(Duration::from_millis(1500));
        // Refusal can only strike new connections, which are rarer than requests.
        proxy.set_probability(Fault::Refuse, 0.3);
        for fault in [
            Fault::DropBeforeForward,
            Fault::DropAfterForward,
            Fault::Stall,
            Fault::ResetMidStream,
        ] {
            proxy.set_probability(fault, probability);
        }
    }

    let proxies = Arc::new(proxies);
    let injected = |fault: Fault| proxies.iter().map(|p| p.injected(fault)).sum::<u64>();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let violations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));

    let mut owned: Vec<Vec<pb::TokenPair>> = vec![Vec::new(); WORKERS];
    for (i, pair) in pairs.into_iter().enumerate() {
        owned[i % WORKERS].push(pair);
    }
    let workers: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(w, mut families)| {
            let clients = clients.clone();
            let (stop, tally, violations) = (stop.clone(), tally.clone(), violations.clone());
            let credentials = client.clone();
            tokio::spawn(async move {
                let mut call = w;
                while !stop.load(Ordering::Relaxed) {
                    for pair in families.iter_mut() {
                        call += 1;
                        let sdk = &clients[call % clients.len()];
                        let request = harness::refresh_request(&credentials, &pair.refresh_token);
                        match sdk.refresh_token_pair(request).await {
                            Ok(next) => {
                                let counter = if next.replayed {
                                    &tally.replays
                                } else {
                                    &tally.rotations
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                                *pair = next;
                            }
                            Err(err)
                                if err.reason().is_some_and(|r| {
                                    r.starts_with("TOKEN_") || r.contains("CLIENT")
                                }) =>
                            {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("family {}: {err}", pair.family_id));
                            }
                            Err(err) => {
                                let code = format!("{:?}: {}", err.code(), err.status().message());
                                *tally.gave_up.lock().unwrap().entry(code).or_default() += 1;
                            }
                        }
                    }
                }
                families
            })
        })
        .collect();

    // Run until every kind of fault struck often enough (a bounded run: it stops by itself).
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await;
        let reached = Fault::ALL.iter().all(|f| injected(*f) >= target);
        if reached || started.elapsed() > time_cap {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for proxy in proxies.iter() {
        proxy.clear();
    }
    let mut finals = Vec::new();
    for worker in workers {
        finals.extend(worker.await.expect("worker panicked"));
    }

    let counts: BTreeMap<String, u64> = Fault::ALL
        .iter()
        .map(|f| (format!("{f:?}"), injected(*f)))
        .collect();
    let retries: u64 = clients[0].rpcs_sent() + clients[1].rpcs_sent();
    println!(
        "chaos: {:?} elapsed; faults injected {counts:?}; rotations {}, replays {}, calls given up {:?}, RPC attempts {retries}",
        started.elapsed(),
        tally.rotations.load(Ordering::Relaxed),
        tally.replays.load(Ordering::Relaxed),
        tally.gave_up.lock().unwrap(),
    );

    let violations = violations.lock().unwrap().clone();
    if !violations.is_empty() {
        // What the audit recorded of the reuses, for whoever reads the failure.
        for server in &servers {
            server.audit.flush().await;
        }
        let events = servers[0]
            .tokens()
            .await
            .list_refresh_events(token_proto::v1::ListRefreshEventsRequest {
                client_id: client.client_id.clone(),
                outcomes: vec!["reused".to_owned()],
                page_size: 100,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().events);
        println!("audit of the reuses: {events:#?}");
    }
    assert!(
        violations.is_empty(),
        "clients were refused their tokens: {violations:#?}"
    );
    for fault in Fault::ALL {
        assert!(
            injected(fault) >= target,
            "only {} {fault:?} faults in {time_cap:?} (wanted {target})",
            injected(fault)
        );
    }
    // Every client's pair still refreshes, and no family was revoked.
    for pair in &finals {
        let next = clients[0]
            .refresh_token_pair(harness::refresh_request(&client, &pair.refresh_token))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "family {} does not refresh after chaos: {err}",
                    pair.family_id
                )
            });
        let state = harness::stored_family(&servers[0].service, &next.refresh_token)
            .await
            .expect("family exists");
        assert_eq!(
            state.status,
            FamilyStatus::Active,
            "family {} was revoked",
            next.family_id
        );
    }
}
