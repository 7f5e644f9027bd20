//! The real `token-server` binary as a child process, for tests that need a process of its
//! own: a clock set apart by libfaketime, or a refusal to start. Each test file that uses it
//! declares `mod support;`.

#![allow(dead_code)] // each test file uses part of it

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use test_support::ServingStatus;
use test_support::free_port;
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const BINARY: &str = env!("CARGO_BIN_EXE_token-server");

/// The operator credential these tests present (`authorization: Bearer ...`).
pub const OPERATOR_CREDENTIAL: &str = "process-test-operator-credential-7c41d9";

/// A keyring from `token-server keygen` and an operator policy naming
/// [`OPERATOR_CREDENTIAL`], in a directory of their own. Several instances may share them.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub keyring: PathBuf,
    pub policy: PathBuf,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(BINARY)
            .arg("keygen")
            .output()
            .expect("keygen runs");
        assert!(output.status.success(), "keygen failed: {output:?}");
        let keyring = dir.path().join("keyring");
        std::fs::write(&keyring, &output.stdout).unwrap();
        let policy = dir.path().join("operators.toml");
        std::fs::write(
            &policy,
            test_support::bearer_policy_toml(
                "process test",
                &token_server::authz::bearer_sha256_hex(OPERATOR_CREDENTIAL),
            ),
        )
        .unwrap();
        Self {
            dir,
            keyring,
            policy,
        }
    }

    /// The server command for `redis_url` on a free port, its output into `log`.
    pub fn command(&self, redis_url: &str, name: &str) -> (Command, String, PathBuf) {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(BINARY);
        command
            .env("TOKEN_LISTEN", &addr)
            .env("TOKEN_REDIS_URL", redis_url)
            .env("TOKEN_KEYRING", &self.keyring)
            .env("TOKEN_OPERATOR_POLICY", &self.policy)
            .env("TOKEN_ADMIN_LISTEN", "off")
            .env("TOKEN_HEALTH_INTERVAL", "100ms")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        (command, addr, log)
    }
}

/// The libfaketime preload library (Debian's `faketime` package).
pub fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|arch| arch.path().join("faketime/libfaketime.so.1"))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("libfaketime is missing; install Debian's `faketime` package (`make deps` does)")
    })
}

/// Runs `command` with its wall clock `offset` away from the machine's (libfaketime syntax:
/// `+90s`, `-1h`); the monotonic clock stays real, as on a host whose NTP stepped.
pub fn with_clock_offset(command: &mut Command, offset: &str) {
    command
        .env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// A connection to a server that is starting; `None` if it never accepts one (20 s).
pub async fn connect(addr: &str) -> Option<Channel> {
    for _ in 0..400 {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return Some(channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Readiness probe: the server reports NOT_SERVING until its first look at Redis succeeds.
/// `false` if it never reports SERVING (20 s).
pub async fn wait_until_serving(channel: Channel) -> bool {
    let limit = Duration::from_secs(20);
    test_support::wait_for_health(
        channel,
        "tokens.v1.TokenService",
        ServingStatus::Serving,
        limit,
    )
    .await
}

/// A channel to a server that is starting, once it reports SERVING; a panic if it never does.
pub async fn serving_channel(addr: &str) -> Channel {
    let channel = connect(addr)
        .await
        .expect("token-server accepts connections");
    assert!(
        wait_until_serving(channel.clone()).await,
        "token-server never reported SERVING"
    );
    channel
}

/// A running server process, killed when dropped.
pub struct ServerProcess {
    /// `None` once [`ServerProcess::terminate`] has taken it.
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` and waits until the server reports SERVING.
    pub async fn start(mut command: Command, addr: String, log: PathBuf) -> Self {
        let child = command.spawn().expect("token-server starts");
        let mut process = Self {
            child: Some(child),
            addr,
            log,
        };
        let serving = match connect(&process.addr).await {
            Some(channel) => wait_until_serving(channel).await,
            None => false,
        };
        if !serving {
            let exited = process
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "token-server never served (exited: {exited:?}):\n{}",
                process.log_text()
            );
        }
        process
    }

    /// Registers a client and issues it a pair: the server serves.
    pub async fn issues(&self, client_id: &str) {
        let mut registry = self.registry().await;
        let client = TestClient::register(&mut registry, client_id).await;
        self.tokens()
            .await
            .issue_token_pair(client.issue("alice"))
            .await
            .expect("a pair issued");
    }

    /// SIGTERM, as an operator stops it; its exit status once it has drained.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let child = self.child.take().expect("terminated once");
        tokio::task::spawn_blocking(move || test_support::terminate(child))
            .await
            .expect("terminate panicked")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn tokens(&self) -> Tokens {
        TokenServiceClient::with_interceptor(self.channel().await, as_operator as Operator)
    }

    pub async fn registry(&self) -> Registry {
        ClientRegistryClient::with_interceptor(self.channel().await, as_operator as Operator)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("the server accepts connections")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

type Operator = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
pub type Tokens = TokenServiceClient<InterceptedService<Channel, Operator>>;
pub type Registry = ClientRegistryClient<InterceptedService<Channel, Operator>>;

/// Adds the operator's bearer credential to every call.
fn as_operator(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {OPERATOR_CREDENTIAL}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A registered confidential client.
#[derive(Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: String,
}

impl TestClient {
    pub async fn register(registry: &mut Registry, id: &str) -> Self {
        let created = registry
            .create_client(pb::CreateClientRequest {
                client_id: id.to_owned(),
                name: id.to_owned(),
                client_type: "confidential".to_owned(),
                allowed_scopes: vec!["read".to_owned()],
                ..Default::default()
            })
            .await
            .expect("client created")
            .into_inner();
        Self {
            id: created.client_id,
            secret: created.client_secret,
        }
    }

    pub fn refresh(&self, refresh_token: &str) -> pb::RefreshTokenPairRequest {
        pb::RefreshTokenPairRequest {
            client_id: self.id.clone(),
            client_secret: self.secret.clone(),
            refresh_token: refresh_token.to_owned(),
            scopes: vec![],
        }
    }

    pub fn issue(&self, subject: &str) -> pb::IssueTokenPairRequest {
        pb::IssueTokenPairRequest {
            client_id: self.id.clone(),
            subject: subject.to_owned(),
            scopes: vec![],
        }
    }
}

/// The `ErrorInfo.reason` of a status, or its message when it has none.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| format!("(no ErrorInfo) {status:?}"))
}

/// The `family_revoked` metadata of a `TOKEN_REUSED` status.
pub fn family_revoked(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt as _;
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("family_revoked").cloned())
}

/// Redis's clock, ms since the epoch.
pub fn redis_time_ms(redis_url: &str) -> u64 {
    use deadpool_redis::redis;
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).unwrap();
    secs * 1000 + micros / 1000
}
