//! [`TokenClient`]: the `TokenService` stub with deadlines, retries and single-flight refreshes.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::FutureExt as _;
use token_proto::v1 as pb;
use token_proto::v1::token_service_client::TokenServiceClient;
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt as _;
use tracing::Instrument as _;

use crate::config::ClientConfig;
use crate::error::Error;
use crate::retry;
use crate::single_flight::DetachedFlight;
use crate::trace_context;

/// A `tokens.v1.TokenService` client with per-attempt deadlines, retries with exponential
/// backoff and full jitter, and single-flight refreshes.
///
/// Cheap to clone: clones share the channel, the settings, the [`rpcs_sent`] counter and the
/// in-flight refresh map, so refreshes coalesce across every clone of one client (and only
/// there: two clients built separately never coalesce).
///
/// Every call returns a `Send + 'static` future that owns what it needs, so it can be spawned
/// as is; the client itself is not borrowed.
///
/// [`rpcs_sent`]: TokenClient::rpcs_sent
#[derive(Clone)]
pub struct TokenClient {
    caller: Caller,
    refreshes: Arc<DetachedFlight<RefreshKey, Result<pb::TokenPair, Error>>>,
}

/// Everything that decides a refresh's result: calls equal in all of it are one refresh. Kept
/// in memory only while the refresh is in flight, and never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RefreshKey {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    scopes: Vec<String>,
}

impl TokenClient {
    /// A client for the server at `endpoint` (`http://host:port`; a bare `host:port` means
    /// plain-text HTTP/2).
    ///
    /// Connects lazily: nothing is dialled here, the first call does it, and a server that is
    /// down at that moment is a retryable transport failure of that call rather than an error
    /// here. Only a malformed endpoint fails. Must be called inside a Tokio runtime.
    pub fn connect(endpoint: &str, config: ClientConfig) -> Result<Self, tonic::transport::Error> {
        let endpoint = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Endpoint::from_shared(endpoint)?
            .connect_timeout(config.deadline)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self::from_channel(channel, config))
    }

    /// A client over an existing channel (TLS, interceptors, load balancing: whatever the
    /// channel was built with).
    pub fn from_channel(channel: Channel, config: ClientConfig) -> Self {
        Self {
            caller: Caller {
                grpc: Arc::new(RwLock::new(TokenServiceClient::new(channel))),
                config,
                rpcs_sent: Arc::new(watch::Sender::new(0)),
                retries_sent: Arc::new(AtomicU64::new(0)),
            },
            refreshes: Arc::new(DetachedFlight::new()),
        }
    }

    /// Sends every attempt from now on over `channel` instead, for this client and all its
    /// clones: how a long-lived client picks up a renewed TLS certificate (a channel built
    /// with the new identity) without losing its counters or in-flight refreshes. Attempts
    /// already sent finish on the channel they started on, which closes once the last of them
    /// is done.
    pub fn replace_channel(&self, channel: Channel) {
        *self
            .caller
            .grpc
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = TokenServiceClient::new(channel);
    }

    /// The settings every call uses.
    pub fn config(&self) -> &ClientConfig {
        &self.caller.config
    }

    /// RPC attempts this client (and its clones) has sent so far, retries included. A refresh
    /// that joined another caller's flight sends nothing and adds nothing.
    pub fn rpcs_sent(&self) -> u64 {
        *self.caller.rpcs_sent.borrow()
    }

    /// Of [`TokenClient::rpcs_sent`], the attempts that were retries (every attempt after a
    /// call's first), for metrics.
    pub fn retries_sent(&self) -> u64 {
        self.caller.retries_sent.load(Ordering::Relaxed)
    }

    /// Follows [`TokenClient::rpcs_sent`]: `wait_for(|n| *n >= k)` on the receiver resolves
    /// once k attempts have been sent (for tests and diagnostics, without polling).
    pub fn watch_rpcs_sent(&self) -> watch::Receiver<u64> {
        self.caller.rpcs_sent.subscribe()
    }

    /// Distinct refreshes in flight right now (a diagnostic; zero when the client is idle).
    pub fn refreshes_in_flight(&self) -> usize {
        self.refreshes.len()
    }

    /// `IssueTokenPair`: starts a new family and returns its first pair.
    ///
    /// Retried like every call. A retry after a lost response (the server had answered) starts a
    /// second family; the first is never handed out and lapses at its idle expiry.
    pub fn issue_token_pair(
        &self,
        request: pb::IssueTokenPairRequest,
    ) -> impl Future<Output = Result<pb::TokenPair, Error>> + Send + 'static + use<> {
        self.caller
            .clone()
            .call("IssueTokenPair", request, |mut grpc, req| async move {
                grpc.issue_token_pair(req).await
            })
    }

    /// `RefreshTokenPair`, single-flight (a `DetachedFlight`): while a refresh with the same `client_id`,
    /// `client_secret`, `refresh_token` and `scopes` is in flight on this client (or a clone),
    /// this call sends nothing and gets that refresh's result, success or error, including its
    /// retries. Each caller still gets its own copy of the result.
    ///
    /// The call joins (or starts) the flight when this method is called, not when the returned
    /// future is first polled; the RPC starts when any future of the flight is first polled.
    /// Dropping the future that started the flight does not cancel the RPC while other callers
    /// wait for it; dropping the last one does. A flight ends with its result: a later call
    /// with the same token sends a new RPC (which, inside the grace period, the server answers
    /// with the same pair marked `replayed`).
    ///
    /// Retrying a refresh is safe as long as the retry arrives within the server's grace
    /// period (60 s by default): a rotation whose response was lost is replayed, not repeated.
    pub fn refresh_token_pair(
        &self,
        request: pb::RefreshTokenPairRequest,
    ) -> impl Future<Output = Result<pb::TokenPair, Error>> + Send + 'static + use<> {
        let key = RefreshKey {
            client_id: request.client_id.clone(),
            client_secret: request.client_secret.clone(),
            refresh_token: request.refresh_token.clone(),
            scopes: request.scopes.clone(),
        };
        let caller = self.caller.clone();
        self.refreshes.join(key, move || {
            caller
                .call("RefreshTokenPair", request, |mut grpc, req| async move {
                    grpc.refresh_token_pair(req).await
                })
                .boxed()
        })
    }

    /// `RevokeToken` (RFC 7009): revokes the whole family of a refresh or access token. Unknown
    /// tokens are not an error, so retries are harmless.
    pub fn revoke_token(
        &self,
        request: pb::RevokeTokenRequest,
    ) -> impl Future<Output = Result<pb::RevokeTokenResponse, Error>> + Send + 'static + use<> {
        self.caller
            .clone()
            .call("RevokeToken", request, |mut grpc, req| async move {
                grpc.revoke_token(req).await
            })
    }

    /// `IntrospectToken` (RFC 7662): whether a token is active and what it grants.
    pub fn introspect_token(
        &self,
        request: pb::IntrospectTokenRequest,
    ) -> impl Future<Output = Result<pb::IntrospectTokenResponse, Error>> + Send + 'static + use<>
    {
        self.caller
            .clone()
            .call("IntrospectToken", request, |mut grpc, req| async move {
                grpc.introspect_token(req).await
            })
    }

    /// `GetJwks`: the public keys that verify JWT access tokens, and their issuer. A read:
    /// retried like the others.
    pub fn get_jwks(
        &self,
    ) -> impl Future<Output = Result<pb::GetJwksResponse, Error>> + Send + 'static + use<> {
        self.caller.clone().call(
            "GetJwks",
            pb::GetJwksRequest {},
            |mut grpc, req| async move { grpc.get_jwks(req).await },
        )
    }
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("config", &self.caller.config)
            .field("rpcs_sent", &self.rpcs_sent())
            .field("refreshes_in_flight", &self.refreshes_in_flight())
            .finish_non_exhaustive()
    }
}

/// The gRPC service name, as spans and `grpc-status` paths spell it.
const SERVICE: &str = "tokens.v1.TokenService";

/// What one call needs, owned, so that a refresh flight can run on its own.
#[derive(Clone)]
struct Caller {
    /// Shared by every clone, so [`TokenClient::replace_channel`] reaches them all; each
    /// attempt takes the stub current when it is sent.
    grpc: Arc<RwLock<TokenServiceClient<Channel>>>,
    config: ClientConfig,
    /// A watch channel rather than an atomic so that callers can wait for a count.
    rpcs_sent: Arc<watch::Sender<u64>>,
    /// Attempts after the first of their call.
    retries_sent: Arc<AtomicU64>,
}

impl Caller {
    /// The stub for the next attempt (a clone of the current channel's; cheap).
    fn grpc(&self) -> TokenServiceClient<Channel> {
        self.grpc
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends `request` through `rpc` until it succeeds, fails with a status that is not
    /// retryable, or `max_attempts` attempts have been made. Each attempt is a client span,
    /// child of the span current when the call was made, and carries its trace context to
    /// the server (`traceparent`), so every retry shows in the caller's trace.
    fn call<Req, Resp, F, Fut>(
        self,
        method: &'static str,
        request: Req,
        rpc: F,
    ) -> impl Future<Output = Result<Resp, Error>> + use<Req, Resp, F, Fut>
    where
        Req: Clone,
        F: Fn(TokenServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        // Taken now: a refresh flight may be driven from another task.
        let caller_span = tracing::Span::current();
        self.call_in_spans(method, request, rpc)
            .instrument(caller_span)
    }

    async fn call_in_spans<Req, Resp, F, Fut>(
        self,
        method: &'static str,
        request: Req,
        rpc: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(TokenServiceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let config = self.config;
        let max_attempts = config.attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let span = tracing::info_span!(
                "rpc",
                otel.name = %format_args!("{SERVICE}/{method}"),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = SERVICE,
                rpc.method = method,
                rpc.grpc.status_code = tracing::field::Empty,
                tokens.attempt = attempt,
            );
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(config.deadline);
            trace_context::inject(&span, req.metadata_mut().as_mut());
            self.rpcs_sent.send_modify(|sent| *sent += 1);
            if attempt > 1 {
                self.retries_sent.fetch_add(1, Ordering::Relaxed);
            }
            let outcome = tokio::time::timeout(config.deadline, rpc(self.grpc(), req))
                .instrument(span.clone())
                .await;
            let code = match &outcome {
                Ok(Ok(_)) => 0,
                Ok(Err(status)) => status.code() as i64,
                Err(_) => tonic::Code::DeadlineExceeded as i64,
            };
            span.record("rpc.grpc.status_code", code);
            if code != 0 {
                span.record("otel.status_code", "ERROR");
            }
            let status = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                // tonic's channel enforces the `grpc-timeout` it sends, too, and reports it as
                // CANCELLED ("Timeout expired"): it is this deadline, whichever timer fired.
                Ok(Err(status)) if !retry::is_client_timeout(&status) => status,
                Ok(Err(_)) | Err(_) => Status::deadline_exceeded(format!(
                    "no answer within the {:?} deadline (client side)",
                    config.deadline
                )),
            };
            let reason = status.get_details_error_info().map(|info| info.reason);
            if attempt >= max_attempts || !retry::is_retryable(&status) {
                tracing::debug!(
                    rpc.method = method,
                    attempt,
                    code = ?status.code(),
                    reason = reason.as_deref().unwrap_or(""),
                    "call failed"
                );
                return Err(Error::new(status, attempt));
            }
            let delay = retry::delay_before_retry(&config, attempt, &status, &mut rand::rng());
            tracing::debug!(
                rpc.method = method,
                attempt,
                code = ?status.code(),
                reason = reason.as_deref().unwrap_or(""),
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}
