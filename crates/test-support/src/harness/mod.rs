//! In-process token servers on `127.0.0.1:0` against real `redis-server` processes, and gRPC
//! clients over real sockets: the harness of the end-to-end tests (`tests/`) and of the SDK,
//! gateway and bench crates' tests (feature `harness`).
//!
//! # Layout
//! - [`TestServer`]: one token-server instance; several may share one Redis.
//! - [`ServerOptions`]: lifetimes, clock, keyring and key prefix for an instance.
//! - [`reason`]: the `ErrorInfo.reason` of a status, which is what tests assert on.
//! - [`register_client`]: creates a client through the `ClientRegistry` RPC.
//! - [`warm_up`]: opens every Redis connection and loads the scripts, for fault tests.
//! - [`gateway`]: the HTTP gateway in-process in front of a token server ([`TestGateway`]).
//! - [`load`]: callers refreshing through the SDK while a test disturbs the deployment.

pub mod gateway;
pub mod load;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::join_all;

pub use crate::ServingStatus;
use token_core::jwt::JwtSettings;
use token_core::store::FamilyState;
use token_core::{Clock, Keyring, Lifetimes, Store as _, StoreError, SyncedClock, TokenService};
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use token_server::App;
use token_server::authz::OperatorPolicy;
use token_server::config::{
    Config, DEFAULT_CLIENT_CACHE_TTL, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_REDIS_POOL_SIZE,
    DEFAULT_REFLECTION,
};
use token_server::tls::{ReloadingTls, TlsFiles};
use token_store::audit::{DEFAULT_AUDIT_MAX_EVENTS, DEFAULT_AUDIT_RETENTION};
use token_store::{AuditLog, DEFAULT_HIGH_WATER_PERMILLE, RedisStore};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_types::StatusExt as _;

pub use crate::RedisServer;
pub use gateway::TestGateway;

/// One keyring for every server of a test process, so instances verify each other's tokens:
/// an HMAC key and an Ed25519 key (`test1-ed`), each signing, as `token-server keygen` writes.
pub static KEYRING: LazyLock<Keyring> = LazyLock::new(|| {
    Keyring::parse(&format!(
        "{}\n{}\n",
        Keyring::generate_line("test1"),
        Keyring::generate_ed25519_line("test1-ed")
    ))
    .expect("test keyring")
});

/// How a test server runs: the settings tests vary, each defaulting to the binary's default
/// (the `DEFAULT_*` constants) unless a test needs otherwise, which its field says.
#[derive(Clone)]
pub struct ServerOptions {
    pub lifetimes: Lifetimes,
    pub clock: Arc<dyn Clock>,
    pub keyring: Keyring,
    /// `t:`, not the binary's `tok:`, so a test's keys are told from anything else's.
    pub key_prefix: String,
    /// 5 s, longer than the binary's 1 s: a busy test machine is slow, not faulty.
    pub redis_timeout: Duration,
    pub pool_size: usize,
    /// The production default, 1 s: tests see what operators get.
    pub client_cache_ttl: Duration,
    pub max_concurrent_calls: usize,
    /// How often the server looks at Redis for its health status: 100 ms, so health tests
    /// see a change soon.
    pub health_interval: Duration,
    /// `--audit-retention`.
    pub audit_retention: Duration,
    /// `--audit-max-events`.
    pub audit_max_events: u64,
    /// Serve `/metrics` on a loopback port too ([`TestServer::admin_addr`]).
    pub admin: bool,
    /// Who may call the operator RPCs; everyone unless a test says otherwise.
    pub operators: OperatorPolicy,
    /// TLS on the gRPC port (plaintext when `None`), its files checked every 100 ms.
    pub tls: Option<TlsFiles>,
    pub reflection: bool,
    /// Serve grpc.health.v1 alone on a second, plaintext loopback port too
    /// ([`TestServer::health_addr`]).
    pub health_listener: bool,
    /// Read the keyring from this file instead of [`ServerOptions::keyring`], and re-read it
    /// every [`RELOAD_INTERVAL`] as the binary does.
    pub keyring_file: Option<std::path::PathBuf>,
    /// `--redis-memory-high-water`, in permille of `maxmemory`.
    pub high_water_permille: u32,
    /// `--redis-allow-eviction`.
    pub allow_evicting_redis: bool,
    /// `--issuer` and `--access-token-audience`.
    pub jwt: JwtSettings,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            lifetimes: Lifetimes::default(),
            clock: Arc::new(SyncedClock::default()),
            keyring: KEYRING.clone(),
            key_prefix: "t:".to_owned(),
            redis_timeout: Duration::from_secs(5),
            pool_size: DEFAULT_REDIS_POOL_SIZE,
            client_cache_ttl: DEFAULT_CLIENT_CACHE_TTL,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            health_interval: Duration::from_millis(100),
            audit_retention: DEFAULT_AUDIT_RETENTION,
            audit_max_events: DEFAULT_AUDIT_MAX_EVENTS,
            admin: false,
            operators: OperatorPolicy::allow_all(),
            tls: None,
            reflection: DEFAULT_REFLECTION,
            keyring_file: None,
            health_listener: false,
            high_water_permille: DEFAULT_HIGH_WATER_PERMILLE,
            allow_evicting_redis: false,
            jwt: JwtSettings::default(),
        }
    }
}

/// A policy naming one operator by the bearer credential it presents, as `make run` and the
/// benchmark set it up.
pub fn bearer_policy(credential: &str) -> OperatorPolicy {
    OperatorPolicy::parse(&crate::bearer_policy_toml(
        "bearer",
        &token_server::authz::bearer_sha256_hex(credential),
    ))
    .expect("a valid policy")
}

/// How often a test server checks its TLS and keyring files for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// How long a stopping test server drains (`--shutdown-timeout`; the binary's is 30 s).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerOptions {
    /// The server's configuration, as the binary would read it from flags: what a test does
    /// not set is the binary's default.
    pub fn config(&self, redis_url: &str) -> Config {
        Config {
            redis_url: redis_url.to_owned(),
            key_prefix: self.key_prefix.clone(),
            redis_timeout: self.redis_timeout,
            redis_pool_size: self.pool_size,
            access_ttl: self.lifetimes.access_ttl,
            refresh_idle_ttl: self.lifetimes.refresh_idle_ttl,
            refresh_absolute_ttl: self.lifetimes.refresh_absolute_ttl,
            grace_period: self.lifetimes.grace,
            client_cache_ttl: self.client_cache_ttl,
            max_concurrent_calls: self.max_concurrent_calls,
            health_interval: self.health_interval,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            audit_retention: self.audit_retention,
            audit_max_events: self.audit_max_events,
            reflection: self.reflection,
            redis_memory_high_water: self.high_water_permille,
            redis_allow_eviction: self.allow_evicting_redis,
            issuer: self.jwt.issuer.clone(),
            access_token_audience: Some(self.jwt.default_audience.clone()),
            ..Config::default()
        }
    }
}

/// A token server running in this process on a loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The use cases behind the server, for reading the store directly.
    pub service: Arc<TokenService<RedisStore>>,
    /// The admin HTTP address (`/metrics`), when [`ServerOptions::admin`] asked for one.
    pub admin_addr: Option<SocketAddr>,
    /// The server's refresh audit, to flush before a test arms a fault.
    pub audit: AuditLog,
    /// The plaintext health-only address, when [`ServerOptions::health_listener`] asked for one.
    pub health_addr: Option<SocketAddr>,
    /// The server's TLS configuration, when [`ServerOptions::tls`] asked for one.
    pub tls: Option<Arc<ReloadingTls>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), token_server::ServerError>>,
}

impl TestServer {
    pub async fn start(redis_url: &str, options: ServerOptions) -> Self {
        let keyring_text = options
            .keyring_file
            .as_ref()
            .map(|path| std::fs::read_to_string(path).expect("keyring file"));
        let keyring = match &keyring_text {
            Some(text) => Keyring::parse(text).expect("keyring file parses"),
            None => options.keyring.clone(),
        };
        // The binary's wiring (`App::new`), from the configuration the binary would read.
        let mut app = App::new(&options.config(redis_url), keyring, options.clock.clone())
            .expect("cannot build the app")
            .with_operator_policy(options.operators.clone());
        if let (Some(path), Some(text)) = (&options.keyring_file, keyring_text) {
            app = app.with_keyring_file(path.clone(), text, RELOAD_INTERVAL);
        }
        let tls = options
            .tls
            .as_ref()
            .map(|files| ReloadingTls::load(files.clone()).expect("TLS files"));
        if let Some(tls) = &tls {
            app = app.with_tls(tls.clone(), RELOAD_INTERVAL);
        }
        let service = app.service.clone();
        let audit = app.audit.clone();
        let mut admin_addr = None;
        if options.admin {
            let admin = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("cannot bind a loopback port");
            admin_addr = Some(admin.local_addr().expect("admin address"));
            app = app.with_admin_listener(admin);
        }
        let mut health_addr = None;
        if options.health_listener {
            let health = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("cannot bind a loopback port");
            health_addr = Some(health.local_addr().expect("health address"));
            app = app.with_health_listener(health);
        }
        // Bound before `run` starts, so clients may connect at once: the kernel queues them.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(token_server::run(listener, app, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            service,
            admin_addr,
            health_addr,
            audit,
            tls,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("cannot connect to the test server")
    }

    /// A TLS channel to the server trusting `ca_pem`, presenting `identity` (cert, key PEM)
    /// when given. The error is the caller's to inspect: refused handshakes are the point of
    /// some tests.
    pub async fn tls_channel(
        &self,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://{}", self.addr))
            .expect("endpoint")
            .tls_config(tls)?
            .connect()
            .await
    }

    /// A token server on its own Redis that accepts only mutual TLS: its certificate and its
    /// client CA from one test CA, whose files go into a temporary directory the caller can
    /// add its own to. `operator` reaches it over mTLS as an operator the policy names.
    pub async fn start_mtls() -> MtlsServer {
        let redis = RedisServer::start();
        let ca = crate::pki::TestCa::new("tokens test CA");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let server_files = ca.server().write(dir.path(), "server");
        let server = TestServer::start(
            &redis.url(),
            ServerOptions {
                tls: Some(TlsFiles {
                    cert: server_files.cert,
                    key: server_files.key,
                    client_ca: Some(ca.write(dir.path(), "server-client-ca")),
                }),
                ..ServerOptions::default()
            },
        )
        .await;
        let identity = ca.client_with_uri("spiffe://tokens.test/ns/iam/sa/provisioner");
        let operator = server
            .tls_channel(&ca.cert_pem(), Some((&identity.cert, &identity.key)))
            .await
            .expect("an operator reaches the server over mTLS");
        MtlsServer {
            redis,
            ca,
            dir,
            server,
            operator,
        }
    }

    pub async fn tokens(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel().await)
    }

    pub async fn registry(&self) -> ClientRegistryClient<Channel> {
        ClientRegistryClient::new(self.channel().await)
    }

    /// Waits until the server's overall health is `want` (see [`crate::wait_for_health`]).
    pub async fn wait_for_health(&self, want: ServingStatus) {
        let limit = Duration::from_secs(30);
        assert!(
            crate::wait_for_health(self.channel().await, "", want, limit).await,
            "health never became {want:?}"
        );
    }

    /// Signals shutdown and waits for the server to drain and stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .expect("server task panicked")
            .expect("server failed");
    }
}

/// A registered client as the tests use it.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub client_id: String,
    /// Empty for public clients.
    pub client_secret: String,
}

/// Registers a client through the `ClientRegistry` RPC.
pub async fn register_client(
    registry: &mut ClientRegistryClient<Channel>,
    client_type: &str,
    reuse_policy: &str,
    allowed_scopes: &[&str],
) -> TestClient {
    register_client_as(
        registry,
        client_request(client_type, reuse_policy, allowed_scopes),
    )
    .await
}

/// The `CreateClient` request [`register_client`] sends: a generated id, opaque access tokens.
pub fn client_request(
    client_type: &str,
    reuse_policy: &str,
    allowed_scopes: &[&str],
) -> pb::CreateClientRequest {
    pb::CreateClientRequest {
        client_id: String::new(),
        name: "test client".to_owned(),
        client_type: client_type.to_owned(),
        allowed_scopes: allowed_scopes.iter().map(|s| s.to_string()).collect(),
        reuse_policy: reuse_policy.to_owned(),
        access_token_format: String::new(),
        access_token_audience: String::new(),
    }
}

/// Registers a confidential client whose access tokens are JWTs (`audience` empty: the
/// server's default).
pub async fn register_jwt_client(
    registry: &mut ClientRegistryClient<Channel>,
    allowed_scopes: &[&str],
    audience: &str,
) -> TestClient {
    register_client_as(
        registry,
        pb::CreateClientRequest {
            access_token_format: "jwt".to_owned(),
            access_token_audience: audience.to_owned(),
            ..client_request("confidential", "revoke-family", allowed_scopes)
        },
    )
    .await
}

/// Registers the client `request` describes.
pub async fn register_client_as(
    registry: &mut ClientRegistryClient<Channel>,
    request: pb::CreateClientRequest,
) -> TestClient {
    let created = registry
        .create_client(request)
        .await
        .expect("CreateClient failed")
        .into_inner();
    TestClient {
        client_id: created.client_id,
        client_secret: created.client_secret,
    }
}

/// Issues a first pair for `client` and `subject` with all of the client's scopes.
pub async fn issue(
    tokens: &mut TokenServiceClient<Channel>,
    client: &TestClient,
    subject: &str,
) -> pb::TokenPair {
    tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: client.client_id.clone(),
            subject: subject.to_owned(),
            scopes: vec![],
        })
        .await
        .expect("IssueTokenPair failed")
        .into_inner()
}

/// `SummarizeRefreshEvents` for `client_id` over the last hour.
pub async fn last_hour_summary(
    tokens: &mut TokenServiceClient<Channel>,
    client_id: &str,
) -> pb::RefreshEventSummary {
    tokens
        .summarize_refresh_events(pb::SummarizeRefreshEventsRequest {
            client_id: client_id.to_owned(),
            window: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .expect("SummarizeRefreshEvents")
        .into_inner()
}

/// The refresh request a client makes with `refresh_token`.
pub fn refresh_request(client: &TestClient, refresh_token: &str) -> pb::RefreshTokenPairRequest {
    pb::RefreshTokenPairRequest {
        client_id: client.client_id.clone(),
        client_secret: client.client_secret.clone(),
        refresh_token: refresh_token.to_owned(),
        scopes: vec![],
    }
}

/// Fires `parallel` refreshes of `token` at once, round-robin over `channels`; every one must
/// succeed.
pub async fn refresh_together(
    channels: &[TokenServiceClient<Channel>],
    client: &TestClient,
    token: &str,
    parallel: usize,
) -> Vec<pb::TokenPair> {
    let barrier = Arc::new(Barrier::new(parallel));
    let calls = (0..parallel).map(|i| {
        let mut channel = channels[i % channels.len()].clone();
        let request = refresh_request(client, token);
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            channel.refresh_token_pair(request).await
        })
    });
    join_all(calls)
        .await
        .into_iter()
        .map(|joined| {
            joined
                .expect("caller task panicked")
                .unwrap_or_else(|status| panic!("a storm refresh failed: {status:?}"))
                .into_inner()
        })
        .collect()
}

/// Makes every Redis connection of the server exist and the rotate script loaded, so that the
/// next refresh sends exactly one command, the rotation: no handshake or script load left to
/// absorb an armed fault.
pub async fn warm_up(server: &TestServer, client: &TestClient) {
    let mut tokens = server.tokens().await;
    let pair = issue(&mut tokens, client, "warm-up").await;
    tokens
        .refresh_token_pair(refresh_request(client, &pair.refresh_token))
        .await
        .expect("warm-up refresh");
    // More calls than the store has connections, each taking the next one round-robin.
    for _ in 0..16 {
        tokens
            .introspect_token(pb::IntrospectTokenRequest {
                token: pair.access_token.clone(),
                ..Default::default()
            })
            .await
            .expect("warm-up introspection");
    }
    // The warm-up refresh's audit event is written in the background: done before returning,
    // so it cannot take a fault the test arms next.
    server.audit.flush().await;
}

/// The `google.rpc.ErrorInfo` reason of a status, or a panic naming what was there instead.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("status without ErrorInfo: {status:?}"))
        .reason
}

/// The OAuth2 error code carried in the `ErrorInfo` metadata.
pub fn oauth_error(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("oauth_error").cloned())
        .unwrap_or_else(|| panic!("status without oauth_error: {status:?}"))
}

/// Runs `tests/python/<script>` with the project's Python (`.tools/venv`), `input` on its
/// standard input, for at most `limit`, and returns what it printed; a script that fails or
/// overruns is a panic that shows its output.
pub async fn run_python(script: &str, input: &[u8], limit: Duration) -> Vec<u8> {
    use std::process::Stdio;
    let path = crate::workspace_root().join("tests/python").join(script);
    let mut child = tokio::process::Command::new(crate::tools_python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, input)
        .await
        .unwrap_or_else(|err| panic!("{script}: cannot write its input: {err}"));
    drop(stdin);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {limit:?}"))
        .expect("python finishes");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// What [`TestServer::start_mtls`] starts, kept alive together.
pub struct MtlsServer {
    pub redis: RedisServer,
    /// Signs the server's certificate and every client certificate it accepts.
    pub ca: crate::pki::TestCa,
    /// Holds the server's files; tests add their own.
    pub dir: tempfile::TempDir,
    pub server: TestServer,
    /// An mTLS channel as an operator.
    pub operator: Channel,
}

/// Replaces a file as a Kubernetes Secret volume update (or cert-manager) does: written beside,
/// then renamed over, so a reader never sees it half-written.
pub fn replace_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits (bounded) until every server's keyring satisfies `loaded`, following each one's
/// keyring replacements; `what` names the wait in the panic.
pub async fn until_keyring(servers: &[TestServer], what: &str, loaded: impl Fn(&Keyring) -> bool) {
    for server in servers {
        let mut keyring = server.service.watch_keyring();
        tokio::time::timeout(Duration::from_secs(20), keyring.wait_for(|k| loaded(k)))
            .await
            .unwrap_or_else(|_| panic!("{} never loaded {what}", server.addr))
            .expect("the service is alive");
    }
}

/// `IntrospectToken` of `token` by a caller the network trusts (no client credentials).
pub async fn introspect(
    tokens: &mut TokenServiceClient<Channel>,
    token: &str,
) -> pb::IntrospectTokenResponse {
    tokens
        .introspect_token(pb::IntrospectTokenRequest {
            token: token.to_owned(),
            ..Default::default()
        })
        .await
        .expect("IntrospectToken")
        .into_inner()
}

/// The stored state of the family `refresh_token` belongs to, found as the service finds it:
/// through the subject and family id the token names (its MAC checked with the service's
/// keyring). `None` once the store no longer has the family. Retried while the store answers
/// "unavailable", as every caller of the service does: after a failover the first call on a
/// connection to the old primary times out, and the connection is then replaced.
pub async fn stored_family(
    service: &TokenService<RedisStore>,
    refresh_token: &str,
) -> Option<FamilyState> {
    let claims = service
        .keyring()
        .verify("refresh_token", refresh_token)
        .expect("a refresh token this service issued");
    let mut attempts = 0;
    loop {
        match service
            .store()
            .family(claims.subject(), claims.family())
            .await
        {
            Ok(family) => return family,
            Err(StoreError::Unavailable(_)) if attempts < 10 => attempts += 1,
            Err(err) => panic!("the store answers: {err}"),
        }
    }
}
