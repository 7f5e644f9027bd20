//! The real `token-gateway` binary, as an operator runs it: configured by environment, logging
//! at `trace` as JSON, in front of a real token server, stopped by SIGTERM. While it serves
//! successes and refusals of every kind, everything it logs is captured; at the end no token,
//! MAC, client secret or `Authorization` value appears in the log. Then as production runs it:
//! over mutual TLS to a token server that requires it, its certificate renewed while it runs;
//! and refusing, at start, TLS settings that cannot work.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use test_support::free_port;
use test_support::harness::{
    MtlsServer, RedisServer, ServerOptions, TestServer, issue, register_client, replace_file,
};

const BINARY: &str = env!("CARGO_BIN_EXE_token-gateway");

/// Starts the binary on a free port with JSON logs at trace level into `log_path`, configured
/// by `env`; returns it and its base URL.
fn start_gateway(
    log_path: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    let log = std::fs::File::create(log_path).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BINARY)
        .env("GATEWAY_LISTEN", &addr)
        .env("GATEWAY_LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .envs(env.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("token-gateway starts");
    (child, format!("http://{addr}"))
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// Readiness probe: `/healthz` answers 200 once the gateway listens and the token service is
/// SERVING. Bounded.
async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..400 {
        if let Ok(response) = http.get(format!("{base}/healthz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("token-gateway never became ready at {base}");
}

/// A token and its MAC, which must not appear on its own either.
fn with_mac(token: &str) -> [String; 2] {
    [
        token.to_owned(),
        token.rsplit('.').next().unwrap_or_default().to_owned(),
    ]
}

#[tokio::test]
async fn serves_logs_no_secrets_and_stops_cleanly_on_sigterm() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let client = register_client(&mut server.registry().await, "confidential", "", &["read"]).await;
    let first = issue(&mut server.tokens().await, &client, "alice").await;

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("gateway.log");
    let (child, base) = start_gateway(&log_path, &[("GATEWAY_TOKEN_SERVICE", &server.endpoint())]);
    let http = reqwest::Client::new();
    wait_until_ready(&http, &base).await;

    let mut secrets: Vec<String> = vec![client.client_secret.clone()];
    secrets.extend(with_mac(&first.refresh_token));
    secrets.extend(with_mac(&first.access_token));
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", client.client_id, client.client_secret));
    secrets.push(basic.clone());
    let form = |body: String| {
        http.post(format!("{base}/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };

    // A refresh by Basic, the same by body credentials (a replay), then refusals that each
    // carry a secret: a wrong secret, a repeated parameter, a tampered token.
    let refresh = format!(
        "grant_type=refresh_token&refresh_token={}",
        first.refresh_token
    );
    let reply = form(refresh.clone())
        .header("authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let second: serde_json::Value = reply.json().await.unwrap();
    let second_rt = second["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend(with_mac(&second_rt));
    secrets.extend(with_mac(second["access_token"].as_str().unwrap()));
    let by_body = format!(
        "{refresh}&client_id={}&client_secret={}",
        client.client_id, client.client_secret
    );
    assert_eq!(form(by_body.clone()).send().await.unwrap().status(), 200);
    let wrong_secret = format!("{}x", client.client_secret);
    secrets.push(wrong_secret.clone());
    let wrong = format!(
        "{refresh}&client_id={}&client_secret={wrong_secret}",
        client.client_id
    );
    assert_eq!(form(wrong).send().await.unwrap().status(), 401);
    assert_eq!(
        form(format!("{by_body}&refresh_token={second_rt}"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let (head, last) = second_rt.split_at(second_rt.len() - 1);
    let tampered = format!("{head}{}", if last == "A" { "Q" } else { "A" });
    secrets.extend(with_mac(&tampered));
    let tampered_body = format!(
        "grant_type=refresh_token&refresh_token={tampered}&client_id={}&client_secret={}",
        client.client_id, client.client_secret
    );
    assert_eq!(form(tampered_body).send().await.unwrap().status(), 400);

    // Introspection and revocation.
    let introspect = http
        .post(format!("{base}/oauth/introspect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {basic}"))
        .body(format!("token={second_rt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(introspect.status(), 200);
    let revoke = http
        .post(format!("{base}/oauth/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Basic {basic}"))
        .body(format!("token={second_rt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);

    // SIGTERM: the gateway drains and exits successfully.
    let exit = tokio::task::spawn_blocking(move || test_support::terminate(child))
        .await
        .unwrap();
    assert!(exit.success(), "token-gateway exited with {exit}");

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("token-gateway serving"),
        "the log was not captured:\n{log}"
    );
    assert!(
        log.contains("\"http.request\""),
        "requests run in spans:\n{log}"
    );
    assert!(log.contains("TRACE"), "trace-level lines were logged");
    assert!(
        log.contains("token-gateway stopped"),
        "no clean stop in the log"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret ({} characters long)",
            secret.len()
        );
    }
    server.stop().await;
}

/// The binary refuses TLS settings that cannot work before it listens, and says which flag
/// and which file: one row per case, from the environment as an operator sets it.
#[test]
fn refuses_tls_settings_that_cannot_work_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let absent = dir.path().join("absent.crt");
    let ca = ca.to_str().unwrap();
    let absent = absent.to_str().unwrap();
    // (case, environment, words its error must contain)
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let rows: &[Row] = &[
        (
            "a CA with a plaintext endpoint",
            &[
                ("GATEWAY_TOKEN_SERVICE", "http://127.0.0.1:50051"),
                ("GATEWAY_TOKEN_SERVICE_CA", ca),
            ],
            &["--token-service-ca is for TLS"],
        ),
        (
            "https without a CA",
            &[("GATEWAY_TOKEN_SERVICE", "https://127.0.0.1:50051")],
            &["needs --token-service-ca"],
        ),
        (
            "a certificate without its key",
            &[
                ("GATEWAY_TOKEN_SERVICE", "https://127.0.0.1:50051"),
                ("GATEWAY_TOKEN_SERVICE_CA", ca),
                ("GATEWAY_TOKEN_SERVICE_CERT", absent),
            ],
            &["--token-service-cert needs --token-service-key"],
        ),
        (
            "an unreadable certificate",
            &[
                ("GATEWAY_TOKEN_SERVICE", "https://127.0.0.1:50051"),
                ("GATEWAY_TOKEN_SERVICE_CA", ca),
                ("GATEWAY_TOKEN_SERVICE_CERT", absent),
                ("GATEWAY_TOKEN_SERVICE_KEY", absent),
            ],
            &["cannot read --token-service-cert", absent],
        ),
        (
            "a CA bundle holding no certificate",
            &[
                ("GATEWAY_TOKEN_SERVICE", "https://127.0.0.1:50051"),
                ("GATEWAY_TOKEN_SERVICE_CA", ca),
            ],
            &["--token-service-ca", ca, "holds no PEM certificate"],
        ),
    ];
    for (case, env, want) in rows {
        let output = Command::new(BINARY)
            .env_clear()
            .env("GATEWAY_LISTEN", "127.0.0.1:0")
            .env("GATEWAY_ADMIN_LISTEN", "off")
            .envs(env.iter().copied())
            .output()
            .expect("token-gateway runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: started; {stderr}");
        for word in *want {
            assert!(stderr.contains(word), "{case}: {stderr:?} lacks {word:?}");
        }
    }
}

/// Waits (bounded) until the log at `path` contains `line`: the binary's only way to say it
/// reloaded its certificate.
async fn wait_for_log(path: &std::path::Path, line: &str) {
    for _ in 0..400 {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(line)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log never said {line:?}");
}

/// The binary as production's overlay configures it: an `https://` token service that
/// requires client certificates, the gateway's identity from files, renewed while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_an_mtls_only_token_server_and_reloads_a_renewed_certificate() {
    use token_client::pb::client_registry_client::ClientRegistryClient;
    use token_client::pb::token_service_client::TokenServiceClient;

    let MtlsServer {
        redis: _redis,
        ca,
        dir,
        server,
        operator: channel,
    } = TestServer::start_mtls().await;
    let client = register_client(
        &mut ClientRegistryClient::new(channel.clone()),
        "confidential",
        "",
        &["read"],
    )
    .await;
    let first = issue(&mut TokenServiceClient::new(channel), &client, "alice").await;

    let identity = ca.client_with_uri("spiffe://tokens.test/ns/tokens/sa/token-gateway");
    let files = identity.write(dir.path(), "gateway");
    let gateway_ca = ca.write(dir.path(), "gateway-ca");
    let log_path = dir.path().join("gateway.log");
    let upstream = format!("https://{}", server.addr);
    let (child, base) = start_gateway(
        &log_path,
        &[
            ("GATEWAY_ADMIN_LISTEN", "off"),
            ("GATEWAY_TOKEN_SERVICE", &upstream),
            ("GATEWAY_TOKEN_SERVICE_TLS_NAME", "localhost"),
            ("GATEWAY_TOKEN_SERVICE_CA", path_str(&gateway_ca)),
            ("GATEWAY_TOKEN_SERVICE_CERT", path_str(&files.cert)),
            ("GATEWAY_TOKEN_SERVICE_KEY", path_str(&files.key)),
            ("GATEWAY_TOKEN_SERVICE_TLS_RELOAD_INTERVAL", "100ms"),
        ],
    );
    let http = reqwest::Client::new();
    // Ready means the token server answered its health check over mTLS.
    wait_until_ready(&http, &base).await;
    let refresh = |token: String| {
        http.post(format!("{base}/oauth/token"))
            .basic_auth(&client.client_id, Some(&client.client_secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
            .send()
    };
    let reply = refresh(first.refresh_token.clone()).await.unwrap();
    assert_eq!(reply.status(), 200);
    let second: serde_json::Value = reply.json().await.unwrap();

    // cert-manager renews the certificate: written beside and renamed over, as the kubelet
    // swaps a Secret volume's files.
    let renewed = ca.client_with_uri("spiffe://tokens.test/ns/tokens/sa/token-gateway");
    replace_file(&files.cert, &renewed.cert);
    replace_file(&files.key, &renewed.key);
    wait_for_log(&log_path, "token service TLS files reloaded").await;
    let reply = refresh(second["refresh_token"].as_str().unwrap().to_owned())
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let exit = tokio::task::spawn_blocking(move || test_support::terminate(child))
        .await
        .unwrap();
    assert!(exit.success(), "token-gateway exited with {exit}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    // No line of either private key reaches the log.
    for key in [&identity.key, &renewed.key] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "key material in the log");
        }
    }
    server.stop().await;
}
