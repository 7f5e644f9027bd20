//! The machinery under the tables of `scripts.rs`: a harness around one redis-server, the
//! script calls a row can make, what a row expects, and the loop that runs the rows.
//!
//! A family is a field of its subject's hash (`KeyLayout::subject`), beside the subject's
//! revocation markers (`!`, `!<client id>`). A row names its case, the hash as the call finds
//! it ([`Past`]: script calls, and the record and other fields they must leave), the call
//! ([`Op`], with [`Row::args`] for argument slots the typed API cannot express), the reply
//! ([`Expect`]) and the family after it ([`After`]): the field's record, the rest of the hash,
//! and the hash's TTL (unchanged, extended, kept). Every row runs twice, each time on a subject
//! and family of its own: through the script with the row's own arguments, checking the exact
//! reply, and through [`RedisStore`], checking the typed answer (rows with raw argument slots,
//! and `revoke_subject.lua`, whose store operation also sweeps, run through the script only).
//! Every failure names the row.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use deadpool_redis::redis::{self, RedisError, Script, Value, aio::MultiplexedConnection};
use test_support::RedisServer;
use token_core::store::{
    Current, FamilyState, NewFamily, Reuse, RevokeOutcome, RotateOutcome, RotateRequest, Rotation,
};
use token_core::{FamilyId, ReusePolicy, Store, StoreError};
use token_store::{RedisStore, StoreConfig, family_record, script};

pub use crate::reply::assert_invalid;
use crate::reply::texts;
pub use token_store::family_record::b36;

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
/// The standard family's scope mask: both of the client's two scopes.
pub const MASK: u64 = 0b11;

/// The placeholders a row's hash names its two families by (their ids are random per run).
pub const FAMILY: &str = "<family>";
pub const SIBLING: &str = "<sibling>";

/// Script arguments, each as `Display` writes it.
macro_rules! args {
    ($($arg:expr),* $(,)?) => { vec![$(($arg).to_string()),*] };
}

/// A Redis hash as HGETALL reads it.
pub type Hash = BTreeMap<String, String>;

/// A subject's hash (its family ids replaced by [`FAMILY`] and [`SIBLING`]) and its
/// `PEXPIRETIME` (-1: no expiry, -2: no key).
pub type Snapshot = (Hash, i64);

/// A family's place: its subject, its id, and the subject's hash.
#[derive(Debug, Clone)]
pub struct At {
    pub subject: String,
    pub family: FamilyId,
    pub key: String,
}

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

    pub fn subject_key(&self, subject: &str) -> String {
        self.store.keys().subject(subject)
    }

    /// A new family of a new subject.
    pub fn fresh(&self) -> At {
        let family = FamilyId::random();
        self.place(&format!("user-{family}"), family)
    }

    /// `family` in `subject`'s hash.
    pub fn place(&self, subject: &str, family: FamilyId) -> At {
        At {
            subject: subject.to_owned(),
            family,
            key: self.subject_key(subject),
        }
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

    pub async fn hgetall(&mut self, key: &str) -> anyhow::Result<Hash> {
        self.cmd(&["HGETALL", key]).await
    }

    /// The family's record, `None` if its field is absent. Fails on a key of another type
    /// (WRONGTYPE).
    pub async fn get(&mut self, at: &At) -> anyhow::Result<Option<String>> {
        self.cmd(&["HGET", &at.key, &at.family.to_string()]).await
    }

    /// The family's record, which must exist.
    pub async fn record(&mut self, at: &At) -> anyhow::Result<String> {
        self.get(at)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no family record at {at:?}"))
    }

    /// The family as Rust decodes its record.
    pub async fn decoded(&mut self, at: &At) -> anyhow::Result<FamilyState> {
        Ok(family_record::decode(&self.record(at).await?)?)
    }

    /// `PEXPIRETIME`: the key's absolute expiry deadline, ms since the epoch (-1: none, -2: no
    /// key). Unlike `PTTL` it does not move with the wall clock, so comparisons are exact.
    pub async fn deadline(&mut self, key: &str) -> anyhow::Result<i64> {
        self.cmd(&["PEXPIRETIME", key]).await
    }

    /// The whole hash, its family ids named [`FAMILY`] and `sibling`'s [`SIBLING`], and its
    /// deadline: two equal snapshots mean neither the state nor the TTL changed.
    pub async fn snapshot(
        &mut self,
        at: &At,
        sibling: Option<FamilyId>,
    ) -> anyhow::Result<Snapshot> {
        let (family, sibling) = (at.family.to_string(), sibling.map(|s| s.to_string()));
        let hash = self
            .hgetall(&at.key)
            .await?
            .into_iter()
            .map(|(field, value)| match field {
                f if f == family => (FAMILY.to_owned(), value),
                f if Some(&f) == sibling.as_ref() => (SIBLING.to_owned(), value),
                f => (f, value),
            })
            .collect();
        Ok((hash, self.deadline(&at.key).await?))
    }

    /// How many times Redis has run each writing command a family script uses, scripts' calls
    /// included (`INFO commandstats`): HSET, HDEL, PEXPIRE, SET, DEL.
    pub async fn writes(&mut self) -> anyhow::Result<BTreeMap<&'static str, u64>> {
        let stats: String = self.cmd(&["INFO", "commandstats"]).await?;
        let mut writes = BTreeMap::new();
        for command in ["hset", "hdel", "pexpire", "set", "del"] {
            let prefix = format!("cmdstat_{command}:calls=");
            let calls = stats
                .lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .and_then(|rest| rest.split(',').next())
                .map_or(Ok(0), str::parse)?;
            writes.insert(command, calls);
        }
        Ok(writes)
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

    /// Makes the call `op` directly on the family at `at`, with its standard arguments.
    pub async fn call(&mut self, op: impl Into<Op>, at: &At) -> Result<Vec<String>, RedisError> {
        let op = op.into();
        self.invoke(op.script(), &at.key, &op.argv(at.family)).await
    }

    /// Creates the standard family (see [`issue`]) at `at` through the store.
    pub async fn issue(&mut self, at: &At) -> anyhow::Result<()> {
        self.store.create_family(&issue().new_family(at)).await?;
        Ok(())
    }

    /// Makes the call `op` through the store's typed API.
    pub async fn through_store(&self, op: &Op, at: &At) -> Result<Answer, StoreError> {
        Ok(match op {
            Op::Issue(i) => Answer::Created(self.store.create_family(&i.new_family(at)).await?),
            Op::Rotate(r) => Answer::Rotate(self.store.rotate(&r.request(at)).await?),
            Op::Revoke(r) => Answer::Revoke(
                self.store
                    .revoke(&at.subject, at.family, r.client, r.reason, Some(r.now))
                    .await?,
            ),
            Op::Read => Answer::Read(self.store.family(&at.subject, at.family).await?),
            Op::RevokeSubject(_) => unreachable!("revoke_subject.lua rows run as scripts only"),
        })
    }

    /// Makes the call `op` on `at` with '' for now (ARGV[3]), so that the script reads
    /// Redis's clock; through the store as production makes it (no fixed now, a refresh
    /// stamped on Redis's clock). Answers with the script's reply, or the store's as one.
    pub async fn on_redis_clock(
        &mut self,
        op: impl Into<Op>,
        at: &At,
        via: Via,
    ) -> anyhow::Result<Vec<String>> {
        let op = op.into();
        let answer = match (via, op) {
            (Via::Script, _) => {
                let argv = changed(op.argv(at.family), &[(3, "")]);
                return Ok(self.invoke(op.script(), &at.key, &argv).await?);
            }
            (Via::Store, Op::Issue(i)) => {
                let new = NewFamily {
                    fixed_now_ms: None,
                    ..i.new_family(at)
                };
                Answer::Created(self.store.create_family(&new).await?)
            }
            (Via::Store, Op::Rotate(r)) => {
                let stamp_ms = self.redis_time().await?;
                let request = RotateRequest {
                    fixed_now_ms: None,
                    stamp_ms,
                    ..r.request(at)
                };
                Answer::Rotate(self.store.rotate(&request).await?)
            }
            (Via::Store, Op::Revoke(r)) => {
                let revoked = self
                    .store
                    .revoke(&at.subject, at.family, r.client, r.reason, None);
                Answer::Revoke(revoked.await?)
            }
            (Via::Store, other) => unreachable!("not a timed call: {other:?}"),
        };
        Ok(answer.reply())
    }

    /// Runs every row through the script and, where the typed API can express it, the store.
    pub async fn run(&mut self, rows: &[Row]) -> anyhow::Result<()> {
        for row in rows {
            self.run_row(row, Via::Script).await?;
            if row.args.is_empty() && !matches!(row.op, Op::RevokeSubject(_)) {
                self.run_row(row, Via::Store).await?;
            }
        }
        Ok(())
    }

    async fn run_row(&mut self, row: &Row, via: Via) -> anyhow::Result<()> {
        let case = format!("row {:?} through the {via:?}", row.case);
        let at = self.fresh();
        let sibling = self.place(&at.subject, FamilyId::random());
        for step in &row.past.steps {
            let done = match step {
                Step::Call(op) => self.call(*op, &at).await.map(drop),
                Step::Sibling(op) => self.call(*op, &sibling).await.map(drop),
                Step::Write(record) => {
                    redis::pipe()
                        .cmd("HSET")
                        .arg(&at.key)
                        .arg(at.family.to_string())
                        .arg(record)
                        .cmd("PEXPIRE")
                        .arg(&at.key)
                        .arg(HOUR)
                        .query_async::<()>(&mut self.conn)
                        .await
                }
            };
            done.map_err(|err| anyhow::anyhow!("{case}: setting up the family: {err}"))?;
        }
        let before = self.snapshot(&at, Some(sibling.family)).await?;
        assert_eq!(
            before.0,
            row.past.hash(),
            "{case}: the subject's hash before the call"
        );
        assert!(
            before.0.is_empty() || before.1 > 0,
            "{case}: a subject's hash without a deadline: {before:?}"
        );
        let writes = self.writes().await?;

        match via {
            Via::Script => {
                let argv = changed(row.op.argv(at.family), &row.args);
                let got = self.invoke(row.op.script(), &at.key, &argv).await;
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
                let got = self.through_store(&row.op, &at).await;
                assert_eq!(
                    got.map_err(|err| kind(&err)),
                    row.expect.through_store(&row.op),
                    "{case}: {:?}",
                    row.op
                );
            }
        }
        self.check_after(row, &at, sibling.family, &before, &writes, &case)
            .await
    }

    async fn check_after(
        &mut self,
        row: &Row,
        at: &At,
        sibling: FamilyId,
        before: &Snapshot,
        writes: &BTreeMap<&'static str, u64>,
        case: &str,
    ) -> anyhow::Result<()> {
        let after = self.snapshot(at, Some(sibling)).await?;
        let now_writes = self.writes().await?;
        let written: BTreeMap<&str, u64> = now_writes
            .iter()
            .map(|(command, n)| (*command, n - writes[command]))
            .filter(|(_, n)| *n > 0)
            .collect();
        let with = |field: &str, value: Option<&String>| {
            let mut hash = before.0.clone();
            match value {
                Some(value) => hash.insert(field.to_owned(), value.clone()),
                None => hash.remove(field),
            };
            hash
        };
        match &row.after {
            After::Unchanged | After::NoFamily => {
                let expected = match row.after {
                    After::NoFamily => (Hash::new(), -2),
                    _ => before.clone(),
                };
                assert_eq!(after, expected, "{case}: the subject's hash changed");
                assert_eq!(written, BTreeMap::new(), "{case}: wrote something");
            }
            After::Rewritten => {
                assert_eq!(after, *before, "{case}: the subject's hash changed");
                let hset = BTreeMap::from([("hset", 1)]);
                assert_eq!(written, hset, "{case}: not written again exactly once");
            }
            After::KeptTtl(record) => {
                let expected = (with(FAMILY, Some(record)), before.1);
                assert_eq!(
                    after, expected,
                    "{case}: the record, the other fields, or the deadline"
                );
                // `extend_ttl` may send PEXPIRE GT / NX that change nothing: the deadline,
                // compared above, is what must not move.
                assert_eq!(written.get("hset"), Some(&1), "{case}: {written:?}");
                self.assert_readable(at, record, &after.0, case).await?;
            }
            After::Extended(record, ttl) => {
                assert_eq!(
                    after.0,
                    with(FAMILY, Some(record)),
                    "{case}: the record or the other fields"
                );
                self.assert_extended(at, before.1, after.1, ttl, case)
                    .await?;
                self.assert_readable(at, record, &after.0, case).await?;
            }
            After::Removed => {
                let hash = with(FAMILY, None);
                let deadline = if hash.is_empty() { -2 } else { before.1 };
                assert_eq!(
                    after,
                    (hash, deadline),
                    "{case}: the field not just removed"
                );
                let hdel = BTreeMap::from([("hdel", 1)]);
                assert_eq!(written, hdel, "{case}: not one HDEL");
            }
            After::Exactly(hash, ttl) => {
                assert_eq!(&after.0, hash, "{case}: the subject's hash");
                self.assert_extended(at, before.1, after.1, ttl, case)
                    .await?;
            }
            After::Marked(field, at_ms) => {
                let expected = (with(field, Some(&b36(*at_ms))), before.1);
                assert_eq!(after, expected, "{case}: the marker, or something else");
                let hset = BTreeMap::from([("hset", 1)]);
                assert_eq!(written, hset, "{case}: not one HSET");
            }
        }
        Ok(())
    }

    /// The hash's TTL lies in `ttl`, and its deadline (PEXPIRETIME) never moved back.
    async fn assert_extended(
        &mut self,
        at: &At,
        before: i64,
        after: i64,
        ttl: &RangeInclusive<i64>,
        case: &str,
    ) -> anyhow::Result<()> {
        let pttl = self.pttl(&at.key).await?;
        assert!(ttl.contains(&pttl), "{case}: PTTL {pttl} not in {ttl:?}");
        assert!(
            after >= before,
            "{case}: the deadline moved back: {before} -> {after}"
        );
        Ok(())
    }

    /// Rust decodes `record` and encodes it back unchanged, and the store reads the same, with
    /// the markers of `hash` applied.
    async fn assert_readable(
        &self,
        at: &At,
        record: &str,
        hash: &Hash,
        case: &str,
    ) -> anyhow::Result<()> {
        let decoded = family_record::decode(record)?;
        assert_eq!(
            family_record::encode(&decoded),
            record,
            "{case}: encoded back"
        );
        let marker = marker_for(hash, &decoded.client_id);
        let read = self.store.family(&at.subject, at.family).await?;
        assert_eq!(
            read,
            Some(family_record::apply_marker(decoded, marker)),
            "{case}: the store's read"
        );
        Ok(())
    }
}

/// The latest marker of `hash` that applies to families of `client` (0: none).
pub fn marker_for(hash: &Hash, client: &str) -> u64 {
    [String::from("!"), format!("!{client}")]
        .iter()
        .filter_map(|field| hash.get(field))
        .map(|at| family_record::from_b36(at).expect("a marker is a time"))
        .max()
        .unwrap_or(0)
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

/// A record as the prelude writes it: `<g>[/<access mask>] <rotated at> <key id> <issued at>
/// <absolute expiry> <status> <client id> <scope mask>`, times in base 36, the scope mask in hex.
#[allow(clippy::too_many_arguments)]
pub fn record(
    g: u64,
    mask: Option<u64>,
    t: u64,
    k: &str,
    i: u64,
    x: u64,
    st: &str,
    c: &str,
    sc: u64,
) -> String {
    let g = match mask {
        Some(mask) => format!("{g}/{mask}"),
        None => g.to_string(),
    };
    format!("{g} {} {k} {} {} {st} {c} {sc:x}", b36(t), b36(i), b36(x))
}

/// The standard family's record at generation `g`, rotated at `t` and signed by `k`, with
/// status `st` ("a", or [`status`]).
pub fn rec(g: u64, t: u64, k: &str, st: &str) -> String {
    record(g, None, t, k, NOW, ABSOLUTE, st, CLIENT, MASK)
}

/// The record `issue.lua` writes for the standard family.
pub fn standard_record() -> String {
    rec(1, NOW, "k1", "a")
}

/// A revoked family's status: `r:<reason>:<revoked at, base 36>`.
pub fn status(reason: &str, at: u64) -> String {
    format!("r:{reason}:{}", b36(at))
}

// ---------------------------------------------------------------------------------------------
// The calls

/// A call of issue.lua (ARGV: client, scope mask, now, key id, absolute lifetime, idle TTL,
/// high-water mark (''), family id).
#[derive(Debug, Clone, Copy)]
pub struct Issue {
    pub client: &'static str,
    pub mask: u64,
    pub now: u64,
    pub key: &'static str,
    pub lifetime: u64,
    pub idle: u64,
}

/// The standard family: client `web`, scope mask [`MASK`], issued at `NOW` with key `k1`,
/// lifetime `LIFETIME`, idle TTL `IDLE`.
pub const fn issue() -> Issue {
    Issue {
        client: CLIENT,
        mask: MASK,
        now: NOW,
        key: "k1",
        lifetime: LIFETIME,
        idle: IDLE,
    }
}

#[rustfmt::skip]
impl Issue {
    pub const fn by(self, client: &'static str) -> Self { Self { client, ..self } }
    pub const fn mask(self, mask: u64) -> Self { Self { mask, ..self } }
    pub const fn at(self, now: u64) -> Self { Self { now, ..self } }
    pub const fn key(self, key: &'static str) -> Self { Self { key, ..self } }
    pub const fn lifetime(self, lifetime: u64) -> Self { Self { lifetime, ..self } }
    pub const fn idle(self, idle: u64) -> Self { Self { idle, ..self } }
}

impl Issue {
    pub fn new_family(&self, at: &At) -> NewFamily {
        NewFamily {
            family: at.family,
            subject: at.subject.clone(),
            client_id: self.client.into(),
            scope_mask: self.mask,
            fixed_now_ms: Some(self.now),
            key_id: self.key.into(),
            absolute_ttl_ms: self.lifetime,
            idle_ttl_ms: self.idle,
        }
    }
}

/// A call of rotate.lua (ARGV: p, client, now, grace, idle TTL, key id, policy, stamp, access
/// mask, family id, the presented token's rotation time).
#[derive(Debug, Clone, Copy)]
pub struct Rotate {
    pub p: u64,
    pub now: u64,
    pub client: &'static str,
    pub grace: u64,
    pub idle: u64,
    pub key: &'static str,
    pub policy: ReusePolicy,
    /// ARGV[8], when the request reached the service; `None` sends '' (the script then takes
    /// now). Through the store, `None` sends now.
    pub stamp: Option<u64>,
    /// ARGV[9], the access mask a new generation carries; `None` sends '' (all scopes).
    pub mask: Option<u64>,
    /// ARGV[11], the presented token's rotation time.
    pub presented: u64,
}

/// A refresh presenting generation `p` at `now` by the owning client, with the standard grace,
/// idle TTL and policy, signing with `k2`; its token was rotated at `NOW`.
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
        presented: NOW,
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
    pub const fn presented(self, presented: u64) -> Self { Self { presented, ..self } }
}

impl Rotate {
    pub fn request<'a>(&self, at: &'a At) -> RotateRequest<'a> {
        RotateRequest {
            family: at.family,
            subject: &at.subject,
            presented_generation: self.p,
            presented_rotated_at_ms: self.presented,
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

/// A call of revoke.lua (ARGV: client, reason, now, family id).
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

/// A call of revoke_subject.lua (ARGV: client id or '', now).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub client: Option<&'static str>,
    pub now: u64,
}

/// Revokes every family of the subject issued until `now`.
pub const fn mark_all(now: u64) -> Mark {
    Mark { client: None, now }
}

/// Revokes the subject's families of `client` issued until `now`.
pub const fn mark_client(client: &'static str, now: u64) -> Mark {
    Mark {
        client: Some(client),
        now,
    }
}

impl Mark {
    /// The marker field it writes.
    pub fn field(&self) -> String {
        family_record::marker_field(self.client)
    }
}

/// One script call on a family, or on its subject.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Issue(Issue),
    Rotate(Rotate),
    Revoke(Revoke),
    /// read_family.lua.
    Read,
    RevokeSubject(Mark),
}

/// A call of read_family.lua.
pub const fn read() -> Op {
    Op::Read
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Issue(_) => "issue.lua",
            Op::Rotate(_) => "rotate.lua",
            Op::Revoke(_) => "revoke.lua",
            Op::Read => "read_family.lua",
            Op::RevokeSubject(_) => "revoke_subject.lua",
        }
    }

    pub fn script(&self) -> &'static Script {
        match self {
            Op::Issue(_) => &script::issue::SCRIPT,
            Op::Rotate(_) => &script::rotate::SCRIPT,
            Op::Revoke(_) => &script::revoke::SCRIPT,
            Op::Read => &script::read_family::SCRIPT,
            Op::RevokeSubject(_) => &script::revoke_subject::SCRIPT,
        }
    }

    /// The script's arguments for `family`, as the store would send them.
    pub fn argv(&self, family: FamilyId) -> Vec<String> {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        match self {
            Op::Issue(i) => args![
                i.client,
                format!("{:x}", i.mask),
                i.now,
                i.key,
                i.lifetime,
                i.idle,
                "",
                family
            ],
            Op::Rotate(r) => args![
                r.p,
                r.client,
                r.now,
                r.grace,
                r.idle,
                r.key,
                r.policy.as_str(),
                opt(r.stamp),
                opt(r.mask),
                family,
                r.presented
            ],
            Op::Revoke(r) => args![r.client, r.reason, r.now, family],
            Op::Read => args![family],
            Op::RevokeSubject(m) => args![m.client.unwrap_or(""), m.now],
        }
    }
}

#[rustfmt::skip]
impl From<Issue> for Op { fn from(call: Issue) -> Self { Op::Issue(call) } }
#[rustfmt::skip]
impl From<Rotate> for Op { fn from(call: Rotate) -> Self { Op::Rotate(call) } }
#[rustfmt::skip]
impl From<Revoke> for Op { fn from(call: Revoke) -> Self { Op::Revoke(call) } }
#[rustfmt::skip]
impl From<Mark> for Op { fn from(call: Mark) -> Self { Op::RevokeSubject(call) } }

// ---------------------------------------------------------------------------------------------
// Rows

/// What happened to a subject's hash before a row's call, and what it must hold then.
#[derive(Debug, Clone)]
pub struct Past {
    steps: Vec<Step>,
    /// The row's family's record.
    record: Option<String>,
    /// The hash's other fields: markers, and [`SIBLING`]'s record.
    others: Hash,
}

#[derive(Debug, Clone)]
enum Step {
    /// A call on the row's family (or its subject).
    Call(Op),
    /// A call on another family of the same subject.
    Sibling(Op),
    /// A record written as is (`HSET`, and `PEXPIRE <hour>`), as no script would write it.
    Write(String),
}

impl Past {
    /// Then `op`, which leaves `record`.
    pub fn then(mut self, op: impl Into<Op>, record: String) -> Self {
        self.steps.push(Step::Call(op.into()));
        self.record = Some(record);
        self
    }

    /// Then revoke_subject.lua's `mark`, which leaves its marker at its `now`.
    pub fn marked(mut self, mark: Mark) -> Self {
        self.others.insert(mark.field(), b36(mark.now));
        self.steps.push(Step::Call(mark.into()));
        self
    }

    /// Then `op` on another family of the subject, which leaves `record` there.
    pub fn sibling(mut self, op: impl Into<Op>, record: String) -> Self {
        self.others.insert(SIBLING.to_owned(), record);
        self.steps.push(Step::Sibling(op.into()));
        self
    }

    /// The hash these steps leave.
    fn hash(&self) -> Hash {
        let mut hash = self.others.clone();
        if let Some(record) = &self.record {
            hash.insert(FAMILY.to_owned(), record.clone());
        }
        hash
    }
}

/// No family at all (no hash).
pub fn no_family() -> Past {
    Past {
        steps: vec![],
        record: None,
        others: Hash::new(),
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

/// A family field holding `record` as written, not by a script.
pub fn written(record: &str) -> Past {
    Past {
        steps: vec![Step::Write(record.into())],
        record: Some(record.into()),
        others: Hash::new(),
    }
}

/// A sibling family of `client` issued at `at` (the row's family itself absent).
pub fn sibling_only(client: &'static str, at: u64) -> Past {
    no_family().sibling(issue().by(client).at(at), sibling_record(client, at))
}

/// The record of a sibling family of `client` issued at `at` (standard otherwise).
pub fn sibling_record(client: &str, at: u64) -> String {
    record(1, None, at, "k1", at, at + LIFETIME, "a", client, MASK)
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
    /// read_family.lua: `{record or nil, marker}`; the store: the record with the marker
    /// applied.
    Read(Option<String>, u64),
    /// revoke_subject.lua: `{at, before}`.
    Marked {
        at: u64,
        before: u64,
    },
    /// An error reply containing this text; through the store, a broken invariant (corrupt).
    Error(&'static str),
}

pub fn created(now: u64, expiry: u64) -> Expect {
    Expect::Created { now, expiry }
}

/// read_family.lua finds `record` under `marker` (0: none).
pub fn found(record: String, marker: u64) -> Expect {
    Expect::Read(Some(record), marker)
}

/// revoke_subject.lua's marker at `at`, over what it held `before` (0: none).
pub fn marked(at: u64, before: u64) -> Expect {
    Expect::Marked { at, before }
}

/// Generation `g` of the standard family, rotated at `t` and signed by `k`.
pub fn current(g: u64, t: u64, k: &str) -> Current {
    Current {
        generation: g,
        rotated_at_ms: t,
        key_id: k.into(),
        scope_mask: MASK,
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
    Read(Option<FamilyState>),
}

impl Answer {
    /// The answer in the words of the script's reply.
    fn reply(self) -> Vec<String> {
        let expect = match self {
            Answer::Created(c) => created(c.rotated_at_ms, c.absolute_expiry_ms),
            Answer::Rotate(outcome) => Expect::Rotate(outcome),
            Answer::Revoke(outcome) => Expect::Revoke(outcome),
            Answer::Read(_) => unreachable!("not a timed call"),
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
                let (g, t, x) = (c.generation, c.rotated_at_ms, c.absolute_expiry_ms);
                let mask = c
                    .access_scope_mask
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let scope_mask = format!("{:x}", c.scope_mask);
                args![rotation.as_str(), g, t, c.key_id, scope_mask, x, mask]
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
            // A nil record flattens to nothing.
            Expect::Read(record, marker) => {
                let mut reply: Vec<String> = record.iter().cloned().collect();
                reply.push(marker.to_string());
                reply
            }
            Expect::Marked { at, before } => args![at, before],
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
                scope_mask: issue.mask,
                absolute_expiry_ms: *expiry,
                access_scope_mask: None,
            })),
            (Expect::Rotate(outcome), _) => Ok(Answer::Rotate(outcome.clone())),
            (Expect::Revoke(outcome), _) => Ok(Answer::Revoke(*outcome)),
            (Expect::Read(record, marker), _) => Ok(Answer::Read(record.as_ref().map(|r| {
                let family = family_record::decode(r).expect("a row's record is readable");
                family_record::apply_marker(family, *marker)
            }))),
            (Expect::StoreFull, _) => Err("full"),
            (Expect::Error(_), _) => Err("corrupt"),
            (Expect::Created { .. }, _) => unreachable!("only issue.lua creates"),
            (Expect::Marked { .. }, _) => unreachable!("revoke_subject.lua runs as a script"),
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

/// The subject's hash after the call.
#[derive(Debug, Clone)]
pub enum After {
    /// Nothing written (no HSET, HDEL, PEXPIRE, SET or DEL ran): hash and deadline as before.
    Unchanged,
    /// Written again exactly as it was (one HSET), so that a WAIT after a retry covers it.
    Rewritten,
    /// No hash at all, and nothing written.
    NoFamily,
    /// The family's field holds this record, the other fields and the deadline as they were.
    KeptTtl(String),
    /// The family's field holds this record, the other fields as they were, and the hash's
    /// TTL extended (never shortened) to cover it: PTTL (ms) within the range.
    Extended(String, RangeInclusive<i64>),
    /// The family's field removed (one HDEL), the rest as it was (no hash once empty).
    Removed,
    /// This marker field set to this time (one HSET), everything else as it was.
    Marked(String, u64),
    /// Exactly this hash (families named [`FAMILY`] and [`SIBLING`]), its TTL extended (never
    /// shortened): PTTL (ms) within the range.
    Exactly(Hash, RangeInclusive<i64>),
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
