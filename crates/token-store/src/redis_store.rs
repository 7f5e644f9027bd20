//! [`RedisStore`]: the [`Store`] over Redis, composed of the scripts (`crate::script`, one
//! module each) and the connections they run on (`crate::lanes`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands as _};
use token_core::store::{
    Current, FamilyState, NewFamily, Reuse, RevokeOutcome, RotateOutcome, RotateRequest,
    SubjectRevocation,
};
use token_core::{AccessTokenFormat, Client, FamilyId, Scopes, Store, StoreError};

use crate::connector::{Connector, Topology};
use crate::family_record;
use crate::keys::KeyLayout;
use crate::lanes::Lanes;
use crate::metrics::StoreMetrics;
use crate::monitor::{self, MemoryReport, StoreMonitor};
use crate::script::ScriptCall;
use crate::script::create_client::CreateClient;
use crate::script::delete_client::DeleteClient;
use crate::script::issue::Issue;
use crate::script::read_family::ReadFamily;
use crate::script::revoke::Revoke;
use crate::script::revoke_subject::{RevokeSubject, SweepSubject};
use crate::script::rotate::Rotate;
use crate::script::set_client_secret::SetClientSecret;

/// The plain commands the store sends, as their spans name them.
mod ops {
    use crate::lanes::Operation;

    pub const TIME: Operation = Operation::command("TIME");
    pub const INFO: Operation = Operation::command("INFO");
    pub const CONFIG_GET: Operation = Operation::command("CONFIG GET");
    pub const HSCAN: Operation = Operation::command("HSCAN");
    pub const HGETALL: Operation = Operation::command("HGETALL");
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

/// Family and client state in Redis: one node, a Sentinel-managed primary, or a Cluster.
#[derive(Clone)]
pub struct RedisStore {
    lanes: Lanes,
    keys: KeyLayout,
    topology: Topology,
    /// What the health watcher last learnt of Redis's memory, policy and clock.
    monitor: Arc<StoreMonitor>,
}

impl RedisStore {
    /// Builds the pool. Connects lazily: a Redis that is down now is not an error here.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let invalid = |err: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("invalid Redis configuration: {err}"))
        };
        let connector = Connector::new(&config.url, config.timeout).map_err(|e| invalid(&e))?;
        let topology = connector.topology();
        let lanes = Lanes::new(
            connector,
            config.pool_size,
            config.timeout,
            config.replica_wait,
        )
        .map_err(|e| invalid(&e))?;
        Ok(Self {
            lanes,
            keys: KeyLayout::new(config.key_prefix.clone()),
            topology,
            monitor: StoreMonitor::new(config.high_water_permille),
        })
    }

    /// Which kind of Redis deployment this store talks to.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Records connection errors, pool state and waits with `meter`'s instruments.
    pub fn with_metrics(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        let metrics = StoreMetrics::new(meter, self.lanes.pool().clone(), self.monitor.clone());
        self.lanes.set_metrics(metrics);
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
        self.lanes.timeout()
    }

    /// Redis's clock (`TIME`), ms since the epoch: the one clock (in a Cluster, some node's).
    pub async fn time(&self) -> Result<u64, StoreError> {
        let (secs, micros): (u64, u64) = self
            .lanes
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
            .lanes
            .call(ops::INFO, |mut conn| async move {
                redis::cmd("INFO").query_async(&mut conn).await
            })
            .await?;
        let mut report = MemoryReport::from_info(&info)?;
        if report.policy.is_empty() {
            let reply: redis::Value = self
                .lanes
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

    /// Warns, once, when Redis would keep subjects' hashes in their larger form (see
    /// [`monitor::RECOMMENDED_LISTPACK_VALUE`]). Only memory is at stake, so nothing is
    /// refused; a Redis that hides `CONFIG` (some managed services) is not checked.
    pub async fn warn_if_hashes_are_costly(&self) {
        let reply: Result<redis::Value, StoreError> = self
            .lanes
            .call(ops::CONFIG_GET, |mut conn| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("hash-max-listpack-value")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match reply.map(|reply| monitor::listpack_value_from_config(&reply)) {
            Ok(Some(limit)) if limit < monitor::RECOMMENDED_LISTPACK_VALUE => tracing::warn!(
                hash_max_listpack_value = limit,
                recommended = monitor::RECOMMENDED_LISTPACK_VALUE,
                "Redis's hash-max-listpack-value is below the recommended value: token \
                 families will take about 45% more memory (set it in redis.conf or with \
                 CONFIG SET hash-max-listpack-value 128)"
            ),
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "could not read hash-max-listpack-value"),
        }
    }

    /// Drops every shared connection, for when Redis is known to have gone away: connections
    /// made before an outage are dead after it, and each would otherwise fail one call.
    pub async fn reset_connections(&self) {
        self.lanes.reset().await;
    }

    /// Runs one script call on a shared lane and reads its reply.
    pub(crate) async fn run<C: ScriptCall>(&self, call: &C) -> Result<C::Output, StoreError> {
        let invocation = call.invocation();
        let reply: C::Reply = self
            .lanes
            .call(C::OPERATION, |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        call.parse(reply)
    }

    /// Runs a revocation: on a connection of its own followed by WAIT where replicas exist
    /// (see `Lanes::call_durable`).
    async fn run_durable<C: ScriptCall>(&self, call: &C) -> Result<C::Output, StoreError> {
        let invocation = call.invocation();
        let reply: C::Reply = self
            .lanes
            .call_durable(C::OPERATION, call.key(), |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        call.parse(reply)
    }
}

/// Fields an HSCAN step asks for, and so the families one sweep script takes: 128 kept the
/// longest Redis command of a 10,000-family revocation near a millisecond (`make bench`).
const SCAN_BATCH: usize = 128;

impl RedisStore {
    /// One HSCAN step over a subject's hash: the next cursor (0: done) and the fields, with
    /// their values when `values` (HSCAN answers pairs; the values are dropped otherwise).
    async fn scan_fields(
        &self,
        key: &str,
        cursor: u64,
        values: bool,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let key = key.to_owned();
        let (next, items): (u64, Vec<String>) = self
            .lanes
            .call(ops::HSCAN, |mut conn| async move {
                redis::cmd("HSCAN")
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let items = if values {
            items
        } else {
            items.into_iter().step_by(2).collect()
        };
        Ok((next, items))
    }

    /// Every field of a subject's hash with its value, read in HSCAN steps so that Redis is
    /// never busy long with one subject (a field seen twice, as HSCAN may, counts once).
    async fn subject_fields(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut fields = HashMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, items) = self.scan_fields(key, cursor, true).await?;
            let mut pairs = items.into_iter();
            while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
                fields.insert(field, value);
            }
            if next == 0 {
                return Ok(fields);
            }
            cursor = next;
        }
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

impl Store for RedisStore {
    async fn create_family(&self, family: &NewFamily) -> Result<Current, StoreError> {
        self.run(&Issue {
            key: self.keys.subject(&family.subject),
            family,
            high_water_permille: self.monitor.high_water_permille(),
        })
        .await
    }

    async fn rotate(&self, req: &RotateRequest<'_>) -> Result<RotateOutcome, StoreError> {
        let outcome = self
            .run(&Rotate {
                key: self.keys.subject(req.subject),
                request: req,
            })
            .await?;
        if outcome == RotateOutcome::Reused(Reuse::FamilyRevoked) && self.lanes.waits_for_replicas()
        {
            // The rotation ran on a shared lane, where WAIT must not block: re-assert the
            // revocation on a connection of its own and wait for replicas there. A failure
            // here leaves the family revoked on the primary; the refusal stands either way.
            let confirmed = self
                .revoke(
                    req.subject,
                    req.family,
                    req.client_id,
                    "reuse",
                    req.fixed_now_ms,
                )
                .await;
            if let Err(err) = confirmed {
                tracing::warn!(error = %err, "could not confirm a reuse revocation with replicas");
            }
        }
        Ok(outcome)
    }

    async fn revoke(
        &self,
        subject: &str,
        family: FamilyId,
        client_id: &str,
        reason: &str,
        fixed_now_ms: Option<u64>,
    ) -> Result<RevokeOutcome, StoreError> {
        self.run_durable(&Revoke {
            key: self.keys.subject(subject),
            family,
            client_id,
            reason,
            fixed_now_ms,
        })
        .await
    }

    async fn family(
        &self,
        subject: &str,
        family: FamilyId,
    ) -> Result<Option<FamilyState>, StoreError> {
        self.run(&ReadFamily {
            key: self.keys.subject(subject),
            family,
        })
        .await
    }

    async fn subject_families(
        &self,
        subject: &str,
    ) -> Result<Vec<(FamilyId, FamilyState)>, StoreError> {
        let fields = self.subject_fields(&self.keys.subject(subject)).await?;
        let marker = |client: Option<&str>| {
            fields
                .get(&family_record::marker_field(client))
                .map_or(Ok(0), |at| {
                    family_record::from_b36(at).ok_or_else(|| corrupt("subject: bad marker"))
                })
        };
        let every_client = marker(None)?;
        let mut families = Vec::new();
        for (field, record) in &fields {
            if field.starts_with(family_record::MARKER_PREFIX) {
                continue;
            }
            let id: FamilyId = field
                .parse()
                .map_err(|_| corrupt("subject: a field is not a family id"))?;
            let family = family_record::decode(record)?;
            let revoked_at = every_client.max(marker(Some(&family.client_id))?);
            families.push((id, family_record::apply_marker(family, revoked_at)));
        }
        Ok(families)
    }

    async fn revoke_subject(
        &self,
        subject: &str,
        client_id: Option<&str>,
        idle_ttl_ms: u64,
        fixed_now_ms: Option<u64>,
    ) -> Result<SubjectRevocation, StoreError> {
        let key = self.keys.subject(subject);
        // One write revokes them all, durably (WAIT where replicas exist) ...
        let marked = self
            .run_durable(&RevokeSubject {
                key: key.clone(),
                client_id,
                fixed_now_ms,
            })
            .await?;
        // ... then the covered families are removed and counted, a batch per short script.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, families) = self.scan_fields(&key, cursor, false).await?;
            let families: Vec<String> = families
                .into_iter()
                .filter(|f| !f.starts_with(family_record::MARKER_PREFIX))
                .collect();
            if !families.is_empty() {
                let swept = self
                    .run(&SweepSubject {
                        key: key.clone(),
                        client_id,
                        marked,
                        idle_ttl_ms,
                        families,
                    })
                    .await?;
                for (client, n) in swept {
                    *counts.entry(client).or_default() += n;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(SubjectRevocation {
            revoked_at_ms: marked.at_ms,
            revoked_by_client: counts.into_iter().collect(),
        })
    }

    async fn create_client(&self, client: &Client) -> Result<bool, StoreError> {
        self.run(&CreateClient {
            key: self.keys.client(&client.client_id),
            client,
        })
        .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        let key = self.keys.client(client_id);
        let fields: HashMap<String, String> = self
            .lanes
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
            created_at_ms: fields
                .get("ca")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt("client: bad creation time"))?,
            // Absent in every record written before JWT access tokens existed: opaque.
            access_token_format: fields
                .get("af")
                .map_or(Ok(AccessTokenFormat::Opaque), |v| v.parse())
                .map_err(|_| corrupt("client: bad access token format"))?,
            access_token_audience: fields.get("au").cloned().unwrap_or_default(),
        }))
    }

    async fn set_client_secret(
        &self,
        client_id: &str,
        secret_hash: &str,
    ) -> Result<bool, StoreError> {
        self.run(&SetClientSecret {
            key: self.keys.client(client_id),
            secret_hash,
        })
        .await
    }

    async fn delete_client(&self, client_id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.run_durable(&DeleteClient {
            key: self.keys.client(client_id),
            now_ms,
        })
        .await
    }
}
