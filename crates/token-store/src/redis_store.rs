//! [`RedisStore`]: the [`Store`] over Redis.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{Object, Pool};
use deadpool_redis::redis::{self, AsyncCommands as _, RetryMethod};
use token_core::store::{
    Current, FamilyState, NewFamily, Reuse, RevokeOutcome, RotateOutcome, RotateRequest, Rotation,
};
use token_core::{Client, FamilyId, Scopes, Store, StoreError};
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::connector::{Conn, Connector, Topology};
use crate::family_record;
use crate::keys::KeyLayout;
use crate::metrics::{Phase, StoreMetrics};
use crate::monitor::{self, MemoryReport, StoreMonitor};
use crate::scripts;

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
    const fn command(command: &'static str) -> Self {
        Self {
            command,
            script: "",
            span_name: command,
        }
    }

    const fn script(script: &'static str, span_name: &'static str) -> Self {
        Self {
            command: "EVALSHA",
            script,
            span_name,
        }
    }
}

pub(crate) mod ops {
    use super::Operation;

    pub const TIME: Operation = Operation::command("TIME");
    pub const INFO: Operation = Operation::command("INFO");
    pub const CONFIG_GET: Operation = Operation::command("CONFIG GET");
    pub const GET: Operation = Operation::command("GET");
    pub const HGETALL: Operation = Operation::command("HGETALL");
    pub const ISSUE: Operation = Operation::script("issue", "EVALSHA issue");
    pub const ROTATE: Operation = Operation::script("rotate", "EVALSHA rotate");
    pub const REVOKE: Operation = Operation::script("revoke", "EVALSHA revoke");
    pub const CREATE_CLIENT: Operation =
        Operation::script("create_client", "EVALSHA create_client");
    pub const SET_CLIENT_SECRET: Operation =
        Operation::script("set_client_secret", "EVALSHA set_client_secret");
    pub const DELETE_CLIENT: Operation =
        Operation::script("delete_client", "EVALSHA delete_client");
    pub const AUDIT_APPEND: Operation = Operation::script("audit_append", "EVALSHA audit_append");
    pub const AUDIT_LIST: Operation = Operation::script("audit_list", "EVALSHA audit_list");
    pub const AUDIT_SUMMARY: Operation =
        Operation::script("audit_summary", "EVALSHA audit_summary");
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://`, `redis+sentinel://` or `redis+cluster://`: see [`crate::connector`].
    pub url: String,
    /// Connections in the pool; each is multiplexed, so a few carry many requests.
    pub pool_size: usize,
    /// Bound on every Redis call, pool wait included. A call that times out may have run;
    /// every operation is safe to retry, so callers just get "unavailable".
    pub timeout: Duration,
    pub key_prefix: String,
    /// How revocations wait for replicas (`WAIT`); `None` never waits.
    pub replica_wait: Option<ReplicaWait>,
    /// New families are refused once a node's memory reaches this many permille of its
    /// `maxmemory` (see [`crate::monitor`]); 0 never refuses.
    pub high_water_permille: u32,
}

/// Refuse new families at 90% of `maxmemory`: rotations keep the rest.
pub const DEFAULT_HIGH_WATER_PERMILLE: u32 = 900;

/// After a revocation, wait until this many replicas have it, at most this long. A
/// revocation that only the primary had would be undone by a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: Duration,
}

impl ReplicaWait {
    /// Replicas waited for where the topology has them (`--redis-wait-replicas`).
    pub const DEFAULT_REPLICAS: u32 = 1;
    /// The longest a revocation waits for them (`--redis-wait-timeout`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

    /// [`Self::DEFAULT_REPLICAS`] within [`Self::DEFAULT_TIMEOUT`] where the topology has
    /// replicas (Sentinel, Cluster); no wait on one node.
    pub fn default_for(url: &str) -> Option<Self> {
        Topology::of_url(url).has_replicas().then_some(Self {
            replicas: Self::DEFAULT_REPLICAS,
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }
}

/// Connections beyond the shared lanes, for calls that need a connection of their own
/// (a revocation followed by WAIT, which blocks its connection while it waits).
const OWN_CONNECTIONS: usize = 4;

/// Family and client state in Redis: one node, a Sentinel-managed primary, or a Cluster.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool<Connector>,
    /// Connections taken from the pool once and shared by every call. A pool checks each
    /// connection it hands out with a round trip, which doubled the Redis work of a refresh;
    /// a multiplexed connection serves any number of concurrent calls, so calls share clones
    /// of these and go back to the pool only to replace a broken one.
    lanes: Arc<[Mutex<Option<Object<Connector>>>]>,
    /// Round-robin over `lanes`.
    next_lane: Arc<AtomicUsize>,
    keys: KeyLayout,
    timeout: Duration,
    replica_wait: Option<ReplicaWait>,
    topology: Topology,
    /// What this store talks to, for spans and error events.
    peer: Arc<Peer>,
    metrics: StoreMetrics,
    /// What the health watcher last learnt of Redis's memory, policy and clock.
    monitor: Arc<StoreMonitor>,
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

impl RedisStore {
    /// Builds the pool. Connects lazily: a Redis that is down now is not an error here.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let invalid = |err: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("invalid Redis configuration: {err}"))
        };
        let connector = Connector::new(&config.url, config.timeout).map_err(|e| invalid(&e))?;
        let topology = connector.topology();
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
        let lanes = config.pool_size.max(1);
        let pool = Pool::builder(connector)
            .max_size(lanes + OWN_CONNECTIONS)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| invalid(&e))?;
        Ok(Self {
            pool,
            lanes: (0..lanes).map(|_| Mutex::new(None)).collect(),
            next_lane: Arc::new(AtomicUsize::new(0)),
            keys: KeyLayout::new(config.key_prefix.clone()),
            timeout: config.timeout,
            replica_wait: config.replica_wait,
            topology,
            peer: Arc::new(peer),
            metrics: StoreMetrics::disabled(),
            monitor: StoreMonitor::new(config.high_water_permille),
        })
    }

    /// Which kind of Redis deployment this store talks to.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Records connection errors, pool state and waits with `meter`'s instruments.
    pub fn with_metrics(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        self.metrics = StoreMetrics::new(meter, self.pool.clone(), self.monitor.clone());
        self
    }

    /// Redis's memory, policy and clock as last reported.
    pub fn monitor(&self) -> &Arc<StoreMonitor> {
        &self.monitor
    }

    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Redis's clock (`TIME`), ms since the epoch: the one clock (in a Cluster, some node's).
    pub async fn time(&self) -> Result<u64, StoreError> {
        let (secs, micros): (u64, u64) = self
            .call(ops::TIME, |mut conn| async move {
                redis::cmd("TIME").query_async(&mut conn).await
            })
            .await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Memory, eviction policy and evicted keys, from `INFO` (every node's, in a Cluster),
    /// with `CONFIG GET maxmemory-policy` where `INFO` does not name the policy.
    pub async fn memory(&self) -> Result<MemoryReport, StoreError> {
        let info: redis::Value = self
            .call(ops::INFO, |mut conn| async move {
                redis::cmd("INFO").query_async(&mut conn).await
            })
            .await?;
        let mut report = MemoryReport::from_info(&info)?;
        if report.policy.is_empty() {
            let reply: redis::Value = self
                .call(ops::CONFIG_GET, |mut conn| async move {
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("maxmemory-policy")
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            report.policy =
                monitor::policy_from_config(&reply).unwrap_or_else(|| "unknown".to_owned());
        }
        Ok(report)
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
    async fn call_durable<T, F, Fut>(
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
        let attempt = async {
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
        .instrument(span.clone());
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

    /// Drops every shared connection, for when Redis is known to have gone away: connections
    /// made before an outage are dead after it, and each would otherwise fail one call.
    pub async fn reset_connections(&self) {
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn number(field: Option<&String>, what: &str) -> Result<u64, StoreError> {
    field
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(what))
}

impl Store for RedisStore {
    async fn create_family(&self, family: &NewFamily) -> Result<Current, StoreError> {
        let key = self.keys.family(family.family);
        let high_water = self.monitor.high_water_permille();
        let reply: Vec<String> = self
            .call(ops::ISSUE, |mut conn| async move {
                scripts::ISSUE
                    .key(key)
                    .arg(&family.client_id)
                    .arg(family.scopes.to_space_separated())
                    .arg(fixed_now(family.fixed_now_ms))
                    .arg(&family.key_id)
                    .arg(family.absolute_ttl_ms)
                    .arg(family.idle_ttl_ms)
                    .arg(high_water)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [outcome, issued_at, absolute_expiry] if outcome == "created" => Ok(Current {
                generation: 1,
                rotated_at_ms: number(Some(issued_at), "issue: bad issue time")?,
                key_id: family.key_id.clone(),
                scopes: family.scopes.clone(),
                absolute_expiry_ms: number(Some(absolute_expiry), "issue: bad expiry")?,
                access_scope_mask: None,
            }),
            [outcome] if outcome == "store_full" => Err(StoreError::Full(format!(
                "Redis memory is past the high-water mark ({} permille of maxmemory)",
                high_water
            ))),
            _ => Err(corrupt("issue: unexpected reply")),
        }
    }

    async fn rotate(&self, req: &RotateRequest<'_>) -> Result<RotateOutcome, StoreError> {
        let key = self.keys.family(req.family);
        let reply: Vec<String> = self
            .call(ops::ROTATE, |mut conn| async move {
                scripts::ROTATE
                    .key(key)
                    .arg(req.presented_generation)
                    .arg(req.client_id)
                    .arg(fixed_now(req.fixed_now_ms))
                    .arg(req.grace_ms)
                    .arg(req.idle_ttl_ms)
                    .arg(req.signing_key_id)
                    .arg(req.reuse_policy.as_str())
                    .arg(req.stamp_ms)
                    .arg(
                        req.access_scope_mask
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    )
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let outcome = parse_rotate_reply(&reply)?;
        if outcome == RotateOutcome::Reused(Reuse::FamilyRevoked) && self.replica_wait.is_some() {
            // The rotation ran on a shared lane, where WAIT must not block: re-assert the
            // revocation on a connection of its own and wait for replicas there. A failure
            // here leaves the family revoked on the primary; the refusal stands either way.
            let confirmed = self
                .revoke(req.family, req.client_id, "reuse", req.fixed_now_ms)
                .await;
            if let Err(err) = confirmed {
                tracing::warn!(error = %err, "could not confirm a reuse revocation with replicas");
            }
        }
        Ok(outcome)
    }

    async fn revoke(
        &self,
        family: FamilyId,
        client_id: &str,
        reason: &str,
        fixed_now_ms: Option<u64>,
    ) -> Result<RevokeOutcome, StoreError> {
        let key = &self.keys.family(family);
        let reply: String = self
            .call_durable(ops::REVOKE, key, |mut conn| async move {
                scripts::REVOKE
                    .key(key)
                    .arg(client_id)
                    .arg(reason)
                    .arg(fixed_now(fixed_now_ms))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply.as_str() {
            "revoked" => Ok(RevokeOutcome::Revoked),
            "already_revoked" => Ok(RevokeOutcome::AlreadyRevoked),
            "not_found" => Ok(RevokeOutcome::NotFound),
            "client_mismatch" => Ok(RevokeOutcome::ClientMismatch),
            _ => Err(corrupt("revoke: unknown outcome")),
        }
    }

    async fn family(&self, family: FamilyId) -> Result<Option<FamilyState>, StoreError> {
        let key = self.keys.family(family);
        let record: Option<String> = self
            .call(ops::GET, |mut conn| async move { conn.get(key).await })
            .await?;
        record.as_deref().map(family_record::decode).transpose()
    }

    async fn create_client(&self, client: &Client) -> Result<bool, StoreError> {
        let key = self.keys.client(&client.client_id);
        let created: i64 = self
            .call(ops::CREATE_CLIENT, |mut conn| async move {
                scripts::CREATE_CLIENT
                    .key(key)
                    .arg(&client.name)
                    .arg(client.client_type.as_str())
                    .arg(client.allowed_scopes.to_space_separated())
                    .arg(client.reuse_policy.as_str())
                    .arg(&client.secret_hash)
                    .arg(client.created_at_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(created == 1)
    }

    async fn client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        let key = self.keys.client(client_id);
        let fields: HashMap<String, String> = self
            .call(
                ops::HGETALL,
                |mut conn| async move { conn.hgetall(key).await },
            )
            .await?;
        if fields.is_empty() || fields.contains_key("del") {
            return Ok(None);
        }
        let text = |name: &str| {
            fields
                .get(name)
                .cloned()
                .ok_or_else(|| corrupt("client: missing field"))
        };
        let client_type = text("ty")?
            .parse()
            .map_err(|_| corrupt("client: bad type"))?;
        let reuse_policy = text("rp")?
            .parse()
            .map_err(|_| corrupt("client: bad reuse policy"))?;
        Ok(Some(Client {
            client_id: client_id.to_owned(),
            name: text("n")?,
            client_type,
            allowed_scopes: Scopes::from_space_separated(&text("sc")?)
                .ok_or_else(|| corrupt("client: too many scopes"))?,
            reuse_policy,
            secret_hash: text("h")?,
            created_at_ms: number(fields.get("ca"), "client: bad creation time")?,
        }))
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_hash: &str,
    ) -> Result<bool, StoreError> {
        let key = self.keys.client(client_id);
        let replaced: i64 = self
            .call(ops::SET_CLIENT_SECRET, |mut conn| async move {
                scripts::SET_CLIENT_SECRET
                    .key(key)
                    .arg(secret_hash)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(replaced == 1)
    }

    async fn delete_client(&self, client_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let key = &self.keys.client(client_id);
        let deleted: i64 = self
            .call_durable(ops::DELETE_CLIENT, key, |mut conn| async move {
                scripts::DELETE_CLIENT
                    .key(key)
                    .arg(now_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(deleted == 1)
    }
}

/// The `now` argument of a script: empty, so that the script reads Redis's clock, unless a test
/// clock pins it.
fn fixed_now(fixed_ms: Option<u64>) -> String {
    fixed_ms.map(|ms| ms.to_string()).unwrap_or_default()
}

/// Reads the reply of `rotate.lua` (its header is the contract).
fn parse_rotate_reply(reply: &[String]) -> Result<RotateOutcome, StoreError> {
    let outcome = reply
        .first()
        .ok_or_else(|| corrupt("rotate: empty reply"))?;
    let rotation = match outcome.as_str() {
        "expired" => return Ok(RotateOutcome::Expired),
        "revoked" => return Ok(RotateOutcome::Revoked),
        "client_mismatch" => return Ok(RotateOutcome::ClientMismatch),
        "reused_revoked" => return Ok(RotateOutcome::Reused(Reuse::FamilyRevoked)),
        "reused_rejected" => return Ok(RotateOutcome::Reused(Reuse::Refused)),
        "reused_stale" => return Ok(RotateOutcome::Reused(Reuse::StaleDuplicate)),
        "rotated" => Rotation::Rotated,
        "replayed" => Rotation::Replayed,
        "rolled_forward" => Rotation::RolledForward,
        _ => return Err(corrupt("rotate: unknown outcome")),
    };
    let [
        _,
        generation,
        rotated_at,
        key_id,
        scopes,
        absolute_expiry,
        access_mask,
    ] = reply
    else {
        return Err(corrupt("rotate: short reply"));
    };
    Ok(RotateOutcome::Issued(
        rotation,
        Current {
            generation: number(Some(generation), "rotate: bad generation")?,
            rotated_at_ms: number(Some(rotated_at), "rotate: bad rotation time")?,
            key_id: key_id.clone(),
            scopes: Scopes::from_space_separated(scopes)
                .ok_or_else(|| corrupt("rotate: too many scopes"))?,
            absolute_expiry_ms: number(Some(absolute_expiry), "rotate: bad expiry")?,
            access_scope_mask: match access_mask.as_str() {
                "" => None,
                mask => Some(
                    mask.parse()
                        .map_err(|_| corrupt("rotate: bad access mask"))?,
                ),
            },
        },
    ))
}
