//! The machinery under the tables of `scripts.rs`: a harness around one redis-server, the
//! script calls a row can make, what a row expects, and the loop that runs the rows.
//!
//! A row names its case, the family as the call finds it ([`Past`]: script calls, and the
//! record they must leave), the call ([`Op`], with [`Row::args`] for argument slots the typed
//! API cannot express), the reply ([`Expect`]) and the family after it ([`After`]). Every row
//! runs twice, each time on a family of its own: through the script with the row's own
//! arguments, checking the exact reply, and through [`RedisStore`], checking the typed answer
//! (rows with raw argument slots run through the script only). Every failure names the row.

use std::ops::RangeInclusive;
use std::time::Duration;

use deadpool_redis::redis::{self, RedisError, Script, Value, aio::MultiplexedConnection};
use test_support::RedisServer;
use token_core::store::{
    Current, FamilyState, NewFamily, Reuse, RevokeOutcome, RotateOutcome, RotateRequest, Rotation,
};
use token_core::{FamilyId, ReusePolicy, Scopes, Store, StoreError};
use token_store::{RedisStore, StoreConfig, family_record, script};

pub use crate::reply::assert_invalid;
use crate::reply::texts;

pub const HOUR: u64 = 3_600_000;
pub const DAY: u64 = 24 * HOUR;
/// Issue time of the standard family.
pub const NOW: u64 = 1_700_000_000_000;
/// The standard family's first and second rotations (see [`once`] and [`twice`]).
pub const T1: u64 = NOW + 1_000;
pub const T2: u64 = NOW + 2_000;
/// Idle TTL of the standard family.
pub const IDLE: u64 = DAY;
/// Absolute lifetime of the standard family, and the expiry that follows from it.
pub const LIFETIME: u64 = 30 * DAY;
pub const ABSOLUTE: u64 = NOW + LIFETIME;
pub const GRACE: u64 = 10_000;
pub const CLIENT: &str = "web";
pub const OTHER_CLIENT: &str = "mobile";

/// Script arguments, each as `Display` writes it.
macro_rules! args {
    ($($arg:expr),* $(,)?) => { vec![$(($arg).to_string()),*] };
}

/// A family key's record (`None`: no key) and its `PEXPIRETIME` (-1: no expiry, -2: no key).
pub type Snapshot = (Option<String>, i64);

/// One redis-server, a store over it, and a raw connection for direct script calls and reads.
pub struct Harness {
    pub store: RedisStore,
    pub conn: MultiplexedConnection,
    url: String,
    /// Declared last so that it is dropped (killed) after the pool and the connection.
    _redis: RedisServer,
}

impl Harness {
    /// A throwaway server, and a store with the default high-water mark (inert: no maxmemory).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[], token_store::DEFAULT_HIGH_WATER_PERMILLE).await
    }

    /// A server without persistence started with `redis_args`, and a store that refuses new
    /// families at `high_water_permille` of maxmemory.
    pub async fn start_with(redis_args: &[&str], high_water_permille: u32) -> anyhow::Result<Self> {
        let args: Vec<&str> = ["--save", "", "--appendonly", "no"]
            .iter()
            .chain(redis_args)
            .copied()
            .collect();
        let redis = RedisServer::start_with(&args);
        let url = redis.url();
        let conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self {
            store: store_over(&url, high_water_permille)?,
            conn,
            url,
            _redis: redis,
        })
    }

    /// Another store over the same server, with its own high-water mark.
    pub fn store_with(&self, high_water_permille: u32) -> Result<RedisStore, StoreError> {
        store_over(&self.url, high_water_permille)
    }

    pub fn family_key(&self, family: FamilyId) -> String {
        self.store.keys().family(family)
    }

    pub fn client_key(&self, client_id: &str) -> String {
        self.store.keys().client(client_id)
    }

    /// Runs one command on the raw connection.
    pub async fn cmd<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> anyhow::Result<T> {
        Ok(redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut self.conn)
            .await?)
    }

    pub async fn pttl(&mut self, key: &str) -> anyhow::Result<i64> {
        self.cmd(&["PTTL", key]).await
    }

    pub async fn exists(&mut self, key: &str) -> anyhow::Result<bool> {
        Ok(self.cmd::<i64>(&["EXISTS", key]).await? == 1)
    }

    /// The raw value of a string key (a family record), `None` if there is no key. Fails on a
    /// key of another type (WRONGTYPE), so a family left as a hash cannot pass for a record.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        self.cmd(&["GET", key]).await
    }

    /// The family record at `key`, which must exist.
    pub async fn record(&mut self, key: &str) -> anyhow::Result<String> {
        self.get(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no family record at {key}"))
    }

    /// The family at `key` as Rust decodes its record.
    pub async fn decoded(&mut self, key: &str) -> anyhow::Result<FamilyState> {
        Ok(family_record::decode(&self.record(key).await?)?)
    }

    /// `PEXPIRETIME`: the key's absolute expiry deadline, ms since the epoch (-1: none, -2: no
    /// key). Unlike `PTTL` it does not move with the wall clock, so comparisons are exact.
    pub async fn deadline(&mut self, key: &str) -> anyhow::Result<i64> {
        self.cmd(&["PEXPIRETIME", key]).await
    }

    /// The whole record and the key's deadline: two equal snapshots mean neither the state nor
    /// the TTL changed.
    pub async fn snapshot(&mut self, key: &str) -> anyhow::Result<Snapshot> {
        let record = self.get(key).await?;
        Ok((record, self.deadline(key).await?))
    }

    /// How many SET commands Redis has run, scripts' included (`INFO commandstats`).
    pub async fn set_calls(&mut self) -> anyhow::Result<u64> {
        let stats: String = self.cmd(&["INFO", "commandstats"]).await?;
        let calls = stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_set:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(Ok(0), str::parse)?;
        Ok(calls)
    }

    /// Redis's clock (`TIME`), ms since the epoch.
    pub async fn redis_time(&mut self) -> anyhow::Result<u64> {
        let (secs, micros): (u64, u64) = self.cmd(&["TIME"]).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// `used_memory` and `maxmemory` from `INFO memory`, bytes.
    pub async fn memory(&mut self) -> anyhow::Result<(u64, u64)> {
        let info: String = self.cmd(&["INFO", "memory"]).await?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = info.lines().find_map(|l| l.strip_prefix(name));
            let value = line.ok_or_else(|| anyhow::anyhow!("INFO memory has no {name}"))?;
            Ok(value.trim().parse()?)
        };
        Ok((field("used_memory:")?, field("maxmemory:")?))
    }

    /// Invokes a script directly with arbitrary (possibly invalid) string arguments.
    pub async fn invoke(
        &mut self,
        script: &Script,
        key: &str,
        args: &[String],
    ) -> Result<Vec<String>, RedisError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async::<Value>(&mut self.conn)
            .await
            .map(texts)
    }

    /// Makes the call `op` directly, with its standard arguments.
    pub async fn call(&mut self, op: impl Into<Op>, key: &str) -> Result<Vec<String>, RedisError> {
        let op = op.into();
        self.invoke(op.script(), key, &op.argv()).await
    }

    /// Creates the standard family (see [`issue`]) through the store; returns its key.
    pub async fn issue(&mut self, family: FamilyId) -> anyhow::Result<String> {
        self.store
            .create_family(&issue().new_family(family))
            .await?;
        Ok(self.family_key(family))
    }

    /// Makes the call `op` through the store's typed API.
    pub async fn through_store(&self, op: &Op, family: FamilyId) -> Result<Answer, StoreError> {
        Ok(match op {
            Op::Issue(i) => Answer::Created(self.store.create_family(&i.new_family(family)).await?),
            Op::Rotate(r) => Answer::Rotate(self.store.rotate(&r.request(family)).await?),
            Op::Revoke(r) => Answer::Revoke(
                self.store
                    .revoke(family, r.client, r.reason, Some(r.now))
                    .await?,
            ),
        })
    }

    /// Makes the call `op` on `family` with '' for now (ARGV[3]), so that the script reads
    /// Redis's clock; through the store as production makes it (no fixed now, a refresh
    /// stamped on Redis's clock). Answers with the script's reply, or the store's as one.
    pub async fn on_redis_clock(
        &mut self,
        op: impl Into<Op>,
        family: FamilyId,
        via: Via,
    ) -> anyhow::Result<Vec<String>> {
        let (op, key) = (op.into(), self.family_key(family));
        let answer = match (via, op) {
            (Via::Script, _) => {
                let argv = changed(op.argv(), &[(3, "")]);
                return Ok(self.invoke(op.script(), &key, &argv).await?);
            }
            (Via::Store, Op::Issue(i)) => {
                let new = NewFamily {
                    fixed_now_ms: None,
                    ..i.new_family(family)
                };
                Answer::Created(self.store.create_family(&new).await?)
            }
            (Via::Store, Op::Rotate(r)) => {
                let stamp_ms = self.redis_time().await?;
                let request = RotateRequest {
                    fixed_now_ms: None,
                    stamp_ms,
                    ..r.request(family)
                };
                Answer::Rotate(self.store.rotate(&request).await?)
            }
            (Via::Store, Op::Revoke(r)) => {
                let revoked = self.store.revoke(family, r.client, r.reason, None);
                Answer::Revoke(revoked.await?)
            }
        };
        Ok(answer.reply())
    }

    /// Runs every row through the script and, where the typed API can express it, the store.
    pub async fn run(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        for row in rows {
            self.run_row(row, Via::Script).await?;
            if row.args.is_empty() {
                self.run_row(row, Via::Store).await?;
            }
        }
        Ok(())
    }

    async fn run_row(&mut self, row: &Row, via: Via) -> anyhow::Result<()> {
        let case = format!("row {:?} through the {via:?}", row.case);
        let family = FamilyId::random();
        let key = self.family_key(family);
        for step in &row.past.steps {
            let done = match step {
                Step::Call(op) => self.call(*op, &key).await.map(drop),
                Step::Write(record) => {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(record)
                        .arg("PX")
                        .arg(HOUR)
                        .query_async::<()>(&mut self.conn)
                        .await
                }
            };
            done.map_err(|err| anyhow::anyhow!("{case}: setting up the family: {err}"))?;
        }
        let before = self.snapshot(&key).await?;
        assert_eq!(
            before.0, row.past.record,
            "{case}: the family before the call"
        );
        assert!(
            before.0.is_none() || before.1 > 0,
            "{case}: a family key without a deadline: {before:?}"
        );
        let sets = self.set_calls().await?;

        match via {
            Via::Script => {
                let argv = changed(row.op.argv(), &row.args);
                let got = self.invoke(row.op.script(), &key, &argv).await;
                let got = got.map_err(|err| err.to_string());
                let expected = row.expect.script_reply();
                let matches = match (&expected, &got) {
                    (Ok(expected), Ok(got)) => expected == got,
                    (Err(text), Err(got)) => got.contains(text),
                    _ => false,
                };
                assert!(
                    matches,
                    "{case}: {} {argv:?} answered {got:?}, expected {expected:?}",
                    row.op.name()
                );
            }
            Via::Store => {
                let got = self.through_store(&row.op, family).await;
                assert_eq!(
                    got.map_err(|err| kind(&err)),
                    row.expect.through_store(&row.op),
                    "{case}: {:?}",
                    row.op
                );
            }
        }
        self.check_after(row, family, &before, sets, &case).await
    }

    async fn check_after(
        &mut self,
        row: &Row,
        family: FamilyId,
        before: &Snapshot,
        sets: u64,
        case: &str,
    ) -> anyhow::Result<()> {
        let key = self.family_key(family);
        let after = self.snapshot(&key).await?;
        match &row.after {
            After::Unchanged | After::NoFamily => {
                let expected = match row.after {
                    After::NoFamily => (None, -2),
                    _ => before.clone(),
                };
                assert_eq!(after, expected, "{case}: the family changed");
                assert_eq!(self.set_calls().await?, sets, "{case}: wrote something");
            }
            After::Rewritten => {
                assert_eq!(after, *before, "{case}: the family changed");
                let written = self.set_calls().await? - sets;
                assert_eq!(written, 1, "{case}: not written again exactly once");
            }
            After::KeptTtl(record) => {
                let expected = (Some(record.clone()), before.1);
                assert_eq!(after, expected, "{case}: the record, or its deadline moved");
                self.assert_readable(family, record, case).await?;
            }
            After::NewTtl(record, ttl) => {
                assert_eq!(after.0.as_ref(), Some(record), "{case}: the record");
                let pttl = self.pttl(&key).await?;
                assert!(ttl.contains(&pttl), "{case}: PTTL {pttl} not in {ttl:?}");
                self.assert_readable(family, record, case).await?;
            }
        }
        Ok(())
    }

    /// Rust decodes `record` and encodes it back unchanged, and the store reads the same.
    async fn assert_readable(
        &self,
        family: FamilyId,
        record: &str,
        case: &str,
    ) -> anyhow::Result<()> {
        let decoded = family_record::decode(record)?;
        assert_eq!(
            family_record::encode(&decoded),
            record,
            "{case}: encoded back"
        );
        let read = self.store.family(family).await?;
        assert_eq!(read, Some(decoded), "{case}: the store's read");
        Ok(())
    }
}

fn store_over(url: &str, high_water_permille: u32) -> Result<RedisStore, StoreError> {
    RedisStore::new(&StoreConfig {
        url: url.to_owned(),
        pool_size: 2,
        timeout: Duration::from_secs(5),
        key_prefix: "s:".into(),
        replica_wait: None,
        high_water_permille,
    })
}

/// `argv` with the 1-based `slots` set to other text (slots past its end are added, the gap
/// filled with empty strings).
pub fn changed<S: AsRef<str>>(mut argv: Vec<String>, slots: &[(usize, S)]) -> Vec<String> {
    for (slot, value) in slots {
        if argv.len() < *slot {
            argv.resize(*slot, String::new());
        }
        argv[slot - 1] = value.as_ref().to_owned();
    }
    argv
}

pub fn scopes() -> Scopes {
    Scopes::parse("scopes", &["write", "read"]).expect("valid scopes")
}

/// The standard family's record at generation `g`, rotated at `t` and signed by `k`, with
/// status `st` ("a", or [`status`]):
/// `<generation> <rotated at> <key id> <absolute expiry> <status> <client id> <scopes>`.
pub fn rec(g: u64, t: u64, k: &str, st: &str) -> String {
    format!("{g} {t} {k} {ABSOLUTE} {st} {CLIENT} read write")
}

/// The record `issue.lua` writes for the standard family.
pub fn standard_record() -> String {
    rec(1, NOW, "k1", "a")
}

/// A revoked family's status: `r:<reason>:<revoked at>`.
pub fn status(reason: &str, at: u64) -> String {
    format!("r:{reason}:{at}")
}

// ---------------------------------------------------------------------------------------------
// The calls

/// A call of issue.lua (ARGV: client, scopes, now, key id, absolute lifetime, idle TTL).
#[derive(Debug, Clone, Copy)]
pub struct Issue {
    pub client: &'static str,
    pub scopes: &'static str,
    pub now: u64,
    pub key: &'static str,
    pub lifetime: u64,
    pub idle: u64,
}

/// The standard family: client `web`, scopes `read write`, issued at `NOW` with key `k1`,
/// lifetime `LIFETIME`, idle TTL `IDLE`.
pub const fn issue() -> Issue {
    Issue {
        client: CLIENT,
        scopes: "read write",
        now: NOW,
        key: "k1",
        lifetime: LIFETIME,
        idle: IDLE,
    }
}

#[rustfmt::skip]
impl Issue {
    pub const fn by(self, client: &'static str) -> Self { Self { client, ..self } }
    pub const fn scopes(self, scopes: &'static str) -> Self { Self { scopes, ..self } }
    pub const fn at(self, now: u64) -> Self { Self { now, ..self } }
    pub const fn key(self, key: &'static str) -> Self { Self { key, ..self } }
    pub const fn lifetime(self, lifetime: u64) -> Self { Self { lifetime, ..self } }
    pub const fn idle(self, idle: u64) -> Self { Self { idle, ..self } }
}

impl Issue {
    pub fn new_family(&self, family: FamilyId) -> NewFamily {
        NewFamily {
            family,
            client_id: self.client.into(),
            scopes: Scopes::from_space_separated(self.scopes).expect("valid scopes"),
            fixed_now_ms: Some(self.now),
            key_id: self.key.into(),
            absolute_ttl_ms: self.lifetime,
            idle_ttl_ms: self.idle,
        }
    }
}

/// A call of rotate.lua (ARGV: p, client, now, grace, idle TTL, key id, policy[, stamp]).
#[derive(Debug, Clone, Copy)]
pub struct Rotate {
    pub p: u64,
    pub now: u64,
    pub client: &'static str,
    pub grace: u64,
    pub idle: u64,
    pub key: &'static str,
    pub policy: ReusePolicy,
    /// ARGV[8], when the request reached the service; `None` leaves it out (the script then
    /// takes now). Through the store, `None` sends now.
    pub stamp: Option<u64>,
    /// ARGV[9], the access mask a new generation carries; `None` leaves it out (all scopes).
    pub mask: Option<u64>,
}

/// A refresh presenting generation `p` at `now` by the owning client, with the standard grace,
/// idle TTL and policy, signing with `k2`.
pub const fn rotate(p: u64, now: u64) -> Rotate {
    Rotate {
        p,
        now,
        client: CLIENT,
        grace: GRACE,
        idle: IDLE,
        key: "k2",
        policy: ReusePolicy::RevokeFamily,
        stamp: None,
        mask: None,
    }
}

#[rustfmt::skip]
impl Rotate {
    pub const fn by(self, client: &'static str) -> Self { Self { client, ..self } }
    pub const fn grace(self, grace: u64) -> Self { Self { grace, ..self } }
    pub const fn idle(self, idle: u64) -> Self { Self { idle, ..self } }
    pub const fn key(self, key: &'static str) -> Self { Self { key, ..self } }
    pub const fn reject_only(self) -> Self { Self { policy: ReusePolicy::RejectOnly, ..self } }
    pub const fn stamp(self, stamp: u64) -> Self { Self { stamp: Some(stamp), ..self } }
    pub const fn narrowed(self, mask: u64) -> Self { Self { mask: Some(mask), ..self } }
}

impl Rotate {
    pub fn request(&self, family: FamilyId) -> RotateRequest<'static> {
        RotateRequest {
            family,
            presented_generation: self.p,
            client_id: self.client,
            fixed_now_ms: Some(self.now),
            stamp_ms: self.stamp.unwrap_or(self.now),
            grace_ms: self.grace,
            idle_ttl_ms: self.idle,
            signing_key_id: self.key,
            reuse_policy: self.policy,
            access_scope_mask: self.mask,
        }
    }
}

/// A call of revoke.lua (ARGV: client, reason, now).
#[derive(Debug, Clone, Copy)]
pub struct Revoke {
    pub client: &'static str,
    pub reason: &'static str,
    pub now: u64,
}

/// The owning client revokes the family at `now`, for "logout".
pub const fn revoke(now: u64) -> Revoke {
    Revoke {
        client: CLIENT,
        reason: "logout",
        now,
    }
}

#[rustfmt::skip]
impl Revoke {
    pub const fn by(self, client: &'static str) -> Self { Self { client, ..self } }
    pub const fn reason(self, reason: &'static str) -> Self { Self { reason, ..self } }
}

/// One family script call.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Issue(Issue),
    Rotate(Rotate),
    Revoke(Revoke),
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Issue(_) => "issue.lua",
            Op::Rotate(_) => "rotate.lua",
            Op::Revoke(_) => "revoke.lua",
        }
    }

    pub fn script(&self) -> &'static Script {
        match self {
            Op::Issue(_) => &script::issue::SCRIPT,
            Op::Rotate(_) => &script::rotate::SCRIPT,
            Op::Revoke(_) => &script::revoke::SCRIPT,
        }
    }

    /// The script's arguments, as the store would send them.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Op::Issue(i) => args![i.client, i.scopes, i.now, i.key, i.lifetime, i.idle],
            Op::Rotate(r) => {
                let mut argv = args![r.p, r.client, r.now, r.grace, r.idle, r.key];
                argv.push(r.policy.as_str().to_owned());
                argv.extend(r.stamp.map(|stamp| stamp.to_string()));
                if let Some(mask) = r.mask {
                    if r.stamp.is_none() {
                        argv.push(String::new());
                    }
                    argv.push(mask.to_string());
                }
                argv
            }
            Op::Revoke(r) => args![r.client, r.reason, r.now],
        }
    }
}

#[rustfmt::skip]
impl From<Issue> for Op { fn from(call: Issue) -> Self { Op::Issue(call) } }
#[rustfmt::skip]
impl From<Rotate> for Op { fn from(call: Rotate) -> Self { Op::Rotate(call) } }
#[rustfmt::skip]
impl From<Revoke> for Op { fn from(call: Revoke) -> Self { Op::Revoke(call) } }

// ---------------------------------------------------------------------------------------------
// Rows

/// What happened to a family before a row's call, and the record that must leave.
#[derive(Debug, Clone)]
pub struct Past {
    steps: Vec<Step>,
    record: Option<String>,
}

#[derive(Debug, Clone)]
enum Step {
    Call(Op),
    /// A record written as is (`SET ... PX <hour>`), as no script would write it.
    Write(String),
}

impl Past {
    /// Then `op`, which leaves `record`.
    pub fn then(mut self, op: impl Into<Op>, record: String) -> Self {
        self.steps.push(Step::Call(op.into()));
        self.record = Some(record);
        self
    }
}

/// No family at all.
pub fn no_family() -> Past {
    Past {
        steps: vec![],
        record: None,
    }
}

/// The family issue.lua makes of `issue`, which leaves `record`.
pub fn issued_as(issue: Issue, record: String) -> Past {
    no_family().then(issue, record)
}

/// The standard family, just issued.
pub fn issued() -> Past {
    issued_as(issue(), standard_record())
}

/// The standard family rotated once, at `T1`: generation 2, key k2.
pub fn once() -> Past {
    issued().then(rotate(1, T1), rec(2, T1, "k2", "a"))
}

/// The standard family rotated twice, at `T1` and `T2`: generation 3.
pub fn twice() -> Past {
    once().then(rotate(2, T2), rec(3, T2, "k2", "a"))
}

/// A family key holding `record` as written, not by a script.
pub fn written(record: &str) -> Past {
    Past {
        steps: vec![Step::Write(record.into())],
        record: Some(record.into()),
    }
}

/// What a call answers.
#[derive(Debug, Clone)]
pub enum Expect {
    /// issue.lua: `{"created", now, absolute expiry}`; the store: generation 1 of the family.
    Created {
        now: u64,
        expiry: u64,
    },
    /// issue.lua past the high-water mark: `{"store_full"}`; the store: full.
    StoreFull,
    Rotate(RotateOutcome),
    Revoke(RevokeOutcome),
    /// An error reply containing this text; through the store, a broken invariant (corrupt).
    Error(&'static str),
}

pub fn created(now: u64, expiry: u64) -> Expect {
    Expect::Created { now, expiry }
}

/// Generation `g` of the standard family, rotated at `t` and signed by `k`.
pub fn current(g: u64, t: u64, k: &str) -> Current {
    Current {
        generation: g,
        rotated_at_ms: t,
        key_id: k.into(),
        scopes: scopes(),
        absolute_expiry_ms: ABSOLUTE,
        access_scope_mask: None,
    }
}

/// The generation whose pair the caller gets, of a family expiring at `expiry`.
pub fn issued_until(rotation: Rotation, g: u64, t: u64, k: &str, expiry: u64) -> Expect {
    let current = Current {
        absolute_expiry_ms: expiry,
        ..current(g, t, k)
    };
    Expect::Rotate(RotateOutcome::Issued(rotation, current))
}

impl Expect {
    /// The issued generation's access token carries `mask` of the family's scopes.
    pub fn masked(self, mask: u64) -> Self {
        match self {
            Expect::Rotate(RotateOutcome::Issued(rotation, current)) => {
                Expect::Rotate(RotateOutcome::Issued(
                    rotation,
                    Current {
                        access_scope_mask: Some(mask),
                        ..current
                    },
                ))
            }
            other => panic!("only an issued generation has an access mask: {other:?}"),
        }
    }
}

pub fn rotated(g: u64, t: u64, k: &str) -> Expect {
    issued_until(Rotation::Rotated, g, t, k, ABSOLUTE)
}

pub fn replayed(g: u64, t: u64, k: &str) -> Expect {
    issued_until(Rotation::Replayed, g, t, k, ABSOLUTE)
}

pub fn rolled_forward(g: u64, t: u64, k: &str) -> Expect {
    issued_until(Rotation::RolledForward, g, t, k, ABSOLUTE)
}

#[rustfmt::skip]
impl From<RotateOutcome> for Expect { fn from(o: RotateOutcome) -> Self { Expect::Rotate(o) } }
#[rustfmt::skip]
impl From<RevokeOutcome> for Expect { fn from(o: RevokeOutcome) -> Self { Expect::Revoke(o) } }

/// The typed answer of the store.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Created(Current),
    Rotate(RotateOutcome),
    Revoke(RevokeOutcome),
}

impl Answer {
    /// The answer in the words of the script's reply.
    fn reply(self) -> Vec<String> {
        let expect = match self {
            Answer::Created(c) => created(c.rotated_at_ms, c.absolute_expiry_ms),
            Answer::Rotate(outcome) => Expect::Rotate(outcome),
            Answer::Revoke(outcome) => Expect::Revoke(outcome),
        };
        expect.script_reply().expect("an answer is no error")
    }
}

impl Expect {
    /// The script's reply (its header is the contract), or the text of its error.
    fn script_reply(&self) -> Result<Vec<String>, &'static str> {
        Ok(match self {
            Expect::Created { now, expiry } => args!["created", now, expiry],
            Expect::StoreFull => args!["store_full"],
            Expect::Rotate(RotateOutcome::Issued(rotation, c)) => {
                let scopes = c.scopes.to_space_separated();
                let (g, t, x) = (c.generation, c.rotated_at_ms, c.absolute_expiry_ms);
                let mask = c
                    .access_scope_mask
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                args![rotation.as_str(), g, t, c.key_id, scopes, x, mask]
            }
            Expect::Rotate(refusal) => args![match refusal {
                RotateOutcome::Expired => "expired",
                RotateOutcome::Revoked => "revoked",
                RotateOutcome::ClientMismatch => "client_mismatch",
                RotateOutcome::Reused(Reuse::FamilyRevoked) => "reused_revoked",
                RotateOutcome::Reused(Reuse::Refused) => "reused_rejected",
                RotateOutcome::Reused(Reuse::StaleDuplicate) => "reused_stale",
                RotateOutcome::Issued(..) => unreachable!(),
            }],
            Expect::Revoke(outcome) => args![match outcome {
                RevokeOutcome::Revoked => "revoked",
                RevokeOutcome::AlreadyRevoked => "already_revoked",
                RevokeOutcome::NotFound => "not_found",
                RevokeOutcome::ClientMismatch => "client_mismatch",
            }],
            Expect::Error(text) => return Err(text),
        })
    }

    /// The store's answer to `op`, or the kind of its error.
    fn through_store(&self, op: &Op) -> Result<Answer, &'static str> {
        match (self, op) {
            (Expect::Created { now, expiry }, Op::Issue(issue)) => Ok(Answer::Created(Current {
                generation: 1,
                rotated_at_ms: *now,
                key_id: issue.key.into(),
                scopes: Scopes::from_space_separated(issue.scopes).expect("valid scopes"),
                absolute_expiry_ms: *expiry,
                access_scope_mask: None,
            })),
            (Expect::Rotate(outcome), _) => Ok(Answer::Rotate(outcome.clone())),
            (Expect::Revoke(outcome), _) => Ok(Answer::Revoke(*outcome)),
            (Expect::StoreFull, _) => Err("full"),
            (Expect::Error(_), _) => Err("corrupt"),
            (Expect::Created { .. }, _) => unreachable!("only issue.lua creates"),
        }
    }
}

/// The kind of a store error, as [`Expect::through_store`] names it.
fn kind(err: &StoreError) -> &'static str {
    match err {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Full(_) => "full",
        StoreError::Corrupt(_) => "corrupt",
    }
}

/// The family key after the call.
#[derive(Debug, Clone)]
pub enum After {
    /// Nothing written (no SET ran): record and deadline as before.
    Unchanged,
    /// Written again exactly as it was (one SET), so that a WAIT after a retry covers it.
    Rewritten,
    /// No key, and nothing written.
    NoFamily,
    /// This record under the deadline it had (KEEPTTL: revocations).
    KeptTtl(String),
    /// This record with its TTL set again, PTTL (ms) within the range.
    NewTtl(String, RangeInclusive<i64>),
}

/// One case of a table: see the module's documentation.
#[derive(Debug)]
pub struct Row {
    case: String,
    past: Past,
    op: Op,
    args: Vec<(usize, String)>,
    expect: Expect,
    after: After,
}

pub fn row(
    case: impl Into<String>,
    past: Past,
    op: impl Into<Op>,
    expect: impl Into<Expect>,
    after: After,
) -> Row {
    Row {
        case: case.into(),
        past,
        op: op.into(),
        args: vec![],
        expect: expect.into(),
        after,
    }
}

impl Row {
    /// Sets ARGV slots (1-based) to raw text; the row then runs through the script only.
    pub fn args<S: AsRef<str>>(mut self, slots: &[(usize, S)]) -> Self {
        let slots = slots
            .iter()
            .map(|(slot, value)| (*slot, value.as_ref().to_owned()));
        self.args.extend(slots);
        self
    }
}

/// Which way a call goes: directly to the script, or through [`RedisStore`]'s typed API.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Script,
    Store,
}
