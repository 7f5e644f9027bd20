//! All configuration in one struct, from flags or the environment (`GATEWAY_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use telemetry::LogFormat;
// Re-exported: `--admin-listen` reads it.
pub use telemetry::admin::OptionalAddr;
use token_client::ClientConfig;

use crate::tls::TlsFiles;

/// How the gateway runs. Every flag also reads `GATEWAY_<NAME>` from the environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "token-gateway",
    version,
    about = "OAuth2 over HTTP for the token service: refresh (RFC 6749), revoke (RFC 7009), \
             introspect (RFC 7662)"
)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP server (`GET /metrics`, Prometheus text format); `off` for
    /// none. Keep it off the public network.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:9091")]
    pub admin_listen: OptionalAddr,

    /// The token service's gRPC endpoint: `http://` for plaintext, `https://` for TLS (with
    /// --token-service-ca).
    #[arg(
        long,
        env = "GATEWAY_TOKEN_SERVICE",
        default_value = "http://127.0.0.1:50051"
    )]
    pub token_service: String,

    /// PEM CA bundle the token service's certificate must chain to; required with an
    /// `https://` --token-service. Re-read when the file changes.
    #[arg(long, env = "GATEWAY_TOKEN_SERVICE_CA")]
    pub token_service_ca: Option<PathBuf>,

    /// PEM certificate chain the gateway presents to the token service (mutual TLS), with
    /// --token-service-key. Re-read when the file changes.
    #[arg(long, env = "GATEWAY_TOKEN_SERVICE_CERT")]
    pub token_service_cert: Option<PathBuf>,

    /// PEM private key of --token-service-cert.
    #[arg(long, env = "GATEWAY_TOKEN_SERVICE_KEY")]
    pub token_service_key: Option<PathBuf>,

    /// The name the token service's certificate must carry, when it is not the host of
    /// --token-service.
    #[arg(long, env = "GATEWAY_TOKEN_SERVICE_TLS_NAME")]
    pub token_service_tls_name: Option<String>,

    /// How often the --token-service-ca, -cert and -key files are checked for a renewed
    /// certificate.
    #[arg(long, env = "GATEWAY_TOKEN_SERVICE_TLS_RELOAD_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub token_service_tls_reload_interval: Duration,

    /// Deadline of each call to the token service (one attempt).
    #[arg(long, env = "GATEWAY_RPC_DEADLINE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub rpc_deadline: Duration,

    /// Attempts per call to the token service, the first included; only failures that are
    /// safe to retry are retried. When they run out the client gets 503 with Retry-After.
    #[arg(long, env = "GATEWAY_RPC_ATTEMPTS", default_value_t = 3)]
    pub rpc_attempts: u32,

    /// After SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "GATEWAY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Threads that serve requests. With 1 (a current-thread runtime) the calls of
    /// requests that arrive together share writes to the token service; an instance is
    /// sized for one CPU and scaled by instances. More threads serve from that many CPUs.
    #[arg(long, env = "GATEWAY_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    /// Log output: `pretty` or `json`. Verbosity comes from `RUST_LOG`.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--token-service must be an http:// or https:// URL, got {0:?}")]
    Endpoint(String),
    #[error("{0} is for TLS: it needs an https:// --token-service, got {1:?}")]
    TlsWithoutHttps(&'static str, String),
    #[error(
        "an https:// --token-service needs --token-service-ca (the CA bundle that signed the \
         token service's certificate); this build trusts no system roots"
    )]
    NoCa,
    #[error("{0} needs {1}: the certificate and its key go together")]
    HalfIdentity(&'static str, &'static str),
}

impl Config {
    /// Checks what clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rpc_deadline.is_zero() {
            return Err(ConfigError::Zero("--rpc-deadline"));
        }
        if self.rpc_attempts == 0 {
            return Err(ConfigError::Zero("--rpc-attempts"));
        }
        if self.worker_threads == 0 {
            return Err(ConfigError::Zero("--worker-threads"));
        }
        if self.token_service_tls_reload_interval.is_zero() {
            return Err(ConfigError::Zero("--token-service-tls-reload-interval"));
        }
        let https = self.token_service.starts_with("https://");
        if !https && !self.token_service.starts_with("http://") {
            return Err(ConfigError::Endpoint(self.token_service.clone()));
        }
        if !https {
            let tls_flags = [
                ("--token-service-ca", self.token_service_ca.is_some()),
                ("--token-service-cert", self.token_service_cert.is_some()),
                ("--token-service-key", self.token_service_key.is_some()),
                (
                    "--token-service-tls-name",
                    self.token_service_tls_name.is_some(),
                ),
            ];
            if let Some((flag, _)) = tls_flags.into_iter().find(|(_, given)| *given) {
                return Err(ConfigError::TlsWithoutHttps(
                    flag,
                    self.token_service.clone(),
                ));
            }
            return Ok(());
        }
        match (&self.token_service_cert, &self.token_service_key) {
            (Some(_), None) => {
                return Err(ConfigError::HalfIdentity(
                    "--token-service-cert",
                    "--token-service-key",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::HalfIdentity(
                    "--token-service-key",
                    "--token-service-cert",
                ));
            }
            _ => {}
        }
        if self.token_service_ca.is_none() {
            return Err(ConfigError::NoCa);
        }
        Ok(())
    }

    /// The TLS files of an `https://` --token-service; `None` for plaintext. Call after
    /// [`Config::validate`].
    pub fn token_service_tls(&self) -> Option<TlsFiles> {
        if !self.token_service.starts_with("https://") {
            return None;
        }
        Some(TlsFiles {
            ca: self.token_service_ca.clone()?,
            identity: self
                .token_service_cert
                .clone()
                .zip(self.token_service_key.clone()),
            server_name: self.token_service_tls_name.clone(),
        })
    }

    /// The SDK settings of every call to the token service: the SDK's backoff, this
    /// configuration's deadline and attempts.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            deadline: self.rpc_deadline,
            max_attempts: self.rpc_attempts,
            ..ClientConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("token-gateway").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_match_the_issue() {
        let config = parse(&[]);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.token_service, "http://127.0.0.1:50051");
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(
            config.admin_listen,
            OptionalAddr(Some("127.0.0.1:9091".parse().unwrap()))
        );
        config.validate().unwrap();
    }

    #[test]
    fn flags_override_and_bad_values_fail() {
        let config = parse(&["--listen", "0.0.0.0:9000", "--rpc-attempts", "0"]);
        assert_eq!(config.listen.port(), 9000);
        assert!(matches!(config.validate(), Err(ConfigError::Zero(_))));
        assert!(matches!(
            parse(&["--worker-threads", "0"]).validate(),
            Err(ConfigError::Zero("--worker-threads"))
        ));
        assert_eq!(
            parse(&["--admin-listen", "off"]).admin_listen,
            OptionalAddr(None)
        );
        let config = parse(&["--token-service", "127.0.0.1:50051"]);
        assert!(matches!(config.validate(), Err(ConfigError::Endpoint(_))));
    }

    #[test]
    fn the_reload_interval_default_is_the_typed_one() {
        assert_eq!(
            parse(&[]).token_service_tls_reload_interval,
            crate::tls::DEFAULT_RELOAD_INTERVAL
        );
    }

    /// A valid https baseline, then one row per flag combination that cannot work, with the
    /// words its error must contain (the flag at fault).
    #[test]
    fn tls_flags_that_cannot_work_are_refused_naming_the_flag() {
        let https = [
            "--token-service",
            "https://token-server:50051",
            "--token-service-ca",
            "ca.crt",
            "--token-service-cert",
            "tls.crt",
            "--token-service-key",
            "tls.key",
        ];
        let config = parse(&https);
        config.validate().unwrap();
        let files = config.token_service_tls().expect("https means TLS");
        assert_eq!(files.ca, PathBuf::from("ca.crt"));
        assert_eq!(
            files.identity,
            Some((PathBuf::from("tls.crt"), PathBuf::from("tls.key")))
        );
        // Server-side TLS only: no identity.
        let config = parse(&https[..4]);
        config.validate().unwrap();
        assert_eq!(config.token_service_tls().unwrap().identity, None);
        assert_eq!(parse(&[]).token_service_tls(), None);

        let rows: &[(&str, &[&str], &str)] = &[
            (
                "a CA with http",
                &["--token-service-ca", "ca.crt"],
                "--token-service-ca is for TLS: it needs an https:// --token-service",
            ),
            (
                "a cert with http",
                &[
                    "--token-service-cert",
                    "tls.crt",
                    "--token-service-key",
                    "tls.key",
                ],
                "--token-service-cert is for TLS",
            ),
            (
                "a server name with http",
                &["--token-service-tls-name", "token-server"],
                "--token-service-tls-name is for TLS",
            ),
            (
                "https without a CA",
                &["--token-service", "https://token-server:50051"],
                "an https:// --token-service needs --token-service-ca",
            ),
            (
                "a cert without its key",
                &[
                    "--token-service",
                    "https://token-server:50051",
                    "--token-service-ca",
                    "ca.crt",
                    "--token-service-cert",
                    "tls.crt",
                ],
                "--token-service-cert needs --token-service-key",
            ),
            (
                "a key without its cert",
                &[
                    "--token-service",
                    "https://token-server:50051",
                    "--token-service-ca",
                    "ca.crt",
                    "--token-service-key",
                    "tls.key",
                ],
                "--token-service-key needs --token-service-cert",
            ),
            (
                "another scheme",
                &["--token-service", "grpcs://token-server:50051"],
                "--token-service must be an http:// or https:// URL",
            ),
            (
                "a zero reload interval",
                &["--token-service-tls-reload-interval", "0s"],
                "--token-service-tls-reload-interval must be greater than zero",
            ),
        ];
        for (case, args, want) in rows {
            let err = parse(args).validate().expect_err(case).to_string();
            assert!(err.contains(want), "{case}: {err:?} lacks {want:?}");
        }
    }
}
