//! The Lua scripts' own tests, against a real `redis-server` (one per test).
//!
//! Each test drives a script through [`RedisStore`] where the typed API can express the case,
//! and invokes it directly where it cannot (invalid arguments, exact reply strings). Every test
//! checks the outcome *and* the stored state afterwards: a family is one string (the record of
//! [`family_record`], read with `GET`), a client one hash (read with `HGETALL`). "Nothing
//! changed" is checked with a [`Harness::snapshot`]: the whole record plus `PEXPIRETIME`, the
//! absolute deadline of the key, which does not move with the wall clock (unlike `PTTL`), so the
//! comparison is exact and untimed.
//!
//! Time is a script argument, so `now` values are chosen freely; nothing waits. The real TTLs
//! set by these tests are hours or days, so no key can lapse while a test runs.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use deadpool_redis::redis::{self, RedisError, Script, Value, aio::MultiplexedConnection};
use test_support::RedisServer;
use token_core::store::{
    Current, FamilyState, FamilyStatus, NewFamily, Reuse, RevokeOutcome, RotateOutcome,
    RotateRequest, Rotation,
};
use token_core::{Client, ClientType, FamilyId, ReusePolicy, Scopes, Store, StoreError};
use token_store::{RedisStore, StoreConfig, family_record, scripts};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
/// Issue time of the standard family.
const NOW: u64 = 1_700_000_000_000;
/// Idle TTL of the standard family.
const IDLE: u64 = DAY;
/// Absolute lifetime of the standard family.
const LIFETIME: u64 = 30 * DAY;
/// Absolute expiry of the standard family.
const ABSOLUTE: u64 = NOW + LIFETIME;
const GRACE: u64 = 10_000;
const CLIENT: &str = "web";
const OTHER_CLIENT: &str = "mobile";

/// A Redis hash as read by HGETALL (clients).
type Hash = BTreeMap<String, String>;

/// A family key's record (`None`: no key) and its `PEXPIRETIME` (-1: no expiry, -2: no key).
type Snapshot = (Option<String>, i64);

/// One redis-server, the store over it, and a raw connection for direct script calls and reads.
struct Harness {
    store: RedisStore,
    conn: MultiplexedConnection,
    /// Declared last so that it is dropped (killed) after the pool and the connection.
    _redis: RedisServer,
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start();
        let store = RedisStore::new(&StoreConfig {
            url: redis.url(),
            pool_size: 2,
            timeout: Duration::from_secs(5),
            key_prefix: "s:".into(),
            replica_wait: None,
            high_water_permille: token_store::DEFAULT_HIGH_WATER_PERMILLE,
        })?;
        let conn = redis::Client::open(redis.url())?
            .get_multiplexed_async_connection()
            .await?;
        Ok(Self {
            store,
            conn,
            _redis: redis,
        })
    }

    fn family_key(&self, family: FamilyId) -> String {
        self.store.keys().family(family)
    }

    fn client_key(&self, client_id: &str) -> String {
        self.store.keys().client(client_id)
    }

    async fn hgetall(&mut self, key: &str) -> anyhow::Result<Hash> {
        Ok(redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    async fn pttl(&mut self, key: &str) -> anyhow::Result<i64> {
        Ok(redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    async fn exists(&mut self, key: &str) -> anyhow::Result<bool> {
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut self.conn)
            .await?;
        Ok(n == 1)
    }

    /// The raw value of a string key (a family record), `None` if there is no key. Fails on a
    /// key of another type (WRONGTYPE), so a family left as a hash cannot pass for a record.
    async fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    /// The family record at `key`, which must exist.
    async fn record(&mut self, key: &str) -> anyhow::Result<String> {
        self.get(key)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no family record at {key}"))
    }

    /// How many SET commands Redis has run, scripts' included (`INFO commandstats`).
    async fn set_calls(&mut self) -> anyhow::Result<u64> {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        let calls = stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_set:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(Ok(0), str::parse)?;
        Ok(calls)
    }

    /// The family at `key` as Rust decodes its record.
    async fn decoded(&mut self, key: &str) -> anyhow::Result<FamilyState> {
        Ok(family_record::decode(&self.record(key).await?)?)
    }

    /// The whole record and the absolute expiry deadline (`PEXPIRETIME`, ms since the epoch;
    /// -1 for none, -2 for no key). Two equal snapshots mean neither the state nor the TTL
    /// changed.
    async fn snapshot(&mut self, key: &str) -> anyhow::Result<Snapshot> {
        let record = self.get(key).await?;
        Ok((record, self.deadline(key).await?))
    }

    /// `PEXPIRETIME`: the key's absolute expiry deadline, ms since the epoch (-1: none, -2: no
    /// key).
    async fn deadline(&mut self, key: &str) -> anyhow::Result<i64> {
        Ok(redis::cmd("PEXPIRETIME")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    /// Invokes a script directly with arbitrary (possibly invalid) string arguments.
    async fn invoke(
        &mut self,
        script: &Script,
        key: &str,
        args: &[&dyn Display],
    ) -> Result<Vec<String>, RedisError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(arg.to_string());
        }
        invocation
            .invoke_async::<Value>(&mut self.conn)
            .await
            .map(texts)
    }

    /// Creates the standard family (see [`standard_family`]).
    async fn issue(&mut self, family: FamilyId) -> anyhow::Result<String> {
        self.store.create_family(&standard_family(family)).await?;
        Ok(self.family_key(family))
    }

    async fn rotate(&self, request: RotateRequest<'_>) -> anyhow::Result<RotateOutcome> {
        Ok(self.store.rotate(&request).await?)
    }
}

/// A script reply flattened to strings: an array becomes its elements, a scalar one element.
fn texts(value: Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(texts).collect(),
        Value::BulkString(bytes) => vec![String::from_utf8(bytes).expect("UTF-8 reply")],
        Value::SimpleString(text) => vec![text],
        Value::Int(n) => vec![n.to_string()],
        Value::Nil => vec![],
        other => panic!("unexpected reply {other:?}"),
    }
}

fn hash(pairs: &[(&str, &str)]) -> Hash {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn scopes() -> Scopes {
    Scopes::parse("scopes", &["write", "read"]).expect("valid scopes")
}

/// Family at generation 1: client `web`, issued at `NOW`, key `k1`, idle `IDLE`.
fn standard_family(family: FamilyId) -> NewFamily {
    NewFamily {
        family,
        client_id: CLIENT.into(),
        scopes: scopes(),
        fixed_now_ms: Some(NOW),
        key_id: "k1".into(),
        absolute_ttl_ms: LIFETIME,
        idle_ttl_ms: IDLE,
    }
}

/// The record `issue.lua` writes for [`standard_family`]:
/// `<generation> <rotated at> <key id> <absolute expiry> <status> <client id> <scopes>`.
fn standard_record() -> String {
    format!("1 {NOW} k1 {ABSOLUTE} a {CLIENT} read write")
}

/// `hash` with some fields replaced or added.
fn with(mut hash: Hash, changes: &[(&str, &str)]) -> Hash {
    for (k, v) in changes {
        hash.insert((*k).to_owned(), (*v).to_owned());
    }
    hash
}

/// A refresh by the owning client with the standard idle TTL, grace and policy; tests override
/// fields with struct update syntax.
fn refresh(family: FamilyId, presented_generation: u64, now_ms: u64) -> RotateRequest<'static> {
    RotateRequest {
        family,
        presented_generation,
        client_id: CLIENT,
        fixed_now_ms: Some(now_ms),
        stamp_ms: now_ms,
        grace_ms: GRACE,
        idle_ttl_ms: IDLE,
        signing_key_id: "k2",
        reuse_policy: ReusePolicy::RevokeFamily,
    }
}

fn issued(rotation: Rotation, generation: u64, rotated_at_ms: u64, key_id: &str) -> RotateOutcome {
    RotateOutcome::Issued(
        rotation,
        Current {
            generation,
            rotated_at_ms,
            key_id: key_id.into(),
            scopes: scopes(),
            absolute_expiry_ms: ABSOLUTE,
        },
    )
}

fn assert_invalid(result: Result<Vec<String>, RedisError>, expected: &str, case: &str) {
    match result {
        Ok(reply) => panic!("{case}: expected an error reply, got {reply:?}"),
        Err(err) => assert!(
            err.to_string().contains(expected),
            "{case}: expected {expected:?} in the error, got {err}"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// issue.lua

#[tokio::test]
async fn issue_creates_generation_one_with_every_field_and_an_idle_bounded_ttl()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    assert_eq!(key, format!("s:{{{family}}}"));

    assert_eq!(h.record(&key).await?, standard_record());
    // One string key per family, nothing else written.
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut h.conn).await?;
    assert_eq!(keys, 1);
    // The TTL is min(idle, x - now); here idle (1 day) is the smaller.
    let pttl = h.pttl(&key).await?;
    assert!(pttl > 0 && pttl <= IDLE as i64, "PTTL {pttl}");

    // The typed read sees the same family.
    assert_eq!(
        h.store.family(family).await?,
        Some(FamilyState {
            client_id: CLIENT.into(),
            scopes: scopes(),
            generation: 1,
            rotated_at_ms: NOW,
            key_id: "k1".into(),
            status: FamilyStatus::Active,
            absolute_expiry_ms: ABSOLUTE,
        })
    );
    Ok(())
}

#[tokio::test]
async fn issue_ttl_is_capped_by_the_absolute_expiry_when_that_comes_first() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let new = NewFamily {
        absolute_ttl_ms: HOUR,
        ..standard_family(family)
    };
    h.store.create_family(&new).await?;
    let key = h.family_key(family);

    assert_eq!(
        h.record(&key).await?,
        format!("1 {NOW} k1 {} a {CLIENT} read write", NOW + HOUR)
    );
    let pttl = h.pttl(&key).await?;
    assert!(pttl > 0 && pttl <= HOUR as i64, "PTTL {pttl}");
    Ok(())
}

#[tokio::test]
async fn issue_refuses_to_overwrite_an_existing_family() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let before = h.snapshot(&key).await?;

    // Same id, everything else different: the store reports a broken invariant.
    let intruder = NewFamily {
        client_id: OTHER_CLIENT.into(),
        fixed_now_ms: Some(NOW + 5),
        key_id: "k9".into(),
        idle_ttl_ms: 2 * IDLE,
        ..standard_family(family)
    };
    let err = h.store.create_family(&intruder).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    // The script itself answers with an error reply.
    let direct = h
        .invoke(
            &scripts::ISSUE,
            &key,
            &[&OTHER_CLIENT, &"", &(NOW + 5), &"k9", &LIFETIME, &IDLE],
        )
        .await;
    assert_invalid(direct, "issue: family already exists", "duplicate");

    assert_eq!(h.snapshot(&key).await?, before);
    Ok(())
}

#[tokio::test]
async fn issue_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.family_key(FamilyId::random());
    // ARGV: client, scopes, now, key id, absolute expiry, idle.
    let cases: [(&str, [&dyn Display; 6]); 12] = [
        (
            "non-numeric now",
            [&CLIENT, &"read", &"soon", &"k1", &LIFETIME, &IDLE],
        ),
        ("idle 0", [&CLIENT, &"read", &NOW, &"k1", &LIFETIME, &0]),
        (
            "negative idle",
            [&CLIENT, &"read", &NOW, &"k1", &LIFETIME, &-1],
        ),
        (
            "non-numeric idle",
            [&CLIENT, &"read", &NOW, &"k1", &LIFETIME, &"day"],
        ),
        (
            "absolute lifetime 0",
            [&CLIENT, &"read", &NOW, &"k1", &0, &IDLE],
        ),
        (
            "negative absolute lifetime",
            [&CLIENT, &"read", &NOW, &"k1", &-1, &IDLE],
        ),
        (
            "empty client",
            [&"", &"read", &NOW, &"k1", &LIFETIME, &IDLE],
        ),
        (
            "empty key id",
            [&CLIENT, &"read", &NOW, &"", &LIFETIME, &IDLE],
        ),
        // A space inside an id would shift every later field of the record.
        (
            "key id with a space",
            [&CLIENT, &"read", &NOW, &"k 1", &LIFETIME, &IDLE],
        ),
        (
            "key id with a trailing space",
            [&CLIENT, &"read", &NOW, &"k1 ", &LIFETIME, &IDLE],
        ),
        (
            "client with a space",
            [&"we b", &"read", &NOW, &"k1", &LIFETIME, &IDLE],
        ),
        (
            "client with a leading space",
            [&" web", &"read", &NOW, &"k1", &LIFETIME, &IDLE],
        ),
    ];
    for (case, args) in cases {
        let result = h.invoke(&scripts::ISSUE, &key, &args).await;
        assert_invalid(result, "issue: invalid arguments", case);
        assert!(!h.exists(&key).await?, "{case}: wrote the family");
    }

    // Control: the same key with valid arguments is created, so the refusals above were about
    // the arguments alone. Empty scopes are allowed.
    let reply = h
        .invoke(
            &scripts::ISSUE,
            &key,
            &[&CLIENT, &"", &NOW, &"k1", &LIFETIME, &IDLE],
        )
        .await?;
    assert_eq!(reply, ["created", &NOW.to_string(), &ABSOLUTE.to_string()]);
    // No scopes: the record ends at the client id, without a trailing space.
    assert_eq!(
        h.record(&key).await?,
        format!("1 {NOW} k1 {ABSOLUTE} a {CLIENT}")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// rotate.lua: the state machine, row by row

#[tokio::test]
async fn rotate_current_generation_advances_and_resets_the_ttl() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;

    // A longer idle TTL than at issue: a PTTL above the old bound proves the TTL was set again.
    let outcome = h
        .rotate(RotateRequest {
            idle_ttl_ms: 2 * IDLE,
            ..refresh(family, 1, t1)
        })
        .await?;
    assert_eq!(outcome, issued(Rotation::Rotated, 2, t1, "k2"));
    assert_eq!(
        h.record(&key).await?,
        format!("2 {t1} k2 {ABSOLUTE} a {CLIENT} read write")
    );
    let pttl = h.pttl(&key).await?;
    assert!(pttl > IDLE as i64 && pttl <= 2 * IDLE as i64, "PTTL {pttl}");

    // Near the absolute expiry the TTL is capped by x - now instead of the idle TTL.
    let t2 = ABSOLUTE - HOUR;
    let outcome = h
        .rotate(RotateRequest {
            idle_ttl_ms: 40 * DAY,
            signing_key_id: "k3",
            ..refresh(family, 2, t2)
        })
        .await?;
    assert_eq!(outcome, issued(Rotation::Rotated, 3, t2, "k3"));
    assert_eq!(
        h.record(&key).await?,
        format!("3 {t2} k3 {ABSOLUTE} a {CLIENT} read write")
    );
    let pttl = h.pttl(&key).await?;
    assert!(pttl > 0 && pttl <= HOUR as i64, "PTTL {pttl}");
    Ok(())
}

#[tokio::test]
async fn rotate_predecessor_within_grace_replays_the_winners_pair_and_changes_nothing()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;
    let winner = h.rotate(refresh(family, 1, t1)).await?;
    assert_eq!(winner, issued(Rotation::Rotated, 2, t1, "k2"));
    let before = h.snapshot(&key).await?;

    // The loser of the race: same token, a moment later, another signing key current. It gets
    // the winner's generation, time and key id, so it re-derives the identical pair.
    let replay = h
        .rotate(RotateRequest {
            signing_key_id: "k3",
            ..refresh(family, 1, t1 + GRACE / 2)
        })
        .await?;
    assert_eq!(replay, issued(Rotation::Replayed, 2, t1, "k2"));
    assert_eq!(h.snapshot(&key).await?, before);

    // The raw reply carries exactly the stored values.
    let raw = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[
                &1,
                &CLIENT,
                &(t1 + 1),
                &GRACE,
                &IDLE,
                &"k3",
                &"revoke-family",
            ],
        )
        .await?;
    assert_eq!(
        raw,
        [
            "replayed",
            "2",
            &t1.to_string(),
            "k2",
            "read write",
            &ABSOLUTE.to_string()
        ]
    );
    assert_eq!(h.snapshot(&key).await?, before);
    Ok(())
}

#[tokio::test]
async fn rotate_grace_window_includes_its_last_millisecond_and_not_one_more() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;
    h.rotate(refresh(family, 1, t1)).await?;
    let before = h.snapshot(&key).await?;

    // now - t == grace: still a replay.
    let at_edge = h.rotate(refresh(family, 1, t1 + GRACE)).await?;
    assert_eq!(at_edge, issued(Rotation::Replayed, 2, t1, "k2"));
    assert_eq!(h.snapshot(&key).await?, before);

    // now - t == grace + 1: reuse, and the default policy revokes the family.
    let past = t1 + GRACE + 1;
    let reused = h.rotate(refresh(family, 1, past)).await?;
    assert_eq!(reused, RotateOutcome::Reused(Reuse::FamilyRevoked));
    assert_eq!(
        before.0.as_deref(),
        Some(format!("2 {t1} k2 {ABSOLUTE} a {CLIENT} read write").as_str())
    );
    let (record, deadline) = h.snapshot(&key).await?;
    // Only the status changes, to "r:reuse:<now>".
    assert_eq!(
        record,
        Some(format!(
            "2 {t1} k2 {ABSOLUTE} r:reuse:{past} {CLIENT} read write"
        ))
    );
    assert_eq!(deadline, before.1, "revocation must not touch the TTL");
    Ok(())
}

#[tokio::test]
async fn rotate_with_zero_grace_never_replays_even_at_the_rotation_instant() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;
    let no_grace = |p, now| RotateRequest {
        grace_ms: 0,
        ..refresh(family, p, now)
    };
    assert_eq!(
        h.rotate(no_grace(1, t1)).await?,
        issued(Rotation::Rotated, 2, t1, "k2")
    );
    let before = h.snapshot(&key).await?;

    // now == t, so now - t <= grace holds, yet grace 0 means replays are off.
    assert_eq!(
        h.rotate(no_grace(1, t1)).await?,
        RotateOutcome::Reused(Reuse::FamilyRevoked)
    );
    assert_eq!(
        before.0.as_deref(),
        Some(format!("2 {t1} k2 {ABSOLUTE} a {CLIENT} read write").as_str())
    );
    assert_eq!(
        h.snapshot(&key).await?,
        (
            Some(format!(
                "2 {t1} k2 {ABSOLUTE} r:reuse:{t1} {CLIENT} read write"
            )),
            before.1
        )
    );
    Ok(())
}

#[tokio::test]
async fn rotate_older_than_the_predecessor_is_reuse_even_within_grace_and_revokes_the_family()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let (t1, t2) = (NOW + 1_000, NOW + 2_000);
    h.rotate(refresh(family, 1, t1)).await?;
    h.rotate(refresh(family, 2, t2)).await?;
    let before = h.snapshot(&key).await?;
    assert_eq!(
        before.0.as_deref(),
        Some(format!("3 {t2} k2 {ABSOLUTE} a {CLIENT} read write").as_str())
    );

    // Generation 1 is two behind; grace covers only the immediate predecessor.
    let reuse_at = t2 + 1;
    assert_eq!(
        h.rotate(refresh(family, 1, reuse_at)).await?,
        RotateOutcome::Reused(Reuse::FamilyRevoked)
    );
    let revoked = Some(format!(
        "3 {t2} k2 {ABSOLUTE} r:reuse:{reuse_at} {CLIENT} read write"
    ));
    assert_eq!(h.snapshot(&key).await?, (revoked.clone(), before.1));

    // The family is dead for everyone, including the current generation's holder.
    assert_eq!(
        h.rotate(refresh(family, 3, reuse_at + 1)).await?,
        RotateOutcome::Revoked
    );
    assert_eq!(h.snapshot(&key).await?, (revoked, before.1));
    Ok(())
}

#[tokio::test]
async fn rotate_reuse_under_reject_only_refuses_the_token_and_keeps_the_family()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let (t1, t2) = (NOW + 1_000, NOW + 2_000);
    h.rotate(refresh(family, 1, t1)).await?;
    h.rotate(refresh(family, 2, t2)).await?;
    let before = h.snapshot(&key).await?;
    let reject_only = |p, now| RotateRequest {
        reuse_policy: ReusePolicy::RejectOnly,
        ..refresh(family, p, now)
    };

    // p < g-1 ...
    assert_eq!(
        h.rotate(reject_only(1, t2 + 1)).await?,
        RotateOutcome::Reused(Reuse::Refused)
    );
    assert_eq!(h.snapshot(&key).await?, before);
    // ... and p == g-1 past grace: refused, family untouched.
    assert_eq!(
        h.rotate(reject_only(2, t2 + GRACE + 1)).await?,
        RotateOutcome::Reused(Reuse::Refused)
    );
    assert_eq!(h.snapshot(&key).await?, before);

    // The legitimate holder carries on.
    let t3 = t2 + GRACE + 2;
    assert_eq!(
        h.rotate(reject_only(3, t3)).await?,
        issued(Rotation::Rotated, 4, t3, "k2")
    );
    assert_eq!(
        before.0.as_deref(),
        Some(format!("3 {t2} k2 {ABSOLUTE} a {CLIENT} read write").as_str())
    );
    assert_eq!(
        h.record(&key).await?,
        format!("4 {t3} k2 {ABSOLUTE} a {CLIENT} read write")
    );
    Ok(())
}

#[tokio::test]
async fn rotate_newer_generation_than_stored_rolls_forward_past_it() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;

    // Generation 5 presented while the store has 1 (it lost writes): the family moves to 6.
    let outcome = h
        .rotate(RotateRequest {
            idle_ttl_ms: 2 * IDLE,
            ..refresh(family, 5, t1)
        })
        .await?;
    assert_eq!(outcome, issued(Rotation::RolledForward, 6, t1, "k2"));
    assert_eq!(
        h.record(&key).await?,
        format!("6 {t1} k2 {ABSOLUTE} a {CLIENT} read write")
    );
    // The TTL was reset, as for a rotation (above the idle bound set at issue).
    let pttl = h.pttl(&key).await?;
    assert!(pttl > IDLE as i64 && pttl <= 2 * IDLE as i64, "PTTL {pttl}");

    // A concurrent request with the same token 5 is now the predecessor: it gets a replay.
    let before = h.snapshot(&key).await?;
    assert_eq!(
        h.rotate(refresh(family, 5, t1 + 1)).await?,
        issued(Rotation::Replayed, 6, t1, "k2")
    );
    assert_eq!(h.snapshot(&key).await?, before);
    Ok(())
}

#[tokio::test]
async fn rotate_unknown_family_is_expired_and_creates_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.family_key(family);
    assert_eq!(
        h.rotate(refresh(family, 1, NOW)).await?,
        RotateOutcome::Expired
    );
    assert!(!h.exists(&key).await?);
    Ok(())
}

#[tokio::test]
async fn rotate_at_the_absolute_expiry_is_expired_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let before = h.snapshot(&key).await?;
    // An idle TTL long enough that only the absolute expiry can apply.
    let long_idle = |client_id, now| RotateRequest {
        client_id,
        idle_ttl_ms: 60 * DAY,
        ..refresh(family, 1, now)
    };

    assert_eq!(
        h.rotate(long_idle(CLIENT, ABSOLUTE)).await?,
        RotateOutcome::Expired
    );
    assert_eq!(
        h.rotate(long_idle(CLIENT, ABSOLUTE + 1)).await?,
        RotateOutcome::Expired
    );
    assert_eq!(h.snapshot(&key).await?, before);

    // One millisecond earlier the family is still alive: a probe by another client gets past
    // the expiry check (and, refused for the client, writes nothing).
    assert_eq!(
        h.rotate(long_idle(OTHER_CLIENT, ABSOLUTE - 1)).await?,
        RotateOutcome::ClientMismatch
    );
    assert_eq!(h.snapshot(&key).await?, before);
    Ok(())
}

#[tokio::test]
async fn rotate_after_the_idle_timeout_is_expired_and_the_idle_clock_restarts_on_rotation()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let before = h.snapshot(&key).await?;

    // now == t + idle: expired.
    assert_eq!(
        h.rotate(refresh(family, 1, NOW + IDLE)).await?,
        RotateOutcome::Expired
    );
    assert_eq!(h.snapshot(&key).await?, before);
    // now == t + idle - 1: alive (probe by another client, which writes nothing).
    assert_eq!(
        h.rotate(RotateRequest {
            client_id: OTHER_CLIENT,
            ..refresh(family, 1, NOW + IDLE - 1)
        })
        .await?,
        RotateOutcome::ClientMismatch
    );
    assert_eq!(h.snapshot(&key).await?, before);

    // Rotating at the last moment restarts the idle clock from the new t.
    let t1 = NOW + IDLE - 1;
    assert_eq!(
        h.rotate(refresh(family, 1, t1)).await?,
        issued(Rotation::Rotated, 2, t1, "k2")
    );
    let t2 = NOW + IDLE;
    assert_eq!(
        h.rotate(refresh(family, 2, t2)).await?,
        issued(Rotation::Rotated, 3, t2, "k2")
    );
    let rotated = h.snapshot(&key).await?;
    assert_eq!(
        h.rotate(refresh(family, 3, t2 + IDLE)).await?,
        RotateOutcome::Expired
    );
    assert_eq!(h.snapshot(&key).await?, rotated);
    Ok(())
}

#[tokio::test]
async fn rotate_revoked_family_is_revoked_whoever_asks_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    assert_eq!(
        h.store
            .revoke(family, CLIENT, "logout", Some(NOW + 1))
            .await?,
        RevokeOutcome::Revoked
    );
    let before = h.snapshot(&key).await?;

    // Current generation, owning client.
    assert_eq!(
        h.rotate(refresh(family, 1, NOW + 2)).await?,
        RotateOutcome::Revoked
    );
    // Another client: DESIGN's table checks revocation before the client.
    assert_eq!(
        h.rotate(RotateRequest {
            client_id: OTHER_CLIENT,
            ..refresh(family, 1, NOW + 2)
        })
        .await?,
        RotateOutcome::Revoked
    );
    // A newer generation does not roll a revoked family forward.
    assert_eq!(
        h.rotate(refresh(family, 7, NOW + 2)).await?,
        RotateOutcome::Revoked
    );
    assert_eq!(h.snapshot(&key).await?, before);
    assert_eq!(
        before.0,
        Some(format!(
            "1 {NOW} k1 {ABSOLUTE} r:logout:{} {CLIENT} read write",
            NOW + 1
        ))
    );
    Ok(())
}

#[tokio::test]
async fn rotate_by_another_client_is_a_mismatch_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;
    h.rotate(refresh(family, 1, t1)).await?;
    let before = h.snapshot(&key).await?;
    let foreign = |p, now| RotateRequest {
        client_id: OTHER_CLIENT,
        ..refresh(family, p, now)
    };

    // Current generation: no rotation.
    assert_eq!(
        h.rotate(foreign(2, t1 + 1)).await?,
        RotateOutcome::ClientMismatch
    );
    // Predecessor within grace: no replay.
    assert_eq!(
        h.rotate(foreign(1, t1 + 1)).await?,
        RotateOutcome::ClientMismatch
    );
    // Stale token past grace: a foreign client cannot get the family revoked as reuse.
    assert_eq!(
        h.rotate(foreign(1, t1 + GRACE + 1)).await?,
        RotateOutcome::ClientMismatch
    );
    // Newer generation: no roll-forward.
    assert_eq!(
        h.rotate(foreign(9, t1 + 1)).await?,
        RotateOutcome::ClientMismatch
    );
    assert_eq!(h.snapshot(&key).await?, before);
    Ok(())
}

#[tokio::test]
async fn rotate_rejects_invalid_arguments_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;
    h.rotate(refresh(family, 1, t1)).await?;
    let before = h.snapshot(&key).await?;
    let t2 = t1 + GRACE + 1; // past grace: a stale p would be reuse if it got through

    // ARGV: p, client, now, grace, idle, key id, policy.
    let cases: [(&str, [&dyn Display; 7]); 16] = [
        (
            "p = 0",
            [&0, &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "p = -1",
            [&-1, &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "p = 1.5",
            [&"1.5", &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "p non-numeric",
            [&"two", &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "p empty",
            [&"", &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "unknown policy",
            [&1, &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke"],
        ),
        (
            "empty policy",
            [&1, &CLIENT, &t2, &GRACE, &IDLE, &"k3", &""],
        ),
        (
            "negative grace",
            [&1, &CLIENT, &t2, &-1, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "non-numeric grace",
            [&2, &CLIENT, &t2, &"none", &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "empty key id",
            [&2, &CLIENT, &t2, &GRACE, &IDLE, &"", &"revoke-family"],
        ),
        // A space inside the key id would shift every later field of the record.
        (
            "key id with a space",
            [&2, &CLIENT, &t2, &GRACE, &IDLE, &"k 3", &"revoke-family"],
        ),
        (
            "key id with a trailing space",
            [&2, &CLIENT, &t2, &GRACE, &IDLE, &"k3 ", &"revoke-family"],
        ),
        (
            "empty client",
            [&2, &"", &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        ),
        (
            "idle 0",
            [&2, &CLIENT, &t2, &GRACE, &0, &"k3", &"revoke-family"],
        ),
        (
            "non-numeric idle",
            [&2, &CLIENT, &t2, &GRACE, &"day", &"k3", &"revoke-family"],
        ),
        (
            "non-numeric now",
            [
                &2,
                &CLIENT,
                &"later",
                &GRACE,
                &IDLE,
                &"k3",
                &"revoke-family",
            ],
        ),
    ];
    for (case, args) in cases {
        let result = h.invoke(&scripts::ROTATE, &key, &args).await;
        assert_invalid(result, "rotate: invalid arguments", case);
        assert_eq!(
            h.snapshot(&key).await?,
            before,
            "{case}: changed the family"
        );
    }

    // Control: the valid form of the same call rotates.
    let reply = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[&2, &CLIENT, &t2, &GRACE, &IDLE, &"k3", &"revoke-family"],
        )
        .await?;
    assert_eq!(
        reply,
        [
            "rotated",
            "3",
            &t2.to_string(),
            "k3",
            "read write",
            &ABSOLUTE.to_string()
        ]
    );
    assert_eq!(
        h.record(&key).await?,
        format!("3 {t2} k3 {ABSOLUTE} a {CLIENT} read write")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Large numbers

#[tokio::test]
async fn rotate_returns_large_generations_and_times_as_exact_integer_strings() -> anyhow::Result<()>
{
    const FAR: u64 = 4_102_444_800_000; // 2100-01-01T00:00:00Z
    const FAR_EXPIRY: u64 = FAR + 30 * DAY; // 4105036800000
    const BIG: u64 = 1 << 52; // 4503599627370496

    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    h.store
        .create_family(&NewFamily {
            fixed_now_ms: Some(FAR),
            absolute_ttl_ms: FAR_EXPIRY - FAR,
            ..standard_family(family)
        })
        .await?;
    let key = h.family_key(family);
    assert_eq!(
        h.record(&key).await?,
        "1 4102444800000 k1 4105036800000 a web read write"
    );

    // Roll forward to 2^52 (raw, to see the exact strings; tostring() would give 4.5035996273705e+15).
    let reply = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[
                &(BIG - 1),
                &CLIENT,
                &(FAR + 1),
                &GRACE,
                &IDLE,
                &"k2",
                &"revoke-family",
            ],
        )
        .await?;
    assert_eq!(
        reply,
        [
            "rolled_forward",
            "4503599627370496",
            "4102444800001",
            "k2",
            "read write",
            "4105036800000"
        ]
    );
    assert_eq!(
        h.record(&key).await?,
        "4503599627370496 4102444800001 k2 4105036800000 a web read write"
    );

    // One more rotation through the typed API: 2^52 + 1 is still exact.
    let outcome = h
        .rotate(RotateRequest {
            idle_ttl_ms: IDLE,
            ..refresh(family, BIG, FAR + 2)
        })
        .await?;
    assert_eq!(
        outcome,
        RotateOutcome::Issued(
            Rotation::Rotated,
            Current {
                generation: BIG + 1,
                rotated_at_ms: FAR + 2,
                key_id: "k2".into(),
                scopes: scopes(),
                absolute_expiry_ms: FAR_EXPIRY,
            }
        )
    );

    // A replay echoes the stored numbers, also exactly.
    let before = h.snapshot(&key).await?;
    let reply = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[
                &BIG,
                &CLIENT,
                &(FAR + 3),
                &GRACE,
                &IDLE,
                &"k9",
                &"revoke-family",
            ],
        )
        .await?;
    assert_eq!(
        reply,
        [
            "replayed",
            "4503599627370497",
            "4102444800002",
            "k2",
            "read write",
            "4105036800000"
        ]
    );
    assert_eq!(h.snapshot(&key).await?, before);
    assert_eq!(
        before.0.as_deref(),
        Some("4503599627370497 4102444800002 k2 4105036800000 a web read write")
    );

    // Reuse records its time exactly too.
    assert_eq!(
        h.rotate(refresh(family, BIG - 1, FAR + 4)).await?,
        RotateOutcome::Reused(Reuse::FamilyRevoked)
    );
    assert_eq!(
        h.snapshot(&key).await?,
        (
            Some(
                "4503599627370497 4102444800002 k2 4105036800000 r:reuse:4102444800004 web read write"
                    .to_owned()
            ),
            before.1
        )
    );
    // Rust reads the same exact numbers back.
    let state = h.decoded(&key).await?;
    assert_eq!(state.generation, BIG + 1);
    assert_eq!(
        state.status,
        FamilyStatus::Revoked {
            reason: "reuse".into(),
            at_ms: FAR + 4
        }
    );

    // Times of 16 digits, past the 14 significant digits Lua prints numbers with: issue.lua
    // and revoke.lua write them exactly as well.
    let other = FamilyId::random();
    h.store
        .create_family(&NewFamily {
            fixed_now_ms: Some(BIG),
            absolute_ttl_ms: 30 * DAY,
            ..standard_family(other)
        })
        .await?;
    let other_key = h.family_key(other);
    assert_eq!(
        h.record(&other_key).await?,
        "1 4503599627370496 k1 4503602219370496 a web read write"
    );
    assert_eq!(
        h.store
            .revoke(other, CLIENT, "logout", Some(BIG + 1))
            .await?,
        RevokeOutcome::Revoked
    );
    assert_eq!(
        h.record(&other_key).await?,
        "1 4503599627370496 k1 4503602219370496 r:logout:4503599627370497 web read write"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// revoke.lua

#[tokio::test]
async fn revoke_active_family_records_reason_and_time_and_keeps_the_ttl() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let t1 = NOW + 1_000;
    h.rotate(refresh(family, 1, t1)).await?;
    let (record, deadline) = h.snapshot(&key).await?;
    assert_eq!(
        record,
        Some(format!("2 {t1} k2 {ABSOLUTE} a {CLIENT} read write"))
    );
    assert!(deadline > 0);

    let at = t1 + 5;
    assert_eq!(
        h.store.revoke(family, CLIENT, "logout", Some(at)).await?,
        RevokeOutcome::Revoked
    );
    // Only the status changes, to "r:<reason>:<now>"; the key's expiry deadline stays exactly
    // where it was (KEEPTTL).
    assert_eq!(
        h.snapshot(&key).await?,
        (
            Some(format!(
                "2 {t1} k2 {ABSOLUTE} r:logout:{at} {CLIENT} read write"
            )),
            deadline
        )
    );
    assert_eq!(
        h.store.family(family).await?.map(|f| f.status),
        Some(FamilyStatus::Revoked {
            reason: "logout".into(),
            at_ms: at
        })
    );
    Ok(())
}

#[tokio::test]
async fn revoke_twice_is_already_revoked_and_keeps_the_first_record() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    h.store
        .revoke(family, CLIENT, "logout", Some(NOW + 1))
        .await?;
    let before = h.snapshot(&key).await?;
    assert_eq!(
        before.0,
        Some(format!(
            "1 {NOW} k1 {ABSOLUTE} r:logout:{} {CLIENT} read write",
            NOW + 1
        ))
    );

    // Written again unchanged (one SET, same record, same deadline), so that a WAIT after a
    // retried revocation covers it.
    let sets = h.set_calls().await?;
    assert_eq!(
        h.store
            .revoke(family, CLIENT, "admin", Some(NOW + 2))
            .await?,
        RevokeOutcome::AlreadyRevoked
    );
    assert_eq!(h.snapshot(&key).await?, before);
    assert_eq!(h.set_calls().await?, sets + 1);

    // A family revoked by reuse detection keeps "reuse" as its reason.
    let reused = FamilyId::random();
    let reused_key = h.issue(reused).await?;
    h.rotate(refresh(reused, 1, NOW + 1)).await?;
    h.rotate(refresh(reused, 2, NOW + 2)).await?;
    assert_eq!(
        h.rotate(refresh(reused, 1, NOW + 3)).await?,
        RotateOutcome::Reused(Reuse::FamilyRevoked)
    );
    let before = h.snapshot(&reused_key).await?;
    assert_eq!(
        h.store
            .revoke(reused, CLIENT, "logout", Some(NOW + 4))
            .await?,
        RevokeOutcome::AlreadyRevoked
    );
    assert_eq!(h.snapshot(&reused_key).await?, before);
    assert_eq!(
        before.0,
        Some(format!(
            "3 {} k2 {ABSOLUTE} r:reuse:{} {CLIENT} read write",
            NOW + 2,
            NOW + 3
        ))
    );
    Ok(())
}

#[tokio::test]
async fn revoke_unknown_family_is_not_found_and_creates_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    assert_eq!(
        h.store.revoke(family, CLIENT, "logout", Some(NOW)).await?,
        RevokeOutcome::NotFound
    );
    assert!(!h.exists(&h.family_key(family)).await?);
    Ok(())
}

#[tokio::test]
async fn revoke_by_another_client_is_a_mismatch_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let before = h.snapshot(&key).await?;

    assert_eq!(
        h.store
            .revoke(family, OTHER_CLIENT, "logout", Some(NOW + 1))
            .await?,
        RevokeOutcome::ClientMismatch
    );
    assert_eq!(h.snapshot(&key).await?, before);
    // Still revocable by its owner afterwards.
    assert_eq!(
        h.store
            .revoke(family, CLIENT, "logout", Some(NOW + 2))
            .await?,
        RevokeOutcome::Revoked
    );
    Ok(())
}

#[tokio::test]
async fn revoke_rejects_invalid_arguments_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let before = h.snapshot(&key).await?;

    // ARGV: client, reason, now. The reason goes into the status "r:<reason>:<now>", so a
    // space would shift the record's fields and a colon would split the status wrongly.
    let cases: [(&str, [&dyn Display; 3]); 9] = [
        ("empty client", [&"", &"logout", &NOW]),
        ("empty reason", [&CLIENT, &"", &NOW]),
        ("non-numeric now", [&CLIENT, &"logout", &"now"]),
        ("reason with a space", [&CLIENT, &"log out", &NOW]),
        ("reason that is a space", [&CLIENT, &" ", &NOW]),
        ("reason with a colon", [&CLIENT, &"log:out", &NOW]),
        ("reason ending in a colon", [&CLIENT, &"logout:", &NOW]),
        ("reason with a tab", [&CLIENT, &"log\tout", &NOW]),
        ("reason with a newline", [&CLIENT, &"logout\n", &NOW]),
    ];
    for (case, args) in cases {
        let result = h.invoke(&scripts::REVOKE, &key, &args).await;
        assert_invalid(result, "revoke: invalid arguments", case);
        assert_eq!(
            h.snapshot(&key).await?,
            before,
            "{case}: changed the family"
        );
    }

    // Control: letters, digits, '_' and '-' make a valid reason, recorded as given.
    let reply = h
        .invoke(
            &scripts::REVOKE,
            &key,
            &[&CLIENT, &"Admin_revoke-2", &(NOW + 1)],
        )
        .await?;
    assert_eq!(reply, ["revoked"]);
    assert_eq!(
        h.snapshot(&key).await?,
        (
            Some(format!(
                "1 {NOW} k1 {ABSOLUTE} r:Admin_revoke-2:{} {CLIENT} read write",
                NOW + 1
            )),
            before.1
        )
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The family record: corrupt values, and what the scripts write read back by Rust

#[tokio::test]
async fn rotate_and_revoke_answer_an_error_on_a_corrupt_record_and_leave_it_unchanged()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.family_key(family);
    let corrupt = [
        "garbage",
        "",
        // Fields missing, or not numbers where numbers belong.
        "1 2 k1",
        &format!("1 {NOW} k1 {ABSOLUTE} a"),
        &format!("x {NOW} k1 {ABSOLUTE} a {CLIENT} read write"),
        &format!("1 {NOW} k1 later a {CLIENT} read write"),
        // Two spaces where one separates fields.
        &format!("1  {NOW} k1 {ABSOLUTE} a {CLIENT} read write"),
    ];
    for record in corrupt {
        // A deadline as issue.lua would set, so "unchanged" covers the TTL as well.
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(record)
            .arg("PX")
            .arg(HOUR)
            .query_async(&mut h.conn)
            .await?;
        let before = h.snapshot(&key).await?;
        assert!(before.1 > 0, "{record:?}: {before:?}");

        // Arguments that would rotate, roll forward or revoke a sound family.
        for p in [1, 2, 9] {
            let result = h
                .invoke(
                    &scripts::ROTATE,
                    &key,
                    &[
                        &p,
                        &CLIENT,
                        &(NOW + 1),
                        &GRACE,
                        &IDLE,
                        &"k2",
                        &"revoke-family",
                    ],
                )
                .await;
            assert_invalid(
                result,
                "corrupt family record",
                &format!("rotate {record:?}"),
            );
        }
        let result = h
            .invoke(&scripts::REVOKE, &key, &[&CLIENT, &"logout", &(NOW + 1)])
            .await;
        assert_invalid(
            result,
            "corrupt family record",
            &format!("revoke {record:?}"),
        );
        // issue.lua does not overwrite it either.
        let result = h
            .invoke(
                &scripts::ISSUE,
                &key,
                &[&CLIENT, &"read", &NOW, &"k1", &LIFETIME, &IDLE],
            )
            .await;
        assert_invalid(result, "issue: family already exists", record);
        assert_eq!(h.snapshot(&key).await?, before, "{record:?}: changed");

        // Through the store, the same errors are broken invariants, not outages.
        let err = h
            .store
            .rotate(&refresh(family, 1, NOW + 1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{record:?}: {err:?}");
        let err = h
            .store
            .revoke(family, CLIENT, "logout", Some(NOW + 1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{record:?}: {err:?}");
        let err = h.store.family(family).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{record:?}: {err:?}");
        assert_eq!(h.snapshot(&key).await?, before, "{record:?}: changed");
    }
    Ok(())
}

#[tokio::test]
async fn a_family_left_in_the_old_hash_format_is_an_error_and_stays_as_it_was() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.family_key(family);
    let old = hash(&[
        ("c", CLIENT),
        ("sc", "read write"),
        ("g", "1"),
        ("t", &NOW.to_string()),
        ("k", "k1"),
        ("st", "a"),
        ("x", &ABSOLUTE.to_string()),
    ]);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&old)
        .query_async(&mut h.conn)
        .await?;
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(HOUR)
        .query_async(&mut h.conn)
        .await?;
    let before = h.deadline(&key).await?;
    assert!(before > 0);

    let result = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[
                &1,
                &CLIENT,
                &(NOW + 1),
                &GRACE,
                &IDLE,
                &"k2",
                &"revoke-family",
            ],
        )
        .await;
    assert_invalid(result, "WRONGTYPE", "rotate on a hash");
    let result = h
        .invoke(&scripts::REVOKE, &key, &[&CLIENT, &"logout", &(NOW + 1)])
        .await;
    assert_invalid(result, "WRONGTYPE", "revoke on a hash");
    let result = h
        .invoke(
            &scripts::ISSUE,
            &key,
            &[&CLIENT, &"read", &NOW, &"k1", &LIFETIME, &IDLE],
        )
        .await;
    assert_invalid(result, "issue: family already exists", "issue on a hash");
    let err = h
        .store
        .rotate(&refresh(family, 1, NOW + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    assert_eq!(h.hgetall(&key).await?, old);
    assert_eq!(h.deadline(&key).await?, before);
    Ok(())
}

/// Asserts that Rust decodes `record` to `expected` and encodes that back to `record` exactly.
fn assert_round_trip(record: &str, expected: &FamilyState) {
    let decoded = family_record::decode(record)
        .unwrap_or_else(|err| panic!("{record:?} does not decode: {err}"));
    assert_eq!(&decoded, expected, "{record:?}");
    assert_eq!(family_record::encode(&decoded), record);
}

#[tokio::test]
async fn records_written_by_the_scripts_round_trip_through_family_record() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let mut expected = FamilyState {
        client_id: CLIENT.into(),
        scopes: scopes(),
        generation: 1,
        rotated_at_ms: NOW,
        key_id: "k1".into(),
        status: FamilyStatus::Active,
        absolute_expiry_ms: ABSOLUTE,
    };
    let check = async |h: &mut Harness, expected: &FamilyState| -> anyhow::Result<()> {
        let record = h.record(&key).await?;
        assert_round_trip(&record, expected);
        // The store's typed read is the same decoding.
        assert_eq!(h.store.family(family).await?.as_ref(), Some(expected));
        Ok(())
    };
    // issue.lua
    check(&mut h, &expected).await?;

    // rotate.lua: rotation, roll-forward, then revocation on reuse.
    let t1 = NOW + 1_000;
    h.rotate(refresh(family, 1, t1)).await?;
    expected = FamilyState {
        generation: 2,
        rotated_at_ms: t1,
        key_id: "k2".into(),
        ..expected
    };
    check(&mut h, &expected).await?;
    let t2 = t1 + 1_000;
    h.rotate(RotateRequest {
        signing_key_id: "k-3_x",
        ..refresh(family, 7, t2)
    })
    .await?;
    expected = FamilyState {
        generation: 8,
        rotated_at_ms: t2,
        key_id: "k-3_x".into(),
        ..expected
    };
    check(&mut h, &expected).await?;
    let t3 = t2 + GRACE + 1;
    h.rotate(refresh(family, 7, t3)).await?;
    expected.status = FamilyStatus::Revoked {
        reason: "reuse".into(),
        at_ms: t3,
    };
    check(&mut h, &expected).await?;

    // revoke.lua, on a family with no scopes (the record has six fields only).
    let bare = FamilyId::random();
    h.store
        .create_family(&NewFamily {
            scopes: Scopes::default(),
            ..standard_family(bare)
        })
        .await?;
    let bare_key = h.family_key(bare);
    let at = NOW + 5;
    assert_eq!(
        h.store
            .revoke(bare, CLIENT, "user_logout-1", Some(at))
            .await?,
        RevokeOutcome::Revoked
    );
    let record = h.record(&bare_key).await?;
    assert_eq!(
        record,
        format!("1 {NOW} k1 {ABSOLUTE} r:user_logout-1:{at} {CLIENT}")
    );
    assert_round_trip(
        &record,
        &FamilyState {
            client_id: CLIENT.into(),
            scopes: Scopes::default(),
            generation: 1,
            rotated_at_ms: NOW,
            key_id: "k1".into(),
            status: FamilyStatus::Revoked {
                reason: "user_logout-1".into(),
                at_ms: at,
            },
            absolute_expiry_ms: ABSOLUTE,
        },
    );
    Ok(())
}

// Ids with whitespace other than a space. The Lua decoder splits the record on any whitespace
// (`%S`), `family_record::decode` on spaces only, and the scripts refuse only spaces in the ids
// they store. Whatever id a script accepts must come back as given: a script must either refuse
// an id with a tab, or store it so that the scripts and Rust read it back unchanged.

#[tokio::test]
async fn issue_refuses_a_key_id_with_a_tab_or_stores_it_readably() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.family_key(family);
    let result = h
        .invoke(
            &scripts::ISSUE,
            &key,
            &[&CLIENT, &"read write", &NOW, &"k\t1", &LIFETIME, &IDLE],
        )
        .await;
    if result.is_ok() {
        assert_eq!(h.decoded(&key).await?.key_id, "k\t1");
        let rotated = h
            .invoke(
                &scripts::ROTATE,
                &key,
                &[
                    &1,
                    &CLIENT,
                    &(NOW + 1),
                    &GRACE,
                    &IDLE,
                    &"k2",
                    &"revoke-family",
                ],
            )
            .await;
        assert!(
            matches!(rotated.as_deref(), Ok([outcome, ..]) if outcome == "rotated"),
            "issue.lua accepted key id \"k\\t1\" and wrote {:?}, which rotate.lua cannot read: {rotated:?}",
            h.get(&key).await?
        );
    } else {
        assert!(!h.exists(&key).await?);
    }
    Ok(())
}

#[tokio::test]
async fn rotate_refuses_a_key_id_with_a_tab_or_stores_it_readably() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let result = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[
                &1,
                &CLIENT,
                &(NOW + 1),
                &GRACE,
                &IDLE,
                &"k\t2",
                &"revoke-family",
            ],
        )
        .await;
    if result.is_ok() {
        assert_eq!(h.decoded(&key).await?.key_id, "k\t2");
        let next = h
            .invoke(
                &scripts::ROTATE,
                &key,
                &[
                    &2,
                    &CLIENT,
                    &(NOW + 2),
                    &GRACE,
                    &IDLE,
                    &"k3",
                    &"revoke-family",
                ],
            )
            .await;
        assert!(
            matches!(next.as_deref(), Ok([outcome, ..]) if outcome == "rotated"),
            "rotate.lua accepted key id \"k\\t2\" and wrote {:?}, which it cannot read back: {next:?}",
            h.get(&key).await?
        );
    } else {
        assert_eq!(h.record(&key).await?, standard_record());
    }
    Ok(())
}

/// The family of client "we\tb" must stay that client's, not pass to client "we".
#[tokio::test]
async fn issue_refuses_a_client_id_with_a_tab_or_keeps_the_family_that_clients()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.family_key(family);
    let result = h
        .invoke(
            &scripts::ISSUE,
            &key,
            &[&"we\tb", &"read", &NOW, &"k1", &LIFETIME, &IDLE],
        )
        .await;
    if result.is_ok() {
        let before = h.snapshot(&key).await?;
        assert_eq!(h.decoded(&key).await?.client_id, "we\tb");
        let foreign = h
            .invoke(
                &scripts::ROTATE,
                &key,
                &[
                    &1,
                    &"we",
                    &(NOW + 1),
                    &GRACE,
                    &IDLE,
                    &"k2",
                    &"revoke-family",
                ],
            )
            .await;
        assert_eq!(
            foreign.as_deref().ok(),
            Some(["client_mismatch".to_owned()].as_slice()),
            "issue.lua accepted client \"we\\tb\"; rotate.lua as client \"we\" answered {foreign:?} and left {:?}",
            h.get(&key).await?
        );
        assert_eq!(h.snapshot(&key).await?, before);
        let foreign = h
            .invoke(&scripts::REVOKE, &key, &[&"we", &"logout", &(NOW + 1)])
            .await;
        assert_eq!(
            foreign.as_deref().ok(),
            Some(["client_mismatch".to_owned()].as_slice()),
            "revoke.lua as client \"we\""
        );
        assert_eq!(h.snapshot(&key).await?, before);
    } else {
        assert!(!h.exists(&key).await?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create_client.lua, set_client_secret.lua, delete_client.lua

fn confidential_client(client_id: &str) -> Client {
    Client {
        client_id: client_id.into(),
        name: "Web app".into(),
        client_type: ClientType::Confidential,
        allowed_scopes: scopes(),
        reuse_policy: ReusePolicy::RejectOnly,
        secret_hash: "hash-1".into(),
        created_at_ms: NOW,
    }
}

fn public_client(client_id: &str) -> Client {
    Client {
        client_id: client_id.into(),
        name: "Mobile app".into(),
        client_type: ClientType::Public,
        allowed_scopes: Scopes::default(),
        reuse_policy: ReusePolicy::RevokeFamily,
        secret_hash: String::new(),
        created_at_ms: NOW,
    }
}

fn confidential_hash() -> Hash {
    hash(&[
        ("n", "Web app"),
        ("ty", "confidential"),
        ("sc", "read write"),
        ("rp", "reject-only"),
        ("h", "hash-1"),
        ("ca", &NOW.to_string()),
    ])
}

#[tokio::test]
async fn create_client_stores_every_field_and_refuses_a_duplicate_id() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let web = confidential_client("web");
    assert!(h.store.create_client(&web).await?);
    let key = h.client_key("web");
    assert_eq!(h.hgetall(&key).await?, confidential_hash());
    // A live client record never expires.
    assert_eq!(h.pttl(&key).await?, -1);
    assert_eq!(h.store.client("web").await?, Some(web.clone()));

    // Same id, different everything: refused, the original stays as it was.
    let impostor = Client {
        name: "Impostor".into(),
        created_at_ms: NOW + 1,
        ..public_client("web")
    };
    assert!(!h.store.create_client(&impostor).await?);
    assert_eq!(h.hgetall(&key).await?, confidential_hash());
    assert_eq!(h.store.client("web").await?, Some(web));

    // A public client is stored with an empty hash and empty scopes.
    let mobile = public_client("mobile");
    assert!(h.store.create_client(&mobile).await?);
    assert_eq!(
        h.hgetall(&h.client_key("mobile")).await?,
        hash(&[
            ("n", "Mobile app"),
            ("ty", "public"),
            ("sc", ""),
            ("rp", "revoke-family"),
            ("h", ""),
            ("ca", &NOW.to_string()),
        ])
    );
    assert_eq!(h.store.client("mobile").await?, Some(mobile));
    Ok(())
}

#[tokio::test]
async fn deleted_client_leaves_a_tombstone_that_reserves_its_id_forever() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.client_key("web");
    assert!(h.store.create_client(&confidential_client("web")).await?);

    let deleted_at = NOW + 1;
    assert!(h.store.delete_client("web", deleted_at).await?);
    // Everything but the deletion time is gone (the secret hash included), with no expiry.
    let tombstone = hash(&[("del", &deleted_at.to_string())]);
    assert_eq!(h.hgetall(&key).await?, tombstone);
    assert_eq!(h.pttl(&key).await?, -1);
    assert_eq!(h.store.client("web").await?, None);

    // The id cannot be registered again, so no new client inherits the old one's families.
    assert!(!h.store.create_client(&confidential_client("web")).await?);
    assert!(!h.store.create_client(&public_client("web")).await?);
    assert_eq!(h.hgetall(&key).await?, tombstone);
    assert_eq!(h.store.client("web").await?, None);

    // Deleting again finds no live client and keeps the first deletion time.
    assert!(!h.store.delete_client("web", NOW + 2).await?);
    assert_eq!(h.hgetall(&key).await?, tombstone);
    Ok(())
}

#[tokio::test]
async fn delete_unknown_client_is_refused_and_creates_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    assert!(!h.store.delete_client("ghost", NOW).await?);
    assert!(!h.exists(&h.client_key("ghost")).await?);
    Ok(())
}

#[tokio::test]
async fn set_client_secret_replaces_only_a_live_confidential_clients_hash() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;

    // Live confidential client: replaced, nothing else touched.
    assert!(h.store.create_client(&confidential_client("web")).await?);
    assert!(h.store.set_client_secret("web", "hash-2").await?);
    assert_eq!(
        h.hgetall(&h.client_key("web")).await?,
        with(confidential_hash(), &[("h", "hash-2")])
    );

    // Public client: it has no secret to replace.
    assert!(h.store.create_client(&public_client("mobile")).await?);
    let mobile_key = h.client_key("mobile");
    let mobile_before = h.hgetall(&mobile_key).await?;
    assert!(!h.store.set_client_secret("mobile", "hash-2").await?);
    assert_eq!(h.hgetall(&mobile_key).await?, mobile_before);
    assert_eq!(mobile_before["h"], "");

    // Deleted client: the tombstone gains no secret.
    assert!(h.store.create_client(&confidential_client("gone")).await?);
    assert!(h.store.delete_client("gone", NOW + 1).await?);
    let gone_key = h.client_key("gone");
    let tombstone = h.hgetall(&gone_key).await?;
    assert!(!h.store.set_client_secret("gone", "hash-2").await?);
    assert_eq!(h.hgetall(&gone_key).await?, tombstone);
    assert_eq!(h.store.client("gone").await?, None);

    // Unknown client: nothing is created.
    assert!(!h.store.set_client_secret("ghost", "hash-2").await?);
    assert!(!h.exists(&h.client_key("ghost")).await?);

    // An empty hash is an invalid argument, not a way to clear a secret.
    let web_before = h.hgetall(&h.client_key("web")).await?;
    let result = h
        .invoke(&scripts::SET_CLIENT_SECRET, &h.client_key("web"), &[&""])
        .await;
    assert_invalid(result, "set_client_secret: invalid arguments", "empty hash");
    assert_eq!(h.hgetall(&h.client_key("web")).await?, web_before);
    Ok(())
}

#[tokio::test]
async fn create_client_script_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.client_key("web");

    // ARGV: name, type, scopes, policy, secret hash, now.
    let cases: [(&str, [&dyn Display; 6]); 7] = [
        (
            "confidential with an empty hash",
            [&"Web", &"confidential", &"read", &"reject-only", &"", &NOW],
        ),
        (
            "public with a hash",
            [
                &"Web",
                &"public",
                &"read",
                &"revoke-family",
                &"hash-1",
                &NOW,
            ],
        ),
        (
            "unknown type",
            [
                &"Web",
                &"private",
                &"read",
                &"revoke-family",
                &"hash-1",
                &NOW,
            ],
        ),
        (
            "unknown policy",
            [&"Web", &"confidential", &"read", &"revoke", &"hash-1", &NOW],
        ),
        ("empty policy", [&"Web", &"public", &"read", &"", &"", &NOW]),
        (
            "empty name",
            [
                &"",
                &"confidential",
                &"read",
                &"reject-only",
                &"hash-1",
                &NOW,
            ],
        ),
        (
            "non-numeric now",
            [
                &"Web",
                &"confidential",
                &"read",
                &"reject-only",
                &"hash-1",
                &"now",
            ],
        ),
    ];
    for (case, args) in cases {
        let result = h.invoke(&scripts::CREATE_CLIENT, &key, &args).await;
        assert_invalid(result, "create_client: invalid arguments", case);
        assert!(!h.exists(&key).await?, "{case}: wrote the client");
    }

    // Control: the valid form creates the client (reply 1), then reports the id taken (0).
    let valid: [&dyn Display; 6] = [
        &"Web app",
        &"confidential",
        &"read write",
        &"reject-only",
        &"hash-1",
        &NOW,
    ];
    assert_eq!(
        h.invoke(&scripts::CREATE_CLIENT, &key, &valid).await?,
        ["1"]
    );
    assert_eq!(
        h.invoke(&scripts::CREATE_CLIENT, &key, &valid).await?,
        ["0"]
    );
    assert_eq!(h.hgetall(&key).await?, confidential_hash());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Numbers that are not plain whole numbers must be refused before the first write: Redis does
// not roll a script back when a later command fails, and a fraction must not reach the record.

#[tokio::test]
async fn issue_with_a_fractional_idle_ttl_is_refused_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.family_key(FamilyId::random());
    let result = h
        .invoke(
            &scripts::ISSUE,
            &key,
            &[&CLIENT, &"read", &NOW, &"k1", &LIFETIME, &"1.5"],
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        h.snapshot(&key).await?,
        (None, -2),
        "an error reply left a family behind"
    );
    Ok(())
}

#[tokio::test]
async fn rotate_with_a_fractional_idle_ttl_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    let before = h.snapshot(&key).await?;
    let result = h
        .invoke(
            &scripts::ROTATE,
            &key,
            &[
                &1,
                &CLIENT,
                &(NOW + 1),
                &GRACE,
                &"86400000.5",
                &"k2",
                &"revoke-family",
            ],
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    // The caller sees an error, yet the family has moved to generation 2: the pair it never
    // received is now current, and its retry is a replay or, past grace, a reuse.
    assert_eq!(
        h.snapshot(&key).await?,
        before,
        "an error reply advanced the family"
    );
    Ok(())
}

/// A rotation request delayed in transit (stamped before the family's latest rotation) that
/// would count as reuse is refused without revoking: its caller gave up and retried long ago.
/// Stamped after the rotation, the same request is reuse and revokes.
#[tokio::test]
async fn rotate_a_delayed_duplicate_is_refused_without_revoking() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.issue(FamilyId::random()).await?;
    let args = |p: u64, now: u64| -> Vec<String> {
        [
            p.to_string(),
            CLIENT.to_string(),
            now.to_string(),
            "10000".into(),
            IDLE.to_string(),
        ]
        .into_iter()
        .chain(["k1".into(), "revoke-family".into()])
        .collect()
    };
    let mut rotate = async |p: u64, now: u64| {
        let args = args(p, now);
        let args: Vec<&dyn Display> = args.iter().map(|a| a as &dyn Display).collect();
        h.invoke(&scripts::ROTATE, &key, &args).await
    };
    // Generation 1 -> 2 at NOW+1, then 2 -> 3 at NOW+2.
    assert_eq!(rotate(1, NOW + 1).await?[0], "rotated");
    assert_eq!(rotate(2, NOW + 2).await?[0], "rotated");
    // A duplicate of the first rotation, stamped NOW+1, arrives only now: refused, no change.
    assert_eq!(rotate(1, NOW + 1).await?, ["reused_stale"]);
    // The same token presented now is reuse, and revokes.
    assert_eq!(rotate(1, NOW + 3).await?, ["reused_revoked"]);
    let record = h.get(&key).await?.expect("the family is kept, revoked");
    assert!(record.contains(" r:reuse:"), "{record:?}");
    Ok(())
}
