//! The gateway in front of a token server that speaks only mutual TLS, as the production
//! overlay runs them: the gateway verifies the server with a CA bundle and presents its own
//! certificate, all from PEM files (`token_gateway::tls`), re-read while it runs so that a
//! renewed certificate is used without a restart. Bad files are refused at start, naming the
//! flag and the file.
//!
//! Certificates come from throwaway CAs made per test (`test_support::pki`); the server is
//! the real one over real sockets, the gateway the library the binary runs.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use test_support::harness::gateway::quick_retries;
use test_support::harness::{
    self, MtlsServer, RedisServer, TestClient, TestGateway, TestServer, replace_file,
};
use test_support::pki::{PemIdentity, TestCa};
use token_gateway::Upstream;
use token_gateway::tls::{ReloadingTls, Reloads, TlsError, TlsFiles};
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;

const GATEWAY_ID: &str = "spiffe://tokens.test/ns/tokens/sa/token-gateway";

/// How often the gateway checks its files in these tests.
const RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// A CA, a token server requiring client certificates from it, and a directory for the
/// gateway's files.
struct Env {
    _redis: RedisServer,
    ca: TestCa,
    server: TestServer,
    dir: tempfile::TempDir,
    client: TestClient,
}

impl Env {
    async fn start() -> Self {
        let MtlsServer {
            redis,
            ca,
            dir,
            server,
            operator: channel,
        } = TestServer::start_mtls().await;
        let client = harness::register_client(
            &mut ClientRegistryClient::new(channel),
            "confidential",
            "",
            &["read"],
        )
        .await;
        Self {
            _redis: redis,
            ca,
            server,
            dir,
            client,
        }
    }

    /// A first refresh token for the test's client, issued over mTLS directly.
    async fn refresh_token(&self) -> String {
        let operator = self
            .ca
            .client_with_uri("spiffe://tokens.test/ns/iam/sa/issuer");
        let channel = self
            .server
            .tls_channel(&self.ca.cert_pem(), Some((&operator.cert, &operator.key)))
            .await
            .expect("an issuer reaches the server over mTLS");
        harness::issue(&mut TokenServiceClient::new(channel), &self.client, "alice")
            .await
            .refresh_token
    }

    /// The gateway's files: the CA bundle and, when given, its identity.
    fn gateway_files(&self, identity: Option<&PemIdentity>) -> TlsFiles {
        TlsFiles {
            ca: self.ca.write(self.dir.path(), "gateway-ca"),
            identity: identity.map(|id| {
                let files = id.write(self.dir.path(), "gateway");
                (files.cert, files.key)
            }),
            // The server certificate names `localhost` and 127.0.0.1; the endpoint is the IP.
            server_name: Some("localhost".to_owned()),
        }
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    /// A gateway over TLS with `files`, checking them every [`RELOAD_INTERVAL`].
    async fn gateway(&self, files: TlsFiles) -> (TestGateway, std::sync::Arc<ReloadingTls>) {
        let (upstream, tls, reload) =
            Upstream::connect_tls(&self.endpoint(), files, quick_retries(), RELOAD_INTERVAL)
                .expect("valid TLS files");
        tokio::spawn(reload);
        (TestGateway::start(upstream).await, tls)
    }
}

/// `POST /oauth/token` (refresh grant) with the client's Basic credentials: status and body.
async fn refresh(gateway: &TestGateway, client: &TestClient, token: &str) -> (u16, Value) {
    let reply = reqwest::Client::new()
        .post(gateway.url("/oauth/token"))
        .basic_auth(&client.client_id, Some(&client.client_secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .expect("the gateway answers");
    let status = reply.status().as_u16();
    (status, reply.json().await.expect("a JSON body"))
}

/// A successful refresh through the gateway; the next refresh token.
async fn refreshed(gateway: &TestGateway, client: &TestClient, token: &str) -> String {
    let (status, body) = refresh(gateway, client, token).await;
    assert_eq!(status, 200, "{body}");
    body["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

/// Refused as the gateway refuses when the token service cannot be reached.
async fn unavailable(gateway: &TestGateway, client: &TestClient, token: &str) {
    let (status, body) = refresh(gateway, client, token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
}

/// Waits (bounded) until the gateway's reload counts satisfy `done`.
async fn until_reloaded(tls: &ReloadingTls, done: impl FnMut(&Reloads) -> bool) {
    let mut reloads = tls.watch_reloads();
    tokio::time::timeout(Duration::from_secs(30), reloads.wait_for(done))
        .await
        .expect("the gateway never reloaded its TLS files")
        .expect("the reload counts are alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_over_mtls_and_without_a_client_certificate_the_server_refuses() {
    let env = Env::start().await;
    let token = env.refresh_token().await;

    // No client certificate: the server refuses the handshake, and the gateway answers as
    // for an unreachable token service.
    let (anonymous, _) = env.gateway(env.gateway_files(None)).await;
    unavailable(&anonymous, &env.client, &token).await;
    let health = reqwest::get(anonymous.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    anonymous.stop().await;

    // With one from the server's client CA, through the gateway end to end.
    let identity = env.ca.client_with_uri(GATEWAY_ID);
    let (gateway, _) = env.gateway(env.gateway_files(Some(&identity))).await;
    let next = refreshed(&gateway, &env.client, &token).await;
    refreshed(&gateway, &env.client, &next).await;
    let health = reqwest::get(gateway.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    gateway.stop().await;
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_client_certificate_is_used_without_a_restart() {
    let env = Env::start().await;
    let mut token = env.refresh_token().await;
    let files = env.gateway_files(Some(&env.ca.client_with_uri(GATEWAY_ID)));
    let (cert, key) = files.identity.clone().unwrap();
    let (gateway, tls) = env.gateway(files).await;
    token = refreshed(&gateway, &env.client, &token).await;

    // A broken update (a key file holding no key) is refused and the loaded identity kept.
    replace_file(&key, "not a key\n");
    until_reloaded(&tls, |r| r.refused >= 1).await;
    assert_eq!(tls.watch_reloads().borrow().loaded, 0);
    token = refreshed(&gateway, &env.client, &token).await;

    // A certificate the server does not trust: once loaded, new connections present it and
    // are refused. This is how the test sees which certificate the gateway presents.
    let stranger = TestCa::new("another CA").client_with_uri(GATEWAY_ID);
    replace_file(&cert, &stranger.cert);
    replace_file(&key, &stranger.key);
    until_reloaded(&tls, |r| r.loaded >= 1).await;
    unavailable(&gateway, &env.client, &token).await;

    // A newly issued certificate from the server's CA, as cert-manager renews it.
    let renewed = env.ca.client_with_uri(GATEWAY_ID);
    replace_file(&cert, &renewed.cert);
    replace_file(&key, &renewed.key);
    until_reloaded(&tls, |r| r.loaded >= 2).await;
    refreshed(&gateway, &env.client, &token).await;

    gateway.stop().await;
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_ca_bundle_is_used_without_a_restart() {
    let env = Env::start().await;
    let token = env.refresh_token().await;
    // The gateway starts trusting the wrong CA: the server's certificate does not verify.
    let files = env.gateway_files(Some(&env.ca.client_with_uri(GATEWAY_ID)));
    replace_file(&files.ca, &TestCa::new("wrong CA").cert_pem());
    let ca = files.ca.clone();
    let (gateway, tls) = env.gateway(files).await;
    unavailable(&gateway, &env.client, &token).await;

    replace_file(&ca, &env.ca.cert_pem());
    until_reloaded(&tls, |r| r.loaded >= 1).await;
    refreshed(&gateway, &env.client, &token).await;
    gateway.stop().await;
    env.server.stop().await;
}

/// A valid baseline, then one row per broken file: each refused at start with an error
/// naming the flag and the file, never a key's contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_refused_at_start_naming_flag_and_file() {
    let ca = TestCa::new("tokens test CA");
    let dir = tempfile::tempdir().unwrap();
    let identity = ca.client_with_uri(GATEWAY_ID);
    let other = ca.client_with_uri(GATEWAY_ID);
    let secret_key_line = identity.key.lines().nth(1).unwrap().to_owned();
    let baseline = || {
        let files = identity.write(dir.path(), "gateway");
        TlsFiles {
            ca: ca.write(dir.path(), "ca"),
            identity: Some((files.cert, files.key)),
            server_name: None,
        }
    };
    let endpoint = "https://token-server:50051";
    let load = |files: TlsFiles| ReloadingTls::load(endpoint, files, Duration::from_secs(1));
    load(baseline()).expect("the baseline loads");

    type Row = (
        &'static str,
        fn(&mut TlsFiles, &Path, &PemIdentity),
        &'static str,
    );
    let rows: &[Row] = &[
        (
            "a missing CA bundle",
            |files, dir, _| files.ca = dir.join("absent-ca.crt"),
            "cannot read --token-service-ca",
        ),
        (
            "a missing certificate",
            |files, dir, _| files.identity.as_mut().unwrap().0 = dir.join("absent.crt"),
            "cannot read --token-service-cert",
        ),
        (
            "a missing key",
            |files, dir, _| files.identity.as_mut().unwrap().1 = dir.join("absent.key"),
            "cannot read --token-service-key",
        ),
        (
            "a CA bundle holding no certificate",
            |files, _, _| std::fs::write(&files.ca, "nothing here\n").unwrap(),
            "--token-service-ca",
        ),
        (
            "a certificate file holding a key",
            |files, _, other| {
                std::fs::write(&files.identity.as_ref().unwrap().0, &other.key).unwrap()
            },
            "--token-service-cert",
        ),
        (
            "a key file holding a certificate",
            |files, _, other| {
                std::fs::write(&files.identity.as_ref().unwrap().1, &other.cert).unwrap()
            },
            "--token-service-key",
        ),
        (
            "a key that is not the certificate's",
            |files, _, other| {
                std::fs::write(&files.identity.as_ref().unwrap().1, &other.key).unwrap()
            },
            "does not match --token-service-cert",
        ),
    ];
    for (case, change, want) in rows {
        let mut files = baseline();
        change(&mut files, dir.path(), &other);
        let err = match load(files.clone()) {
            Ok(_) => panic!("{case}: loaded"),
            Err(err) => err,
        };
        let shown = err.to_string();
        assert!(shown.contains(want), "{case}: {shown:?} lacks {want:?}");
        let path_named = [
            Some(&files.ca),
            files.identity.as_ref().map(|i| &i.0),
            files.identity.as_ref().map(|i| &i.1),
        ]
        .into_iter()
        .flatten()
        .any(|path| shown.contains(&path.display().to_string()));
        assert!(path_named, "{case}: {shown:?} names no file");
        assert!(
            !shown.contains(&secret_key_line)
                && !shown.contains(&other.key.lines().nth(1).unwrap().to_owned()),
            "{case}: key material in {shown:?}"
        );
        assert!(!matches!(err, TlsError::Endpoint { .. }), "{case}: {shown}");
    }
}
