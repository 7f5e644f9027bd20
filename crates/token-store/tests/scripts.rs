//! The Lua scripts' own tests, against a real `redis-server` (one per test): a specification
//! of each script, mostly as tables.
//!
//! A table row names its case, the family as the call finds it (the script calls that made it,
//! and the record they must have left), the call, the reply, and the family key after it:
//! unchanged (no SET ran, same record, same `PEXPIRETIME`), written again as it was, absent, or
//! a given record with its deadline kept or its TTL set again. Each row runs on a family of its
//! own, once through the script with exact reply strings and once through `RedisStore`'s typed
//! API (rows that set argument slots the typed API cannot express run through the script only).
//! The machinery is in `scripts_support`.
//!
//! Time is a script argument (or '' for Redis's own clock, see
//! `an_empty_now_is_redis_time_in_issue_rotate_and_revoke`), so `now` values are chosen
//! freely and nothing waits. The real TTLs set here are hours or days, so no key can lapse
//! while a test runs.

mod reply;
#[macro_use]
mod scripts_support;

use std::collections::BTreeMap;

use deadpool_redis::redis;
use scripts_support::*;
use token_core::store::{FamilyState, FamilyStatus, Reuse, RevokeOutcome, RotateOutcome, Rotation};
use token_core::{
    AccessTokenFormat, Client, ClientType, FamilyId, ReusePolicy, Scopes, Store, StoreError,
};
use token_store::{DEFAULT_HIGH_WATER_PERMILLE, family_record, script};

use scripts_support::After::{KeptTtl, NewTtl, NoFamily, Rewritten, Unchanged};

const EXPIRED: RotateOutcome = RotateOutcome::Expired;
const REVOKED: RotateOutcome = RotateOutcome::Revoked;
const MISMATCH: RotateOutcome = RotateOutcome::ClientMismatch;
const REUSED: RotateOutcome = RotateOutcome::Reused(Reuse::FamilyRevoked);
const STALE: RotateOutcome = RotateOutcome::Reused(Reuse::StaleDuplicate);
const REFUSED: RotateOutcome = RotateOutcome::Reused(Reuse::Refused);

/// PTTL bounds of a key whose TTL was just set to `ms`.
fn up_to(ms: u64) -> std::ops::RangeInclusive<i64> {
    1..=ms as i64
}

// ---------------------------------------------------------------------------------------------
// issue.lua

#[tokio::test]
async fn issue_writes_one_string_key_named_after_the_family() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = FamilyId::random();
    let key = h.issue(family).await?;
    assert_eq!(key, format!("s:{{{family}}}"));
    assert_eq!(h.record(&key).await?, standard_record());
    assert_eq!(h.cmd::<i64>(&["DBSIZE"]).await?, 1, "one key, nothing else");
    // The TTL is min(idle, lifetime); here idle (1 day) is the smaller.
    let pttl = h.pttl(&key).await?;
    assert!(up_to(IDLE).contains(&pttl), "PTTL {pttl}");
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
            access_scope_mask: None,
        })
    );
    Ok(())
}

#[tokio::test]
async fn issue_creates_generation_one_and_never_overwrites() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let exists = || Expect::Error("issue: family already exists");
    let intruder = issue().by(OTHER_CLIENT).at(NOW + 5).key("k9");
    let capped = format!("1 {NOW} k1 {} a {CLIENT} read write", NOW + HOUR);
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,               the answer,               the family after)
        row("the standard family; its TTL is the idle TTL, the smaller",
            no_family(), issue(),                         created(NOW, ABSOLUTE),   NewTtl(standard_record(), up_to(IDLE))),
        row("a lifetime shorter than the idle TTL caps the TTL",
            no_family(), issue().lifetime(HOUR),          created(NOW, NOW + HOUR), NewTtl(capped, up_to(HOUR))),
        row("no scopes: the record ends at the client id, without a trailing space",
            no_family(), issue().scopes(""),              created(NOW, ABSOLUTE),
            NewTtl(format!("1 {NOW} k1 {ABSOLUTE} a {CLIENT}"), up_to(IDLE))),
        row("the id exists: refused, whatever else differs",
            issued(),    intruder.idle(2 * IDLE),         exists(),                 Unchanged),
        row("the id exists: refused, also with no scopes",
            issued(),    intruder.scopes(""),             exists(),                 Unchanged),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn issue_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // ARGV: 1 client, 2 scopes, 3 now, 4 key id, 5 absolute lifetime, 6 idle TTL,
    // 7 high-water mark (permille, optional).
    let baseline = issue().scopes("read");
    let invalid = |case, slots: &[(usize, &str)]| {
        let refused = Expect::Error("issue: invalid arguments");
        row(case, no_family(), baseline, refused, NoFamily).args(slots)
    };
    let rows = [
        row(
            "baseline: created",
            no_family(),
            baseline,
            created(NOW, ABSOLUTE),
            NewTtl(
                format!("1 {NOW} k1 {ABSOLUTE} a {CLIENT} read"),
                up_to(IDLE),
            ),
        ),
        invalid("non-numeric now", &[(3, "soon")]),
        invalid("idle 0", &[(6, "0")]),
        invalid("negative idle", &[(6, "-1")]),
        invalid("non-numeric idle", &[(6, "day")]),
        // Refused before the first write: a fraction would only fail at PEXPIRE/SET PX.
        invalid("fractional idle", &[(6, "1.5")]),
        invalid("absolute lifetime 0", &[(5, "0")]),
        invalid("negative absolute lifetime", &[(5, "-1")]),
        invalid("non-numeric absolute lifetime", &[(5, "month")]),
        invalid("fractional absolute lifetime", &[(5, "1.5")]),
        // A double holds integers exactly only up to 2^53: an expiry past it would be rounded
        // and written in a form Rust cannot read back.
        invalid(
            "absolute lifetime beyond 2^53",
            &[(5, "99999999999999999999")],
        ),
        invalid("now + lifetime beyond 2^53", &[(5, "9007199254740991")]),
        invalid("now beyond 2^53", &[(3, "9007199254740993")]),
        invalid("idle beyond 2^53", &[(6, "9007199254740993")]),
        invalid("empty client", &[(1, "")]),
        invalid("empty key id", &[(4, "")]),
        // A space inside an id would shift every later field of the record.
        invalid("key id with a space", &[(4, "k 1")]),
        invalid("key id with a trailing space", &[(4, "k1 ")]),
        invalid("client with a space", &[(1, "we b")]),
        invalid("client with a leading space", &[(1, " web")]),
        invalid("high-water mark over 1000", &[(7, "1001")]),
        invalid("non-numeric high-water mark", &[(7, "x")]),
        invalid("negative high-water mark", &[(7, "-1")]),
        invalid("fractional high-water mark", &[(7, "1.5")]),
        // Unlike rotate.lua's stamp, an empty mark is not "absent".
        invalid("empty high-water mark", &[(7, "")]),
    ];
    h.run(&rows).await
}

// ---------------------------------------------------------------------------------------------
// rotate.lua: the state machine, row by row (DESIGN.md)

#[tokio::test]
async fn rotate_follows_the_refresh_state_machine() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    const LONG_IDLE: u64 = 60 * DAY; // only the absolute expiry can apply
    let two_idle = || IDLE as i64 + 1..=2 * IDLE as i64; // a TTL above the one set at issue
    let last_moment =
        || issued().then(rotate(1, NOW + IDLE - 1), rec(2, NOW + IDLE - 1, "k2", "a"));
    let last_moment_2 = || last_moment().then(rotate(2, NOW + IDLE), rec(3, NOW + IDLE, "k2", "a"));
    let narrowed = || {
        issued().then(
            rotate(1, T1).narrowed(1),
            format!("2/1 {T1} k2 {ABSOLUTE} a {CLIENT} read write"),
        )
    };
    let revoked = || {
        issued().then(
            revoke(NOW + 1),
            rec(1, NOW, "k1", &status("logout", NOW + 1)),
        )
    };
    let reused = || {
        twice().then(
            rotate(1, T2 + 1),
            rec(3, T2, "k2", &status("reuse", T2 + 1)),
        )
    };
    let refused_twice = || {
        twice()
            .then(rotate(1, T2 + 1).reject_only(), rec(3, T2, "k2", "a"))
            .then(
                rotate(2, T2 + GRACE + 1).reject_only(),
                rec(3, T2, "k2", "a"),
            )
    };
    let rolled = || issued().then(rotate(5, T1).idle(2 * IDLE), rec(6, T1, "k2", "a"));
    // Rotated at NOW+1 and NOW+2, signing with k1: a delayed duplicate's history.
    let k1_twice = || {
        issued()
            .then(rotate(1, NOW + 1).key("k1"), rec(2, NOW + 1, "k1", "a"))
            .then(rotate(2, NOW + 2).key("k1"), rec(3, NOW + 2, "k1", "a"))
    };
    let k1_reused = format!(
        "3 {} k1 {ABSOLUTE} {} {CLIENT} read write",
        NOW + 2,
        status("reuse", NOW + 3)
    );
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,                            the answer,       the family after)

        // No family: its idle or absolute expiry passed. While it lives, another client's probe
        // gets past the expiry checks to a refusal that writes nothing.
        row("no family: expired, nothing created",
            no_family(),    rotate(1, NOW),                                 EXPIRED,  NoFamily),
        row("now == absolute expiry: expired",
            issued(),       rotate(1, ABSOLUTE).idle(LONG_IDLE),            EXPIRED,  Unchanged),
        row("now > absolute expiry: expired",
            issued(),       rotate(1, ABSOLUTE + 1).idle(LONG_IDLE),        EXPIRED,  Unchanged),
        row("1 ms before the absolute expiry: alive",
            issued(),       rotate(1, ABSOLUTE - 1).idle(LONG_IDLE).by(OTHER_CLIENT), MISMATCH, Unchanged),
        row("now == t + idle: expired",
            issued(),       rotate(1, NOW + IDLE),                          EXPIRED,  Unchanged),
        row("now == t + idle - 1: alive",
            issued(),       rotate(1, NOW + IDLE - 1).by(OTHER_CLIENT),     MISMATCH, Unchanged),
        row("rotating at the last idle moment",
            issued(),       rotate(1, NOW + IDLE - 1),                      rotated(2, NOW + IDLE - 1, "k2"),
            NewTtl(rec(2, NOW + IDLE - 1, "k2", "a"), up_to(IDLE))),
        row("... restarts the idle clock from the new t",
            last_moment(),  rotate(2, NOW + IDLE),                          rotated(3, NOW + IDLE, "k2"),
            NewTtl(rec(3, NOW + IDLE, "k2", "a"), up_to(IDLE))),
        row("... which runs out in turn",
            last_moment_2(), rotate(3, NOW + 2 * IDLE),                     EXPIRED,  Unchanged),

        // Revoked: whoever asks, whatever p (revocation is checked before the client).
        row("revoked: the current generation",
            revoked(),      rotate(1, NOW + 2),                             REVOKED,  Unchanged),
        row("revoked: another client",
            revoked(),      rotate(1, NOW + 2).by(OTHER_CLIENT),            REVOKED,  Unchanged),
        row("revoked: a newer generation does not roll it forward",
            revoked(),      rotate(7, NOW + 2),                             REVOKED,  Unchanged),

        // Another client: nothing, whatever p.
        row("another client, current generation: no rotation",
            once(),         rotate(2, T1 + 1).by(OTHER_CLIENT),             MISMATCH, Unchanged),
        row("another client, predecessor within grace: no replay",
            once(),         rotate(1, T1 + 1).by(OTHER_CLIENT),             MISMATCH, Unchanged),
        row("another client, stale token past grace: no revocation",
            once(),         rotate(1, T1 + GRACE + 1).by(OTHER_CLIENT),     MISMATCH, Unchanged),
        row("another client, newer generation: no roll-forward",
            once(),         rotate(9, T1 + 1).by(OTHER_CLIENT),             MISMATCH, Unchanged),

        // p == g: g := g+1, t := now, and the TTL is set again from this call's idle TTL,
        // capped by the absolute expiry.
        row("p == g: rotates",
            issued(),       rotate(1, T1).idle(2 * IDLE),                   rotated(2, T1, "k2"),
            NewTtl(rec(2, T1, "k2", "a"), two_idle())),
        row("p == g near the absolute expiry: TTL x - now",
            once(),         rotate(2, ABSOLUTE - HOUR).idle(40 * DAY).key("k3"), rotated(3, ABSOLUTE - HOUR, "k3"),
            NewTtl(rec(3, ABSOLUTE - HOUR, "k3", "a"), up_to(HOUR))),

        // p == g-1 within grace: the winner's generation, time and key id (not this call's), so
        // the caller re-derives the identical pair.
        row("p == g-1 within grace: replay",
            once(),         rotate(1, T1 + GRACE / 2).key("k3"),            replayed(2, T1, "k2"), Unchanged),
        row("p == g-1 just after the rotation: replay",
            once(),         rotate(1, T1 + 1).key("k3"),                    replayed(2, T1, "k2"), Unchanged),
        row("now - t == grace: still a replay",
            once(),         rotate(1, T1 + GRACE),                          replayed(2, T1, "k2"), Unchanged),

        // Reuse, policy revoke-family: only the status changes, to r:reuse:<now>, under the
        // same deadline.
        row("now - t == grace + 1: reuse, revoked",
            once(),         rotate(1, T1 + GRACE + 1),                      REUSED,
            KeptTtl(rec(2, T1, "k2", &status("reuse", T1 + GRACE + 1)))),
        row("grace 0: no replay even at the rotation instant",
            once(),         rotate(1, T1).grace(0),                         REUSED,
            KeptTtl(rec(2, T1, "k2", &status("reuse", T1)))),
        row("p < g-1, even within grace: reuse, revoked",
            twice(),        rotate(1, T2 + 1),                              REUSED,
            KeptTtl(rec(3, T2, "k2", &status("reuse", T2 + 1)))),
        row("after a reuse, the current generation is revoked too",
            reused(),       rotate(3, T2 + 2),                              REVOKED,  Unchanged),

        // Reuse, policy reject-only: the token refused, the family kept.
        row("reject-only, p < g-1: refused",
            twice(),        rotate(1, T2 + 1).reject_only(),                REFUSED,  Unchanged),
        row("reject-only, p == g-1 past grace: refused",
            twice(),        rotate(2, T2 + GRACE + 1).reject_only(),        REFUSED,  Unchanged),
        row("reject-only: after the refusals, the holder carries on",
            refused_twice(), rotate(3, T2 + GRACE + 2).reject_only(),       rotated(4, T2 + GRACE + 2, "k2"),
            NewTtl(rec(4, T2 + GRACE + 2, "k2", "a"), up_to(IDLE))),

        // A would-be reuse stamped (ARGV[8]) before t: a duplicate delayed in transit, refused
        // and never revoking. Without a stamp, or an empty one, the stamp is now.
        row("no stamp, now < t: a late duplicate",
            k1_twice(),     rotate(1, NOW + 1).key("k1"),                   STALE,    Unchanged),
        row("no stamp, now > t: reuse, revoked",
            k1_twice(),     rotate(1, NOW + 3).key("k1"),                   REUSED,   KeptTtl(k1_reused)),
        row("p < g-1 stamped before t: a late duplicate",
            twice(),        rotate(1, T2 + 1).stamp(T2 - 1),                STALE,    Unchanged),
        row("p < g-1 stamped at t: reuse, revoked at now",
            twice(),        rotate(1, T2 + 1).stamp(T2),                    REUSED,
            KeptTtl(rec(3, T2, "k2", &status("reuse", T2 + 1)))),
        row("p < g-1, empty stamp: reuse",
            twice(),        rotate(1, T2 + 1),                              REUSED,
            KeptTtl(rec(3, T2, "k2", &status("reuse", T2 + 1)))).args(&[(8, "")]),
        row("p == g-1 past grace stamped before t: a late duplicate",
            twice(),        rotate(2, T2 + GRACE + 1).stamp(T2 - 1),        STALE,    Unchanged),
        row("reject-only, stamped before t: a late duplicate",
            twice(),        rotate(1, T2 + 1).reject_only().stamp(T2 - 1),  STALE,    Unchanged),
        row("p == g stamped before t: rotates all the same",
            twice(),        rotate(3, T2 + 1).stamp(NOW),                   rotated(4, T2 + 1, "k2"),
            NewTtl(rec(4, T2 + 1, "k2", "a"), up_to(IDLE))),
        row("p == g-1 within grace stamped before t: replays",
            twice(),        rotate(2, T2 + 1).stamp(NOW),                   replayed(3, T2, "k2"), Unchanged),

        // p > g: only we mint generations, so the store lost writes: g := p+1, TTL set again.
        row("p > g: rolls forward past it",
            issued(),       rotate(5, T1).idle(2 * IDLE),                   rolled_forward(6, T1, "k2"),
            NewTtl(rec(6, T1, "k2", "a"), two_idle())),
        row("... and the token it rolled past is now the predecessor",
            rolled(),       rotate(5, T1 + 1),                              replayed(6, T1, "k2"), Unchanged),

        // A narrowing refresh: its access mask goes with the generation it makes, and a grace
        // replay re-delivers that token, whatever the replay asks for.
        row("p == g narrowed to read: the mask is stored with generation 2",
            issued(),       rotate(1, T1).narrowed(1),                      rotated(2, T1, "k2").masked(1),
            NewTtl(format!("2/1 {T1} k2 {ABSOLUTE} a {CLIENT} read write"), up_to(IDLE))),
        row("... a replay asking for write gets the read-only token that was issued",
            narrowed(),     rotate(1, T1 + 1).narrowed(2),                  replayed(2, T1, "k2").masked(1), Unchanged),
        row("... a replay asking for every scope likewise",
            narrowed(),     rotate(1, T1 + 1),                              replayed(2, T1, "k2").masked(1), Unchanged),
        row("... the next rotation, not narrowed, carries every scope",
            narrowed(),     rotate(2, T1 + 2),                              rotated(3, T1 + 2, "k2"),
            NewTtl(rec(3, T1 + 2, "k2", "a"), up_to(IDLE))),
        row("... a mask of all 64 bits is kept whole (no float rounding)",
            issued(),       rotate(1, T1).narrowed(u64::MAX),               rotated(2, T1, "k2").masked(u64::MAX),
            NewTtl(format!("2/{} {T1} k2 {ABSOLUTE} a {CLIENT} read write", u64::MAX), up_to(IDLE))),
        row("... a revocation keeps the mask",
            narrowed(),     revoke(T1 + 1),                                 RevokeOutcome::Revoked,
            KeptTtl(format!("2/1 {T1} k2 {ABSOLUTE} a {CLIENT} read write").replace(" a ", &format!(" {} ", status("logout", T1 + 1))))),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn rotate_rejects_invalid_arguments_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // ARGV: 1 p, 2 client, 3 now, 4 grace, 5 idle TTL, 6 key id, 7 policy, 8 stamp (optional).
    // Past grace, so that a stale p that got through would revoke the family.
    let t2 = T1 + GRACE + 1;
    let baseline = rotate(2, t2).key("k3");
    let invalid = |case, slots: &[(usize, &str)]| {
        let refused = Expect::Error("rotate: invalid arguments");
        row(case, once(), baseline, refused, Unchanged).args(slots)
    };
    let rows = [
        row(
            "baseline: rotates",
            once(),
            baseline,
            rotated(3, t2, "k3"),
            NewTtl(rec(3, t2, "k3", "a"), up_to(IDLE)),
        ),
        invalid("p = 0", &[(1, "0")]),
        invalid("p = -1", &[(1, "-1")]),
        invalid("p = 1.5", &[(1, "1.5")]),
        invalid("p non-numeric", &[(1, "two")]),
        invalid("p empty", &[(1, "")]),
        invalid("non-numeric access mask", &[(9, "x")]),
        invalid("negative access mask", &[(9, "-1")]),
        invalid("fractional access mask", &[(9, "1.5")]),
        invalid("access mask of 21 digits", &[(9, "123456789012345678901")]),
        invalid("stale p, unknown policy", &[(1, "1"), (7, "revoke")]),
        invalid("stale p, empty policy", &[(1, "1"), (7, "")]),
        invalid("stale p, negative grace", &[(1, "1"), (4, "-1")]),
        invalid("non-numeric grace", &[(4, "none")]),
        invalid("empty key id", &[(6, "")]),
        // A space inside the key id would shift every later field of the record.
        invalid("key id with a space", &[(6, "k 3")]),
        invalid("key id with a trailing space", &[(6, "k3 ")]),
        invalid("empty client", &[(2, "")]),
        invalid("idle 0", &[(5, "0")]),
        invalid("non-numeric idle", &[(5, "day")]),
        invalid("non-numeric now", &[(3, "later")]),
        invalid("non-numeric stamp", &[(8, "x")]),
        invalid("negative stamp", &[(8, "-1")]),
        invalid("fractional stamp", &[(8, "1.5")]),
        // Refused before the first write: else the caller would see an error, yet the family
        // would have moved to generation 2, whose pair it never received.
        row(
            "fractional idle, current generation of a fresh family",
            issued(),
            rotate(1, NOW + 1),
            Expect::Error("rotate: invalid arguments"),
            Unchanged,
        )
        .args(&[(5, "86400000.5")]),
    ];
    h.run(&rows).await
}

// ---------------------------------------------------------------------------------------------
// Large numbers: Lua's tostring() would print 4.5035996273705e+15; the scripts write integers.

#[tokio::test]
async fn numbers_up_to_2_pow_52_are_written_and_returned_exactly() -> anyhow::Result<()> {
    const FAR: u64 = 4_102_444_800_000; // 2100-01-01T00:00:00Z
    const FAR_EXPIRY: u64 = FAR + LIFETIME; // 4105036800000
    const BIG: u64 = 1 << 52; // 4503599627370496
    // The records, as the scripts must write them.
    const AT_2100: &str = "1 4102444800000 k1 4105036800000 a web read write";
    const AT_2_POW_52: &str = "4503599627370496 4102444800001 k2 4105036800000 a web read write";
    const PAST_2_POW_52: &str = "4503599627370497 4102444800002 k2 4105036800000 a web read write";
    const REUSED_AT_FAR: &str =
        "4503599627370497 4102444800002 k2 4105036800000 r:reuse:4102444800004 web read write";
    const ISSUED_AT_BIG: &str = "1 4503599627370496 k1 4503602219370496 a web read write";
    const REVOKED_AT_BIG: &str =
        "1 4503599627370496 k1 4503602219370496 r:logout:4503599627370497 web read write";

    let mut h = Harness::start().await?;
    let far = |rotation, g, t| issued_until(rotation, g, t, "k2", FAR_EXPIRY);
    let at_2100 = || issued_as(issue().at(FAR), AT_2100.into());
    let at_2_pow_52 = || at_2100().then(rotate(BIG - 1, FAR + 1), AT_2_POW_52.into());
    let past_2_pow_52 = || at_2_pow_52().then(rotate(BIG, FAR + 2), PAST_2_POW_52.into());
    let issued_at_big = || issued_as(issue().at(BIG), ISSUED_AT_BIG.into());
    let written = |record: &str| NewTtl(record.into(), up_to(IDLE));
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,                the answer,                                 the family after)
        row("a roll-forward to 2^52",
            at_2100(),        rotate(BIG - 1, FAR + 1),    far(Rotation::RolledForward, BIG, FAR + 1), written(AT_2_POW_52)),
        row("a rotation to 2^52 + 1",
            at_2_pow_52(),    rotate(BIG, FAR + 2),        far(Rotation::Rotated, BIG + 1, FAR + 2),   written(PAST_2_POW_52)),
        row("a replay echoes the stored numbers",
            past_2_pow_52(),  rotate(BIG, FAR + 3).key("k9"), far(Rotation::Replayed, BIG + 1, FAR + 2), Unchanged),
        row("a reuse records its time",
            past_2_pow_52(),  rotate(BIG - 1, FAR + 4),    REUSED,                 KeptTtl(REUSED_AT_FAR.into())),
        // 16 digits, past the 14 significant digits Lua prints numbers with.
        row("issue.lua at a 16-digit time",
            no_family(),      issue().at(BIG),             created(BIG, BIG + LIFETIME), written(ISSUED_AT_BIG)),
        row("revoke.lua at a 16-digit time",
            issued_at_big(),  revoke(BIG + 1),             RevokeOutcome::Revoked, KeptTtl(REVOKED_AT_BIG.into())),
    ];
    h.run(&rows).await?;

    // Rust reads the same exact numbers back.
    let state = family_record::decode(REUSED_AT_FAR)?;
    assert_eq!(state.generation, BIG + 1);
    let reuse = FamilyStatus::Revoked {
        reason: "reuse".into(),
        at_ms: FAR + 4,
    };
    assert_eq!(state.status, reuse);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// revoke.lua

#[tokio::test]
async fn revoke_records_reason_and_time_once_and_keeps_the_ttl() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let revoked_at_issue = || {
        issued().then(
            revoke(NOW + 1),
            rec(1, NOW, "k1", &status("logout", NOW + 1)),
        )
    };
    let reused = || {
        issued()
            .then(rotate(1, NOW + 1), rec(2, NOW + 1, "k2", "a"))
            .then(rotate(2, NOW + 2), rec(3, NOW + 2, "k2", "a"))
            .then(
                rotate(1, NOW + 3),
                rec(3, NOW + 2, "k2", &status("reuse", NOW + 3)),
            )
    };
    let foreign_attempt = || issued().then(revoke(NOW + 1).by(OTHER_CLIENT), standard_record());
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,                        the answer,           the family after)
        row("an active family: only the status changes, to r:<reason>:<now>",
            once(),             revoke(T1 + 5),                     RevokeOutcome::Revoked,
            KeptTtl(rec(2, T1, "k2", &status("logout", T1 + 5)))),
        row("letters, digits, '_' and '-' make a reason, recorded as given",
            issued(),           revoke(NOW + 1).reason("Admin_revoke-2"), RevokeOutcome::Revoked,
            KeptTtl(rec(1, NOW, "k1", &status("Admin_revoke-2", NOW + 1)))),
        // Written again unchanged, so that a WAIT after a retried revocation covers it.
        row("revoked already: the first reason and time stay",
            revoked_at_issue(), revoke(NOW + 2).reason("admin"),    RevokeOutcome::AlreadyRevoked, Rewritten),
        row("revoked by reuse detection: the reason stays reuse",
            reused(),           revoke(NOW + 4),                    RevokeOutcome::AlreadyRevoked, Rewritten),
        row("no family: not found, nothing created",
            no_family(),        revoke(NOW),                        RevokeOutcome::NotFound,       NoFamily),
        row("another client: a mismatch",
            issued(),           revoke(NOW + 1).by(OTHER_CLIENT),   RevokeOutcome::ClientMismatch, Unchanged),
        row("the owner, after another client's attempt",
            foreign_attempt(),  revoke(NOW + 2),                    RevokeOutcome::Revoked,
            KeptTtl(rec(1, NOW, "k1", &status("logout", NOW + 2)))),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn revoke_rejects_invalid_arguments_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // ARGV: 1 client, 2 reason, 3 now. The reason goes into the status "r:<reason>:<now>", so
    // a space would shift the record's fields and a colon would split the status wrongly.
    let invalid = |case, slots: &[(usize, &str)]| {
        let refused = Expect::Error("revoke: invalid arguments");
        row(case, issued(), revoke(NOW), refused, Unchanged).args(slots)
    };
    let rows = [
        row(
            "baseline: revoked",
            issued(),
            revoke(NOW),
            RevokeOutcome::Revoked,
            KeptTtl(rec(1, NOW, "k1", &status("logout", NOW))),
        ),
        invalid("empty client", &[(1, "")]),
        invalid("empty reason", &[(2, "")]),
        invalid("non-numeric now", &[(3, "now")]),
        invalid("reason with a space", &[(2, "log out")]),
        invalid("reason that is a space", &[(2, " ")]),
        invalid("reason with a colon", &[(2, "log:out")]),
        invalid("reason ending in a colon", &[(2, "logout:")]),
        invalid("reason with a tab", &[(2, "log\tout")]),
        invalid("reason with a newline", &[(2, "logout\n")]),
    ];
    h.run(&rows).await
}

// ---------------------------------------------------------------------------------------------
// One clock: '' for now reads Redis's TIME

/// Asserts that `at` (ms) is within a second of Redis's clock.
async fn assert_redis_time(h: &mut Harness, at: u64, what: &str) -> anyhow::Result<()> {
    let time = h.redis_time().await?;
    assert!(
        at.abs_diff(time) <= 1_000,
        "{what}: {at} is not within 1 s of TIME {time}"
    );
    Ok(())
}

#[tokio::test]
async fn an_empty_now_is_redis_time_in_issue_rotate_and_revoke() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    for via in [Via::Store, Via::Script] {
        let family = FamilyId::random();
        let key = h.family_key(family);
        let created = h.on_redis_clock(issue(), family, via).await?;
        let t0: u64 = created[1].parse()?;
        assert_redis_time(&mut h, t0, &format!("issue through the {via:?}")).await?;
        let x = t0 + LIFETIME;
        assert_eq!(created, args!["created", t0, x], "{via:?}");
        let record = |g, t, k, st| format!("{g} {t} {k} {x} {st} {CLIENT} read write");
        assert_eq!(h.record(&key).await?, record(1, t0, "k1", "a"), "{via:?}");

        let rotated = h.on_redis_clock(rotate(1, 0), family, via).await?;
        let t1: u64 = rotated[2].parse()?;
        assert_redis_time(&mut h, t1, &format!("rotate through the {via:?}")).await?;
        assert!(
            t1 >= t0,
            "{via:?}: rotated at {t1}, before its issue at {t0}"
        );
        assert_eq!(
            rotated,
            args!["rotated", 2, t1, "k2", "read write", x, ""],
            "{via:?}"
        );
        let before = h.snapshot(&key).await?;
        assert_eq!(before.0, Some(record(2, t1, "k2", "a")), "{via:?}");
        // The loser of the race, on Redis's clock too: inside grace, the winner's pair.
        let replayed = h
            .on_redis_clock(rotate(1, 0).key("k3"), family, via)
            .await?;
        assert_eq!(
            replayed,
            args!["replayed", 2, t1, "k2", "read write", x, ""],
            "{via:?}"
        );
        assert_eq!(h.snapshot(&key).await?, before, "{via:?}");

        let revoked = h.on_redis_clock(revoke(0), family, via).await?;
        assert_eq!(revoked, ["revoked"], "{via:?}");
        let FamilyStatus::Revoked { at_ms, .. } = h.decoded(&key).await?.status else {
            panic!("{via:?}: not revoked: {:?}", h.get(&key).await?);
        };
        assert_redis_time(&mut h, at_ms, &format!("revoke through the {via:?}")).await?;
        let revoked = Some(record(2, t1, "k2", &status("logout", at_ms)));
        assert_eq!(h.snapshot(&key).await?, (revoked, before.1), "{via:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Memory: new families are refused first, at the high-water mark; Redis's own OOM is "full"

#[tokio::test]
async fn issue_refuses_new_families_at_the_high_water_mark_and_rotations_go_on()
-> anyhow::Result<()> {
    let redis_args = ["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"];
    let mut h = Harness::start_with(&redis_args, 0).await?;
    let (used, max) = h.memory().await?;
    let fill = used * 1000 / max;
    assert!(
        (100..=800).contains(&fill),
        "premise: a fresh node fills 4mb to {fill}‰, not 10-80%"
    );
    // 50‰ of 4mb is 200 KB, far more than these rows add or INFO's figure wanders.
    let (reached, not_reached) = (&(fill - 50).to_string(), &(fill + 50).to_string());
    let invalid = || Expect::Error("issue: invalid arguments");
    let made = || created(NOW, ABSOLUTE);
    let new_record = || NewTtl(standard_record(), up_to(IDLE));
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call, the answer,          the family after), ARGV[7]
        row("a mark memory has reached: store_full, nothing written",
            no_family(), issue(), Expect::StoreFull, NoFamily).args(&[(7, reached)]),
        row("mark 1‰",
            no_family(), issue(), Expect::StoreFull, NoFamily).args(&[(7, "1")]),
        row("a mark memory has not reached: created",
            no_family(), issue(), made(),            new_record()).args(&[(7, not_reached)]),
        row("mark 1000‰ (maxmemory itself): created",
            no_family(), issue(), made(),            new_record()).args(&[(7, "1000")]),
        row("mark 0: none, created",
            no_family(), issue(), made(),            new_record()).args(&[(7, "0")]),
        // Through the store too: this harness's store has mark 0.
        row("no mark (ARGV[7] absent): created",
            no_family(), issue(), made(),            new_record()),
        row("mark over 1000: invalid",
            no_family(), issue(), invalid(),         NoFamily).args(&[(7, "1001")]),
        row("non-numeric mark: invalid",
            no_family(), issue(), invalid(),         NoFamily).args(&[(7, "x")]),
        row("an existing id past the mark: already exists",
            issued(),    issue(), Expect::Error("issue: family already exists"), Unchanged).args(&[(7, reached)]),
    ];
    h.run(&rows).await?;

    // A store whose mark memory has reached refuses new families, and rotates and revokes
    // the families that exist.
    let store = h.store_with(reached.parse()?)?;
    let (family, refused) = (FamilyId::random(), FamilyId::random());
    let key = h.issue(family).await?;
    let err = store
        .create_family(&issue().new_family(refused))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    assert!(!h.exists(&h.family_key(refused)).await?);
    let outcome = store.rotate(&rotate(1, T1).request(family)).await?;
    assert_eq!(
        outcome,
        RotateOutcome::Issued(Rotation::Rotated, current(2, T1, "k2"))
    );
    assert_eq!(h.record(&key).await?, rec(2, T1, "k2", "a"));
    let revoked = store.revoke(family, CLIENT, "logout", Some(T1 + 1)).await?;
    assert_eq!(revoked, RevokeOutcome::Revoked);
    assert_eq!(
        h.record(&key).await?,
        rec(2, T1, "k2", &status("logout", T1 + 1))
    );
    let (used_after, _) = h.memory().await?;
    let mark: u64 = reached.parse()?;
    assert!(
        used_after * 1000 >= max * mark,
        "memory fell below the mark: {used_after}"
    );
    Ok(())
}

#[tokio::test]
async fn create_family_past_maxmemory_is_full_not_corrupt() -> anyhow::Result<()> {
    // Mark 0: the script never refuses, so what the store sees is Redis's own OOM error.
    let mut h = Harness::start_with(&["--maxmemory-policy", "noeviction"], 0).await?;
    h.issue(FamilyId::random()).await?; // loads issue.lua while there is room
    let (used, _) = h.memory().await?;
    let limit = (used / 2).to_string();
    let _: () = h.cmd(&["CONFIG", "SET", "maxmemory", &limit]).await?;

    let family = FamilyId::random();
    let key = h.family_key(family);
    let err = h
        .store
        .create_family(&issue().new_family(family))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    let direct = h.call(issue(), &key).await;
    assert_invalid(
        direct,
        "command not allowed when used memory",
        "issue.lua past maxmemory",
    );
    // With the default mark, the script refuses first: full as well.
    let marked = h.store_with(DEFAULT_HIGH_WATER_PERMILLE)?;
    let err = marked
        .create_family(&issue().new_family(family))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    assert_eq!(
        h.snapshot(&key).await?,
        (None, -2),
        "past maxmemory, a family was written"
    );

    // Room again: the same family is created.
    let _: () = h.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await?;
    let created = h.store.create_family(&issue().new_family(family)).await?;
    assert_eq!(created, current(1, NOW, "k1"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The family record: corrupt values, and what the scripts write read back by Rust

#[tokio::test]
async fn rotate_and_revoke_answer_an_error_on_a_corrupt_record_and_leave_it_unchanged()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let corrupt = [
        "garbage".to_owned(),
        String::new(),
        // Fields missing, or not numbers where numbers belong.
        "1 2 k1".to_owned(),
        format!("1 {NOW} k1 {ABSOLUTE} a"),
        format!("x {NOW} k1 {ABSOLUTE} a {CLIENT} read write"),
        format!("1 {NOW} k1 later a {CLIENT} read write"),
        // Two spaces where one separates fields.
        format!("1  {NOW} k1 {ABSOLUTE} a {CLIENT} read write"),
    ];
    // Calls that would rotate, roll forward or revoke a sound family; issue.lua does not
    // overwrite it either. Through the store, each error is a broken invariant, not an outage.
    let probes: [(Op, &str); 5] = [
        (rotate(1, NOW + 1).into(), "corrupt family record"),
        (rotate(2, NOW + 1).into(), "corrupt family record"),
        (rotate(9, NOW + 1).into(), "corrupt family record"),
        (revoke(NOW + 1).into(), "corrupt family record"),
        (
            issue().scopes("read").into(),
            "issue: family already exists",
        ),
    ];
    let rows: Vec<Row> = corrupt
        .iter()
        .flat_map(|record| {
            probes.iter().map(move |(op, error)| {
                let case = format!("{record:?}, {} {:?}", op.name(), op.argv());
                row(case, written(record), *op, Expect::Error(error), Unchanged)
            })
        })
        .collect();
    h.run(&rows).await?;

    for record in corrupt {
        let family = FamilyId::random();
        let _: () = h.cmd(&["SET", &h.family_key(family), &record]).await?;
        let err = h.store.family(family).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{record:?}: {err:?}");
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
    let _: () = h.cmd(&["PEXPIRE", &key, &HOUR.to_string()]).await?;
    let before = h.deadline(&key).await?;
    assert!(before > 0);

    assert_invalid(
        h.call(rotate(1, NOW + 1), &key).await,
        "WRONGTYPE",
        "rotate on a hash",
    );
    assert_invalid(
        h.call(revoke(NOW + 1), &key).await,
        "WRONGTYPE",
        "revoke on a hash",
    );
    let issue_on_hash = h.call(issue().scopes("read"), &key).await;
    assert_invalid(
        issue_on_hash,
        "issue: family already exists",
        "issue on a hash",
    );
    let err = h
        .store
        .rotate(&rotate(1, NOW + 1).request(family))
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
    let (family, bare) = (FamilyId::random(), FamilyId::random());
    let active = |generation, rotated_at_ms, key_id: &str| FamilyState {
        client_id: CLIENT.into(),
        scopes: scopes(),
        generation,
        rotated_at_ms,
        key_id: key_id.into(),
        status: FamilyStatus::Active,
        absolute_expiry_ms: ABSOLUTE,
        access_scope_mask: None,
    };
    let revoked = |reason: &str, at_ms| FamilyStatus::Revoked {
        reason: reason.into(),
        at_ms,
    };
    let (t3, logout) = (T2 + GRACE + 1, revoke(NOW + 5).reason("user_logout-1"));
    let no_scopes = |status| FamilyState {
        scopes: Scopes::default(),
        status,
        ..active(1, NOW, "k1")
    };
    // Calls through the store, and the family Rust must read from the record each leaves:
    // issue.lua; rotate.lua's rotation, roll-forward and revocation on reuse; revoke.lua on a
    // family with no scopes (a record of six fields).
    #[rustfmt::skip]
    let steps: [(FamilyId, Op, FamilyState); 6] = [
        (family, issue().into(),                    active(1, NOW, "k1")),
        (family, rotate(1, T1).into(),              active(2, T1, "k2")),
        (family, rotate(7, T2).key("k-3_x").into(), active(8, T2, "k-3_x")),
        (family, rotate(7, t3).into(),              FamilyState { status: revoked("reuse", t3), ..active(8, T2, "k-3_x") }),
        (bare,   issue().scopes("").into(),         no_scopes(FamilyStatus::Active)),
        (bare,   logout.into(),                     no_scopes(revoked("user_logout-1", NOW + 5))),
    ];
    for (family, op, expected) in steps {
        h.through_store(&op, family).await?;
        assert_round_trip(&h.record(&h.family_key(family)).await?, &expected);
        // The store's typed read is the same decoding.
        assert_eq!(h.store.family(family).await?, Some(expected));
    }
    let record = h.record(&h.family_key(bare)).await?;
    assert_eq!(
        record,
        format!("1 {NOW} k1 {ABSOLUTE} r:user_logout-1:{} {CLIENT}", NOW + 5)
    );
    Ok(())
}

/// The fields of `family` as `lua/record_codec.lua` takes and gives them.
fn codec_fields(family: &FamilyState) -> Vec<String> {
    let status = match &family.status {
        FamilyStatus::Active => "a".to_owned(),
        FamilyStatus::Revoked { reason, at_ms } => format!("r:{reason}:{at_ms}"),
    };
    let mask = family.access_scope_mask.map(|m| m.to_string());
    vec![
        family.generation.to_string(),
        mask.unwrap_or_default(),
        family.rotated_at_ms.to_string(),
        family.key_id.clone(),
        family.absolute_expiry_ms.to_string(),
        status,
        family.client_id.clone(),
        family.scopes.to_space_separated(),
    ]
}

/// Runs the prelude's codec (`tests/lua/record_codec.lua`) in Redis.
async fn prelude_codec(
    h: &mut Harness,
    mode: &str,
    args: &[String],
) -> redis::RedisResult<Vec<String>> {
    static CODEC: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
        redis::Script::new(&script::prefixed_with_prelude(include_str!(
            "lua/record_codec.lua"
        )))
    });
    let mut invocation = CODEC.prepare_invoke();
    invocation.arg(mode).arg(args);
    let reply: redis::Value = invocation.invoke_async(&mut h.conn).await?;
    Ok(reply::texts(reply))
}

// The family record format has one definition, `encode_family` / `decode_family` in
// `lua/prelude.lua`; `family_record.rs` must agree with it both ways: what the prelude encodes,
// Rust decodes to the same family and encodes to the same bytes, and what Rust encodes, the
// prelude decodes to the same fields.
#[tokio::test]
async fn family_record_agrees_with_the_prelude() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let family = |generation, mask, scopes: &str, status| FamilyState {
        client_id: CLIENT.into(),
        scopes: Scopes::from_space_separated(scopes).expect("at most 64 scopes"),
        generation,
        rotated_at_ms: T1,
        key_id: "k-3_x".into(),
        status,
        absolute_expiry_ms: ABSOLUTE,
        access_scope_mask: mask,
    };
    let revoked = |reason: &str, at_ms| FamilyStatus::Revoked {
        reason: reason.into(),
        at_ms,
    };
    let many: Vec<String> = (10..74).map(|i| format!("s{i}")).collect();
    let many = many.join(" ");
    let big = 1u64 << 52;
    #[rustfmt::skip]
    let rows: [(&str, FamilyState, String); 7] = [
        ("active, two scopes",  family(2, None, "email openid", FamilyStatus::Active),
            format!("2 {T1} k-3_x {ABSOLUTE} a {CLIENT} email openid")),
        ("no scopes",           family(1, None, "", FamilyStatus::Active),
            format!("1 {T1} k-3_x {ABSOLUTE} a {CLIENT}")),
        ("revoked",             family(3, None, "read", revoked("user_logout-1", T2)),
            format!("3 {T1} k-3_x {ABSOLUTE} r:user_logout-1:{T2} {CLIENT} read")),
        ("narrowed",            family(4, Some(5), "a b c", FamilyStatus::Active),
            format!("4/5 {T1} k-3_x {ABSOLUTE} a {CLIENT} a b c")),
        ("widest mask",         family(5, Some(u64::MAX), "a", revoked("reuse", T2)),
            format!("5/{} {T1} k-3_x {ABSOLUTE} r:reuse:{T2} {CLIENT} a", u64::MAX)),
        ("64 scopes",           family(6, Some(0), &many, FamilyStatus::Active),
            format!("6/0 {T1} k-3_x {ABSOLUTE} a {CLIENT} {many}")),
        ("2^52 generation",     family(big, None, "read", FamilyStatus::Active),
            format!("{big} {T1} k-3_x {ABSOLUTE} a {CLIENT} read")),
    ];
    for (case, expected, record) in rows {
        let fields = codec_fields(&expected);
        let encoded = prelude_codec(&mut h, "encode", &fields).await?;
        assert_eq!(encoded, [record.as_str()], "{case}: the prelude's record");
        let decoded = family_record::decode(&record)
            .unwrap_or_else(|err| panic!("{case}: Rust cannot read the prelude's record: {err}"));
        assert_eq!(decoded, expected, "{case}: Rust's reading");
        assert_eq!(
            family_record::encode(&expected),
            record,
            "{case}: Rust's record"
        );
        let read_back = prelude_codec(&mut h, "decode", &[record]).await?;
        assert_eq!(read_back, fields, "{case}: the prelude's reading");
    }
    // Records neither side can read.
    for bad in ["", "1 2 k", "x 2 k 3 a c", "1/x 2 k 3 a c", "1 2 k x a c"] {
        assert!(family_record::decode(bad).is_err(), "Rust read {bad:?}");
        let lua = prelude_codec(&mut h, "decode", &[bad.to_owned()]).await;
        assert_invalid(lua, "corrupt family record", bad);
    }
    Ok(())
}

// Ids with whitespace other than a space. The Lua decoder splits the record on any whitespace
// (`%S`), `family_record::decode` on spaces only, and the scripts refuse only spaces in the ids
// they store. Whatever id a script accepts must come back as given: a script must either refuse
// an id with a tab, or store it so that the scripts and Rust read it back unchanged.

#[tokio::test]
async fn issue_refuses_a_key_id_with_a_tab_or_stores_it_readably() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.family_key(FamilyId::random());
    if h.call(issue().key("k\t1"), &key).await.is_ok() {
        assert_eq!(h.decoded(&key).await?.key_id, "k\t1");
        let rotated = h.call(rotate(1, NOW + 1), &key).await;
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
    let key = h.issue(FamilyId::random()).await?;
    if h.call(rotate(1, NOW + 1).key("k\t2"), &key).await.is_ok() {
        assert_eq!(h.decoded(&key).await?.key_id, "k\t2");
        let next = h.call(rotate(2, NOW + 2).key("k3"), &key).await;
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
    let key = h.family_key(FamilyId::random());
    if h.call(issue().by("we\tb").scopes("read"), &key)
        .await
        .is_ok()
    {
        let before = h.snapshot(&key).await?;
        assert_eq!(h.decoded(&key).await?.client_id, "we\tb");
        let foreign = h.call(rotate(1, NOW + 1).by("we"), &key).await;
        assert_eq!(
            foreign.as_deref().ok(),
            Some(["client_mismatch".to_owned()].as_slice()),
            "issue.lua accepted client \"we\\tb\"; rotate.lua as client \"we\" answered {foreign:?} and left {:?}",
            h.get(&key).await?
        );
        assert_eq!(h.snapshot(&key).await?, before);
        let foreign = h.call(revoke(NOW + 1).by("we"), &key).await;
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

/// A Redis hash as read by HGETALL (clients).
type Hash = BTreeMap<String, String>;

fn hash(pairs: &[(&str, &str)]) -> Hash {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `hash` with some fields replaced or added.
fn with(mut hash: Hash, changes: &[(&str, &str)]) -> Hash {
    for (k, v) in changes {
        hash.insert((*k).to_owned(), (*v).to_owned());
    }
    hash
}

fn confidential_client(client_id: &str) -> Client {
    Client {
        client_id: client_id.into(),
        name: "Web app".into(),
        client_type: ClientType::Confidential,
        allowed_scopes: scopes(),
        reuse_policy: ReusePolicy::RejectOnly,
        secret_hash: "hash-1".into(),
        created_at_ms: NOW,
        access_token_format: AccessTokenFormat::Opaque,
        access_token_audience: String::new(),
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
        access_token_format: AccessTokenFormat::Opaque,
        access_token_audience: String::new(),
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

impl Harness {
    async fn hgetall(&mut self, key: &str) -> anyhow::Result<Hash> {
        self.cmd(&["HGETALL", key]).await
    }
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

    // A jwt client adds "af" (and "au" when it names an audience); opaque ones never have them.
    // (client id, audience, the fields added to the confidential hash)
    type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let jwt_rows: [Row; 2] = [
        ("jwt-default-aud", "", &[("af", "jwt")]),
        (
            "jwt-own-aud",
            "https://api.example",
            &[("af", "jwt"), ("au", "https://api.example")],
        ),
    ];
    for (id, audience, added) in jwt_rows {
        let client = Client {
            access_token_format: AccessTokenFormat::Jwt,
            access_token_audience: audience.to_owned(),
            ..confidential_client(id)
        };
        assert!(h.store.create_client(&client).await?, "{id}");
        assert_eq!(
            h.hgetall(&h.client_key(id)).await?,
            with(confidential_hash(), added),
            "{id}"
        );
        assert_eq!(h.store.client(id).await?, Some(client), "{id}");
    }
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
    let web_key = h.client_key("web");
    let web_before = h.hgetall(&web_key).await?;
    let result = h
        .invoke(
            &script::set_client_secret::SCRIPT,
            &web_key,
            &["".to_owned()],
        )
        .await;
    assert_invalid(result, "set_client_secret: invalid arguments", "empty hash");
    assert_eq!(h.hgetall(&web_key).await?, web_before);
    Ok(())
}

#[tokio::test]
async fn create_client_script_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let key = h.client_key("web");
    // ARGV: 1 name, 2 type, 3 scopes, 4 policy, 5 secret hash, 6 now, 7 access token format,
    // 8 audience.
    let baseline = args![
        "Web",
        "confidential",
        "read",
        "reject-only",
        "hash-1",
        NOW,
        "jwt",
        "https://api.example"
    ];
    let rows: [(&str, &[(usize, &str)]); 10] = [
        ("unknown access token format", &[(7, "paseto")]),
        ("empty access token format", &[(7, ""), (8, "")]),
        ("audience on an opaque client", &[(7, "opaque")]),
        ("confidential with an empty hash", &[(5, "")]),
        ("public with a hash", &[(2, "public"), (4, "revoke-family")]),
        ("unknown type", &[(2, "private"), (4, "revoke-family")]),
        ("unknown policy", &[(4, "revoke")]),
        ("empty policy", &[(2, "public"), (4, ""), (5, "")]),
        ("empty name", &[(1, "")]),
        ("non-numeric now", &[(6, "now")]),
    ];
    // The baseline the rows change is valid (on a key of its own).
    let other = h.client_key("baseline");
    let reply = h
        .invoke(&script::create_client::SCRIPT, &other, &baseline)
        .await?;
    assert_eq!(reply, ["1"], "baseline");
    for (case, slots) in rows {
        let args = changed(baseline.clone(), slots);
        let result = h.invoke(&script::create_client::SCRIPT, &key, &args).await;
        assert_invalid(result, "create_client: invalid arguments", case);
        assert!(!h.exists(&key).await?, "{case}: wrote the client");
    }

    // Control: the valid form creates the client (reply 1), then reports the id taken (0).
    let valid = args![
        "Web app",
        "confidential",
        "read write",
        "reject-only",
        "hash-1",
        NOW,
        "opaque",
        ""
    ];
    assert_eq!(
        h.invoke(&script::create_client::SCRIPT, &key, &valid)
            .await?,
        ["1"]
    );
    assert_eq!(
        h.invoke(&script::create_client::SCRIPT, &key, &valid)
            .await?,
        ["0"]
    );
    assert_eq!(h.hgetall(&key).await?, confidential_hash());
    Ok(())
}
