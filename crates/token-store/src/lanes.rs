//! The connections every call runs on. Calls share a few multiplexed "lanes" taken from the
//! deadpool pool once: the pool's per-checkout health check (a round trip) doubled the Redis
//! work of a refresh, while one multiplexed connection serves any number of concurrent calls.
//! A lane whose connection breaks, times out or answers READONLY (a demoted primary) is
//! replaced, so failovers are followed on the next call. Revocations run on a connection of
//! their own followed by `WAIT`, which blocks its connection and counts only its writes.
//!
//! Every call is bounded by the store's timeout and runs in a client span named after its
//! [`Operation`]; errors are sorted into "unavailable", "full" and "corrupt".

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{BuildError, Object, Pool};
use deadpool_redis::redis::{self, RetryMethod};
use token_core::StoreError;
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::connector::{Conn, Connector};
use crate::metrics::{Phase, StoreMetrics};
use crate::redis_store::ReplicaWait;

/// One kind of Redis call, as its span names it (OpenTelemetry database conventions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operation {
    /// `db.operation.name`.
    pub command: &'static str,
    /// `db.stored_procedure.name`: the script, for EVALSHA.
    pub script: &'static str,
    /// The span name: the command, and the script when there is one.
    pub span_name: &'static str,
}

impl Operation {
    pub(crate) const fn command(command: &'static str) -> Self {
        Self {
            command,
            script: "",
            span_name: command,
        }
    }

    pub(crate) const fn script(script: &'static str, span_name: &'static str) -> Self {
        Self {
            command: "EVALSHA",
            script,
            span_name,
        }
    }
}

/// Connections beyond the shared lanes, for calls that need a connection of their own
/// (a revocation followed by WAIT, which blocks its connection while it waits).
const OWN_CONNECTIONS: usize = 4;

/// The pool, the shared lanes taken from it, and how calls on them are bounded and traced.
#[derive(Clone)]
pub(crate) struct Lanes {
    pool: Pool<Connector>,
    /// Connections taken from the pool once and shared by every call; calls go back to the
    /// pool only to replace a broken one.
    lanes: Arc<[Mutex<Option<Object<Connector>>>]>,
    /// Round-robin over `lanes`.
    next_lane: Arc<AtomicUsize>,
    timeout: Duration,
    replica_wait: Option<ReplicaWait>,
    /// What this store talks to, for spans and error events.
    peer: Arc<Peer>,
    metrics: StoreMetrics,
}

#[derive(Debug)]
struct Peer {
    /// `server.address`: the node's host, or the deployment (Sentinel, Cluster).
    address: String,
    /// `server.port`: the node's port; 0 for Sentinel and Cluster, where it varies per call.
    port: u16,
    /// For logs: `host:port`, or the deployment and its seed addresses.
    name: String,
}

/// Which connection a call runs on.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// A shared lane (round robin).
    Lane(usize),
    /// A connection borrowed from the pool for this call alone.
    OwnConnection,
}

impl Lanes {
    /// `lanes` shared connections (at least one) over a pool with room for them and the own
    /// connections. Connects lazily.
    pub(crate) fn new(
        connector: Connector,
        lanes: usize,
        timeout: Duration,
        replica_wait: Option<ReplicaWait>,
    ) -> Result<Self, BuildError> {
        let peer = match connector.node() {
            Some((host, port)) => Peer {
                address: host.clone(),
                port: *port,
                name: connector.description().to_owned(),
            },
            None => Peer {
                address: connector.description().to_owned(),
                port: 0,
                name: connector.description().to_owned(),
            },
        };
        let lanes = lanes.max(1);
        let pool = Pool::builder(connector)
            .max_size(lanes + OWN_CONNECTIONS)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()?;
        Ok(Self {
            pool,
            lanes: (0..lanes).map(|_| Mutex::new(None)).collect(),
            next_lane: Arc::new(AtomicUsize::new(0)),
            timeout,
            replica_wait,
            peer: Arc::new(peer),
            metrics: StoreMetrics::disabled(),
        })
    }

    pub(crate) fn pool(&self) -> &Pool<Connector> {
        &self.pool
    }

    pub(crate) fn set_metrics(&mut self, metrics: StoreMetrics) {
        self.metrics = metrics;
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether revocations wait for replicas (and so run on connections of their own).
    pub(crate) fn waits_for_replicas(&self) -> bool {
        self.replica_wait.is_some()
    }

    /// Runs one operation on a shared connection under the store's timeout, in a client span
    /// named after it. A lost connection or a timeout is marked on the span with an event
    /// naming the peer and whether the request had been sent, logged, and counted.
    pub(crate) async fn call<T, F, Fut>(&self, operation: Operation, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        self.call_via(Via::Lane(lane), operation, op).await
    }

    /// Runs a revocation on a connection of its own and then, where replicas exist, waits
    /// (WAIT) until they have it, bounded by [`ReplicaWait::timeout`]. WAIT blocks its
    /// connection, so it must not run on a shared lane; a revocation that replicas did not
    /// confirm in time still stands on the primary, and is counted and logged.
    pub(crate) async fn call_durable<T, F, Fut>(
        &self,
        operation: Operation,
        key: &str,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(wait) = self.replica_wait else {
            return self.call(operation, op).await;
        };
        self.call_via(Via::OwnConnection, operation, |conn| async move {
            let mut waiter = conn.clone();
            let value = op(conn).await?;
            match waiter
                .wait_for_replicas(key, wait.replicas, wait.timeout)
                .await
            {
                Ok(reached) if reached >= wait.replicas => {}
                Ok(reached) => self.replica_wait_unmet(wait, &reached),
                Err(err) => self.replica_wait_unmet(wait, &err),
            }
            Ok(value)
        })
        .await
    }

    fn replica_wait_unmet(&self, wait: ReplicaWait, outcome: &dyn std::fmt::Display) {
        tracing::warn!(
            peer = %self.peer.name,
            replicas = wait.replicas,
            timeout_ms = wait.timeout.as_millis() as u64,
            outcome = %outcome,
            "revocation not confirmed by replicas in time; it stands on the primary, \
             a failover now could undo it"
        );
        self.metrics.replica_wait_unmet();
    }

    async fn call_via<T, F, Fut>(
        &self,
        via: Via,
        operation: Operation,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let span = tracing::info_span!(
            "redis",
            otel.name = operation.span_name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "redis",
            db.operation.name = operation.command,
            db.stored_procedure.name = operation.script,
            server.address = %self.peer.address,
            server.port = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if self.peer.port != 0 {
            span.record("server.port", self.peer.port);
        }
        // Set once a connection is in hand: from then on the request counts as sent.
        let sent = AtomicBool::new(false);
        // Boxed once here: the attempt (connection checkout plus the Redis client's command
        // future) is a state machine of kilobytes, which every wrapper and caller up to the
        // refresh would otherwise move by value. Measured with `make profile`.
        let attempt = Box::pin(
            async {
                // An own connection stays borrowed until the operation is done, so nothing else
                // runs on it meanwhile.
                let mut own = None;
                let conn = match via {
                    Via::Lane(lane) => self.lane_connection(lane).await?,
                    Via::OwnConnection => own.insert(self.pool_connection().await?).clone(),
                };
                sent.store(true, Ordering::Relaxed);
                match op(conn).await {
                    Ok(value) => Ok(value),
                    Err(err) => {
                        if needs_new_connection(&err) {
                            match via {
                                Via::Lane(lane) => self.replace_lane(lane).await,
                                Via::OwnConnection => drop(own.take().map(Object::take)),
                            }
                        }
                        if is_connection_error(&err) {
                            self.connection_lost(Phase::AfterSend, "connection_lost", &err);
                        }
                        Err(classify(err))
                    }
                }
            }
            .instrument(span.clone()),
        );
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                let phase = if sent.load(Ordering::Relaxed) {
                    Phase::AfterSend
                } else {
                    Phase::BeforeSend
                };
                let _entered = span.enter();
                let timeout = format!("no reply within {:?}", self.timeout);
                self.connection_lost(phase, "timeout", &timeout);
                // A connection that let a call time out may be wedged: take a fresh one. (An
                // own connection was dropped with the attempt; deadpool checks it on return.)
                if let Via::Lane(lane) = via {
                    self.replace_lane(lane).await;
                }
                Err(StoreError::Unavailable(timeout))
            }
        };
        if let Err(err) = &result {
            span.record("otel.status_code", "ERROR");
            span.record(
                "error.type",
                match err {
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::Full(_) => "store_full",
                    StoreError::Corrupt(_) => "unexpected_reply",
                },
            );
        }
        result
    }

    /// The error event (on the current span), log line and counter of a lost connection.
    fn connection_lost(&self, phase: Phase, kind: &'static str, error: &dyn std::fmt::Display) {
        tracing::warn!(
            peer = %self.peer.name,
            phase = phase.as_str(),
            kind,
            error = %error,
            "{}",
            phase.describe()
        );
        self.metrics.connection_error(phase, kind);
    }

    /// A clone of the lane's connection, taking one from the pool if the lane is empty. The
    /// lane stays locked while it is filled, so each lane holds at most one pool slot and the
    /// pool can never be drained by lanes waiting on each other.
    async fn lane_connection(&self, lane: usize) -> Result<Conn, StoreError> {
        let waited = Instant::now();
        let mut slot = self.lanes[lane].lock().await;
        if slot.is_none() {
            *slot = Some(self.pool_connection().await?);
        }
        self.metrics.waited(waited.elapsed());
        let conn = slot.as_deref().expect("the lane was just filled");
        Ok(conn.clone())
    }

    async fn pool_connection(&self) -> Result<Object<Connector>, StoreError> {
        self.pool.get().await.map_err(|err| {
            self.connection_lost(Phase::BeforeSend, "connect_failed", &err);
            StoreError::Unavailable(format!("no connection: {err}"))
        })
    }

    /// Drops every shared connection: the next call on each lane takes a new one.
    pub(crate) async fn reset(&self) {
        for lane in 0..self.lanes.len() {
            self.replace_lane(lane).await;
        }
    }

    /// Drops the lane's connection from the pool for good; the next call gets a new one.
    async fn replace_lane(&self, lane: usize) {
        if let Some(conn) = self.lanes[lane].lock().await.take() {
            drop(Object::take(conn));
        }
    }
}

/// Whether the connection an error came from should be replaced: it is broken, timed out,
/// or leads to a node that is no longer the primary (READONLY: a demoted primary after a
/// Sentinel failover; a new connection asks the sentinels again).
fn needs_new_connection(err: &redis::RedisError) -> bool {
    err.is_unrecoverable_error()
        || err.is_timeout()
        || err.code() == Some("READONLY")
        || err.to_string().contains("READONLY")
}

/// The connection failed under the request (dropped, reset, refused, timed out), as opposed to
/// Redis answering with an error.
fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_connection_dropped()
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_refusal()
}

/// Errors that a retry may cure are "unavailable"; Redis out of memory is "full" (nothing was
/// written); the rest mean a broken invariant.
fn classify(err: redis::RedisError) -> StoreError {
    if err.code() == Some("OOM") || err.to_string().contains("OOM command not allowed") {
        return StoreError::Full(err.to_string());
    }
    match err.retry_method() {
        RetryMethod::NoRetry => StoreError::Corrupt(err.to_string()),
        _ => StoreError::Unavailable(err.to_string()),
    }
}
