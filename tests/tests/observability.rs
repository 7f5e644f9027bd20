//! Seeing every request (issue 4): traces exported over OTLP/gRPC to a receiver this test
//! starts, the per-client refresh audit read back through `ListRefreshEvents` and
//! `SummarizeRefreshEvents`, and the Prometheus endpoint parsed by the reference parser.
//!
//! Tracing is process-wide (one global subscriber), so every test here shares one OTLP
//! receiver and one Tokio runtime that outlives the tests (the exporter runs on it), and
//! finds its own spans by the trace id of a span it opened itself.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use test_support::harness;

use telemetry::{LogFormat, TelemetryOptions};
use test_support::fault_proxy::{Fault, FaultProxy};
use test_support::harness::{
    RedisServer, ServerOptions, TestClient, TestServer, issue, refresh_request, register_client,
    warm_up,
};
use test_support::otlp::{OtlpReceiver, ReceivedSpan};
use token_client::{ClientConfig, TokenClient, pb};
use token_core::{Lifetimes, ManualClock};
use tracing::Instrument as _;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
});

struct Shared {
    receiver: OtlpReceiver,
    telemetry: telemetry::Guard,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    RUNTIME.block_on(async {
        let receiver = OtlpReceiver::start().await;
        let telemetry = telemetry::init_with(TelemetryOptions {
            service_name: "observability-test",
            log_format: LogFormat::Pretty,
            otlp_endpoint: Some(receiver.endpoint()),
        });
        Shared {
            receiver,
            telemetry,
        }
    })
});

/// Runs a test body on the shared runtime, with telemetry exporting to the shared receiver.
fn run(test: impl Future<Output = ()>) {
    LazyLock::force(&SHARED);
    RUNTIME.block_on(test);
}

fn trace_id_of(span: &tracing::Span) -> String {
    let _entered = span.enter();
    let trace_id = telemetry::propagation::current_trace_id();
    assert_eq!(trace_id.len(), 32, "the caller's span has a trace id");
    trace_id
}

/// The spans of one trace, once `done` holds for them. Exports what is buffered first, so a
/// finished trace arrives without waiting for the exporter's schedule.
async fn trace(trace_id: &str, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
    tokio::task::spawn_blocking(|| SHARED.telemetry.flush())
        .await
        .unwrap();
    let of_trace = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    let spans = SHARED
        .receiver
        .wait_for_spans(&format!("the spans of trace {trace_id}"), |spans| {
            done(&of_trace(spans))
        })
        .await;
    of_trace(&spans)
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;
const REFRESH: &str = "tokens.v1.TokenService/RefreshTokenPair";

fn spans_named<'a>(spans: &'a [ReceivedSpan], name: &str, kind: i32) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && s.kind == kind)
        .collect()
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

fn sdk(server: &TestServer) -> TokenClient {
    TokenClient::connect(&server.endpoint(), ClientConfig::default()).expect("endpoint")
}

#[test]
fn a_refresh_is_one_trace_from_the_caller_through_the_server_to_redis() {
    run(async {
        let redis = RedisServer::start();
        let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
        let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
        let pair = issue(&mut server.tokens().await, &client, "alice").await;

        let caller = tracing::info_span!("caller.refresh_job");
        let trace_id = trace_id_of(&caller);
        let next = sdk(&server)
            .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
            .instrument(caller.clone())
            .await
            .expect("refresh");
        assert!(!next.replayed);
        drop(caller);

        let spans = trace(&trace_id, |spans| {
            spans.iter().any(|s| s.name == "caller.refresh_job")
                && spans.iter().any(|s| s.name == "EVALSHA rotate")
                && !spans_named(spans, REFRESH, SERVER).is_empty()
                && !spans_named(spans, REFRESH, CLIENT).is_empty()
        })
        .await;

        let caller = spans
            .iter()
            .find(|s| s.name == "caller.refresh_job")
            .unwrap();
        assert_eq!(caller.parent_span_id, "", "the caller's span is the root");
        let [attempt] = spans_named(&spans, REFRESH, CLIENT)[..] else {
            panic!("one SDK attempt expected: {spans:#?}");
        };
        assert_eq!(attempt.parent_span_id, caller.span_id);
        assert_eq!(attempt.attribute("rpc.system"), Some("grpc"));
        assert_eq!(attempt.attribute("tokens.attempt"), Some("1"));
        let [rpc] = spans_named(&spans, REFRESH, SERVER)[..] else {
            panic!("one server span expected: {spans:#?}");
        };
        assert_eq!(
            rpc.parent_span_id, attempt.span_id,
            "the server continued the trace from the traceparent the SDK sent"
        );
        assert_eq!(rpc.attribute("rpc.system"), Some("grpc"));
        assert_eq!(rpc.attribute("rpc.service"), Some("tokens.v1.TokenService"));
        assert_eq!(rpc.attribute("rpc.method"), Some("RefreshTokenPair"));
        assert_eq!(rpc.attribute("rpc.grpc.status_code"), Some("0"));
        assert_eq!(rpc.attribute("tokens.outcome"), Some("rotated"));
        let rotate = spans.iter().find(|s| s.name == "EVALSHA rotate").unwrap();
        assert_eq!(rotate.parent_span_id, rpc.span_id);
        assert_eq!(rotate.kind, CLIENT);
        assert_eq!(rotate.attribute("db.system.name"), Some("redis"));
        assert_eq!(rotate.attribute("db.operation.name"), Some("EVALSHA"));
        assert_eq!(rotate.attribute("db.stored_procedure.name"), Some("rotate"));
        assert_eq!(rotate.attribute("server.address"), Some("127.0.0.1"));
        assert_eq!(
            rotate.attribute("server.port"),
            Some(redis.addr().port().to_string().as_str())
        );
        // No token or secret anywhere in what was exported.
        for span in &spans {
            for value in span.attributes.values() {
                assert!(
                    !value.contains(&pair.refresh_token) && !value.contains(&next.refresh_token)
                );
            }
        }
    });
}

#[test]
fn a_reply_lost_on_the_redis_connection_is_an_error_span_and_the_retry_a_replay_in_the_same_trace()
{
    run(async {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.addr()).await;
        let server = TestServer::start(
            &format!("redis://{}", proxy.addr()),
            ServerOptions {
                admin: true,
                // No health pings through the proxy to take the armed fault.
                health_interval: Duration::from_secs(3600),
                // The client record stays cached however long this takes on a loaded machine
                // (this server runs on the system clock): with the default 1 s, a slow run
                // sent a client lookup first, and that took the armed fault.
                client_cache_ttl: Duration::from_secs(3600),
                ..ServerOptions::default()
            },
        )
        .await;
        let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
        let pair = issue(&mut server.tokens().await, &client, "alice").await;
        warm_up(&server, &client).await;
        let errors_before = connection_errors_after_send(server.admin_addr.unwrap()).await;

        // The client record is cached: the refresh's only Redis command is the rotation,
        // which Redis runs and whose reply the proxy then drops with the connection.
        proxy.arm(Fault::DropAfterForward, 1);
        let caller = tracing::info_span!("caller.lost_reply");
        let trace_id = trace_id_of(&caller);
        let next = sdk(&server)
            .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
            .instrument(caller.clone())
            .await
            .expect("the SDK's retry succeeds");
        drop(caller);
        assert_eq!(proxy.injected(Fault::DropAfterForward), 1);
        assert!(next.replayed, "the retry got the committed rotation's pair");

        let spans = trace(&trace_id, |spans| {
            spans_named(spans, REFRESH, SERVER).len() == 2
                && spans_named(spans, REFRESH, CLIENT).len() == 2
                && spans.iter().filter(|s| s.name == "EVALSHA rotate").count() == 2
        })
        .await;
        let attempts = spans_named(&spans, REFRESH, CLIENT);
        let attempt = |n: &str| {
            *attempts
                .iter()
                .find(|s| s.attribute("tokens.attempt") == Some(n))
                .unwrap_or_else(|| panic!("no attempt {n}: {spans:#?}"))
        };
        let (first, second) = (attempt("1"), attempt("2"));
        assert_eq!(first.attribute("rpc.grpc.status_code"), Some("14"));
        assert_eq!(
            first.parent_span_id, second.parent_span_id,
            "both under the caller"
        );

        let served = |attempt: &ReceivedSpan| {
            let [rpc] = children(&spans, attempt)[..] else {
                panic!("one server span under each attempt: {spans:#?}");
            };
            rpc.clone()
        };
        let failed = served(first);
        assert_eq!(failed.attribute("rpc.grpc.status_code"), Some("14"));
        assert_eq!(failed.attribute("error.type"), Some("STORE_UNAVAILABLE"));
        assert_eq!(failed.status_code, STATUS_ERROR);
        let [lost] = children(&spans, &failed)[..] else {
            panic!("one Redis call under the failed attempt: {spans:#?}");
        };
        assert_eq!(lost.name, "EVALSHA rotate");
        assert_eq!(lost.status_code, STATUS_ERROR);
        let event = lost
            .events
            .iter()
            .find(|e| e.attributes.get("phase").map(String::as_str) == Some("after_send"))
            .unwrap_or_else(|| panic!("no connection event on {lost:#?}"));
        assert_eq!(
            event.attributes.get("peer"),
            Some(&proxy.addr().to_string()),
            "the event names the peer the request went to"
        );
        assert!(event.name.contains("after the request was sent"));

        let replayed = served(second);
        assert_eq!(replayed.attribute("rpc.grpc.status_code"), Some("0"));
        assert_eq!(replayed.attribute("tokens.outcome"), Some("replayed"));

        let errors_after = connection_errors_after_send(server.admin_addr.unwrap()).await;
        assert_eq!(
            errors_after,
            errors_before + 1.0,
            "the counter moved by one"
        );
    });
}

/// `tokens_redis_connection_errors_total{phase="after_send"}` from the admin endpoint.
async fn connection_errors_after_send(admin: SocketAddr) -> f64 {
    scrape(admin)
        .await
        .iter()
        .filter(|s| {
            s.name == "tokens_redis_connection_errors_total"
                && s.labels.get("phase").map(String::as_str) == Some("after_send")
        })
        .map(|s| s.value)
        .sum()
}

/// One Prometheus sample, as the reference parser read it.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// `GET /metrics`, parsed by `prometheus_client` (Python, from PyPI): the test fails if the
/// text does not parse.
async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let response = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/parse_prometheus.py");
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(test_support::tools_python())
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the Prometheus text does not parse: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("parser output");
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// A refresh through the SDK inside a fresh caller span; its result and trace id.
async fn traced_refresh(
    sdk: &TokenClient,
    client: &TestClient,
    secret: &str,
    token: &str,
) -> (Result<pb::TokenPair, token_client::Error>, String) {
    let caller = tracing::info_span!("caller.audited");
    let trace_id = trace_id_of(&caller);
    let result = sdk
        .refresh_token_pair(pb::RefreshTokenPairRequest {
            client_id: client.client_id.clone(),
            client_secret: secret.to_owned(),
            refresh_token: token.to_owned(),
            scopes: vec![],
        })
        .instrument(caller)
        .await;
    (result, trace_id)
}

const GRACE: Duration = Duration::from_secs(60);

#[test]
fn a_mixed_workload_is_reported_exactly_by_the_audit_and_the_prometheus_endpoint() {
    run(async {
        let redis = RedisServer::start();
        let clock = ManualClock::starting_now();
        let server = TestServer::start(
            &redis.url(),
            ServerOptions {
                clock: Arc::new(clock.clone()),
                lifetimes: Lifetimes {
                    grace: GRACE,
                    ..Lifetimes::default()
                },
                audit_retention: Duration::from_secs(365 * 86_400),
                admin: true,
                ..ServerOptions::default()
            },
        )
        .await;
        let mut registry = server.registry().await;
        let alpha = register_client(&mut registry, "confidential", "", &["read"]).await;
        let beta = register_client(&mut registry, "public", "reject-only", &["read"]).await;
        let sdk = sdk(&server);
        let mut tokens = server.tokens().await;

        // Client alpha: every outcome the state machine and authentication produce.
        let first = issue(&mut tokens, &alpha, "alice").await;
        let secret = alpha.client_secret.clone();
        let mut expected = Vec::new(); // (outcome, reason, generation, trace id), oldest first
        let (r, t) = traced_refresh(&sdk, &alpha, &secret, &first.refresh_token).await;
        let second = r.expect("rotated");
        expected.push(("rotated", "", 1, t));
        let (r, t) = traced_refresh(&sdk, &alpha, &secret, &first.refresh_token).await;
        assert!(r.expect("replayed").replayed);
        expected.push(("replayed", "", 1, t));
        let (r, t) = traced_refresh(&sdk, &alpha, &secret, &second.refresh_token).await;
        let third = r.expect("rotated");
        expected.push(("rotated", "", 2, t));
        clock.advance(GRACE + Duration::from_secs(1));
        let (r, t) = traced_refresh(&sdk, &alpha, &secret, &first.refresh_token).await;
        assert_eq!(r.unwrap_err().reason(), Some("TOKEN_REUSED"));
        expected.push(("reused", "TOKEN_REUSED", 1, t));
        let (r, t) = traced_refresh(&sdk, &alpha, &secret, &third.refresh_token).await;
        assert_eq!(r.unwrap_err().reason(), Some("TOKEN_REVOKED"));
        expected.push(("revoked", "TOKEN_REVOKED", 3, t));
        let (r, t) = traced_refresh(&sdk, &alpha, &secret, "rt1.not-a-token").await;
        assert_eq!(r.unwrap_err().reason(), Some("TOKEN_INVALID"));
        expected.push(("invalid_token", "TOKEN_INVALID", 0, t));
        let (r, t) = traced_refresh(&sdk, &alpha, "wrong secret", &third.refresh_token).await;
        assert_eq!(r.unwrap_err().reason(), Some("INVALID_CLIENT"));
        expected.push(("invalid_client", "INVALID_CLIENT", 3, t));
        // An id that names no client is refused and never gets an audit stream.
        let ghost = TestClient {
            client_id: "ghost".to_owned(),
            client_secret: String::new(),
        };
        let (r, _) = traced_refresh(&sdk, &ghost, "", &third.refresh_token).await;
        assert_eq!(r.unwrap_err().reason(), Some("INVALID_CLIENT"));

        // Client beta (reject-only): a refused reuse keeps the family; then it expires.
        let b1 = issue(&mut tokens, &beta, "bob").await;
        let (r, _) = traced_refresh(&sdk, &beta, "", &b1.refresh_token).await;
        let b2 = r.expect("rotated");
        clock.advance(GRACE + Duration::from_secs(1));
        let (r, _) = traced_refresh(&sdk, &beta, "", &b1.refresh_token).await;
        assert_eq!(r.unwrap_err().reason(), Some("TOKEN_REUSED"));

        // The audit of alpha: exactly what happened, newest first, with the callers' traces.
        let list = |client: &TestClient, outcomes: &[&str], page_size: u32, token: String| {
            let mut tokens = tokens.clone();
            let request = pb::ListRefreshEventsRequest {
                client_id: client.client_id.clone(),
                outcomes: outcomes.iter().map(|o| o.to_string()).collect(),
                since: None,
                until: None,
                page_size,
                page_token: token,
            };
            async move {
                tokens
                    .list_refresh_events(request)
                    .await
                    .expect("ListRefreshEvents")
                    .into_inner()
            }
        };
        let page = list(&alpha, &[], 0, String::new()).await;
        assert_eq!(page.next_page_token, "");
        let got: Vec<_> = page
            .events
            .iter()
            .map(|e| {
                (
                    e.outcome.as_str(),
                    e.reason.as_str(),
                    e.generation,
                    e.trace_id.clone(),
                )
            })
            .collect();
        let want: Vec<_> = expected
            .iter()
            .rev()
            .map(|(o, r, g, t)| (*o, *r, *g, t.clone()))
            .collect();
        assert_eq!(got, want);
        for event in &page.events {
            assert_eq!(event.client_id, alpha.client_id);
            let genuine = event.outcome != "invalid_token";
            assert_eq!(event.family_id == first.family_id, genuine, "{event:?}");
            assert!(event.time.is_some());
        }
        let reused = &page.events[3];
        assert_eq!(reused.detail, "family revoked");

        // Each event's trace id leads to the server span of that very refresh.
        for event in &page.events {
            let spans = trace(&event.trace_id, |spans| {
                !spans_named(spans, REFRESH, SERVER).is_empty()
            })
            .await;
            let [rpc] = spans_named(&spans, REFRESH, SERVER)[..] else {
                panic!("one server span for {event:?}");
            };
            assert_eq!(
                rpc.attribute("tokens.outcome"),
                Some(event.outcome.as_str())
            );
        }

        // Pages of 3 walk the same events, without overlap or gap.
        let mut walked = Vec::new();
        let mut token = String::new();
        loop {
            let page = list(&alpha, &[], 3, token).await;
            assert!(page.events.len() <= 3);
            walked.extend(page.events.into_iter().map(|e| e.event_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let all: Vec<_> = list(&alpha, &[], 0, String::new())
            .await
            .events
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(walked, all);

        // Filtered by outcome.
        let rotations = list(&alpha, &["rotated", "replayed"], 0, String::new()).await;
        let outcomes: Vec<_> = rotations
            .events
            .iter()
            .map(|e| e.outcome.as_str())
            .collect();
        assert_eq!(outcomes, ["rotated", "replayed", "rotated"]);

        // Beta's own audit, and the reject-only reuse explained.
        let beta_events = list(&beta, &[], 0, String::new()).await.events;
        let outcomes: Vec<_> = beta_events.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["reused", "rotated"]);
        assert!(
            beta_events[0].detail.contains("reject-only"),
            "{:?}",
            beta_events[0]
        );
        assert_eq!(beta_events[0].family_id, b2.family_id);

        // The ghost left nothing in Redis.
        assert!(list(&ghost, &[], 0, String::new()).await.events.is_empty());
        let mut conn = deadpool_redis::redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ghost_stream: i64 = deadpool_redis::redis::cmd("EXISTS")
            .arg("t:a:{ghost}")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ghost_stream, 0);

        // The summary counts the same outcomes.
        let summary = harness::last_hour_summary(&mut tokens.clone(), &alpha.client_id).await;
        let mut want_counts: HashMap<String, u64> = [
            "rotated",
            "replayed",
            "rolled_forward",
            "reused",
            "expired",
            "revoked",
            "invalid_client",
            "invalid_token",
            "rejected",
            "unavailable",
            "sessions_revoked",
        ]
        .iter()
        .map(|o| (o.to_string(), 0))
        .collect();
        for (outcome, ..) in &expected {
            *want_counts.get_mut(*outcome).unwrap() += 1;
        }
        assert_eq!(summary.outcomes, want_counts);
        assert_eq!(summary.total, expected.len() as u64);
        assert!(summary.first_event.is_some() && summary.last_event.is_some());

        // Prometheus: the same counts, per client; unregistered ids under one label.
        let samples = scrape(server.admin_addr.unwrap()).await;
        let refreshes = |outcome: &str, client: &str| {
            sample(
                &samples,
                "tokens_refreshes_total",
                &[("outcome", outcome), ("client", client)],
            )
        };
        assert_eq!(refreshes("rotated", &alpha.client_id), 2.0);
        assert_eq!(refreshes("replayed", &alpha.client_id), 1.0);
        assert_eq!(refreshes("reused", &alpha.client_id), 1.0);
        assert_eq!(refreshes("revoked", &alpha.client_id), 1.0);
        assert_eq!(refreshes("invalid_client", &alpha.client_id), 1.0);
        assert_eq!(refreshes("invalid_client", "(unknown)"), 1.0);
        assert_eq!(refreshes("invalid_token", "(unknown)"), 1.0);
        assert_eq!(refreshes("rotated", &beta.client_id), 1.0);
        assert_eq!(refreshes("reused", &beta.client_id), 1.0);
        assert_eq!(
            sample(
                &samples,
                "tokens_refreshes_total",
                &[("reason", "TOKEN_REUSED")]
            ),
            2.0
        );
        let refresh_rpcs = 10.0;
        assert_eq!(
            sample(
                &samples,
                "rpc_server_call_duration_seconds_count",
                &[("rpc_method", "RefreshTokenPair")]
            ),
            refresh_rpcs
        );
        assert_eq!(
            sample(
                &samples,
                "rpc_server_call_duration_seconds_count",
                &[
                    ("rpc_method", "RefreshTokenPair"),
                    ("rpc_grpc_status_code", "0")
                ]
            ),
            4.0
        );
        assert!(sample(&samples, "db_client_connection_count", &[]) >= 1.0);
        assert_eq!(
            sample(
                &samples,
                "tokens_audit_events_total",
                &[("result", "dropped")]
            ),
            0.0
        );
    });
}

#[test]
fn the_audit_keeps_at_most_its_maximum_and_forgets_what_is_past_retention() {
    run(async {
        let redis = RedisServer::start();
        let clock = ManualClock::starting_now();
        let retention = Duration::from_secs(3600);
        let server = TestServer::start(
            &redis.url(),
            ServerOptions {
                clock: Arc::new(clock.clone()),
                audit_retention: retention,
                audit_max_events: 5,
                ..ServerOptions::default()
            },
        )
        .await;
        let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
        let mut tokens = server.tokens().await;
        let mut pair = issue(&mut tokens, &client, "carol").await;
        for _ in 0..8 {
            clock.advance(Duration::from_millis(1));
            pair = tokens
                .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
                .await
                .expect("refresh")
                .into_inner();
        }
        let list = |mut tokens: token_proto::v1::token_service_client::TokenServiceClient<_>| {
            let client_id = client.client_id.clone();
            async move {
                tokens
                    .list_refresh_events(pb::ListRefreshEventsRequest {
                        client_id,
                        page_size: 100,
                        ..Default::default()
                    })
                    .await
                    .expect("ListRefreshEvents")
                    .into_inner()
                    .events
            }
        };
        let events = list(tokens.clone()).await;
        let generations: Vec<u64> = events.iter().map(|e| e.generation).collect();
        assert_eq!(generations, [8, 7, 6, 5, 4], "the newest five of eight");
        let mut conn = deadpool_redis::redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let key = format!("t:a:{{{}}}", client.client_id);
        let xlen = |conn: &mut deadpool_redis::redis::aio::MultiplexedConnection| {
            let key = key.clone();
            let mut conn = conn.clone();
            async move {
                deadpool_redis::redis::cmd("XLEN")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(xlen(&mut conn).await, 5);

        // Past retention nothing is listed, even before trimming catches up...
        clock.advance(retention + Duration::from_secs(1));
        assert!(list(tokens.clone()).await.is_empty());
        // ...and the next append trims the old events away.
        tokens
            .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
            .await
            .expect("refresh");
        let events = list(tokens.clone()).await;
        assert_eq!(events.len(), 1);
        assert_eq!(xlen(&mut conn).await, 1);
    });
}

#[test]
fn an_http_refresh_with_a_traceparent_is_one_trace_through_gateway_server_and_redis() {
    run(async {
        let redis = RedisServer::start();
        let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
        let gateway =
            harness::gateway::TestGateway::in_front_of(&server, ClientConfig::default()).await;
        let client = register_client(&mut server.registry().await, "public", "", &["read"]).await;
        let pair = issue(&mut server.tokens().await, &client, "alice").await;

        // An upstream HTTP caller's trace context, as a browser or API gateway would send it.
        let (trace_id, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
        let response = reqwest::Client::new()
            .post(gateway.url("/oauth/token"))
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", pair.refresh_token.as_str()),
                ("client_id", client.client_id.as_str()),
            ])
            .send()
            .await
            .expect("POST /oauth/token");
        assert_eq!(response.status(), 200);

        let spans = trace(trace_id, |spans| {
            spans.iter().any(|s| s.name == "POST /oauth/token")
                && !spans_named(spans, REFRESH, CLIENT).is_empty()
                && !spans_named(spans, REFRESH, SERVER).is_empty()
                && spans.iter().any(|s| s.name == "EVALSHA rotate")
        })
        .await;
        let edge = spans
            .iter()
            .find(|s| s.name == "POST /oauth/token")
            .unwrap();
        assert_eq!(
            edge.parent_span_id, caller_span,
            "the gateway continued the caller's trace"
        );
        assert_eq!(edge.kind, SERVER);
        assert_eq!(edge.attribute("http.response.status_code"), Some("200"));
        let [attempt] = spans_named(&spans, REFRESH, CLIENT)[..] else {
            panic!("one SDK attempt: {spans:#?}");
        };
        assert_eq!(attempt.parent_span_id, edge.span_id);
        let [rpc] = spans_named(&spans, REFRESH, SERVER)[..] else {
            panic!("one server span: {spans:#?}");
        };
        assert_eq!(rpc.parent_span_id, attempt.span_id);
        let rotate = spans.iter().find(|s| s.name == "EVALSHA rotate").unwrap();
        assert_eq!(rotate.parent_span_id, rpc.span_id);
        gateway.stop().await;
    });
}
