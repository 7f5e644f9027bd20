//! All configuration in one struct, from flags or the environment (`GATEWAY_*`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use telemetry::LogFormat;
use token_client::ClientConfig;

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

    /// The token service's gRPC endpoint.
    #[arg(
        long,
        env = "GATEWAY_TOKEN_SERVICE",
        default_value = "http://127.0.0.1:50051"
    )]
    pub token_service: String,

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

    /// Log output: `pretty` or `json`. Verbosity comes from `RUST_LOG`.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
}

/// A listen address, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "off" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|addr| Self(Some(addr)))
                .map_err(|e| format!("{e}: expected host:port or `off`")),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--token-service must be an http:// URL, got {0:?}")]
    Endpoint(String),
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
        if !self.token_service.starts_with("http://") {
            return Err(ConfigError::Endpoint(self.token_service.clone()));
        }
        Ok(())
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
        assert_eq!(
            parse(&["--admin-listen", "off"]).admin_listen,
            OptionalAddr(None)
        );
        let config = parse(&["--token-service", "127.0.0.1:50051"]);
        assert!(matches!(config.validate(), Err(ConfigError::Endpoint(_))));
    }
}
