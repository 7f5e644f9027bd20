//! The `token-server` binary as a library, so tests start it in-process on `127.0.0.1:0`.
//!
//! # Layout
//! - [`config`]: every setting, from flags and `TOKEN_*` environment variables.
//! - [`api`]: the gRPC handlers, one small function per RPC.
//! - [`status`]: the one mapping from domain errors to gRPC statuses.
//! - [`health`]: `grpc.health.v1`, following Redis reachability.
//! - [`overload`]: the concurrency limit that sheds calls with RESOURCE_EXHAUSTED.
//! - [`deadline`]: the caller's `grpc-timeout`, answered DEADLINE_EXCEEDED.
//! - [`limits`]: oversize and undecodable requests answered MALFORMED_REQUEST.
//! - [`authz`]: the operator gate in front of operator RPCs.
//! - [`rpc_trace`]: a server span (continuing the caller's trace) and a duration per RPC.
//! - [`observe`]: refresh outcomes counted and appended to the per-client audit.
//! - [`admin`]: the admin HTTP port (`/metrics`, Prometheus text format).
//! - [`run`]: serves until the shutdown future resolves, then drains in-flight RPCs.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod authz;
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

use telemetry::metrics::MetricsRegistry;
use token_core::{Clock, Keyring, Lifetimes, SyncedClock, TokenService};
use token_proto::v1::client_registry_server::ClientRegistryServer;
use token_proto::v1::token_service_server::TokenServiceServer;
use token_store::{AuditConfig, AuditLog, RedisStore, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

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

/// The tunables of an [`App`] besides its store, keyring and clock.
#[derive(Debug, Clone, Copy)]
pub struct AppOptions {
    pub lifetimes: Lifetimes,
    pub client_cache_ttl: Duration,
    pub health_interval: Duration,
    pub shutdown_timeout: Duration,
    pub max_concurrent_calls: usize,
    pub audit: AuditConfig,
    /// Serve even though Redis's maxmemory-policy can evict keys (`--redis-allow-eviction`).
    pub allow_evicting_redis: bool,
}

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Everything [`run`] needs, assembled from a [`Config`] or by tests.
pub struct App {
    pub service: Arc<TokenService<RedisStore>>,
    pub store: RedisStore,
    /// The clock every decision reads; the health watcher keeps it in step with Redis's.
    clock: Arc<dyn Clock>,
    /// See [`AppOptions::allow_evicting_redis`].
    allow_evicting_redis: bool,
    pub health_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Shared by the token services' calls; see [`overload`].
    pub limit: overload::Limit,
    /// This instance's metrics, served on the admin port.
    pub metrics: Arc<MetricsRegistry>,
    pub audit: AuditLog,
    /// Appends queued audit events; [`run`] runs it.
    audit_writer: Option<Task>,
    /// Where to serve `/metrics`; none when `None`.
    pub admin_listener: Option<TcpListener>,
    /// Where to serve grpc.health.v1 alone, in plaintext; none when `None`.
    health_listener: Option<TcpListener>,
    /// TLS on the gRPC port and how often its files are checked; plaintext when `None`.
    tls: Option<(Arc<tls::ReloadingTls>, Duration)>,
    /// Who may call the operator RPCs (nobody unless set).
    operators: authz::OperatorPolicy,
    /// Serve gRPC reflection (on by default).
    reflection: bool,
    /// The keyring file, re-read every interval so keys rotate without a restart.
    keyring_file: Option<(Arc<reload::KeyringFile>, Duration)>,
}

impl App {
    /// Builds the app from configuration: reads the keyring, creates the Redis pool.
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
        let keyring_text = text;
        let operators = match &config.operator_policy {
            Some(path) => authz::OperatorPolicy::load(path)?,
            None => authz::OperatorPolicy::deny_all(),
        };
        let mut app = Self::new(
            &config.store(),
            keyring,
            Arc::new(SyncedClock::default()),
            AppOptions {
                lifetimes: config.lifetimes(),
                client_cache_ttl: config.client_cache_ttl,
                health_interval: config.health_interval,
                shutdown_timeout: config.shutdown_timeout,
                max_concurrent_calls: config.max_concurrent_calls,
                audit: config.audit(),
                allow_evicting_redis: config.redis_allow_eviction,
            },
        )?
        .with_operator_policy(operators)
        .with_reflection(config.reflection);
        app = app.with_keyring_file(path, keyring_text, config.keyring_reload_interval);
        if let Some(files) = config.tls_files() {
            app = app.with_tls(tls::ReloadingTls::load(files)?, config.tls_reload_interval);
        }
        Ok(app)
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

    /// Whether to serve gRPC reflection.
    pub fn with_reflection(mut self, on: bool) -> Self {
        self.reflection = on;
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

    pub fn new(
        store_config: &StoreConfig,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
        options: AppOptions,
    ) -> Result<Self, ServerError> {
        let metrics = Arc::new(MetricsRegistry::new(SERVICE_NAME, None));
        let meter = metrics.meter(SERVICE_NAME);
        let store = RedisStore::new(store_config)?.with_metrics(&meter);
        let (audit, audit_writer) =
            AuditLog::new(store.clone(), options.audit, clock.clone(), &meter);
        let recorder = observe::RefreshRecorder::new(&meter, audit.clone());
        let service = Arc::new(
            TokenService::new(store.clone(), keyring, clock.clone(), options.lifetimes)
                .with_client_cache(options.client_cache_ttl)
                .with_refresh_observer(Arc::new(recorder)),
        );
        Ok(Self {
            service,
            store,
            clock,
            allow_evicting_redis: options.allow_evicting_redis,
            health_interval: options.health_interval,
            shutdown_timeout: options.shutdown_timeout,
            limit: overload::Limit::new(options.max_concurrent_calls),
            metrics,
            audit,
            audit_writer: Some(Box::pin(audit_writer)),
            admin_listener: None,
            health_listener: None,
            tls: None,
            operators: authz::OperatorPolicy::deny_all(),
            reflection: true,
            keyring_file: None,
        })
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

/// Serves the token service, health and reflection on `listener` until `shutdown` resolves;
/// then reports NOT_SERVING, stops accepting, and waits up to the app's shutdown timeout for
/// in-flight RPCs to finish.
pub async fn run(
    listener: TcpListener,
    mut app: App,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    // Redis's clock and eviction policy before the first call: a Redis that can evict is
    // refused here (unless overridden); one that does not answer yet is watched below.
    let store_watch = health::StoreWatch {
        store: app.store.clone(),
        clock: app.clock.clone(),
        allow_evicting: app.allow_evicting_redis,
    };
    if let Some(report) = store_watch.check().await
        && report.evicting()
        && !app.allow_evicting_redis
    {
        return Err(ServerError::EvictingRedis {
            policy: report.policy,
        });
    }
    let audit_writer = app.audit_writer.take().map(tokio::spawn);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health_reporter, ServingStatus::NotServing).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(store_watch.run(
        health_reporter.clone(),
        app.health_interval,
        stop_rx.clone(),
    ));

    // grpcurl before 1.8.8 speaks only v1alpha; newer clients try v1 first.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(token_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = if app.reflection {
        (
            Some(reflection().build_v1()?),
            Some(reflection().build_v1alpha()?),
        )
    } else {
        (None, None)
    };
    let loopback = listener
        .local_addr()
        .is_ok_and(|addr| addr.ip().is_loopback());
    if app.operators.has_bearer_credentials() && app.tls.is_none() && !loopback {
        tracing::warn!(
            "the operator policy names bearer credentials but the port is plaintext: \
             anyone on the network path can read them; configure --tls-cert"
        );
    }

    let signal = {
        let stop_tx = stop_tx.clone();
        let reporter = health_reporter.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight RPCs");
            let _ = stop_tx.send(true);
            health::set_all(&reporter, ServingStatus::NotServing).await;
        }
    };

    let admin = app.admin_listener.take().map(|listener| {
        let mut stopped = stop_rx.clone();
        tokio::spawn(admin::serve(listener, app.metrics.clone(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    });
    // Serves until the main server is done (aborted below), so probes see NOT_SERVING during
    // the drain; not drained itself, since a Watch stream would hold it open forever.
    let health_only = app.health_listener.take().map(|listener| {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            Server::builder()
                .add_service(health_service.clone())
                .serve_with_incoming(incoming),
        )
    });
    let meter = app.metrics.meter(SERVICE_NAME);
    // Outermost first. The span sees every answer, the layers' own included; the deadline
    // comes next so that it bounds everything below it and its answer is traced; the operator
    // gate refuses before any decoding; malformed-request rewriting sits nearest the services,
    // whose decode errors it turns into the contract's status.
    let router = Server::builder()
        .layer(rpc_trace::RpcTraceLayer::new(&meter))
        .layer(deadline::DeadlineLayer)
        .layer(authz::OperatorGateLayer::new(app.operators.clone()))
        .layer(limits::MalformedRequestLayer)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(
            app.limit.wrap(
                TokenServiceServer::new(api::TokenServiceApi::new(
                    app.service.clone(),
                    app.audit.clone(),
                ))
                .max_decoding_message_size(limits::MAX_REQUEST_BYTES),
            ),
        )
        .add_service(
            app.limit.wrap(
                ClientRegistryServer::new(api::ClientRegistryApi::new(app.service.clone()))
                    .max_decoding_message_size(limits::MAX_REQUEST_BYTES),
            ),
        );
    let mut tls_watcher = None;
    let keyring_watcher = app.keyring_file.as_ref().map(|(file, interval)| {
        let file = file.clone();
        reload::every(*interval, move || {
            file.reload_if_changed();
        })
    });
    let serve: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &app.tls {
            Some((tls, reload_interval)) => {
                tls_watcher = Some(tls.watch(*reload_interval));
                Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), signal))
            }
            None => {
                // Replies are small and written in several frames: without TCP_NODELAY, Nagle
                // and the peer's delayed ACK hold some of them back by 40 ms.
                // (`Server::tcp_nodelay` only applies to listeners tonic binds itself.)
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
        };

    let mut stopped = stop_rx;
    let drain_deadline = async {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(app.shutdown_timeout).await;
    };
    let result = tokio::select! {
        result = serve => result.map_err(ServerError::from),
        _ = drain_deadline => {
            tracing::warn!(timeout = ?app.shutdown_timeout, "shutdown timeout passed with RPCs in flight");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    for watcher in [tls_watcher, keyring_watcher].into_iter().flatten() {
        watcher.abort();
    }
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    if let Some(health_only) = health_only {
        health_only.abort();
    }
    // The audit of the calls just drained, written before the process goes.
    if tokio::time::timeout(app.shutdown_timeout, app.audit.flush())
        .await
        .is_err()
    {
        tracing::warn!("refresh audit not written before shutdown; queued events are lost");
    }
    if let Some(writer) = audit_writer {
        writer.abort();
    }
    app.metrics.flush();
    result
}
