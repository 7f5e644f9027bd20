//! The HTTP gateway started in-process on `127.0.0.1:0`, in front of a token service.

use std::net::SocketAddr;
use std::time::Duration;

use token_client::ClientConfig;
use token_gateway::Upstream;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::TestServer;

/// SDK settings for gateway tests: a few quick retries, and a deadline long enough that a
/// slow test machine never turns into a failure.
pub fn quick_retries() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(10),
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        max_attempts: 3,
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    /// A gateway over `upstream`: any `token_client::TokenClient` (for its settings, channel
    /// or interceptors) goes in through [`Upstream::new`].
    pub async fn start(upstream: Upstream) -> Self {
        // Bound before serving starts, so clients may connect at once: the kernel queues them.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind a loopback port");
        Self::start_on(listener, upstream)
    }

    /// A gateway serving on `listener`, bound by the caller: for a test that must know the
    /// gateway's address before the token service starts (its `--issuer`).
    pub fn start_on(listener: TcpListener, upstream: Upstream) -> Self {
        let addr = listener.local_addr().expect("listener address");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(token_gateway::serve(
            listener,
            token_gateway::router(upstream),
            async {
                let _ = rx.await;
            },
            Duration::from_secs(30),
        ));
        Self {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// A gateway in front of `server`, its SDK client set up with `config`.
    pub async fn in_front_of(server: &TestServer, config: ClientConfig) -> Self {
        Self::start(upstream_at(&server.endpoint(), config)).await
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown without waiting; [`TestGateway::stopped`] then waits for the drain.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the gateway to have stopped (after [`TestGateway::begin_shutdown`]).
    pub async fn stopped(mut self) {
        (&mut self.task)
            .await
            .expect("gateway task panicked")
            .expect("gateway failed");
    }

    /// Signals shutdown and waits for the gateway to drain and stop.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        self.stopped().await;
    }
}

/// An [`Upstream`] for the token service at `endpoint`, with its own lazily connected channel.
pub fn upstream_at(endpoint: &str, config: ClientConfig) -> Upstream {
    Upstream::connect(endpoint, config).expect("a valid endpoint")
}
