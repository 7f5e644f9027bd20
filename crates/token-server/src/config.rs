//! All configuration in one struct, from flags or the environment (`TOKEN_*`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use telemetry::LogFormat;
// Re-exported: `--admin-listen` and `--health-listen` read it.
pub use telemetry::admin::OptionalAddr;
use token_core::jwt::{DEFAULT_ISSUER, JwtSettings};
use token_core::{
    DEFAULT_ACCESS_TTL, DEFAULT_GRACE, DEFAULT_REFRESH_ABSOLUTE_TTL, DEFAULT_REFRESH_IDLE_TTL,
    Lifetimes,
};
use token_store::audit::{DEFAULT_AUDIT_MAX_EVENTS, DEFAULT_AUDIT_RETENTION};
use token_store::{AuditConfig, DEFAULT_HIGH_WATER_PERMILLE, ReplicaWait, StoreConfig};

use crate::tls::TlsFiles;

// The defaults of the settings this binary owns; those of settings a library owns are that
// library's (`token_core::DEFAULT_GRACE`, `token_store::audit::DEFAULT_AUDIT_RETENTION`, ...).
// Flags, `Config::default` and the test harness all read these.

/// `--listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);
/// `--redis-url`: one node on this host.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// `--keyring-reload-interval`.
pub const DEFAULT_KEYRING_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// `--client-cache-ttl`: one Redis round trip per refresh, and a rotated secret or deleted
/// client seen everywhere within a second.
pub const DEFAULT_CLIENT_CACHE_TTL: Duration = Duration::from_secs(1);
/// `--redis-timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// `--redis-pool-size`.
pub const DEFAULT_REDIS_POOL_SIZE: usize = 8;
/// `--key-prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "tok:";
/// `--max-concurrent-calls`.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 2048;
/// `--worker-threads`.
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// `--health-interval`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// `--shutdown-timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// `--admin-listen`: loopback only, so metrics stay off the network unless asked for.
pub const DEFAULT_ADMIN_LISTEN: OptionalAddr =
    OptionalAddr(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090)));
/// `--health-listen`: none.
pub const DEFAULT_HEALTH_LISTEN: OptionalAddr = OptionalAddr(None);
/// `--tls-reload-interval`.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// `--reflection`.
pub const DEFAULT_REFLECTION: bool = true;

/// The defaults of the duration and percentage flags as `--help` shows them. clap needs text
/// for these (a `Duration` has no `Display`, and humantime would print 60 s as `1m`);
/// `shown_defaults_are_the_typed_ones` keeps each equal to its typed constant.
mod shown {
    pub const KEYRING_RELOAD_INTERVAL: &str = "10s";
    pub const GRACE_PERIOD: &str = "60s";
    pub const ACCESS_TTL: &str = "15m";
    pub const REFRESH_IDLE_TTL: &str = "30days";
    pub const REFRESH_ABSOLUTE_TTL: &str = "90days";
    pub const CLIENT_CACHE_TTL: &str = "1s";
    pub const REDIS_TIMEOUT: &str = "1s";
    pub const REDIS_WAIT_TIMEOUT: &str = "250ms";
    pub const REDIS_MEMORY_HIGH_WATER: &str = "90%";
    pub const HEALTH_INTERVAL: &str = "1s";
    pub const SHUTDOWN_TIMEOUT: &str = "30s";
    pub const AUDIT_RETENTION: &str = "7days";
    pub const TLS_RELOAD_INTERVAL: &str = "30s";
    pub const LOG_FORMAT: &str = "pretty";
}

/// The command line of `token-server`.
#[derive(Debug, Parser)]
#[command(
    name = "token-server",
    version,
    about = "OAuth2 refresh-token rotation over gRPC"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new keyring to stdout: a random 256-bit HMAC key `<key-id>` and an Ed25519 key
    /// `<key-id>-ed` (for JWT access tokens), both signing.
    Keygen {
        /// Id of the new HMAC key (the Ed25519 key's is it plus `-ed`); defaults to `k` and the
        /// current Unix time.
        #[arg(long)]
        key_id: Option<String>,
    },
}

/// How the server runs. Every flag also reads `TOKEN_<NAME>` from the environment.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "TOKEN_LISTEN", default_value_t = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Redis holding family and client state: `redis://host:port` (one node),
    /// `redis+sentinel://host:port,host:port/MASTER_NAME` (the primary the sentinels name) or
    /// `redis+cluster://host:port,host:port` (a Redis Cluster).
    #[arg(
        long,
        env = "TOKEN_REDIS_URL",
        default_value = DEFAULT_REDIS_URL
    )]
    pub redis_url: String,

    /// File of signing keys; required to serve (`token-server keygen > keyring` makes one;
    /// lines `<key-id> <secret> <sign|verify>`, `#` starts a comment).
    #[arg(long, env = "TOKEN_KEYRING")]
    pub keyring: Option<PathBuf>,

    /// How often the keyring file is re-read: add, promote and retire keys without a restart
    /// (deploy/README.md, "Rotate the signing key").
    #[arg(long, env = "TOKEN_KEYRING_RELOAD_INTERVAL", default_value = shown::KEYRING_RELOAD_INTERVAL, value_parser = humantime::parse_duration)]
    pub keyring_reload_interval: Duration,

    /// How long a retired refresh token's immediate successor is replayed; 0s turns it off.
    #[arg(long, env = "TOKEN_GRACE_PERIOD", default_value = shown::GRACE_PERIOD, value_parser = humantime::parse_duration)]
    pub grace_period: Duration,

    /// Lifetime of access tokens.
    #[arg(long, env = "TOKEN_ACCESS_TTL", default_value = shown::ACCESS_TTL, value_parser = humantime::parse_duration)]
    pub access_ttl: Duration,

    /// The `iss` of JWT access tokens and the RFC 8414 metadata's `issuer`: the URL where the
    /// HTTP gateway is reached.
    #[arg(long, env = "TOKEN_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,

    /// The `aud` of JWT access tokens of clients registered without
    /// `access_token_audience`; the issuer when unset.
    #[arg(long, env = "TOKEN_ACCESS_TOKEN_AUDIENCE")]
    pub access_token_audience: Option<String>,

    /// A token family unused this long expires.
    #[arg(long, env = "TOKEN_REFRESH_IDLE_TTL", default_value = shown::REFRESH_IDLE_TTL, value_parser = humantime::parse_duration)]
    pub refresh_idle_ttl: Duration,

    /// A token family expires this long after it was issued, however it is used.
    #[arg(long, env = "TOKEN_REFRESH_ABSOLUTE_TTL", default_value = shown::REFRESH_ABSOLUTE_TTL, value_parser = humantime::parse_duration)]
    pub refresh_absolute_ttl: Duration,

    /// How long a client record read from Redis is reused. Other instances see a rotated
    /// secret or a deleted client within this time; 0s reads Redis on every call.
    #[arg(long, env = "TOKEN_CLIENT_CACHE_TTL", default_value = shown::CLIENT_CACHE_TTL, value_parser = humantime::parse_duration)]
    pub client_cache_ttl: Duration,

    /// Bound on every Redis call, pool wait included.
    #[arg(long, env = "TOKEN_REDIS_TIMEOUT", default_value = shown::REDIS_TIMEOUT, value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// Redis connections in the pool (each multiplexed).
    #[arg(long, env = "TOKEN_REDIS_POOL_SIZE", default_value_t = DEFAULT_REDIS_POOL_SIZE)]
    pub redis_pool_size: usize,

    /// Replicas a revocation waits for (WAIT) before it is answered. Default: 1 with
    /// `redis+sentinel://` and `redis+cluster://`, 0 (no wait) for one node.
    #[arg(long, env = "TOKEN_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<u32>,

    /// The longest a revocation waits for replicas; past it, the revocation is answered
    /// anyway and counted in `tokens_redis_wait_unmet_total`.
    #[arg(long, env = "TOKEN_REDIS_WAIT_TIMEOUT", default_value = shown::REDIS_WAIT_TIMEOUT, value_parser = humantime::parse_duration)]
    pub redis_wait_timeout: Duration,

    /// Past this share of Redis's `maxmemory` (on any node), new token families are refused
    /// with RESOURCE_EXHAUSTED / STORE_FULL so that existing ones keep rotating; the audit
    /// pauses 5 points below it. A percentage (`90%`, `92.5`); `0` turns it off.
    #[arg(long, env = "TOKEN_REDIS_MEMORY_HIGH_WATER", default_value = shown::REDIS_MEMORY_HIGH_WATER, value_parser = parse_permille)]
    pub redis_memory_high_water: u32,

    /// Start and keep serving even though Redis's maxmemory-policy can evict keys (anything
    /// but `noeviction`), which silently drops token families. Refused without this flag.
    #[arg(long, env = "TOKEN_REDIS_ALLOW_EVICTION")]
    pub redis_allow_eviction: bool,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "TOKEN_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// Token-service calls running at once on this instance; beyond it, calls are refused
    /// with RESOURCE_EXHAUSTED (OVERLOADED) instead of queueing.
    #[arg(long, env = "TOKEN_MAX_CONCURRENT_CALLS", default_value_t = DEFAULT_MAX_CONCURRENT_CALLS)]
    pub max_concurrent_calls: usize,

    /// Threads that serve calls. With 1 (a current-thread runtime), the replies and Redis
    /// commands of calls that finish together go out in one write, which made a refresh
    /// about a third cheaper in CPU (BENCHMARKS.md); an instance is sized for one CPU and
    /// scaled by instances. More threads serve from that many CPUs, at more CPU per call.
    #[arg(long, env = "TOKEN_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,

    /// How often Redis is looked at (TIME and INFO): health status, clock, memory and policy.
    #[arg(long, env = "TOKEN_HEALTH_INTERVAL", default_value = shown::HEALTH_INTERVAL, value_parser = humantime::parse_duration)]
    pub health_interval: Duration,

    /// After SIGTERM, how long in-flight RPCs may take to finish.
    #[arg(long, env = "TOKEN_SHUTDOWN_TIMEOUT", default_value = shown::SHUTDOWN_TIMEOUT, value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Address of the admin HTTP server (`GET /metrics`, Prometheus text format); `off` for
    /// none. Keep it off the public network.
    #[arg(long, env = "TOKEN_ADMIN_LISTEN", default_value_t = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: OptionalAddr,

    /// A second, plaintext listener serving only grpc.health.v1, for probes that cannot speak
    /// TLS (the kubelet's gRPC probe) when the main port has --tls-cert; `off` for none.
    #[arg(long, env = "TOKEN_HEALTH_LISTEN", default_value_t = DEFAULT_HEALTH_LISTEN)]
    pub health_listen: OptionalAddr,

    /// How long refresh audit events are kept (`ListRefreshEvents`).
    #[arg(long, env = "TOKEN_AUDIT_RETENTION", default_value = shown::AUDIT_RETENTION, value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

    /// The most audit events kept per client; the oldest go first.
    #[arg(long, env = "TOKEN_AUDIT_MAX_EVENTS", default_value_t = DEFAULT_AUDIT_MAX_EVENTS)]
    pub audit_max_events: u64,

    /// PEM certificate chain for TLS on the gRPC port (with --tls-key); plaintext without.
    /// Reloaded when the file changes.
    #[arg(long, env = "TOKEN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TOKEN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: every client must present a certificate it signed (mutual TLS).
    #[arg(long, env = "TOKEN_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for a new certificate.
    #[arg(long, env = "TOKEN_TLS_RELOAD_INTERVAL", default_value = shown::TLS_RELOAD_INTERVAL, value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// TOML file naming the callers allowed the operator RPCs (every method tokens.proto does
    /// not mark public) by mTLS SAN or bearer credential hash. Without it, operator RPCs are
    /// refused to everyone.
    #[arg(long, env = "TOKEN_OPERATOR_POLICY")]
    pub operator_policy: Option<PathBuf>,

    /// Serve gRPC reflection (`--reflection false` to turn it off).
    #[arg(long, env = "TOKEN_REFLECTION", default_value_t = DEFAULT_REFLECTION, action = clap::ArgAction::Set)]
    pub reflection: bool,

    /// Log output: `pretty` or `json`. Verbosity comes from `RUST_LOG`.
    #[arg(long, env = "TOKEN_LOG_FORMAT", default_value = shown::LOG_FORMAT)]
    pub log_format: LogFormat,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no keyring: pass --keyring FILE or set TOKEN_KEYRING (create one with `token-server keygen > keyring`)"
    )]
    MissingKeyring,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--refresh-absolute-ttl must not be shorter than --refresh-idle-ttl")]
    AbsoluteShorterThanIdle,
    #[error("--grace-period must be shorter than --refresh-idle-ttl")]
    GraceTooLong,
    #[error("--redis-wait-timeout must be shorter than --redis-timeout")]
    WaitTimeoutTooLong,
    #[error("{0} must be at most {1}")]
    TooLarge(&'static str, &'static str),
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
}

/// A percentage (`90%`, `92.5`, `0`) as permille.
fn parse_permille(value: &str) -> Result<u32, String> {
    let number = value.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok((percent * 10.0).round() as u32),
        _ => Err(format!(
            "{value:?} is not a percentage from 0 to 100 (for example 90%)"
        )),
    }
}

impl Default for Config {
    /// What the flags default to (no flag, no `TOKEN_*` variable), with no keyring: for tests
    /// that set what they need and build an [`crate::App`] from the rest.
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            redis_url: DEFAULT_REDIS_URL.to_owned(),
            keyring: None,
            keyring_reload_interval: DEFAULT_KEYRING_RELOAD_INTERVAL,
            grace_period: DEFAULT_GRACE,
            access_ttl: DEFAULT_ACCESS_TTL,
            issuer: DEFAULT_ISSUER.to_owned(),
            access_token_audience: None,
            refresh_idle_ttl: DEFAULT_REFRESH_IDLE_TTL,
            refresh_absolute_ttl: DEFAULT_REFRESH_ABSOLUTE_TTL,
            client_cache_ttl: DEFAULT_CLIENT_CACHE_TTL,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            redis_pool_size: DEFAULT_REDIS_POOL_SIZE,
            redis_wait_replicas: None,
            redis_wait_timeout: ReplicaWait::DEFAULT_TIMEOUT,
            redis_memory_high_water: DEFAULT_HIGH_WATER_PERMILLE,
            redis_allow_eviction: false,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            worker_threads: DEFAULT_WORKER_THREADS,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            admin_listen: DEFAULT_ADMIN_LISTEN,
            health_listen: DEFAULT_HEALTH_LISTEN,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            audit_max_events: DEFAULT_AUDIT_MAX_EVENTS,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval: DEFAULT_TLS_RELOAD_INTERVAL,
            operator_policy: None,
            reflection: DEFAULT_REFLECTION,
            log_format: LogFormat::default(),
        }
    }
}

impl Config {
    /// Checks relations between settings that clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keyring.is_none() {
            return Err(ConfigError::MissingKeyring);
        }
        for (name, value) in [
            ("--access-ttl", self.access_ttl),
            ("--refresh-idle-ttl", self.refresh_idle_ttl),
            ("--redis-timeout", self.redis_timeout),
            ("--health-interval", self.health_interval),
            ("--audit-retention", self.audit_retention),
            ("--tls-reload-interval", self.tls_reload_interval),
            ("--keyring-reload-interval", self.keyring_reload_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.redis_pool_size == 0 {
            return Err(ConfigError::Zero("--redis-pool-size"));
        }
        if self.worker_threads == 0 {
            return Err(ConfigError::Zero("--worker-threads"));
        }
        if self.audit_max_events == 0 {
            return Err(ConfigError::Zero("--audit-max-events"));
        }
        // Bounds keep every audit script call short and every number exact in Lua.
        if self.audit_max_events > MAX_AUDIT_EVENTS {
            return Err(ConfigError::TooLarge("--audit-max-events", "1000000"));
        }
        if self.audit_retention > MAX_AUDIT_RETENTION {
            return Err(ConfigError::TooLarge("--audit-retention", "366days"));
        }
        if self.max_concurrent_calls == 0 {
            return Err(ConfigError::Zero("--max-concurrent-calls"));
        }
        if self.redis_wait_timeout >= self.redis_timeout {
            return Err(ConfigError::WaitTimeoutTooLong);
        }
        if self.refresh_absolute_ttl < self.refresh_idle_ttl {
            return Err(ConfigError::AbsoluteShorterThanIdle);
        }
        if self.grace_period >= self.refresh_idle_ttl {
            return Err(ConfigError::GraceTooLong);
        }
        // The same rule as a client's own audience: a plain string or URI, no spaces.
        let settings = self.jwt_settings();
        for (flag, value) in [
            ("--issuer", &settings.issuer),
            ("--access-token-audience", &settings.default_audience),
        ] {
            token_core::client::validate_audience("value", value)
                .map_err(|err| ConfigError::Invalid(flag, err.to_string()))?;
        }
        // RFC 8414 section 2: the issuer is a URL without query or fragment; the metadata's
        // endpoint URLs are built under it.
        let host_and_path = settings
            .issuer
            .strip_prefix("https://")
            .or_else(|| settings.issuer.strip_prefix("http://"));
        if !host_and_path.is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#'])
        }) {
            return Err(ConfigError::Invalid(
                "--issuer",
                "must be an http:// or https:// URL without query or fragment".to_owned(),
            ));
        }
        Ok(())
    }

    /// `iss` and the default `aud` of JWT access tokens.
    pub fn jwt_settings(&self) -> JwtSettings {
        JwtSettings {
            issuer: self.issuer.clone(),
            default_audience: self
                .access_token_audience
                .clone()
                .unwrap_or_else(|| self.issuer.clone()),
        }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            access_ttl: self.access_ttl,
            refresh_idle_ttl: self.refresh_idle_ttl,
            refresh_absolute_ttl: self.refresh_absolute_ttl,
            grace: self.grace_period,
        }
    }

    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            url: self.redis_url.clone(),
            pool_size: self.redis_pool_size,
            timeout: self.redis_timeout,
            key_prefix: self.key_prefix.clone(),
            replica_wait: self.replica_wait(),
            high_water_permille: self.redis_memory_high_water,
        }
    }

    fn replica_wait(&self) -> Option<ReplicaWait> {
        let default = ReplicaWait::default_for(&self.redis_url);
        let replicas = self
            .redis_wait_replicas
            .unwrap_or(default.map_or(0, |wait| wait.replicas));
        // The timeout is always the flag's (its default is `ReplicaWait::DEFAULT_TIMEOUT`).
        (replicas > 0 && !self.redis_wait_timeout.is_zero()).then_some(ReplicaWait {
            replicas,
            timeout: self.redis_wait_timeout,
        })
    }

    /// The TLS files, when TLS is configured.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    pub fn audit(&self) -> AuditConfig {
        AuditConfig {
            retention: self.audit_retention,
            max_events_per_client: self.audit_max_events,
            ..AuditConfig::default()
        }
    }

    /// The Redis URL with any password replaced, for logs.
    pub fn redis_url_redacted(&self) -> String {
        redact_url(&self.redis_url)
    }
}

const MAX_AUDIT_EVENTS: u64 = 1_000_000;
const MAX_AUDIT_RETENTION: Duration = Duration::from_secs(366 * 86_400);

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_water_is_a_percentage() {
        let cases: [(&str, Result<u32, ()>); 8] = [
            (
                shown::REDIS_MEMORY_HIGH_WATER,
                Ok(DEFAULT_HIGH_WATER_PERMILLE),
            ),
            ("90", Ok(900)),
            ("92.5%", Ok(925)),
            ("0", Ok(0)),
            ("100%", Ok(1000)),
            ("101%", Err(())),
            ("-1", Err(())),
            ("ninety", Err(())),
        ];
        for (value, want) in cases {
            assert_eq!(parse_permille(value).map_err(|_| ()), want, "{value:?}");
        }
        let cli = parse(&["--keyring", "k"]);
        assert_eq!(
            cli.config.store().high_water_permille,
            DEFAULT_HIGH_WATER_PERMILLE
        );
        assert!(!cli.config.redis_allow_eviction);
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("token-server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn revocations_wait_for_a_replica_only_where_replicas_exist() {
        let wait = |args: &[&str]| {
            let mut all = vec!["--keyring", "k"];
            all.extend_from_slice(args);
            let config = parse(&all).config;
            config.validate().map(|()| config.store().replica_wait)
        };
        assert_eq!(wait(&[]).unwrap(), None);
        let one = Some(ReplicaWait {
            replicas: ReplicaWait::DEFAULT_REPLICAS,
            timeout: ReplicaWait::DEFAULT_TIMEOUT,
        });
        assert_eq!(
            wait(&["--redis-url", "redis+sentinel://h:1/m"]).unwrap(),
            one
        );
        assert_eq!(wait(&["--redis-url", "redis+cluster://h:1"]).unwrap(), one);
        assert_eq!(
            wait(&[
                "--redis-url",
                "redis+cluster://h:1",
                "--redis-wait-replicas",
                "0"
            ])
            .unwrap(),
            None
        );
        assert_eq!(
            wait(&["--redis-wait-replicas", "2", "--redis-wait-timeout", "50ms"]).unwrap(),
            Some(ReplicaWait {
                replicas: 2,
                timeout: Duration::from_millis(50)
            })
        );
        assert!(matches!(
            wait(&["--redis-wait-timeout", "1s"]),
            Err(ConfigError::WaitTimeoutTooLong)
        ));
    }

    #[test]
    fn defaults_match_the_design() {
        let cli = parse(&["--keyring", "k"]);
        assert_eq!(cli.config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(cli.config.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(cli.config.grace_period, Duration::from_secs(60));
        assert_eq!(
            cli.config.admin_listen,
            OptionalAddr(Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert_eq!(cli.config.audit_retention, Duration::from_secs(7 * 86_400));
        cli.config.validate().unwrap();
    }

    #[test]
    fn shown_defaults_are_the_typed_ones() {
        let durations = [
            (
                shown::KEYRING_RELOAD_INTERVAL,
                DEFAULT_KEYRING_RELOAD_INTERVAL,
            ),
            (shown::GRACE_PERIOD, DEFAULT_GRACE),
            (shown::ACCESS_TTL, DEFAULT_ACCESS_TTL),
            (shown::REFRESH_IDLE_TTL, DEFAULT_REFRESH_IDLE_TTL),
            (shown::REFRESH_ABSOLUTE_TTL, DEFAULT_REFRESH_ABSOLUTE_TTL),
            (shown::CLIENT_CACHE_TTL, DEFAULT_CLIENT_CACHE_TTL),
            (shown::REDIS_TIMEOUT, DEFAULT_REDIS_TIMEOUT),
            (shown::REDIS_WAIT_TIMEOUT, ReplicaWait::DEFAULT_TIMEOUT),
            (shown::HEALTH_INTERVAL, DEFAULT_HEALTH_INTERVAL),
            (shown::SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT),
            (shown::AUDIT_RETENTION, DEFAULT_AUDIT_RETENTION),
            (shown::TLS_RELOAD_INTERVAL, DEFAULT_TLS_RELOAD_INTERVAL),
        ];
        for (text, typed) in durations {
            assert_eq!(humantime::parse_duration(text), Ok(typed), "{text:?}");
        }
        assert_eq!(
            parse_permille(shown::REDIS_MEMORY_HIGH_WATER),
            Ok(DEFAULT_HIGH_WATER_PERMILLE)
        );
        assert_eq!(shown::LOG_FORMAT.parse(), Ok(LogFormat::default()));
    }

    #[test]
    fn the_flags_default_to_config_default() {
        // Every field: what an operator gets without flags is what tests build from.
        let parsed = parse(&[]).config;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
        let with_keyring = Config {
            keyring: Some("k".into()),
            ..Config::default()
        };
        with_keyring.validate().unwrap();
        assert_eq!(with_keyring.lifetimes(), Lifetimes::default());
        let (audit, library) = (with_keyring.audit(), AuditConfig::default());
        assert_eq!(audit.retention, library.retention);
        assert_eq!(audit.max_events_per_client, library.max_events_per_client);
        assert_eq!(audit.queue_capacity, library.queue_capacity);
        assert_eq!(
            with_keyring.store().replica_wait,
            ReplicaWait::default_for(DEFAULT_REDIS_URL)
        );
        let cluster = Config {
            redis_url: "redis+cluster://h:1".to_owned(),
            ..Config::default()
        };
        assert_eq!(
            cluster.store().replica_wait,
            ReplicaWait::default_for(&cluster.redis_url)
        );
    }

    #[test]
    fn audit_bounds_are_checked() {
        let config = |flag: &str, value: &str| parse(&["--keyring", "k", flag, value]).config;
        assert!(matches!(
            config("--audit-retention", "400days").validate(),
            Err(ConfigError::TooLarge("--audit-retention", _))
        ));
        assert!(matches!(
            config("--audit-max-events", "0").validate(),
            Err(ConfigError::Zero("--audit-max-events"))
        ));
        assert!(matches!(
            config("--audit-max-events", "1000001").validate(),
            Err(ConfigError::TooLarge("--audit-max-events", _))
        ));
        config("--audit-retention", "30days").validate().unwrap();
    }

    #[test]
    fn counts_that_cannot_be_zero_are_refused() {
        for flag in [
            "--worker-threads",
            "--redis-pool-size",
            "--max-concurrent-calls",
        ] {
            let config = parse(&["--keyring", "k", flag, "0"]).config;
            assert!(
                matches!(config.validate(), Err(ConfigError::Zero(name)) if name == flag),
                "{flag} 0"
            );
        }
        assert_eq!(parse(&["--keyring", "k"]).config.worker_threads, 1);
    }

    #[test]
    fn the_issuer_is_an_http_url_the_metadata_can_build_endpoints_under() {
        // (--issuer, accepted)
        let cases = [
            ("http://127.0.0.1:8080", true),
            ("https://auth.example.com", true),
            ("https://auth.example.com/tenant/", true),
            ("auth", false),
            ("urn:example:auth", false),
            ("ftp://auth.example.com", false),
            ("https://", false),
            ("https:///path", false),
            ("https://auth.example.com/?tenant=a", false),
            ("https://auth.example.com/#top", false),
            ("https://auth example", false),
        ];
        for (issuer, accepted) in cases {
            let config = parse(&["--keyring", "k", "--issuer", issuer]).config;
            match config.validate() {
                Ok(()) => assert!(accepted, "{issuer:?} accepted"),
                Err(ConfigError::Invalid("--issuer", _)) => {
                    assert!(!accepted, "{issuer:?} refused")
                }
                Err(other) => panic!("{issuer:?}: {other}"),
            }
        }
        // The audience is not a URL by necessity: a plain name is a fine `aud`.
        let config = parse(&["--keyring", "k", "--access-token-audience", "orders"]).config;
        config.validate().unwrap();
    }

    #[test]
    fn admin_listener_can_be_turned_off() {
        assert_eq!(
            parse(&["--keyring", "k", "--admin-listen", "off"])
                .config
                .admin_listen,
            OptionalAddr(None)
        );
        assert!(
            Cli::try_parse_from(["token-server", "--keyring", "k", "--admin-listen", "nope"])
                .is_err()
        );
    }

    #[test]
    fn durations_parse_and_bad_relations_fail() {
        let cli = parse(&["--keyring", "k", "--grace-period", "0s"]);
        assert!(cli.config.grace_period.is_zero());
        cli.config.validate().unwrap();
        let cli = parse(&[
            "--keyring",
            "k",
            "--refresh-absolute-ttl",
            "1h",
            "--refresh-idle-ttl",
            "2h",
        ]);
        assert!(matches!(
            cli.config.validate(),
            Err(ConfigError::AbsoluteShorterThanIdle)
        ));
        assert!(matches!(
            parse(&[]).config.validate(),
            Err(ConfigError::MissingKeyring)
        ));
    }

    #[test]
    fn keygen_is_a_subcommand() {
        assert!(matches!(
            parse(&["keygen"]).command,
            Some(Command::Keygen { .. })
        ));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://u:hunter2@h"), "redis://u:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}
