//! The service config in `deploy/grpc/service-config.json` is what makes callers in every
//! language retry correctly, not only the Rust SDK. Here it is loaded into grpcio (Python, a gRPC
//! client nobody here wrote, `tests/python/grpcio_retry_client.py`) with no retry code of its
//! own: each refresh is one stub call. Eight chains of thirty refreshes run through a token
//! server whose Redis traffic crosses a fault proxy that loses each reply with probability
//! [`LOST_REPLY_PROBABILITY`]: the command ran (a rotation committed), its reply never reaches
//! the server, and the server answers UNAVAILABLE. grpcio must retry that answer into the
//! identical pair (a grace replay), so that every refresh succeeds and every family ends alive,
//! unforked, exactly at the generation its chain expects. A control runs the same client under
//! the same faults without the service config and sees the failures. A third test checks the
//! config's values against the reasons given for them in the README.
//!
//! Why the two runs do not flake: with the config a call fails only if all five attempts lose
//! their reply, about `p^5` = 3e-7 for p = 5% (a little more right after a dropped connection is
//! replaced), so about 1e-4 for the 240 calls of a run; the control sees no failure only if
//! every call keeps its reply, `0.95^240` = 5e-6. The retry throttle (a bucket of 20 tokens)
//! cannot run dry at this rate: each success earns back what a failure costs. No timing is
//! asserted; the Python run is bounded by [`PYTHON_RUN_LIMIT`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_support::harness;

use serde_json::{Value, json};
use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::{
    RedisServer, ServerOptions, TestClient, TestServer, issue, refresh_request, register_client,
    warm_up,
};
use token_core::store::FamilyStatus;
use token_proto::v1 as pb;

const CHAINS: usize = 8;
const STEPS: u64 = 30;
/// Per chunk the server sends Redis: its reply is lost after the command ran.
const LOST_REPLY_PROBABILITY: f64 = 0.05;
/// A hang guard for the Python process, far beyond what a run takes (seconds).
const PYTHON_RUN_LIMIT: Duration = Duration::from_secs(180);

/// One Redis behind a fault proxy, one token server talking to Redis through it, one client
/// whose refreshes are counted, and the first pair of each chain.
struct Env {
    server: TestServer,
    proxy: FaultProxy,
    client: TestClient,
    first_pairs: Vec<pb::TokenPair>,
    _redis: RedisServer,
}

impl Env {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        let server = TestServer::start(
            &format!("redis://{}", proxy.addr()),
            ServerOptions {
                admin: true,
                ..ServerOptions::default()
            },
        )
        .await;
        let mut registry = server.registry().await;
        let client = register_client(&mut registry, "confidential", "", &["read"]).await;
        let mut tokens = server.tokens().await;
        let mut first_pairs = Vec::new();
        for i in 0..CHAINS {
            first_pairs.push(issue(&mut tokens, &client, &format!("chain-{i}")).await);
        }
        // Its own client, so that the counted refreshes are the Python client's alone.
        let other = register_client(&mut registry, "confidential", "", &["read"]).await;
        warm_up(&server, &other).await;
        Self {
            server,
            proxy,
            client,
            first_pairs,
            _redis: redis,
        }
    }

    /// Runs the Python client with the faults on, then turns them off.
    async fn refresh_through_lossy_redis(&self, service_config: Option<&Path>) -> Report {
        self.proxy.set_seed(14);
        self.proxy
            .set_probability(Fault::DropAfterForward, LOST_REPLY_PROBABILITY);
        let request = json!({
            "target": self.server.addr.to_string(),
            "service_config": service_config,
            "client_id": self.client.client_id,
            "client_secret": self.client.client_secret,
            "refresh_tokens": self.first_pairs.iter().map(|p| &p.refresh_token).collect::<Vec<_>>(),
            "steps": STEPS,
        });
        let output = grpcio_client(request).await;
        self.proxy.clear();
        let lost_replies = self.proxy.injected(Fault::DropAfterForward);
        let report = Report::parse(&output, service_config.is_some(), lost_replies);
        let counted = ServerCounts::scrape(self.server.admin_addr.unwrap(), &self.client).await;
        Report { counted, ..report }
    }

    /// The family's generation, after checking it is alive.
    async fn live_generation(&self, pair: &pb::TokenPair) -> u64 {
        let family_id = &pair.family_id;
        let state = harness::stored_family(&self.server.service, &pair.refresh_token)
            .await
            .unwrap_or_else(|| panic!("family {family_id} is gone"));
        assert_eq!(
            state.status,
            FamilyStatus::Active,
            "family {family_id} was revoked"
        );
        state.generation
    }

    /// Refreshes `refresh_token` directly (no faults now): it must be the family's current
    /// token, so the answer is a fresh rotation, not a replay.
    async fn refresh_directly(&self, refresh_token: &str) -> pb::TokenPair {
        let pair = self
            .server
            .tokens()
            .await
            .refresh_token_pair(refresh_request(&self.client, refresh_token))
            .await
            .expect("the chain's last token refreshes")
            .into_inner();
        assert!(!pair.replayed, "the chain's last token was already retired");
        pair
    }
}

/// What one chain of the Python client saw.
#[derive(Debug)]
struct Chain {
    family_ids: Vec<String>,
    replayed: Vec<bool>,
    refresh_token: String,
    failure: Option<Value>,
}

/// What the Python client saw, what the proxy did, what the server counted.
#[derive(Debug)]
struct Report {
    chains: Vec<Chain>,
    /// Replies the proxy lost (every Redis command of the run, audit and health included).
    lost_replies: u64,
    counted: ServerCounts,
}

impl Report {
    fn parse(output: &Value, config_loaded: bool, lost_replies: u64) -> Self {
        assert_eq!(output["service_config_loaded"], config_loaded);
        let chains = output["chains"]
            .as_array()
            .expect("chains")
            .iter()
            .map(|chain| Chain {
                family_ids: strings(&chain["family_ids"]),
                replayed: chain["replayed"]
                    .as_array()
                    .expect("replayed")
                    .iter()
                    .map(|r| r.as_bool().expect("a flag"))
                    .collect(),
                refresh_token: chain["refresh_token"]
                    .as_str()
                    .expect("refresh_token")
                    .to_owned(),
                failure: Some(chain["failure"].clone()).filter(|f| !f.is_null()),
            })
            .collect();
        Self {
            chains,
            lost_replies,
            counted: ServerCounts::default(),
        }
    }

    fn successes(&self) -> u64 {
        self.chains.iter().map(|c| c.family_ids.len() as u64).sum()
    }

    fn failures(&self) -> u64 {
        self.chains.iter().filter(|c| c.failure.is_some()).count() as u64
    }

    /// Answers marked `replayed`: with one caller per chain, only a retry of a call whose
    /// rotation had committed gets one.
    fn replayed_answers(&self) -> u64 {
        self.chains
            .iter()
            .map(|c| c.replayed.iter().filter(|r| **r).count() as u64)
            .sum()
    }

    fn outcome(&self, outcome: &str) -> u64 {
        self.counted.outcomes.get(outcome).copied().unwrap_or(0)
    }

    fn unavailable_answers(&self) -> u64 {
        self.counted.unavailable_answers
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: {} refreshes succeeded, {} failed; {} replies lost by the proxy; server \
             answered UNAVAILABLE {} times; outcomes rotated {}, replayed {}",
            self.successes(),
            self.failures(),
            self.lost_replies,
            self.unavailable_answers(),
            self.outcome("rotated"),
            self.outcome("replayed"),
        );
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn service_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("deploy/grpc/service-config.json")
}

/// Runs `tests/python/grpcio_retry_client.py` with `request` and returns what it printed.
async fn grpcio_client(request: Value) -> Value {
    let input = request.to_string();
    let stdout =
        harness::run_python("grpcio_retry_client.py", input.as_bytes(), PYTHON_RUN_LIMIT).await;
    serde_json::from_slice(&stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(&stdout)))
}

/// What the server counted (its `/metrics`, as the reference parser
/// `tests/python/parse_prometheus.py`, prometheus_client, reads it). Each test has a server
/// of its own, whose metrics are its own.
#[derive(Debug, Default)]
struct ServerCounts {
    /// `tokens_refreshes_total` of the Python client, by outcome. (A refresh whose client
    /// lookup lost its reply is counted under the client `(unknown)`, so `unavailable` is read
    /// from the RPC metric below instead.)
    outcomes: HashMap<String, u64>,
    /// `RefreshTokenPair` calls the server answered UNAVAILABLE (`rpc_server_call_duration`).
    unavailable_answers: u64,
}

impl ServerCounts {
    async fn scrape(admin: SocketAddr, client: &TestClient) -> Self {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let limit = Duration::from_secs(60);
        let parsed = harness::run_python("parse_prometheus.py", text.as_bytes(), limit).await;
        let samples: Vec<Value> = serde_json::from_slice(&parsed).expect("parser output");
        let mut counts = Self::default();
        for sample in samples {
            let (labels, value) = (&sample["labels"], sample["value"].as_f64().expect("value"));
            if sample["name"] == "tokens_refreshes_total"
                && labels["client"] == client.client_id.as_str()
            {
                let outcome = labels["outcome"].as_str().expect("outcome").to_owned();
                *counts.outcomes.entry(outcome).or_default() += value as u64;
            }
            if sample["name"] == "rpc_server_call_duration_seconds_count"
                && labels["rpc_method"] == "RefreshTokenPair"
                && labels["rpc_grpc_status_code"] == "14"
            {
                counts.unavailable_answers += value as u64;
            }
        }
        counts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_with_the_service_config_retries_every_lost_reply_into_the_same_pair() {
    let env = Env::start().await;
    let report = env
        .refresh_through_lossy_redis(Some(&service_config_path()))
        .await;
    report.print("with the service config");

    // Every refresh succeeded, although the server answered UNAVAILABLE many times: grpcio
    // retried each of those answers, since no call failed.
    let calls = CHAINS as u64 * STEPS;
    for chain in &report.chains {
        assert_eq!(chain.failure, None, "a refresh failed: {chain:?}");
    }
    assert_eq!(report.successes(), calls);
    assert!(
        report.unavailable_answers() > 0,
        "no UNAVAILABLE answer, so nothing was retried: {report:?}"
    );
    // Some of them were lost rotations: their retry got the pair already issued.
    assert!(
        report.replayed_answers() > 0,
        "no lost rotation was retried: {report:?}"
    );
    // The server's count agrees: each call ended in exactly one rotation or replay.
    assert_eq!(report.outcome("replayed"), report.replayed_answers());
    assert_eq!(
        report.outcome("rotated") + report.outcome("replayed"),
        calls
    );

    // Every family alive, unforked: one rotation per step, and the last token the chain holds
    // is the family's current one.
    for (chain, first) in report.chains.iter().zip(&env.first_pairs) {
        assert!(chain.family_ids.iter().all(|f| *f == first.family_id));
        assert_eq!(env.live_generation(first).await, 1 + STEPS);
        let next = env.refresh_directly(&chain.refresh_token).await;
        assert_eq!(next.family_id, first.family_id);
        assert_eq!(env.live_generation(first).await, 2 + STEPS);
    }
}

/// The control: the same client and faults without the service config fail calls, so the
/// config is what made the run above pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_without_the_service_config_fails_on_lost_replies() {
    let env = Env::start().await;
    let report = env.refresh_through_lossy_redis(None).await;
    report.print("without a service config");

    assert!(
        report.failures() > 0,
        "no call failed without retries: {report:?}"
    );
    for chain in &report.chains {
        if let Some(failure) = &chain.failure {
            assert_eq!(failure["code"], "UNAVAILABLE", "{chain:?}");
        }
    }
    // Nothing retried: every UNAVAILABLE the server sent is a failed call, and no answer was
    // a replay.
    assert_eq!(report.unavailable_answers(), report.failures());
    assert_eq!(report.replayed_answers(), 0);
    assert_eq!(report.outcome("rotated"), report.successes());

    // No family was harmed, but a chain whose rotation committed before its reply was lost
    // holds a retired token: it would have to retry within the grace period.
    let mut stranded = 0;
    for (chain, first) in report.chains.iter().zip(&env.first_pairs) {
        let held = 1 + chain.family_ids.len() as u64;
        let generation = env.live_generation(first).await;
        assert!(generation == held || generation == held + 1, "{chain:?}");
        if generation == held + 1 {
            stranded += 1;
        }
    }
    println!(
        "without a service config: {stranded} of {} failed chains hold a retired token",
        report.failures()
    );
}

/// The service config's values against the reasoning in the README ("Retrying from any
/// language"): every TokenService method decided by name, only the idempotent ones retried,
/// the whole retry budget far inside the default grace period, and a `tokenRatio` that grpc
/// C-core reads as written.
#[test]
fn the_service_config_retries_only_what_is_safe_well_inside_the_grace_period() {
    let text = std::fs::read_to_string(service_config_path()).expect("the service config");
    let config: Value = serde_json::from_str(&text).expect("the service config is JSON");
    let grace = token_core::DEFAULT_GRACE.as_secs_f64();
    let duration = |value: &Value| -> f64 {
        let text = value.as_str().expect("a duration string");
        text.strip_suffix('s')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a duration: {text}"))
    };

    let (mut retried, mut not_retried) = (Vec::new(), Vec::new());
    for entry in config["methodConfig"].as_array().expect("methodConfig") {
        let timeout = duration(&entry["timeout"]);
        assert!(
            timeout * 6.0 <= grace,
            "the deadline of a call, retries included ({timeout} s), must stay far inside the \
             grace period ({grace} s)"
        );
        let policy = entry.get("retryPolicy");
        for name in entry["name"].as_array().expect("name") {
            assert_eq!(name["service"], "tokens.v1.TokenService");
            // A service-wide entry would also retry methods added later, unexamined.
            let method = name["method"].as_str().expect("every method named");
            match policy {
                Some(_) => retried.push(method.to_owned()),
                None => not_retried.push(method.to_owned()),
            }
        }
        let Some(policy) = policy else { continue };
        let attempts = policy["maxAttempts"].as_u64().expect("maxAttempts");
        assert!((2..=5).contains(&attempts), "gRPC clamps maxAttempts to 5");
        assert_eq!(
            policy["retryableStatusCodes"],
            json!(["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"])
        );
        // The longest the backoffs can add up to (each wait is random below its ceiling in
        // grpc-go and grpc-java, within 20% of it in grpc C-core) leaves most of the deadline to
        // the attempts themselves.
        let (initial, max) = (
            duration(&policy["initialBackoff"]),
            duration(&policy["maxBackoff"]),
        );
        let multiplier = policy["backoffMultiplier"].as_f64().expect("multiplier");
        let backoffs: f64 = (0..attempts - 1)
            .map(|retry| (initial * multiplier.powi(retry as i32)).min(max) * 1.2)
            .sum();
        assert!(
            backoffs * 2.0 <= timeout,
            "backoffs of up to {backoffs} s in {timeout} s"
        );
    }
    // IssueTokenPair is not idempotent: a retry after a lost reply starts a second family.
    assert_eq!(not_retried, ["IssueTokenPair"]);
    let mut decided: Vec<_> = retried.into_iter().chain(not_retried).collect();
    decided.sort();
    assert_eq!(
        decided,
        token_service_methods(),
        "every TokenService method needs a decision"
    );

    // grpc C-core (Python, C++, Ruby, PHP, ...) reads a tokenRatio written without a decimal
    // point as thousandths: 1 would mean 0.001, and retries would stop for good after ten
    // failures (seen here before the ratio was written as 1.0).
    let ratio = text
        .split("\"tokenRatio\":")
        .nth(1)
        .expect("retryThrottling.tokenRatio")
        .trim_start();
    let number: String = ratio
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    assert!(
        number.contains('.'),
        "write tokenRatio with a decimal point, not {number}"
    );
    let throttling = &config["retryThrottling"];
    let (tokens, ratio) = (
        throttling["maxTokens"].as_f64().expect("maxTokens"),
        throttling["tokenRatio"].as_f64().expect("tokenRatio"),
    );
    assert!(tokens > 0.0 && tokens <= 1000.0 && ratio > 0.0);
}

/// The methods of `service TokenService` in the .proto, sorted.
fn token_service_methods() -> Vec<String> {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("proto/tokens/v1/tokens.proto");
    let text = std::fs::read_to_string(proto).expect("the .proto");
    let service = text
        .split("service TokenService {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("service TokenService");
    let mut methods: Vec<String> = service
        .lines()
        .filter_map(|line| line.trim().strip_prefix("rpc "))
        .map(|rest| rest.split('(').next().expect("a name").trim().to_owned())
        .collect();
    methods.sort();
    methods
}
