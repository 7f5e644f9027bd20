//! The `token-server` binary as a library, so tests start it in-process on `127.0.0.1:0`.
//!
//! # Layout
//! - [`config`]: every setting, from flags and `TOKEN_*` environment variables, with its
//!   `DEFAULT_*` constant (or the owning library's).
//! - [`App`]: the service wired from a [`Config`] ([`App::new`], which the binary and the
//!   test harness share) and what it is exposed through (`with_*`).
//! - [`run`]: serves until the shutdown future resolves, drains in-flight RPCs, then stops
//!   every task it started (one phase signal, one drained channel).
//! - [`api`]: the gRPC handlers, one small function per RPC.
//! - [`status`]: [`status::EdgeError`] (a domain error, or the edge's own refusals: overload,
//!   the operator gate) and the one mapping to gRPC statuses.
//! - Layers in front of every service, outermost first: [`rpc_trace`] (a server span
//!   continuing the caller's trace, and a duration per RPC), [`deadline`] (the caller's
//!   `grpc-timeout`, answered DEADLINE_EXCEEDED), [`authz`] (the operator gate in front of
//!   operator RPCs), [`limits`] (oversize and undecodable requests answered
//!   MALFORMED_REQUEST); and around the token services only, [`overload`] (the concurrency
//!   limit that sheds calls with RESOURCE_EXHAUSTED).
//! - [`health`]: `grpc.health.v1`, following Redis reachability; the watcher that keeps the
//!   clock, memory and eviction policy readings.
//! - [`tls`]: TLS and mTLS on the gRPC port, handshakes off the accept loop.
//! - [`reload`]: the keyring and TLS files re-read every interval, so keys and certificates
//!   rotate without a restart.
//! - [`observe`]: refresh outcomes counted and appended to the per-client audit.
//! - the admin HTTP port (`/metrics`, Prometheus text format) is `telemetry::admin`, shared
//!   with the gateway.

#![forbid(unsafe_code)]

pub mod api;
pub mod authz;
pub mod coalesce;
pub mod config;
pub mod deadline;
pub mod health;
pub mod limits;
pub mod observe;
pub mod overload;
pub mod reload;
pub mod rpc_trace;
pub mod status;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use telemetry::metrics::MetricsRegistry;
use token_core::{Clock, Keyring, SyncedClock, TokenService};
use token_proto::v1::client_registry_server::ClientRegistryServer;
use token_proto::v1::token_service_server::TokenServiceServer;
use token_store::{AuditLog, RedisStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};

pub use config::{Cli, Command, Config, ConfigError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read keyring {path}")]
    KeyringRead {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid keyring {path}")]
    Keyring {
        path: String,
        source: token_core::keyring::KeyringError,
    },
    #[error("invalid Redis configuration")]
    Store(#[from] token_core::StoreError),
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("TLS configuration")]
    Tls(#[from] tls::TlsError),
    #[error("operator policy")]
    Policy(#[from] authz::PolicyError),
    #[error("gRPC transport failed")]
    Transport(#[from] tonic::transport::Error),
    #[error(
        "Redis's maxmemory-policy is {policy:?}, which can evict keys: token families (each has \
         a TTL) would vanish and their users be logged out without a word. Set \
         `maxmemory-policy noeviction` (redis.conf, or CONFIG SET maxmemory-policy noeviction), \
         or pass --redis-allow-eviction to serve anyway"
    )]
    EvictingRedis { policy: String },
}

/// The `service.name` of this binary's traces and metrics.
pub const SERVICE_NAME: &str = "token-server";

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Everything [`run`] needs: the service wired from a [`Config`] ([`App::new`]) and what it is
/// exposed through. The binary builds it with [`App::from_config`], tests with [`App::new`]
/// and the `with_*` methods, so both serve the same wiring.
pub struct App {
    /// The use cases; tests read the store through it.
    pub service: Arc<TokenService<RedisStore>>,
    /// The refresh audit; tests flush it before arming a fault.
    pub audit: AuditLog,
    store: RedisStore,
    /// The clock every decision reads; the health watcher keeps it in step with Redis's.
    clock: Arc<dyn Clock>,
    /// Serve even though Redis's maxmemory-policy can evict keys (`--redis-allow-eviction`).
    allow_evicting_redis: bool,
    /// How often the health watcher looks at Redis.
    health_interval: Duration,
    /// Bounds the drain of in-flight calls, and then the audit flush.
    shutdown_timeout: Duration,
    /// Shared by the token services' calls; see [`overload`].
    limit: overload::Limit,
    /// This instance's metrics, served on the admin port.
    metrics: Arc<MetricsRegistry>,
    /// Appends queued audit events; [`run`] runs it until the audit is flushed.
    audit_writer: Option<Task>,
    /// Where to serve `/metrics`; none when `None`.
    admin_listener: Option<TcpListener>,
    /// Where to serve grpc.health.v1 alone, in plaintext; none when `None`.
    health_listener: Option<TcpListener>,
    /// TLS on the gRPC port and how often its files are checked; plaintext when `None`.
    tls: Option<(Arc<tls::ReloadingTls>, Duration)>,
    /// Who may call the operator RPCs (nobody unless set).
    operators: authz::OperatorPolicy,
    /// Serve gRPC reflection (`--reflection`).
    reflection: bool,
    /// The keyring file, re-read every interval so keys rotate without a restart.
    keyring_file: Option<(Arc<reload::KeyringFile>, Duration)>,
}

impl App {
    /// Builds the binary's app: validates the configuration, reads the keyring, the operator
    /// policy and the TLS files, then wires the rest as [`App::new`] does.
    pub fn from_config(config: &Config) -> Result<Self, ServerError> {
        config.validate()?;
        let path = config.keyring.clone().ok_or(ConfigError::MissingKeyring)?;
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ServerError::KeyringRead {
            path: shown.clone(),
            source,
        })?;
        warn_if_readable_by_others(&path);
        let keyring = Keyring::parse(&text).map_err(|source| ServerError::Keyring {
            path: shown,
            source,
        })?;
        let operators = match &config.operator_policy {
            Some(path) => authz::OperatorPolicy::load(path)?,
            None => authz::OperatorPolicy::deny_all(),
        };
        let mut app = Self::new(config, keyring, Arc::new(SyncedClock::default()))?
            .with_operator_policy(operators)
            .with_keyring_file(path, text, config.keyring_reload_interval);
        if let Some(files) = config.tls_files() {
            app = app.with_tls(tls::ReloadingTls::load(files)?, config.tls_reload_interval);
        }
        Ok(app)
    }

    /// The one wiring of store, metrics, audit and service from `config`, with `keyring` and
    /// `clock` given (tests pass an in-memory keyring and a manual clock). Plaintext, no
    /// admin or health-only listener, operator RPCs refused: the `with_*` methods add those.
    /// Does not validate `config` (tests use settings the binary refuses).
    pub fn new(
        config: &Config,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let metrics = Arc::new(MetricsRegistry::new(SERVICE_NAME, None));
        let meter = metrics.meter(SERVICE_NAME);
        let store = RedisStore::new(&config.store())?.with_metrics(&meter);
        let (audit, audit_writer) =
            AuditLog::new(store.clone(), config.audit(), clock.clone(), &meter);
        let recorder = observe::RefreshRecorder::new(&meter, audit.clone());
        let service = Arc::new(
            TokenService::new(store.clone(), keyring, clock.clone(), config.lifetimes())
                .with_client_cache(config.client_cache_ttl)
                .with_jwt_settings(config.jwt_settings())
                .with_refresh_observer(Arc::new(recorder)),
        );
        Ok(Self {
            service,
            audit,
            store,
            clock,
            allow_evicting_redis: config.redis_allow_eviction,
            health_interval: config.health_interval,
            shutdown_timeout: config.shutdown_timeout,
            limit: overload::Limit::new(config.max_concurrent_calls),
            metrics,
            audit_writer: Some(Box::pin(audit_writer)),
            admin_listener: None,
            health_listener: None,
            tls: None,
            operators: authz::OperatorPolicy::deny_all(),
            reflection: config.reflection,
            keyring_file: None,
        })
    }

    /// How the app is exposed, for the startup log line.
    pub fn describe_exposure(&self) -> String {
        let transport = match &self.tls {
            None => "plaintext",
            Some((tls, _)) if tls.mutual() => "mTLS",
            Some(_) => "TLS",
        };
        let operators = match self.operators.operators() {
            None => "everyone (test setting)".to_owned(),
            Some(0) => "nobody (no --operator-policy)".to_owned(),
            Some(n) => format!("{n} operators in the policy"),
        };
        format!("{transport}; operator RPCs: {operators}")
    }

    /// Serves gRPC over TLS (mTLS when the files name a client CA), checking the files for
    /// changes every `reload_interval`.
    pub fn with_tls(mut self, tls: Arc<tls::ReloadingTls>, reload_interval: Duration) -> Self {
        self.tls = Some((tls, reload_interval));
        self
    }

    /// Re-reads the keyring at `path` every `interval`; `loaded` is the text the app's keyring
    /// came from. New keys are used as soon as they load (see [`reload::KeyringFile`]).
    pub fn with_keyring_file(
        mut self,
        path: std::path::PathBuf,
        loaded: String,
        interval: Duration,
    ) -> Self {
        let file = reload::KeyringFile::new(path, self.service.clone(), loaded);
        self.keyring_file = Some((file, interval));
        self
    }

    /// Who may call the operator RPCs; without this, nobody may.
    pub fn with_operator_policy(mut self, policy: authz::OperatorPolicy) -> Self {
        self.operators = policy;
        self
    }

    /// Serves grpc.health.v1 alone on `listener` too, in plaintext: for probes that cannot
    /// speak TLS when the main port has it.
    pub fn with_health_listener(mut self, listener: TcpListener) -> Self {
        self.health_listener = Some(listener);
        self
    }

    /// Serves `/metrics` on `listener` too.
    pub fn with_admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin_listener = Some(listener);
        self
    }
}

/// Signing keys deserve tight permissions; say so loudly, but still start. Group read is
/// allowed: a Kubernetes Secret mounted for a non-root user is group-readable (fsGroup).
fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o037 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the keyring is writable by group or accessible by others; chmod 600 (or 440) it"
        );
    }
}

/// How far shutdown has gone. [`run`] publishes it on one `watch` channel that every task it
/// starts listens to; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// The shutdown future resolved: health says NOT_SERVING, the gRPC and admin servers
    /// accept nothing new and finish what is in flight, the health watcher stops.
    Draining,
    /// The gRPC server is done and the audit flushed: every remaining task ends.
    Stopped,
}

/// Moves `phase` forward to `to`; never back.
fn advance(phase: &watch::Sender<Phase>, to: Phase) {
    phase.send_if_modified(|now| {
        let later = to > *now;
        if later {
            *now = to;
        }
        later
    });
}

/// The tasks of one [`run`] and their shutdown, shaped as mini-redis's server: one signal
/// every task listens to (`phase`), and one "drained" channel of which every task holds a
/// sender, so that `drained.recv()` returns `None` once the last task has ended.
struct Tasks {
    phase: watch::Sender<Phase>,
    drained_tx: mpsc::Sender<()>,
    drained: mpsc::Receiver<()>,
}

impl Tasks {
    fn new() -> Self {
        let (drained_tx, drained) = mpsc::channel(1);
        Self {
            phase: watch::Sender::new(Phase::Serving),
            drained_tx,
            drained,
        }
    }

    /// Resolves once shutdown has reached `phase`.
    fn reached(&self, phase: Phase) -> impl Future<Output = ()> + Send + 'static {
        let mut current = self.phase.subscribe();
        async move {
            // The sender lives in `self` until every task has ended, so no error here.
            let _ = current.wait_for(|now| *now >= phase).await;
        }
    }

    /// Runs `task` until it ends; with `stop_at`, at the latest until shutdown reaches that
    /// phase (for tasks that never end by themselves).
    fn spawn(&self, stop_at: Option<Phase>, task: impl Future<Output = ()> + Send + 'static) {
        let stop = stop_at.map(|phase| self.reached(phase));
        let drained = self.drained_tx.clone();
        tokio::spawn(async move {
            match stop {
                Some(stop) => {
                    tokio::select! {
                        () = task => {}
                        () = stop => {}
                    }
                }
                None => task.await,
            }
            drop(drained);
        });
    }

    fn advance(&self, to: Phase) {
        advance(&self.phase, to);
    }

    /// Ends every task and waits until each has.
    async fn stop(self) {
        let Self {
            phase,
            drained_tx,
            mut drained,
        } = self;
        phase.send_replace(Phase::Stopped);
        drop(drained_tx);
        let _ = drained.recv().await;
    }
}

/// Serves the token service, health and reflection on `listener` until `shutdown` resolves;
/// then reports NOT_SERVING, stops accepting, waits up to the app's shutdown timeout for
/// in-flight RPCs to finish, writes the queued audit and stops every task it started.
pub async fn run(
    listener: TcpListener,
    mut app: App,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    // Everything that can refuse to start comes before the first task.
    let store_watch = health::StoreWatch {
        store: app.store.clone(),
        clock: app.clock.clone(),
        allow_evicting: app.allow_evicting_redis,
    };
    // Redis's clock and eviction policy before the first call: a Redis that can evict is
    // refused here (unless overridden); one that does not answer yet is watched below.
    let first = store_watch.check().await;
    if let Some(report) = &first
        && report.evicting()
        && !app.allow_evicting_redis
    {
        return Err(ServerError::EvictingRedis {
            policy: report.policy.clone(),
        });
    }
    if first.is_some() {
        app.store.warn_if_hashes_are_costly().await;
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health_reporter, ServingStatus::NotServing).await;
    let services = services(&app, health_service.clone())?;
    warn_if_bearer_in_plaintext(&app, &listener);

    let tasks = Tasks::new();
    // The health watcher flips SERVING / NOT_SERVING until the drain starts; then health
    // stays NOT_SERVING.
    tasks.spawn(
        None,
        store_watch.run(
            health_reporter.clone(),
            app.health_interval,
            tasks.reached(Phase::Draining),
        ),
    );
    if let Some(writer) = app.audit_writer.take() {
        // Runs through the drain: the audit flush after it needs the writer.
        tasks.spawn(Some(Phase::Stopped), writer);
    }
    if let Some(listener) = app.admin_listener.take() {
        let admin = telemetry::admin::serve(
            listener,
            app.metrics.clone(),
            tasks.reached(Phase::Draining),
        );
        tasks.spawn(None, async move {
            if let Err(err) = admin.await {
                tracing::warn!(error = %err, "admin server failed");
            }
        });
    }
    if let Some(listener) = app.health_listener.take() {
        // Serves until the main server is done, so probes see NOT_SERVING during the drain;
        // not drained itself, since a Watch stream would hold it open forever.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = Server::builder()
            .add_service(health_service)
            .serve_with_incoming(incoming);
        tasks.spawn(Some(Phase::Stopped), async move {
            let _ = server.await;
        });
    }
    if let Some((file, interval)) = &app.keyring_file {
        let file = file.clone();
        let reloads = reload::every(*interval, move || {
            file.reload_if_changed();
        });
        tasks.spawn(Some(Phase::Stopped), reloads);
    }

    let meter = app.metrics.meter(SERVICE_NAME);
    // `Server::layer` wraps every route; the first layer added is the outermost.
    let router = Server::builder()
        // Outermost: the span and duration cover every answer, the inner layers' refusals
        // included, and continue the caller's trace.
        .layer(rpc_trace::RpcTraceLayer::new(&meter))
        // Inside the span, so its DEADLINE_EXCEEDED is traced; outside the gate and the
        // services, so it bounds everything below it.
        .layer(deadline::DeadlineLayer)
        // Refuses operator RPCs before any request body is read or decoded; inside the span
        // and the deadline, so a refusal is traced and bounded like any answer.
        .layer(authz::OperatorGateLayer::new(app.operators.clone()))
        // Innermost: turns the services' own decode errors into the contract's
        // MALFORMED_REQUEST, so it must see their answers before anything else does.
        .layer(limits::MalformedRequestLayer)
        .add_routes(services);

    let signal = {
        let draining = tasks.phase.clone();
        let reporter = health_reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight RPCs");
            advance(&draining, Phase::Draining);
            health::set_all(&reporter, ServingStatus::NotServing).await;
        }
    };
    let serve: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &app.tls {
            Some((tls, reload_interval)) => {
                tasks.spawn(Some(Phase::Stopped), tls.watch(*reload_interval));
                let incoming = tls.incoming(listener).map_ok(coalesce::Coalesced);
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
            None => {
                // Replies are small and written in several frames: without TCP_NODELAY, Nagle
                // and the peer's delayed ACK hold some of them back by 40 ms.
                // (`Server::tcp_nodelay` only applies to listeners tonic binds itself.)
                let incoming = TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .map_ok(coalesce::Coalesced);
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
        };
    let drain_deadline = {
        let draining = tasks.reached(Phase::Draining);
        async move {
            draining.await;
            tokio::time::sleep(app.shutdown_timeout).await;
        }
    };
    let result = tokio::select! {
        result = serve => result.map_err(ServerError::from),
        () = drain_deadline => {
            tracing::warn!(timeout = ?app.shutdown_timeout, "shutdown timeout passed with RPCs in flight");
            Ok(())
        }
    };

    // Also when serving failed without a signal: the watcher and the admin server stop.
    tasks.advance(Phase::Draining);
    // The audit of the calls just drained, written before the process goes.
    if tokio::time::timeout(app.shutdown_timeout, app.audit.flush())
        .await
        .is_err()
    {
        tracing::warn!("refresh audit not written before shutdown; queued events are lost");
    }
    tasks.stop().await;
    app.metrics.flush();
    result
}

/// Every gRPC service this instance serves, before the layers [`run`] puts in front of them.
fn services(app: &App, health: HealthServer<impl Health>) -> Result<Routes, ServerError> {
    let mut routes = RoutesBuilder::default();
    routes.add_service(health);
    if app.reflection {
        // grpcurl before 1.8.8 speaks only v1alpha; newer clients try v1 first.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(token_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);
    }
    let token_service = TokenServiceServer::new(api::TokenServiceApi::new(
        app.service.clone(),
        app.audit.clone(),
    ))
    .max_decoding_message_size(limits::MAX_REQUEST_BYTES);
    let client_registry =
        ClientRegistryServer::new(api::ClientRegistryApi::new(app.service.clone()))
            .max_decoding_message_size(limits::MAX_REQUEST_BYTES);
    // The concurrency limit wraps only the token services: health and reflection answer
    // even while calls are shed.
    routes.add_service(app.limit.wrap(token_service));
    routes.add_service(app.limit.wrap(client_registry));
    Ok(routes.routes())
}

/// A bearer credential on a plaintext port beyond loopback can be read off the wire.
fn warn_if_bearer_in_plaintext(app: &App, listener: &TcpListener) {
    let loopback = listener
        .local_addr()
        .is_ok_and(|addr| addr.ip().is_loopback());
    if app.operators.has_bearer_credentials() && app.tls.is_none() && !loopback {
        tracing::warn!(
            "the operator policy names bearer credentials but the port is plaintext: \
             anyone on the network path can read them; configure --tls-cert"
        );
    }
}
