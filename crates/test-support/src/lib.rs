//! Test harness pieces shared by every crate's tests: real `redis-server` processes on free
//! loopback ports, each in its own directory, killed when dropped. No Redis mock anywhere.
//!
//! # Layout
//! - [`RedisServer`]: one single-node Redis, ready when `start` returns.
//! - [`free_port`], [`require_program`], [`tools_python`], [`terminate`]: small helpers with
//!   clear failures.
//! - [`wait_for_health`], [`bearer_policy_toml`], [`bearer`]: readiness and operator
//!   credentials, for servers in-process and binaries alike.
//! - [`topology`]: Sentinel-managed primaries with replicas, and Redis Clusters.
//! - [`fault_proxy`]: a TCP proxy that injects network faults (refuse, drop before or after
//!   forwarding, stall, reset mid-stream) between a client and a loopback server.
//! - [`otlp`]: an in-memory OTLP/gRPC receiver, for trace and metric assertions.
//! - [`pki`]: throwaway CAs and certificates for TLS tests.
//! - `harness` (feature `harness`): token servers and gateways in-process, registered
//!   clients, SDK load. It depends on the server, SDK and gateway crates, so only the SDK's,
//!   the gateway's and token-bench's tests and the end-to-end tests (`tests/`) turn it on.

#![forbid(unsafe_code)]

pub mod fault_proxy;
#[cfg(feature = "harness")]
pub mod harness;
pub mod otlp;
pub mod pki;
pub mod topology;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a fresh redis-server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// The path of a program the tests need, or a panic that says how to install it.
pub fn require_program(name: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH; {install_hint}"))
}

/// The project's Python (`.tools/venv`, made by `scripts/deps.sh`), with the PyPI tools of
/// `scripts/requirements-tools.txt` (prometheus-client, authlib, requests) importable.
///
/// The path is returned as is, not canonicalized: `bin/python` is a symlink to the base
/// interpreter, and Python only finds the virtualenv (its `pyvenv.cfg`, its site-packages)
/// when started through the link.
pub fn tools_python() -> PathBuf {
    let venv = workspace_root().join(".tools/venv");
    let python = venv.join("bin/python");
    if !venv.join("pyvenv.cfg").is_file() || !python.exists() {
        panic!("the project virtualenv .tools/venv is missing; run `make deps` (scripts/deps.sh)");
    }
    python
}

/// An operator policy (`--operator-policy` TOML) naming one operator by the SHA-256 (hex) of
/// the bearer credential it presents, as `make run` and the benchmark write it.
pub fn bearer_policy_toml(name: &str, bearer_sha256_hex: &str) -> String {
    format!("[[operator]]\nname = \"{name}\"\nbearer_sha256 = \"{bearer_sha256_hex}\"\n")
}

/// Adds `authorization: Bearer <credential>` to every call: how an operator named by
/// [`bearer_policy_toml`] calls.
pub fn bearer(
    credential: &str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {credential}")
        .parse()
        .expect("a credential fit for a header");
    move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
        Ok(request)
    }
}

/// Waits until `service`'s health on `channel` is `want` (`""` is the server as a whole),
/// following `grpc.health.v1` Watch: the server pushes each change, so this is a readiness
/// probe without polling. `false` if the stream ends or `limit` passes first.
pub async fn wait_for_health(
    channel: tonic::transport::Channel,
    service: &str,
    want: ServingStatus,
    limit: Duration,
) -> bool {
    let mut health = HealthClient::new(channel);
    let watched = async {
        let Ok(updates) = health
            .watch(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
        else {
            return false;
        };
        let mut updates = updates.into_inner();
        while let Ok(Some(update)) = updates.message().await {
            if update.status == want as i32 {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(limit, watched).await.unwrap_or(false)
}

/// The workspace's root directory.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("test-support lives two levels below the workspace root")
}

/// Sends SIGTERM to `child` (a binary under test) and waits for it to exit, as an operator's
/// `kill` or Kubernetes would stop it. Blocking: call it from `spawn_blocking` in async tests.
pub fn terminate(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdin(Stdio::null())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {} failed", child.id());
    child.wait().expect("waiting for the child")
}

/// A redis-server child process on a free loopback port, with its own working directory.
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Holds the data directory (and AOF, if enabled) until the server is dropped.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a throwaway single node without persistence and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a node with extra configuration arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut last_err = String::new();
        // A port can be taken between `free_port` and redis binding it; try a few.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("cannot create a temp dir for redis-server");
            let port = free_port();
            match Self::spawn(&dir, port, extra) {
                Ok(child) => {
                    let mut server = Self { child, port, dir };
                    match server.wait_ready() {
                        Ok(()) => return server,
                        Err(err) => last_err = err,
                    }
                }
                Err(err) => last_err = err,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    fn spawn(dir: &tempfile::TempDir, port: u16, extra: &[&str]) -> Result<Child, String> {
        let program = require_program(
            "redis-server",
            "install it with `apt-get install redis-server` (the Makefile's `make deps` does)",
        );
        Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir.path().to_string_lossy()])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot spawn redis-server: {e}"))
    }

    /// Readiness probe: PING until PONG, or fail if the process exits or time runs out.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited early with {status}"));
            }
            if ping(self.addr()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory (so an AOF is replayed).
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill();
        self.child = Self::spawn(&self.dir, self.port, extra).expect("cannot restart redis");
        self.wait_ready()
            .expect("restarted redis-server is not ready");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One PING over a raw socket: true on `+PONG`.
pub fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
