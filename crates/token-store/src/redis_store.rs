//! [`RedisStore`]: the [`Store`] over Redis.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::io::tcp::TcpSettings;
use deadpool_redis::redis::{
    self, AsyncCommands as _, AsyncConnectionConfig, IntoConnectionInfo as _, RetryMethod,
};
use deadpool_redis::{Connection, Manager, Pool, Runtime};
use token_core::store::{
    Current, FamilyState, NewFamily, Reuse, RevokeOutcome, RotateOutcome, RotateRequest, Rotation,
};
use token_core::{Client, FamilyId, Scopes, Store, StoreError};
use tokio::sync::Mutex;
use tracing::Instrument as _;

use crate::family_record;
use crate::keys::KeyLayout;
use crate::metrics::{Phase, StoreMetrics};
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

    pub const PING: Operation = Operation::command("PING");
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
    pub url: String,
    /// Connections in the pool; each is multiplexed, so a few carry many requests.
    pub pool_size: usize,
    /// Bound on every Redis call, pool wait included. A call that times out may have run;
    /// every operation is safe to retry, so callers just get "unavailable".
    pub timeout: Duration,
    pub key_prefix: String,
}

/// Family and client state in one Redis (single node).
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    /// Connections taken from the pool once and shared by every call. deadpool-redis checks
    /// each connection it hands out with an UNWATCH+PING round trip, which doubled the Redis
    /// work of a refresh; a multiplexed connection serves any number of concurrent calls, so
    /// calls share clones of these and go back to the pool only to replace a broken one.
    lanes: Arc<[Mutex<Option<Connection>>]>,
    /// Round-robin over `lanes`.
    next_lane: Arc<AtomicUsize>,
    keys: KeyLayout,
    timeout: Duration,
    /// `host:port` of the Redis this store talks to, for spans and error events.
    peer: Arc<Peer>,
    metrics: StoreMetrics,
}

#[derive(Debug)]
struct Peer {
    address: String,
    port: u16,
    /// `address:port`.
    name: String,
}

impl RedisStore {
    /// Builds the pool. Connects lazily: a Redis that is down now is not an error here.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let invalid = |err: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("invalid Redis configuration: {err}"))
        };
        // Small request/reply exchanges: without TCP_NODELAY, Nagle and delayed ACKs hold
        // each reply back by up to 40 ms (redis-rs leaves it off by default).
        let connection = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| invalid(&e))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let peer = match connection.addr() {
            redis::ConnectionAddr::Tcp(host, port)
            | redis::ConnectionAddr::TcpTls { host, port, .. } => Peer {
                address: host.clone(),
                port: *port,
                name: format!("{host}:{port}"),
            },
            other => Peer {
                address: other.to_string(),
                port: 0,
                name: other.to_string(),
            },
        };
        // redis-rs would otherwise cut every reply off at 500 ms and every connect at 1 s,
        // whatever `timeout` says; `call` enforces `timeout` on the whole operation instead.
        let connection_config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(config.timeout));
        let manager =
            Manager::new_with_config(connection, connection_config).map_err(|e| invalid(&e))?;
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| invalid(&e))?;
        let lanes = (0..config.pool_size.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Ok(Self {
            pool,
            lanes,
            next_lane: Arc::new(AtomicUsize::new(0)),
            keys: KeyLayout::new(config.key_prefix.clone()),
            timeout: config.timeout,
            peer: Arc::new(peer),
            metrics: StoreMetrics::disabled(),
        })
    }

    /// Records connection errors, pool state and waits with `meter`'s instruments.
    pub fn with_metrics(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        self.metrics = StoreMetrics::new(meter, self.pool.clone());
        self
    }

    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A round trip to Redis, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(ops::PING, |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// Runs one operation on a shared connection under the store's timeout, in a client span
    /// named after it. A lost connection or a timeout is marked on the span with an event
    /// naming the peer and whether the request had been sent, logged, and counted.
    pub(crate) async fn call<T, F, Fut>(&self, operation: Operation, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
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
            server.port = self.peer.port,
            error.type = tracing::field::Empty,
        );
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        // Set once a connection is in hand: from then on the request counts as sent.
        let sent = AtomicBool::new(false);
        let attempt = async {
            let conn = self.lane_connection(lane).await?;
            sent.store(true, Ordering::Relaxed);
            match op(conn).await {
                Ok(value) => Ok(value),
                Err(err) => {
                    if err.is_unrecoverable_error() || err.is_timeout() {
                        self.replace_lane(lane).await;
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
                // A connection that let a call time out may be wedged: take a fresh one.
                self.replace_lane(lane).await;
                Err(StoreError::Unavailable(timeout))
            }
        };
        if let Err(err) = &result {
            span.record("otel.status_code", "ERROR");
            span.record(
                "error.type",
                match err {
                    StoreError::Unavailable(_) => "unavailable",
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
    async fn lane_connection(&self, lane: usize) -> Result<MultiplexedConnection, StoreError> {
        let waited = Instant::now();
        let mut slot = self.lanes[lane].lock().await;
        if slot.is_none() {
            let fresh = self.pool.get().await.map_err(|err| {
                self.connection_lost(Phase::BeforeSend, "connect_failed", &err);
                StoreError::Unavailable(format!("no connection: {err}"))
            })?;
            *slot = Some(fresh);
        }
        self.metrics.waited(waited.elapsed());
        let conn = slot.as_deref().expect("the lane was just filled");
        Ok(conn.clone())
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
            drop(Connection::take(conn));
        }
    }
}

/// The connection failed under the request (dropped, reset, refused, timed out), as opposed to
/// Redis answering with an error.
fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_connection_dropped()
        || err.is_io_error()
        || err.is_timeout()
        || err.is_connection_refusal()
}

/// Errors that a retry may cure are "unavailable"; the rest mean a broken invariant.
fn classify(err: redis::RedisError) -> StoreError {
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
    async fn create_family(&self, family: &NewFamily) -> Result<(), StoreError> {
        let key = self.keys.family(family.family);
        let _: String = self
            .call(ops::ISSUE, |mut conn| async move {
                scripts::ISSUE
                    .key(key)
                    .arg(&family.client_id)
                    .arg(family.scopes.to_space_separated())
                    .arg(family.now_ms)
                    .arg(&family.key_id)
                    .arg(family.absolute_expiry_ms)
                    .arg(family.idle_ttl_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn rotate(&self, req: &RotateRequest<'_>) -> Result<RotateOutcome, StoreError> {
        let key = self.keys.family(req.family);
        let reply: Vec<String> = self
            .call(ops::ROTATE, |mut conn| async move {
                scripts::ROTATE
                    .key(key)
                    .arg(req.presented_generation)
                    .arg(req.client_id)
                    .arg(req.now_ms)
                    .arg(req.grace_ms)
                    .arg(req.idle_ttl_ms)
                    .arg(req.signing_key_id)
                    .arg(req.reuse_policy.as_str())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        parse_rotate_reply(&reply)
    }

    async fn revoke(
        &self,
        family: FamilyId,
        client_id: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<RevokeOutcome, StoreError> {
        let key = self.keys.family(family);
        let reply: String = self
            .call(ops::REVOKE, |mut conn| async move {
                scripts::REVOKE
                    .key(key)
                    .arg(client_id)
                    .arg(reason)
                    .arg(now_ms)
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
        let key = self.keys.client(client_id);
        let deleted: i64 = self
            .call(ops::DELETE_CLIENT, |mut conn| async move {
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
    let [_, generation, rotated_at, key_id, scopes, absolute_expiry] = reply else {
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
        },
    ))
}
