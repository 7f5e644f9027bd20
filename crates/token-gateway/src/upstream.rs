//! What the gateway calls: `tokens.v1.TokenService` through the SDK (deadlines, retries,
//! single-flight), and the token service's `grpc.health.v1` for `/healthz`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use token_client::{ClientConfig, TokenClient};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::metrics::GatewayMetrics;
use crate::tls::{ReloadingTls, TlsError, TlsFiles};

/// The health service name the gateway asks about: the one it depends on.
const HEALTH_SERVICE: &str = "tokens.v1.TokenService";

/// The token service as the gateway reaches it. Cheap to clone: clones share the channel and
/// the SDK's in-flight refreshes, so identical refreshes arriving at once over HTTP become one
/// RPC.
#[derive(Clone)]
pub struct Upstream {
    /// Every token call goes through the SDK, for its retries and single-flight.
    pub(crate) tokens: TokenClient,
    /// Health is not a `TokenService` call, so it has its own stub (usually on the same
    /// channel). Shared by clones, so [`Upstream::replace_channel`] reaches them all.
    health: Arc<RwLock<HealthClient<Channel>>>,
    /// Bound on one health check.
    health_deadline: Duration,
    /// Where calls are counted, once [`crate::router_with_metrics`] set it.
    pub(crate) metrics: Option<Arc<GatewayMetrics>>,
}

impl Upstream {
    /// Over `tokens` (built however the caller likes: a test's settings, a channel with
    /// interceptors) with health checks over `health_channel`, normally the same channel.
    pub fn new(tokens: TokenClient, health_channel: Channel) -> Self {
        let health_deadline = tokens.config().deadline;
        Self {
            tokens,
            health: Arc::new(RwLock::new(HealthClient::new(health_channel))),
            health_deadline,
            metrics: None,
        }
    }

    /// One lazily connected channel to `endpoint` (`http://host:port`) for both: nothing is
    /// dialled until the first request, so the gateway starts whether or not the token
    /// service is up yet. Only a malformed endpoint fails.
    pub fn connect(endpoint: &str, config: ClientConfig) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(config.deadline)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self::new(
            TokenClient::from_channel(channel.clone(), config),
            channel,
        ))
    }

    /// Over a TLS channel to the token service whose certificates are re-read while the
    /// gateway runs ([`crate::tls`]). Checks the files now (an error names the flag and the
    /// file); the caller spawns the returned future, which swaps in a new channel whenever
    /// the files change. Like [`Upstream::connect`], nothing is dialled until the first call.
    pub fn connect_tls(
        endpoint: &str,
        files: TlsFiles,
        config: ClientConfig,
        reload_interval: Duration,
    ) -> Result<
        (
            Self,
            Arc<ReloadingTls>,
            impl Future<Output = ()> + Send + 'static + use<>,
        ),
        TlsError,
    > {
        let (tls, channel) = ReloadingTls::load(endpoint, files, config.deadline)?;
        let upstream = Self::new(TokenClient::from_channel(channel.clone(), config), channel);
        let watch = tls.watch(upstream.clone(), reload_interval);
        Ok((upstream, tls, watch))
    }

    /// Sends every call from now on, health checks included, over `channel` (built with a
    /// renewed certificate); calls in flight finish on the old one.
    pub fn replace_channel(&self, channel: Channel) {
        self.tokens.replace_channel(channel.clone());
        *self
            .health
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = HealthClient::new(channel);
    }

    /// Counts a finished call to `rpc_method` when metrics are on, and hands its result back.
    pub(crate) fn observed<T>(
        &self,
        rpc_method: &'static str,
        result: Result<T, token_client::Error>,
    ) -> Result<T, token_client::Error> {
        if let Some(metrics) = &self.metrics {
            metrics.record_call(rpc_method, &result);
        }
        result
    }

    /// The SDK client every token call goes through.
    pub fn tokens(&self) -> &TokenClient {
        &self.tokens
    }

    /// The token service's own health verdict; `None` when it could not be asked (down,
    /// unreachable, too slow). One attempt: a probe should report, not retry.
    pub async fn health(&self) -> Option<ServingStatus> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: HEALTH_SERVICE.to_owned(),
        });
        request.set_timeout(self.health_deadline);
        let mut health = self
            .health
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let answer = tokio::time::timeout(self.health_deadline, health.check(request)).await;
        match answer {
            Ok(Ok(response)) => ServingStatus::try_from(response.into_inner().status).ok(),
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), "token service health check failed");
                None
            }
            Err(_) => {
                tracing::debug!("token service health check timed out");
                None
            }
        }
    }
}
