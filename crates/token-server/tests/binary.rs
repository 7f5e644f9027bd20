//! The real `token-server` binary, as an operator runs it: configured by environment, keyring
//! from `token-server keygen`, logging at `trace`, stopped by SIGTERM. While it serves a mixed
//! workload (successes, replays, every kind of refusal), everything it logs is captured; at
//! the end no token, MAC, client secret or key appears in the log. A second run exports over
//! OTLP, configured only by the standard `OTEL_*` variables, and logs JSON. A third serves on
//! more than the default one thread.

mod support;

use std::path::Path;
use std::process::Command;

use support::{ServerProcess, Setup, TestClient, serving_channel};
use test_support::otlp::OtlpReceiver;
use test_support::{RedisServer, free_port};
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;

const BINARY: &str = env!("CARGO_BIN_EXE_token-server");

/// The operator credential these tests present (`authorization: Bearer ...`).
const OPERATOR_CREDENTIAL: &str = "binary-test-operator-credential-1f8e2c";

/// Writes an operator policy naming [`OPERATOR_CREDENTIAL`] by its SHA-256.
fn operator_policy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("operators.toml");
    let policy = test_support::bearer_policy_toml(
        "binary test",
        &token_server::authz::bearer_sha256_hex(OPERATOR_CREDENTIAL),
    );
    std::fs::write(&path, policy).unwrap();
    path
}

/// Everything secret the workload saw, to be searched for in the log.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn token(&mut self, token: &str) {
        self.0.push(token.to_owned());
        // The MAC alone must not appear either.
        if let Some(mac) = token.rsplit('.').next() {
            self.0.push(mac.to_owned());
        }
    }

    fn pair(&mut self, pair: &pb::TokenPair) {
        self.token(&pair.access_token);
        self.token(&pair.refresh_token);
    }
}

/// A keyring from `keygen`, and the secret of each of its keys (the HMAC secret, the Ed25519
/// seed).
fn keygen(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let output = Command::new(BINARY)
        .arg("keygen")
        .output()
        .expect("keygen runs");
    assert!(output.status.success(), "keygen failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("keygen prints text");
    let secrets: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let secret = l.split_whitespace().nth(1).expect("`<id> <secret> sign`");
            secret.trim_start_matches("ed25519:").to_owned()
        })
        .collect();
    assert_eq!(secrets.len(), 2, "keygen writes an HMAC and an Ed25519 key");
    let path = dir.join("keyring");
    std::fs::write(&path, text).unwrap();
    (path, secrets)
}

#[tokio::test]
async fn serves_logs_no_secrets_and_stops_cleanly_on_sigterm() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (keyring, key_secrets) = keygen(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(BINARY)
        .env("TOKEN_LISTEN", &addr)
        .env("TOKEN_REDIS_URL", redis.url())
        .env("TOKEN_KEYRING", &keyring)
        .env("TOKEN_OPERATOR_POLICY", operator_policy(dir.path()))
        .env("TOKEN_GRACE_PERIOD", "60s")
        .env("TOKEN_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "trace")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("token-server starts");

    let channel = serving_channel(&addr).await;
    // Without the operator's credential, the operator RPCs are refused.
    let refused = ClientRegistryClient::new(channel.clone())
        .create_client(pb::CreateClientRequest {
            name: "intruder".to_owned(),
            client_type: "public".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            ..Default::default()
        })
        .await
        .expect_err("no operator credential");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let as_operator = test_support::bearer(OPERATOR_CREDENTIAL);
    let mut registry = ClientRegistryClient::with_interceptor(channel.clone(), as_operator.clone());
    let mut tokens = TokenServiceClient::with_interceptor(channel, as_operator);
    let mut secrets = Secrets::default();
    secrets.0.extend(key_secrets);
    secrets.0.push(OPERATOR_CREDENTIAL.to_owned());

    let created = registry
        .create_client(pb::CreateClientRequest {
            client_id: "log-check".to_owned(),
            name: "log check".to_owned(),
            client_type: "confidential".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            reuse_policy: String::new(),
            access_token_format: String::new(),
            access_token_audience: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.0.push(created.client_secret.clone());
    let refresh = |token: &str, secret: &str| pb::RefreshTokenPairRequest {
        client_id: "log-check".to_owned(),
        client_secret: secret.to_owned(),
        refresh_token: token.to_owned(),
        scopes: vec![],
    };

    let first = tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: "log-check".to_owned(),
            subject: "alice".to_owned(),
            scopes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    secrets.pair(&first);
    let second = tokens
        .refresh_token_pair(refresh(&first.refresh_token, &created.client_secret))
        .await
        .unwrap()
        .into_inner();
    secrets.pair(&second);
    let replay = tokens
        .refresh_token_pair(refresh(&first.refresh_token, &created.client_secret))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);

    // A client with JWT access tokens, signed with keygen's Ed25519 key: its tokens stay out
    // of the log too.
    let jwt_client = registry
        .create_client(pb::CreateClientRequest {
            client_id: "log-check-jwt".to_owned(),
            client_type: "public".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            access_token_format: "jwt".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let jwt_pair = tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: jwt_client.client_id.clone(),
            subject: "bob".to_owned(),
            scopes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(jwt_pair.access_token.starts_with("eyJ"));
    secrets.pair(&jwt_pair);
    let jwt_next = tokens
        .refresh_token_pair(pb::RefreshTokenPairRequest {
            client_id: jwt_client.client_id,
            refresh_token: jwt_pair.refresh_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    secrets.pair(&jwt_next);
    tokens
        .introspect_token(pb::IntrospectTokenRequest {
            token: jwt_next.access_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Refusals of every kind, each carrying something secret in the request.
    let wrong_secret = format!("{}x", created.client_secret);
    secrets.0.push(wrong_secret.clone());
    // Change the MAC's last character (to a different one: it may already be 'A').
    let (head, last) = second
        .refresh_token
        .split_at(second.refresh_token.len() - 1);
    let tampered = format!("{head}{}", if last == "A" { "Q" } else { "A" });
    assert_ne!(tampered, second.refresh_token);
    secrets.token(&tampered);
    for request in [
        refresh(&second.refresh_token, &wrong_secret),
        refresh(&tampered, &created.client_secret),
        refresh(&second.access_token, &created.client_secret),
    ] {
        assert!(tokens.refresh_token_pair(request).await.is_err());
    }
    tokens
        .introspect_token(pb::IntrospectTokenRequest {
            token: second.access_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let rotated = registry
        .rotate_client_secret(pb::RotateClientSecretRequest {
            client_id: "log-check".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.0.push(rotated.client_secret.clone());
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            client_id: "log-check".to_owned(),
            client_secret: rotated.client_secret.clone(),
            token: second.refresh_token.clone(),
            token_type_hint: String::new(),
        })
        .await
        .unwrap();
    assert!(
        tokens
            .refresh_token_pair(refresh(&second.refresh_token, &rotated.client_secret))
            .await
            .is_err()
    );

    // SIGTERM: the server drains and exits successfully.
    let exit = terminate(child).await;
    assert!(exit.success(), "token-server exited with {exit}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("token-server serving"),
        "the log was not captured:\n{log}"
    );
    assert!(
        log.contains("TOKEN_INVALID"),
        "refusals are logged with their reason"
    );
    assert!(
        log.contains("TRACE"),
        "trace-level lines (gRPC and HTTP/2 internals) were logged"
    );
    assert!(
        log.contains("token-server stopped"),
        "no clean stop in the log"
    );
    for secret in &secrets.0 {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret ({} characters long)",
            secret.len()
        );
    }
}

/// SIGTERM, then the exit status.
async fn terminate(child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || test_support::terminate(child))
        .await
        .expect("terminate panicked")
}

#[tokio::test]
async fn exports_traces_and_metrics_over_otlp_and_logs_json_lines_with_trace_ids() {
    let redis = RedisServer::start();
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (keyring, _) = keygen(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(BINARY)
        .env("TOKEN_LISTEN", &addr)
        .env("TOKEN_ADMIN_LISTEN", &admin)
        .env("TOKEN_REDIS_URL", redis.url())
        .env("TOKEN_KEYRING", &keyring)
        .env("TOKEN_OPERATOR_POLICY", operator_policy(dir.path()))
        .env("TOKEN_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("token-server starts");
    let channel = serving_channel(&addr).await;
    let as_operator = test_support::bearer(OPERATOR_CREDENTIAL);
    let mut registry = ClientRegistryClient::with_interceptor(channel.clone(), as_operator.clone());
    let mut tokens = TokenServiceClient::with_interceptor(channel, as_operator);
    let created = registry
        .create_client(pb::CreateClientRequest {
            client_id: "otlp-check".to_owned(),
            client_type: "public".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: created.client_id.clone(),
            subject: "alice".to_owned(),
            scopes: vec![],
        })
        .await
        .unwrap()
        .into_inner();

    // A caller in a trace of its own: the server continues it.
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traced = |token: &str| {
        let mut request = tonic::Request::new(pb::RefreshTokenPairRequest {
            client_id: created.client_id.clone(),
            refresh_token: token.to_owned(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
        );
        request
    };
    tokens
        .refresh_token_pair(traced(&first.refresh_token))
        .await
        .expect("refresh");
    let refused = tokens
        .refresh_token_pair(traced("rt1.garbage"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let spans = receiver
        .wait_for_spans("the traced refreshes", |spans| {
            spans
                .iter()
                .filter(|s| s.trace_id == trace_id && s.parent_span_id == parent_id)
                .count()
                == 2
                && spans
                    .iter()
                    .any(|s| s.trace_id == trace_id && s.name == "EVALSHA rotate")
        })
        .await;
    let served: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id && s.parent_span_id == parent_id)
        .collect();
    assert!(
        served
            .iter()
            .all(|s| s.service == "token-server" && s.kind == 2)
    );
    assert!(
        served
            .iter()
            .any(|s| s.attribute("error.type") == Some("TOKEN_INVALID"))
    );

    let points = receiver
        .wait_for_metrics("the refresh counter", |points| {
            points.iter().any(|p| {
                p.metric == "tokens.refreshes"
                    && p.attributes.get("outcome").map(String::as_str) == Some("rotated")
                    && p.value >= 1.0
            })
        })
        .await;
    assert!(points.iter().all(|p| p.service == "token-server"));

    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tokens_refreshes_total{"), "{metrics}");

    let exit = terminate(child).await;
    assert!(exit.success(), "token-server exited with {exit}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let refusal = lines
        .iter()
        .find(|l| l["reason"] == "TOKEN_INVALID")
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert_eq!(refusal["trace_id"], trace_id, "{refusal}");
    assert_eq!(
        refusal["span_id"].as_str().map(str::len),
        Some(16),
        "{refusal}"
    );
}

/// `--worker-threads` above 1 (a multi-thread runtime) serves a refresh and its replay and
/// drains on SIGTERM like the default single thread; 0 is refused before anything starts.
#[tokio::test]
async fn more_worker_threads_serve_the_same_and_zero_is_refused() {
    let setup = Setup::new();
    let (mut zero, _, log) = setup.command("redis://127.0.0.1:1", "zero-threads");
    let refused = zero
        .env("TOKEN_WORKER_THREADS", "0")
        .status()
        .expect("token-server runs");
    assert!(!refused.success());
    let stderr = std::fs::read_to_string(log).unwrap();
    assert!(
        stderr.contains("--worker-threads must be greater than zero"),
        "{stderr}"
    );

    let redis = RedisServer::start();
    let (mut command, addr, log) = setup.command(&redis.url(), "two-threads");
    command.env("TOKEN_WORKER_THREADS", "2");
    let server = ServerProcess::start(command, addr, log).await;
    let client = TestClient::register(&mut server.registry().await, "threads").await;
    let mut tokens = server.tokens().await;
    let first = tokens
        .issue_token_pair(client.issue("alice"))
        .await
        .unwrap()
        .into_inner();
    let refresh = client.refresh(&first.refresh_token);
    let rotated = tokens.refresh_token_pair(refresh.clone()).await.unwrap();
    let replayed = tokens.refresh_token_pair(refresh).await.unwrap();
    let (rotated, replayed) = (rotated.into_inner(), replayed.into_inner());
    assert!(!rotated.replayed && replayed.replayed);
    assert_eq!(replayed.refresh_token, rotated.refresh_token);

    let exit = server.terminate().await;
    assert!(exit.success(), "token-server exited with {exit}");
}
