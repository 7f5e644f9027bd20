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
use token_core::store::{
    FamilyState, FamilyStatus, REVOKED_WITH_SUBJECT, Reuse, RevokeOutcome, RotateOutcome, Rotation,
};
use token_core::{
    AccessTokenFormat, Client, ClientType, FamilyId, ReusePolicy, Scopes, Store, StoreError,
};
use token_store::{DEFAULT_HIGH_WATER_PERMILLE, family_record, script};

use scripts_support::After::{Extended, KeptTtl, NoFamily, Removed, Rewritten, Unchanged};

const EXPIRED: RotateOutcome = RotateOutcome::Expired;
const REVOKED: RotateOutcome = RotateOutcome::Revoked;
const MISMATCH: RotateOutcome = RotateOutcome::ClientMismatch;
const REUSED: RotateOutcome = RotateOutcome::Reused(Reuse::FamilyRevoked);
const STALE: RotateOutcome = RotateOutcome::Reused(Reuse::StaleDuplicate);
const REFUSED: RotateOutcome = RotateOutcome::Reused(Reuse::Refused);

/// The standard family rotated at `T1` by a refresh narrowed to its first scope.
fn narrowed_rec(st: &str) -> String {
    record(2, Some(1), T1, "k2", NOW, ABSOLUTE, st, CLIENT, MASK)
}

/// PTTL bounds of a key whose TTL was just set to `ms`.
fn up_to(ms: u64) -> std::ops::RangeInclusive<i64> {
    1..=ms as i64
}

// ---------------------------------------------------------------------------------------------
// issue.lua

#[tokio::test]
async fn issue_writes_one_field_of_the_subjects_hash() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let at = h.place("alice@example.com", FamilyId::random());
    h.issue(&at).await?;
    // The key names the subject by 128 bits of its SHA-256, not by the subject itself.
    assert_eq!(at.key, "s:s:{_42YGfwOEr8NJIkuRZh-JA}");
    // Times in base 36: NOW is "loyw3v28", NOW + 30 days "lq5rbf28"; the scope mask in hex.
    let literal = "1 loyw3v28 k1 loyw3v28 lq5rbf28 a web 3";
    assert_eq!(standard_record(), literal);
    assert_eq!(
        h.hgetall(&at.key).await?,
        Hash::from([(at.family.to_string(), literal.to_owned())])
    );
    assert_eq!(h.cmd::<i64>(&["DBSIZE"]).await?, 1, "one key, nothing else");
    // The TTL is min(idle, lifetime); here idle (1 day) is the smaller.
    let pttl = h.pttl(&at.key).await?;
    assert!(up_to(IDLE).contains(&pttl), "PTTL {pttl}");
    assert_eq!(
        h.store.family(&at.subject, at.family).await?,
        Some(FamilyState {
            client_id: CLIENT.into(),
            scope_mask: MASK,
            generation: 1,
            issued_at_ms: NOW,
            rotated_at_ms: NOW,
            key_id: "k1".into(),
            status: FamilyStatus::Active,
            absolute_expiry_ms: ABSOLUTE,
            access_scope_mask: None,
        })
    );
    // A second family of the same subject: a second field of the same hash.
    let second = h.place("alice@example.com", FamilyId::random());
    h.store
        .create_family(&issue().by(OTHER_CLIENT).at(T1).new_family(&second))
        .await?;
    assert_eq!(h.cmd::<i64>(&["DBSIZE"]).await?, 1, "still one key");
    assert_eq!(h.hgetall(&at.key).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn issue_creates_generation_one_and_never_overwrites() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let exists = || Expect::Error("issue: family already exists");
    let intruder = issue().by(OTHER_CLIENT).at(NOW + 5).key("k9");
    let capped = record(1, None, NOW, "k1", NOW, NOW + HOUR, "a", CLIENT, MASK);
    let bare = record(1, None, NOW, "k1", NOW, ABSOLUTE, "a", CLIENT, 0);
    let wide = record(1, None, NOW, "k1", NOW, ABSOLUTE, "a", CLIENT, u64::MAX);
    // A sibling with a longer TTL: the hash's TTL is never shortened for a new family.
    let long_lived =
        || sibling_only(OTHER_CLIENT, NOW).then(issue().idle(2 * IDLE), standard_record());
    let long_sibling = sibling_record(OTHER_CLIENT, NOW);
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,               the answer,               the family after)
        row("the standard family; its TTL is the idle TTL, the smaller",
            no_family(), issue(),                         created(NOW, ABSOLUTE),   Extended(standard_record(), up_to(IDLE))),
        row("a lifetime shorter than the idle TTL caps the TTL",
            no_family(), issue().lifetime(HOUR),          created(NOW, NOW + HOUR), Extended(capped, up_to(HOUR))),
        row("no scopes: the mask is 0, still written",
            no_family(), issue().mask(0),                 created(NOW, ABSOLUTE),   Extended(bare, up_to(IDLE))),
        row("all 64 scopes: a mask of 16 hex digits, kept whole",
            no_family(), issue().mask(u64::MAX),          created(NOW, ABSOLUTE),   Extended(wide, up_to(IDLE))),
        row("a second family of the subject: the hash's TTL extended to cover it",
            sibling_only(OTHER_CLIENT, NOW), issue().idle(2 * IDLE), created(NOW, ABSOLUTE),
            Extended(standard_record(), IDLE as i64 + 1..=2 * IDLE as i64)),
        row("a shorter-lived family beside a longer-lived one: the TTL kept",
            no_family().sibling(issue().by(OTHER_CLIENT).idle(2 * IDLE), long_sibling.clone()),
            issue().lifetime(HOUR),                       created(NOW, NOW + HOUR),
            KeptTtl(record(1, None, NOW, "k1", NOW, NOW + HOUR, "a", CLIENT, MASK))),
        row("the id exists: refused, whatever else differs",
            issued(),    intruder.idle(2 * IDLE),         exists(),                 Unchanged),
        row("the id exists: refused, also with no scopes",
            issued(),    intruder.mask(0),                exists(),                 Unchanged),
        row("the id exists beside a sibling: refused, neither touched",
            long_lived(), intruder,                       exists(),                 Unchanged),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn issue_rejects_invalid_arguments_and_writes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // ARGV: 1 client, 2 scope mask (hex), 3 now, 4 key id, 5 absolute lifetime, 6 idle TTL,
    // 7 high-water mark (permille, '' for none), 8 family id.
    let baseline = issue().mask(1);
    let invalid = |case, slots: &[(usize, &str)]| {
        let refused = Expect::Error("issue: invalid arguments");
        row(case, no_family(), baseline, refused, NoFamily).args(slots)
    };
    let made = || {
        Extended(
            record(1, None, NOW, "k1", NOW, ABSOLUTE, "a", CLIENT, 1),
            up_to(IDLE),
        )
    };
    let rows = [
        row(
            "baseline: created",
            no_family(),
            baseline,
            created(NOW, ABSOLUTE),
            made(),
        ),
        // Now the store sends '' when it has no mark: an empty mark is "none".
        row(
            "empty high-water mark: none",
            no_family(),
            baseline,
            created(NOW, ABSOLUTE),
            made(),
        )
        .args(&[(7, "")]),
        invalid("non-numeric now", &[(3, "soon")]),
        invalid("idle 0", &[(6, "0")]),
        invalid("negative idle", &[(6, "-1")]),
        invalid("non-numeric idle", &[(6, "day")]),
        // Refused before the first write: a fraction would only fail at PEXPIRE.
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
        // The scope mask is lowercase hex, 1 to 16 digits (64 scopes).
        invalid("empty scope mask", &[(2, "")]),
        invalid("non-hex scope mask", &[(2, "g")]),
        invalid("scope names for a mask", &[(2, "read write")]),
        invalid("negative scope mask", &[(2, "-1")]),
        invalid("scope mask of 17 hex digits", &[(2, "1ffffffffffffffff")]),
        // One spelling per mask, as family_record.rs writes it: replies and records compare.
        invalid("scope mask with a leading zero", &[(2, "03")]),
        invalid("upper-case scope mask", &[(2, "FF")]),
        // The family id is the field: never empty, never a marker ('!'), no whitespace.
        invalid("empty family id", &[(8, "")]),
        invalid("family id '!'", &[(8, "!")]),
        invalid("family id of a client marker", &[(8, "!web")]),
        invalid("family id with a space", &[(8, "a b")]),
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
    let narrowed = || issued().then(rotate(1, T1).narrowed(1), narrowed_rec("a"));
    let short_ttl = || issued_as(issue().idle(HOUR), standard_record());
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
    let k1_reused = rec(3, NOW + 2, "k1", &status("reuse", NOW + 3));
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,                            the answer,       the family after)

        // No family: its idle or absolute expiry passed. A family found expired leaves the hash
        // (one HDEL; the hash goes with its last field). While it lives, another client's probe
        // gets past the expiry checks to a refusal that writes nothing.
        row("no family: expired, nothing created",
            no_family(),    rotate(1, NOW),                                 EXPIRED,  NoFamily),
        row("now == absolute expiry: expired, removed",
            issued(),       rotate(1, ABSOLUTE).idle(LONG_IDLE),            EXPIRED,  Removed),
        row("now > absolute expiry: expired, removed",
            issued(),       rotate(1, ABSOLUTE + 1).idle(LONG_IDLE),        EXPIRED,  Removed),
        row("expired beside a sibling: only its field leaves, the TTL kept",
            sibling_only(OTHER_CLIENT, NOW).then(issue(), standard_record()),
            rotate(1, ABSOLUTE),                                            EXPIRED,  Removed),
        row("another client's probe of an expired family: expired, removed all the same",
            issued(),       rotate(1, NOW + IDLE).by(OTHER_CLIENT),         EXPIRED,  Removed),
        row("1 ms before the absolute expiry: alive",
            issued(),       rotate(1, ABSOLUTE - 1).idle(LONG_IDLE).by(OTHER_CLIENT), MISMATCH, Unchanged),
        row("now == t + idle: expired",
            issued(),       rotate(1, NOW + IDLE),                          EXPIRED,  Removed),
        row("now == t + idle - 1: alive",
            issued(),       rotate(1, NOW + IDLE - 1).by(OTHER_CLIENT),     MISMATCH, Unchanged),
        row("rotating at the last idle moment",
            issued(),       rotate(1, NOW + IDLE - 1),                      rotated(2, NOW + IDLE - 1, "k2"),
            Extended(rec(2, NOW + IDLE - 1, "k2", "a"), up_to(IDLE))),
        row("... restarts the idle clock from the new t",
            last_moment(),  rotate(2, NOW + IDLE),                          rotated(3, NOW + IDLE, "k2"),
            Extended(rec(3, NOW + IDLE, "k2", "a"), up_to(IDLE))),
        row("... which runs out in turn",
            last_moment_2(), rotate(3, NOW + 2 * IDLE),                     EXPIRED,  Removed),

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
            Extended(rec(2, T1, "k2", "a"), two_idle())),
        row("p == g near the absolute expiry: the TTL, a day, is not shortened to x - now",
            once(),         rotate(2, ABSOLUTE - HOUR).idle(40 * DAY).key("k3"), rotated(3, ABSOLUTE - HOUR, "k3"),
            KeptTtl(rec(3, ABSOLUTE - HOUR, "k3", "a"))),
        row("p == g near the absolute expiry, a shorter TTL: extended to x - now, no further",
            short_ttl(),    rotate(1, ABSOLUTE - 2 * HOUR).idle(40 * DAY).key("k3"), rotated(2, ABSOLUTE - 2 * HOUR, "k3"),
            Extended(rec(2, ABSOLUTE - 2 * HOUR, "k3", "a"), HOUR as i64 + 1..=2 * HOUR as i64)),
        row("p == g with a shorter idle TTL than the hash has: the TTL kept",
            short_ttl().then(rotate(1, T1).idle(IDLE), rec(2, T1, "k2", "a")),
            rotate(2, T2).idle(HOUR),                                       rotated(3, T2, "k2"),
            KeptTtl(rec(3, T2, "k2", "a"))),

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
            Extended(rec(4, T2 + GRACE + 2, "k2", "a"), up_to(IDLE))),

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
            Extended(rec(4, T2 + 1, "k2", "a"), up_to(IDLE))),
        row("p == g-1 within grace stamped before t: replays",
            twice(),        rotate(2, T2 + 1).stamp(NOW),                   replayed(3, T2, "k2"), Unchanged),

        // p > g: only we mint generations, so the store lost writes: g := p+1, TTL set again.
        row("p > g: rolls forward past it",
            issued(),       rotate(5, T1).idle(2 * IDLE),                   rolled_forward(6, T1, "k2"),
            Extended(rec(6, T1, "k2", "a"), two_idle())),
        row("... and the token it rolled past is now the predecessor",
            rolled(),       rotate(5, T1 + 1),                              replayed(6, T1, "k2"), Unchanged),

        // A narrowing refresh: its access mask goes with the generation it makes, and a grace
        // replay re-delivers that token, whatever the replay asks for.
        row("p == g narrowed to read: the mask is stored with generation 2",
            issued(),       rotate(1, T1).narrowed(1),                      rotated(2, T1, "k2").masked(1),
            Extended(narrowed_rec("a"), up_to(IDLE))),
        row("... a replay asking for write gets the read-only token that was issued",
            narrowed(),     rotate(1, T1 + 1).narrowed(2),                  replayed(2, T1, "k2").masked(1), Unchanged),
        row("... a replay asking for every scope likewise",
            narrowed(),     rotate(1, T1 + 1),                              replayed(2, T1, "k2").masked(1), Unchanged),
        row("... the next rotation, not narrowed, carries every scope",
            narrowed(),     rotate(2, T1 + 2),                              rotated(3, T1 + 2, "k2"),
            Extended(rec(3, T1 + 2, "k2", "a"), up_to(IDLE))),
        row("... a mask of all 64 bits is kept whole (no float rounding)",
            issued(),       rotate(1, T1).narrowed(u64::MAX),               rotated(2, T1, "k2").masked(u64::MAX),
            Extended(record(2, Some(u64::MAX), T1, "k2", NOW, ABSOLUTE, "a", CLIENT, MASK), up_to(IDLE))),
        row("... a revocation keeps the mask",
            narrowed(),     revoke(T1 + 1),                                 RevokeOutcome::Revoked,
            KeptTtl(narrowed_rec(&status("logout", T1 + 1)))),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn rotate_rejects_invalid_arguments_and_changes_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // ARGV: 1 p, 2 client, 3 now, 4 grace, 5 idle TTL, 6 key id, 7 policy, 8 stamp ('' for
    // now), 9 access mask ('' for all), 10 family id, 11 the presented token's rotation time.
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
            Extended(rec(3, t2, "k3", "a"), up_to(IDLE)),
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
        // The family id is the field: never empty, never a marker.
        invalid("empty family id", &[(10, "")]),
        invalid("family id '!'", &[(10, "!")]),
        invalid("family id of a client marker", &[(10, "!web")]),
        invalid("empty presented rotation time", &[(11, "")]),
        invalid("non-numeric presented rotation time", &[(11, "then")]),
        invalid("negative presented rotation time", &[(11, "-1")]),
        invalid("fractional presented rotation time", &[(11, "1.5")]),
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
    // The records, as the scripts must write them (times in base 36).
    const AT_2100: &str = "1 1gcmxpmo0 k1 1gcmxpmo0 1gdtsx6o0 a web 3";
    const AT_2_POW_52: &str = "4503599627370496 1gcmxpmo1 k2 1gcmxpmo0 1gdtsx6o0 a web 3";
    const PAST_2_POW_52: &str = "4503599627370497 1gcmxpmo2 k2 1gcmxpmo0 1gdtsx6o0 a web 3";
    const REUSED_AT_FAR: &str =
        "4503599627370497 1gcmxpmo2 k2 1gcmxpmo0 1gdtsx6o0 r:reuse:1gcmxpmo4 web 3";
    const ISSUED_AT_BIG: &str = "1 18ce53un18g k1 18ce53un18g 18ce6apul8g a web 3";
    const REVOKED_AT_BIG: &str =
        "1 18ce53un18g k1 18ce53un18g 18ce6apul8g r:logout:18ce53un18h web 3";

    let mut h = Harness::start().await?;
    let far = |rotation, g, t| issued_until(rotation, g, t, "k2", FAR_EXPIRY);
    let at_2100 = || issued_as(issue().at(FAR), AT_2100.into());
    let at_2_pow_52 = || at_2100().then(rotate(BIG - 1, FAR + 1), AT_2_POW_52.into());
    let past_2_pow_52 = || at_2_pow_52().then(rotate(BIG, FAR + 2), PAST_2_POW_52.into());
    let issued_at_big = || issued_as(issue().at(BIG), ISSUED_AT_BIG.into());
    let written = |record: &str| Extended(record.into(), up_to(IDLE));
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
    // ARGV: 1 client, 2 reason, 3 now, 4 family id. The reason goes into the status "r:<reason>:<now>", so
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
        // The family id is the field: never empty, never a marker.
        invalid("empty family id", &[(4, "")]),
        invalid("family id '!'", &[(4, "!")]),
        invalid("family id of a client marker", &[(4, "!web")]),
    ];
    h.run(&rows).await
}

// ---------------------------------------------------------------------------------------------
// Subject revocation markers ('!' for every client, '!<client id>' for one): a family issued at
// or before a marker that applies to it is revoked, whatever its record says.

/// revoke_subject.lua called directly: `client` ('' for every one) at `now` ('' for TIME).
async fn mark(
    h: &mut Harness,
    key: &str,
    client: &str,
    now: impl ToString,
) -> Result<Vec<String>, redis::RedisError> {
    let argv = [client.to_owned(), now.to_string()];
    h.invoke(&script::revoke_subject::SCRIPT, key, &argv).await
}

/// The standard family, then a marker written by revoke_subject.lua.
fn issued_then(mark: Mark) -> Past {
    issued().marked(mark)
}

/// A sibling of another client issued earlier, `mark`, then the standard family issued at NOW:
/// the marker predates the family.
fn marked_before_issue(mark: Mark) -> Past {
    sibling_only(OTHER_CLIENT, NOW - 10)
        .marked(mark)
        .then(issue(), standard_record())
}

#[tokio::test]
async fn markers_revoke_the_families_issued_until_them_in_rotate_and_revoke() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    let all = || issued_then(mark_all(NOW));
    let own = || issued_then(mark_client(CLIENT, NOW + 5));
    let others = || issued_then(mark_client(OTHER_CLIENT, NOW + 5));
    let rotated_later = || once().marked(mark_all(T1 + 5));
    let rotated_rec = || rec(2, T1, "k2", "a");
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the family before, the call,                       the answer,        the family after)
        row("rotate, '!' at the issue time: revoked",
            all(),          rotate(1, T1),                          REVOKED,  Unchanged),
        row("rotate, '!web' after the issue time: revoked",
            own(),          rotate(1, T1),                          REVOKED,  Unchanged),
        row("rotate, '!web', presented by another client: revoked (before the client check)",
            own(),          rotate(1, T1).by(OTHER_CLIENT),         REVOKED,  Unchanged),
        row("rotate, a family rotated after its issue, '!' later: revoked all the same",
            rotated_later(), rotate(2, T1 + 6),                     REVOKED,  Unchanged),
        row("rotate, a newer generation under a marker: no roll-forward",
            all(),          rotate(7, T1),                          REVOKED,  Unchanged),
        row("rotate, '!' 1 ms before the issue time: not covered",
            marked_before_issue(mark_all(NOW - 1)), rotate(1, T1),  rotated(2, T1, "k2"),
            Extended(rotated_rec(), up_to(IDLE))),
        row("rotate, '!web' before the issue time: not covered",
            marked_before_issue(mark_client(CLIENT, NOW - 5)), rotate(1, T1), rotated(2, T1, "k2"),
            Extended(rotated_rec(), up_to(IDLE))),
        row("rotate, another client's marker: not covered",
            others(),       rotate(1, T1),                          rotated(2, T1, "k2"),
            Extended(rotated_rec(), up_to(IDLE))),
        row("rotate by that other client: its own marker does not revoke web's family",
            others(),       rotate(1, T1).by(OTHER_CLIENT),         MISMATCH, Unchanged),
        row("rotate, covered and lapsed: expired first, removed",
            all(),          rotate(1, NOW + IDLE),                  EXPIRED,  Removed),

        row("revoke, covered by '!': already revoked, written again as it was",
            all(),          revoke(T1),                             RevokeOutcome::AlreadyRevoked, Rewritten),
        row("revoke, covered by '!web': already revoked",
            own(),          revoke(T1),                             RevokeOutcome::AlreadyRevoked, Rewritten),
        row("revoke, covered, by another client: a mismatch",
            own(),          revoke(T1).by(OTHER_CLIENT),            RevokeOutcome::ClientMismatch, Unchanged),
        row("revoke, another client's marker: revoked now",
            others(),       revoke(T1),                             RevokeOutcome::Revoked,
            KeptTtl(rec(1, NOW, "k1", &status("logout", T1)))),
        row("revoke, a marker before the issue time: revoked now",
            marked_before_issue(mark_all(NOW - 1)), revoke(T1),     RevokeOutcome::Revoked,
            KeptTtl(rec(1, NOW, "k1", &status("logout", T1)))),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn rotate_tells_an_absent_family_revoked_with_its_subject_from_an_expired_one()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // The family is absent; a sibling keeps the hash (and its markers) alive.
    let under = |mark: Mark| sibling_only(OTHER_CLIENT, NOW).marked(mark);
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the hash before,          the call (ARGV[11]: presented),          the answer, after)
        row("'!' at T1, token rotated at T1: revoked",
            under(mark_all(T1)),          rotate(2, T2).presented(T1),             REVOKED,  Unchanged),
        row("'!' at T1, token rotated before: revoked",
            under(mark_all(T1)),          rotate(2, T2).presented(T1 - 1),         REVOKED,  Unchanged),
        row("'!' at T1, token rotated after: expired",
            under(mark_all(T1)),          rotate(2, T2).presented(T1 + 1),         EXPIRED,  Unchanged),
        row("'!web' at T1, web's token rotated at T1: revoked",
            under(mark_client(CLIENT, T1)), rotate(2, T2).presented(T1),           REVOKED,  Unchanged),
        row("'!mobile' at T1, web's token rotated at T1: expired",
            under(mark_client(OTHER_CLIENT, T1)), rotate(2, T2).presented(T1),     EXPIRED,  Unchanged),
        row("no marker: expired",
            sibling_only(OTHER_CLIENT, NOW), rotate(2, T2).presented(T1),          EXPIRED,  Unchanged),
        row("no hash: expired",
            no_family(),                  rotate(2, T2).presented(T1),             EXPIRED,  NoFamily),
    ];
    h.run(&rows).await
}

/// rotate.lua compares ARGV[11] with the marker time even when there is no marker (0): a
/// token whose rotation time is 0 then reads as revoked with its subject.
#[tokio::test]
async fn rotate_answers_expired_for_an_absent_family_without_a_marker_whatever_argv_11()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    #[rustfmt::skip]
    let rows = [
        row("no marker, a token rotated at 0: expired (0 is no marker)",
            sibling_only(OTHER_CLIENT, NOW), rotate(2, T2).presented(0),           EXPIRED,  Unchanged),
        row("no hash, a token rotated at 0: expired",
            no_family(),                  rotate(2, T2).presented(0),              EXPIRED,  NoFamily),
    ];
    h.run(&rows).await
}

#[tokio::test]
async fn read_family_answers_the_record_with_the_latest_marker_that_applies() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    let std = standard_record;
    let revoked_own = || rec(1, NOW, "k1", &status("logout", NOW + 1));
    let invalid = |case, slots: &[(usize, &str)]| {
        let refused = Expect::Error("read_family: invalid arguments");
        row(case, issued(), read(), refused, Unchanged).args(slots)
    };
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the hash before,                                  the call, the answer,            after)
        row("no marker: 0",
            issued(),                                             read(), found(std(), 0),        Unchanged),
        row("'!' covering it",
            issued_then(mark_all(NOW)),                           read(), found(std(), NOW),      Unchanged),
        row("'!web' covering it",
            issued_then(mark_client(CLIENT, NOW + 5)),            read(), found(std(), NOW + 5),  Unchanged),
        row("only another client's marker: 0",
            issued_then(mark_client(OTHER_CLIENT, NOW + 5)),      read(), found(std(), 0),        Unchanged),
        row("'!' and '!web': the later, '!web'",
            issued_then(mark_all(NOW + 5)).marked(mark_client(CLIENT, NOW + 7)), read(), found(std(), NOW + 7), Unchanged),
        row("'!web' and '!': the later, '!'",
            issued_then(mark_client(CLIENT, NOW + 5)).marked(mark_all(NOW + 7)), read(), found(std(), NOW + 7), Unchanged),
        row("a marker before the issue time: answered, and the family stays active",
            marked_before_issue(mark_all(NOW - 5)),               read(), found(std(), NOW - 5),  Unchanged),
        row("revoked on its own, then covered: its own reason stays",
            issued().then(revoke(NOW + 1), revoked_own()).marked(mark_all(NOW + 5)),
            read(), found(revoked_own(), NOW + 5),                                                Unchanged),
        row("absent beside a marker: nil, 0",
            sibling_only(OTHER_CLIENT, NOW).marked(mark_all(NOW + 5)), read(), Expect::Read(None, 0), Unchanged),
        row("no hash: nil, 0",
            no_family(),                                          read(), Expect::Read(None, 0),  NoFamily),
        invalid("empty family id", &[(1, "")]),
        invalid("family id '!'", &[(1, "!")]),
        invalid("family id of a client marker", &[(1, "!web")]),
    ];
    h.run(&rows).await?;

    // What the store makes of a covered family: revoked with the subject, at the marker.
    let at = h.fresh();
    h.issue(&at).await?;
    let marked = mark(&mut h, &at.key, "", NOW + 5).await?;
    assert_eq!(marked, args![NOW + 5, 0]);
    let read = h.store.family(&at.subject, at.family).await?;
    assert_eq!(
        read.map(|f| f.status),
        Some(FamilyStatus::Revoked {
            reason: REVOKED_WITH_SUBJECT.into(),
            at_ms: NOW + 5
        })
    );
    Ok(())
}

#[tokio::test]
async fn issue_starts_a_family_after_a_marker_of_the_same_millisecond() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let under = |mark: Mark| sibling_only(OTHER_CLIENT, NOW - 10).marked(mark);
    let starting = |at: u64| record(1, None, at, "k1", at, at + LIFETIME, "a", CLIENT, MASK);
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the hash before,                    the call, the answer,                         the family after)
        row("'!' at now: issued 1 ms later",
            under(mark_all(NOW)),                   issue(), created(NOW + 1, NOW + 1 + LIFETIME), Extended(starting(NOW + 1), up_to(IDLE))),
        row("'!web' at now: issued 1 ms later",
            under(mark_client(CLIENT, NOW)),        issue(), created(NOW + 1, NOW + 1 + LIFETIME), Extended(starting(NOW + 1), up_to(IDLE))),
        row("a marker ahead of now: issued 1 ms after it",
            under(mark_all(NOW + 5)),               issue(), created(NOW + 6, NOW + 6 + LIFETIME), Extended(starting(NOW + 6), up_to(IDLE))),
        row("'!' 1 ms before now: issued at now",
            under(mark_all(NOW - 1)),               issue(), created(NOW, ABSOLUTE),               Extended(standard_record(), up_to(IDLE))),
        row("another client's marker at now: issued at now",
            under(mark_client(OTHER_CLIENT, NOW)),  issue(), created(NOW, ABSOLUTE),               Extended(standard_record(), up_to(IDLE))),
    ];
    h.run(&rows).await?;

    // A family issued so is not covered: it rotates.
    let at = h.fresh();
    let sibling = h.place(&at.subject, FamilyId::random());
    h.call(issue().by(OTHER_CLIENT).at(NOW - 10), &sibling)
        .await?;
    mark(&mut h, &at.key, "", NOW).await?;
    h.issue(&at).await?;
    let rotated = h.call(rotate(1, NOW + 2).presented(NOW + 1), &at).await?;
    assert_eq!(rotated[0], "rotated", "{rotated:?}");
    Ok(())
}

#[tokio::test]
async fn issue_tidies_expired_families_but_never_a_live_one_or_a_marker() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    // Up to 4 random fields are looked at: with at most 4 in the hash, all of them.
    let fresh = |extra: &[(&str, String)]| {
        let mut hash = Hash::from([(FAMILY.to_owned(), standard_record())]);
        hash.extend(extra.iter().map(|(f, v)| ((*f).to_owned(), v.clone())));
        After::Exactly(hash, up_to(IDLE))
    };
    let sib = |at: u64| sibling_record(OTHER_CLIENT, at);
    let lapsed_idle = || sibling_only(OTHER_CLIENT, NOW - IDLE);
    let last_idle_ms = || sibling_only(OTHER_CLIENT, NOW - IDLE + 1);
    let lapsed_absolute = || {
        no_family().sibling(
            issue().by(OTHER_CLIENT).at(NOW - HOUR).lifetime(HOUR),
            record(
                1,
                None,
                NOW - HOUR,
                "k1",
                NOW - HOUR,
                NOW,
                "a",
                OTHER_CLIENT,
                MASK,
            ),
        )
    };
    let revoked_live = || {
        let revoked = record(
            1,
            None,
            NOW - 10,
            "k1",
            NOW - 10,
            NOW - 10 + LIFETIME,
            &status("logout", NOW - 5),
            OTHER_CLIENT,
            MASK,
        );
        sibling_only(OTHER_CLIENT, NOW - 10).sibling(revoke(NOW - 5).by(OTHER_CLIENT), revoked)
    };
    let covered_live = || sibling_only(OTHER_CLIENT, NOW - 10).marked(mark_all(NOW - 5));
    let markers_and_lapsed = || {
        lapsed_idle()
            .marked(mark_all(NOW - IDLE + 5))
            .marked(mark_client(OTHER_CLIENT, NOW - IDLE + 6))
    };
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the hash before,     the call, the answer,             the hash after)
        row("a family lapsed idle: removed",
            lapsed_idle(),          issue(), created(NOW, ABSOLUTE),  fresh(&[])),
        row("a family at its last idle ms: kept",
            last_idle_ms(),         issue(), created(NOW, ABSOLUTE),  fresh(&[(SIBLING, sib(NOW - IDLE + 1))])),
        row("a family past its absolute expiry: removed",
            lapsed_absolute(),      issue(), created(NOW, ABSOLUTE),  fresh(&[])),
        row("a revoked family, not lapsed: kept (it must still answer revoked)",
            revoked_live(),         issue(), created(NOW, ABSOLUTE),
            fresh(&[(SIBLING, record(1, None, NOW - 10, "k1", NOW - 10, NOW - 10 + LIFETIME,
                &status("logout", NOW - 5), OTHER_CLIENT, MASK))])),
        row("a family a marker covers, not lapsed: kept",
            covered_live(),         issue(), created(NOW, ABSOLUTE),
            fresh(&[(SIBLING, sib(NOW - 10)), ("!", b36(NOW - 5))])),
        row("markers stay; the lapsed family beside them leaves",
            markers_and_lapsed(),   issue(), created(NOW, ABSOLUTE),
            fresh(&[("!", b36(NOW - IDLE + 5)), ("!mobile", b36(NOW - IDLE + 6))])),
    ];
    h.run(&rows).await?;

    // Many fields: whichever four each call looks at, live families and markers stay, and
    // only lapsed ones leave.
    let subject = "tidy@example.com";
    let live: Vec<At> = (0..20)
        .map(|_| h.place(subject, FamilyId::random()))
        .collect();
    let lapsed: Vec<At> = (0..20)
        .map(|_| h.place(subject, FamilyId::random()))
        .collect();
    for at in &lapsed {
        h.call(issue().at(NOW - IDLE - 1), at).await?;
    }
    for at in &live {
        h.call(issue().at(NOW - IDLE + 1), at).await?;
    }
    let key = h.subject_key(subject);
    mark(&mut h, &key, CLIENT, NOW - 1).await?;
    mark(&mut h, &key, "", NOW - 2).await?;
    let mut lapsed_left = lapsed.len();
    for _ in 0..10 {
        let new = h.place(subject, FamilyId::random());
        h.call(issue(), &new).await?;
        let hash = h.hgetall(&key).await?;
        for at in &live {
            assert!(
                hash.contains_key(&at.family.to_string()),
                "a live family left"
            );
        }
        assert_eq!(hash.get("!web"), Some(&b36(NOW - 1)));
        assert_eq!(hash.get("!"), Some(&b36(NOW - 2)));
        let left = lapsed
            .iter()
            .filter(|at| hash.contains_key(&at.family.to_string()))
            .count();
        assert!(left <= lapsed_left, "a lapsed family came back");
        lapsed_left = left;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// revoke_subject.lua: one marker

#[tokio::test]
async fn revoke_subject_writes_one_marker_that_never_moves_back() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let invalid = |case, slots: &[(usize, &str)]| {
        let refused = Expect::Error("revoke_subject: invalid arguments");
        row(case, issued(), mark_all(T1), refused, Unchanged).args(slots)
    };
    #[rustfmt::skip]
    let rows = [
        // (case,
        //     the hash before,                 the call,                   the answer,      the hash after)
        row("no hash: nothing written, the marker's time answered",
            no_family(),                          mark_all(T1),               marked(T1, 0),   NoFamily),
        row("a subject: '!' written, the TTL kept",
            issued(),                             mark_all(T1),               marked(T1, 0),   After::Marked("!".into(), T1)),
        row("one client: '!web' written",
            issued(),                             mark_client(CLIENT, T1),    marked(T1, 0),   After::Marked("!web".into(), T1)),
        row("a later marker replaces an earlier one, answering it",
            issued_then(mark_all(T1)),            mark_all(T2),               marked(T2, T1),  After::Marked("!".into(), T2)),
        row("an earlier marker never moves it back: written again as it was",
            issued_then(mark_all(T2)),            mark_all(T1),               marked(T2, T2),  Rewritten),
        row("the same time again (a retry): written again as it was",
            issued_then(mark_all(T1)),            mark_all(T1),               marked(T1, T1),  Rewritten),
        row("a client's marker beside a later '!': its own field, from 0",
            issued_then(mark_all(T2)),            mark_client(CLIENT, T1),    marked(T1, 0),   After::Marked("!web".into(), T1)),
        row("'!' beside a client's marker: its own field, from 0",
            issued_then(mark_client(CLIENT, T2)), mark_all(T1),               marked(T1, 0),   After::Marked("!".into(), T1)),
        invalid("client with a space", &[(1, "we b")]),
        invalid("client with a tab", &[(1, "web\t")]),
        invalid("non-numeric now", &[(2, "now")]),
        invalid("negative now", &[(2, "-1")]),
        invalid("fractional now", &[(2, "1.5")]),
    ];
    h.run(&rows).await
}

// ---------------------------------------------------------------------------------------------
// revoke_subject_sweep.lua: covered families removed, the active ones counted per client

/// The families of the sweep's subject, by name: (name, client, issued at = rotated at,
/// absolute expiry, status). The sweep's marker is at `T2`; '!web' already held `NOW - 5`.
const SWEPT: [(&str, &str, u64, u64, &str); 9] = [
    ("A", CLIENT, NOW, ABSOLUTE, "a"),             // active, covered
    ("B", OTHER_CLIENT, NOW, ABSOLUTE, "a"),       // active, covered
    ("C", CLIENT, NOW, ABSOLUTE, "r:logout:1"),    // revoked on its own
    ("D", OTHER_CLIENT, T2 - IDLE, ABSOLUTE, "a"), // idle-lapsed at T2
    ("E", CLIENT, T2 + 1, ABSOLUTE, "a"),          // issued after the marker
    ("F", CLIENT, NOW - 10, ABSOLUTE, "a"),        // under '!web' (NOW - 5) already
    ("G", CLIENT, NOW, NOW + 1_000, "a"),          // past its absolute expiry at T2
    ("H", CLIENT, T2, ABSOLUTE, "a"),              // issued in the marker's millisecond
    ("I", OTHER_CLIENT, NOW - 10, ABSOLUTE, "a"),  // active, covered
];

#[tokio::test]
async fn revoke_subject_sweep_removes_covered_families_and_counts_the_active_ones()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let all = || SWEPT.iter().map(|f| f.0).collect::<Vec<_>>();
    let but = |gone: &[&str]| {
        let mut left: Vec<&str> = all().into_iter().filter(|f| !gone.contains(f)).collect();
        left.push("!web");
        left
    };
    let every_covered = ["A", "B", "C", "D", "F", "G", "H", "I"];
    let web_covered = ["A", "C", "F", "G", "H"];
    // (case, extra fields, ARGV[1] client, ARGV[2] at, ARGV[4] before, ARGV[5..] families,
    //  the reply, the fields left)
    type SweepRow<'a> = (
        &'a str,
        &'a [(&'a str, u64)],
        &'a str,
        u64,
        u64,
        Vec<&'a str>,
        Vec<&'a str>,
        Vec<&'a str>,
    );
    #[rustfmt::skip]
    let rows: Vec<SweepRow> = vec![
        ("every client: the active ones counted per client, in the order met; all covered removed",
            &[], "", T2, 0, all(), vec!["web", "2", "mobile", "2"], but(&every_covered)),
        ("every client, '!' held NOW - 10 before: I no longer counted",
            &[], "", T2, NOW - 10, all(), vec!["web", "2", "mobile", "1"], but(&every_covered)),
        ("one client: only its families, counted above its marker's old time",
            &[], CLIENT, T2, NOW - 5, all(), vec!["web", "2"], but(&web_covered)),
        ("one client, under a '!' at NOW: A was revoked already",
            &[("!", NOW)], CLIENT, T2, NOW - 5, all(), vec!["web", "1"],
            [but(&web_covered), vec!["!"]].concat()),
        ("the other client: its own, '!web' does not apply to them",
            &[], OTHER_CLIENT, T2, 0, all(), vec!["mobile", "2"], but(&["B", "D", "I"])),
        ("markers and absent fields are skipped",
            &[("!", NOW)], "", T2, 0, vec!["!web", "!", "nope", "B"], vec!["mobile", "1"],
            [but(&["B"]), vec!["!"]].concat()),
        ("a retry (before == at): removes, counts nothing",
            &[], "", T2, T2, all(), vec![], but(&every_covered)),
        ("no families given: nothing",
            &[], "", T2, 0, vec![], vec![], but(&[])),
        ("a marker before them all: only D, issued a day earlier",
            &[], "", NOW - 20, 0, all(), vec!["mobile", "1"], but(&["D"])),
    ];
    for (case, extra, client, at, before, families, reply, left) in rows {
        let key = h.subject_key(&format!("sweep-{case}"));
        let id = |name: &str| format!("{name}{}", "x".repeat(21));
        let mut fields: Vec<(String, String)> = SWEPT
            .iter()
            .map(|&(name, c, i, x, st)| (id(name), record(1, None, i, "k1", i, x, st, c, MASK)))
            .collect();
        fields.push(("!web".into(), b36(NOW - 5)));
        fields.extend(extra.iter().map(|(f, at)| ((*f).to_owned(), b36(*at))));
        redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(&fields)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(HOUR)
            .query_async::<()>(&mut h.conn)
            .await?;
        let deadline = h.deadline(&key).await?;
        let named = |f: &str| {
            if SWEPT.iter().any(|s| s.0 == f) {
                id(f)
            } else {
                f.to_owned()
            }
        };
        let mut argv = args![client, at, IDLE, before];
        argv.extend(families.iter().map(|f| named(f)));
        let got = h
            .invoke(&script::revoke_subject::SWEEP_SCRIPT, &key, &argv)
            .await?;
        assert_eq!(got, reply, "{case}: the counts");
        let hash = h.hgetall(&key).await?;
        let mut expected: Vec<String> = left.iter().map(|f| named(f)).collect();
        expected.sort();
        assert_eq!(
            hash.keys().cloned().collect::<Vec<_>>(),
            expected,
            "{case}: the fields left"
        );
        let unchanged = fields.iter().filter(|(f, _)| hash.contains_key(f));
        for (field, value) in unchanged {
            assert_eq!(&hash[field], value, "{case}: {field} changed");
        }
        assert_eq!(h.deadline(&key).await?, deadline, "{case}: the TTL");
    }

    // Invalid arguments: an error, nothing removed.
    let key = h.subject_key("sweep-invalid");
    let at = h.place("sweep-invalid", FamilyId::random());
    h.issue(&at).await?;
    let valid = args!["", T2, IDLE, 0, at.family];
    #[rustfmt::skip]
    let invalid: [(&str, &[(usize, &str)]); 9] = [
        ("client with a space",    &[(1, "we b")]),
        ("non-numeric at",         &[(2, "now")]),
        ("negative at",            &[(2, "-1")]),
        ("empty at",               &[(2, "")]),
        ("idle 0",                 &[(3, "0")]),
        ("fractional idle",        &[(3, "1.5")]),
        ("non-numeric before",     &[(4, "x")]),
        ("negative before",        &[(4, "-1")]),
        ("empty before",           &[(4, "")]),
    ];
    for (case, slots) in invalid {
        let argv = changed(valid.clone(), slots);
        let result = h
            .invoke(&script::revoke_subject::SWEEP_SCRIPT, &key, &argv)
            .await;
        assert_invalid(result, "revoke_subject_sweep: invalid arguments", case);
        assert_eq!(h.get(&at).await?, Some(standard_record()), "{case}");
    }
    // The valid form removes it.
    let reply = h
        .invoke(&script::revoke_subject::SWEEP_SCRIPT, &key, &valid)
        .await?;
    assert_eq!(reply, args![CLIENT, 1]);
    assert!(!h.exists(&key).await?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RedisStore::revoke_subject and subject_families, end to end

#[tokio::test]
async fn revoke_subject_through_the_store_covers_hundreds_of_families_exactly() -> anyhow::Result<()>
{
    let mut h = Harness::start().await?;
    let subject = "carol@example.com";
    let key = h.subject_key(subject);
    let issue_as = |h: &Harness, n: usize| {
        (0..n)
            .map(|_| h.place(subject, FamilyId::random()))
            .collect::<Vec<_>>()
    };
    let (web, mobile, lapsed) = (issue_as(&h, 350), issue_as(&h, 200), issue_as(&h, 50));
    // Lapsed first: issue.lua's tidying may drop some of them as the others are issued.
    for at in &lapsed {
        h.store
            .create_family(&issue().at(NOW - 2 * IDLE).new_family(at))
            .await?;
    }
    for at in &web {
        h.store.create_family(&issue().new_family(at)).await?;
    }
    for at in &mobile {
        h.store
            .create_family(&issue().by(OTHER_CLIENT).new_family(at))
            .await?;
    }
    for at in &web[..50] {
        let revoked = h
            .store
            .revoke(subject, at.family, CLIENT, "logout", Some(NOW + 1))
            .await?;
        assert_eq!(revoked, RevokeOutcome::Revoked);
    }
    // Another subject's families, which nothing here may touch.
    let dave = h.place("dave@example.com", FamilyId::random());
    h.issue(&dave).await?;
    let dave_before = (h.hgetall(&dave.key).await?, h.deadline(&dave.key).await?);

    // Premise: a hash this large is a hashtable, which HSCAN walks in several steps.
    let encoding: String = h.cmd(&["OBJECT", "ENCODING", &key]).await?;
    assert_eq!(encoding, "hashtable");
    let (cursor, _): (u64, Vec<String>) = h.cmd(&["HSCAN", &key, "0", "COUNT", "256"]).await?;
    assert_ne!(cursor, 0, "premise: one HSCAN step does not cover the hash");

    // Every family read back, as family() reads each.
    let families: BTreeMap<FamilyId, FamilyState> = h
        .store
        .subject_families(subject)
        .await?
        .into_iter()
        .collect();
    for (group, active) in [(&web[..50], false), (&web[50..], true), (&mobile[..], true)] {
        for at in group {
            let family = &families[&at.family];
            assert_eq!(family.status == FamilyStatus::Active, active, "{family:?}");
            assert_eq!(
                Some(family),
                h.store.family(subject, at.family).await?.as_ref()
            );
        }
    }
    assert!(
        families.len() >= 550 && families.len() <= 600,
        "{}",
        families.len()
    );
    assert!(!families.contains_key(&dave.family));

    // One client first: its 200 active families, at T1.
    let by_mobile = h
        .store
        .revoke_subject(subject, Some(OTHER_CLIENT), IDLE, Some(T1))
        .await?;
    assert_eq!(by_mobile.revoked_at_ms, T1);
    assert_eq!(
        by_mobile.revoked_by_client,
        vec![(OTHER_CLIENT.to_owned(), 200)]
    );
    let hash = h.hgetall(&key).await?;
    assert!(
        mobile
            .iter()
            .all(|at| !hash.contains_key(&at.family.to_string()))
    );
    assert!(
        web.iter()
            .all(|at| hash.contains_key(&at.family.to_string()))
    );
    assert_eq!(hash.get("!mobile"), Some(&b36(T1)));

    // Then everyone's: web's 300 still active (50 were revoked on their own).
    let all = h
        .store
        .revoke_subject(subject, None, IDLE, Some(T2))
        .await?;
    assert_eq!(all.revoked_at_ms, T2);
    assert_eq!(all.revoked_by_client, vec![(CLIENT.to_owned(), 300)]);
    assert_eq!(all.total(), 300);
    // No family left that a marker covers: only the markers.
    let hash = h.hgetall(&key).await?;
    assert_eq!(
        hash,
        Hash::from([("!".into(), b36(T2)), ("!mobile".into(), b36(T1))])
    );
    assert_eq!(h.store.subject_families(subject).await?, vec![]);

    // A retry, and an earlier time: the marker stays, nothing counted again.
    for now in [T2, T1] {
        let again = h
            .store
            .revoke_subject(subject, None, IDLE, Some(now))
            .await?;
        assert_eq!((again.revoked_at_ms, again.total()), (T2, 0), "at {now}");
    }
    // A family issued in the marker's millisecond starts after it, and is listed active.
    let late = h.place(subject, FamilyId::random());
    h.store
        .create_family(&issue().at(T2).new_family(&late))
        .await?;
    let listed = h.store.subject_families(subject).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].0, listed[0].1.issued_at_ms),
        (late.family, T2 + 1)
    );
    assert_eq!(listed[0].1.status, FamilyStatus::Active);

    // The other subject untouched.
    assert_eq!(
        (h.hgetall(&dave.key).await?, h.deadline(&dave.key).await?),
        dave_before
    );
    // A subject with no hash: the time answered, nothing written.
    let none = h
        .store
        .revoke_subject("nobody", None, IDLE, Some(T2))
        .await?;
    assert_eq!((none.revoked_at_ms, none.total()), (T2, 0));
    assert!(!h.exists(&h.subject_key("nobody")).await?);
    Ok(())
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
        let at = h.fresh();
        let created = h.on_redis_clock(issue(), &at, via).await?;
        let t0: u64 = created[1].parse()?;
        assert_redis_time(&mut h, t0, &format!("issue through the {via:?}")).await?;
        let x = t0 + LIFETIME;
        assert_eq!(created, args!["created", t0, x], "{via:?}");
        let rec_at = |g, t, k, st: &str| record(g, None, t, k, t0, x, st, CLIENT, MASK);
        assert_eq!(h.record(&at).await?, rec_at(1, t0, "k1", "a"), "{via:?}");

        let rotated = h
            .on_redis_clock(rotate(1, 0).presented(t0), &at, via)
            .await?;
        let t1: u64 = rotated[2].parse()?;
        assert_redis_time(&mut h, t1, &format!("rotate through the {via:?}")).await?;
        assert!(
            t1 >= t0,
            "{via:?}: rotated at {t1}, before its issue at {t0}"
        );
        assert_eq!(
            rotated,
            args!["rotated", 2, t1, "k2", "3", x, ""],
            "{via:?}"
        );
        let before = h.snapshot(&at, None).await?;
        let rotated_rec = rec_at(2, t1, "k2", "a");
        assert_eq!(before.0.get(FAMILY), Some(&rotated_rec), "{via:?}");
        // The loser of the race, on Redis's clock too: inside grace, the winner's pair.
        let replayed = h
            .on_redis_clock(rotate(1, 0).key("k3").presented(t0), &at, via)
            .await?;
        assert_eq!(
            replayed,
            args!["replayed", 2, t1, "k2", "3", x, ""],
            "{via:?}"
        );
        assert_eq!(h.snapshot(&at, None).await?, before, "{via:?}");

        let revoked = h.on_redis_clock(revoke(0), &at, via).await?;
        assert_eq!(revoked, ["revoked"], "{via:?}");
        let FamilyStatus::Revoked { at_ms, .. } = h.decoded(&at).await?.status else {
            panic!("{via:?}: not revoked: {:?}", h.get(&at).await?);
        };
        assert_redis_time(&mut h, at_ms, &format!("revoke through the {via:?}")).await?;
        let revoked = Hash::from([(
            FAMILY.to_owned(),
            rec_at(2, t1, "k2", &status("logout", at_ms)),
        )]);
        assert_eq!(h.snapshot(&at, None).await?, (revoked, before.1), "{via:?}");

        // revoke_subject.lua on Redis's clock too (script only: the store's also sweeps).
        if let Via::Script = via {
            let marked = mark(&mut h, &at.key, "", "").await?;
            let marker: u64 = marked[0].parse()?;
            assert_redis_time(&mut h, marker, "revoke_subject.lua").await?;
            assert_eq!(marked, args![marker, 0]);
        } else {
            let marked = h
                .store
                .revoke_subject(&at.subject, None, IDLE, None)
                .await?;
            assert_redis_time(&mut h, marked.revoked_at_ms, "revoke_subject").await?;
        }
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
    let new_record = || Extended(standard_record(), up_to(IDLE));
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
        row("no mark (ARGV[7] ''): created",
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
    let family = h.fresh();
    // A new family of a subject that has one already, and one of a new subject.
    let (sibling, refused) = (h.place(&family.subject, FamilyId::random()), h.fresh());
    h.issue(&family).await?;
    for new in [&sibling, &refused] {
        let err = store
            .create_family(&issue().new_family(new))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Full(_)), "{err:?}");
        assert_eq!(h.get(new).await?, None);
    }
    assert!(!h.exists(&refused.key).await?);
    let outcome = store.rotate(&rotate(1, T1).request(&family)).await?;
    assert_eq!(
        outcome,
        RotateOutcome::Issued(Rotation::Rotated, current(2, T1, "k2"))
    );
    assert_eq!(h.record(&family).await?, rec(2, T1, "k2", "a"));
    let revoked = store
        .revoke(
            &family.subject,
            family.family,
            CLIENT,
            "logout",
            Some(T1 + 1),
        )
        .await?;
    assert_eq!(revoked, RevokeOutcome::Revoked);
    assert_eq!(
        h.record(&family).await?,
        rec(2, T1, "k2", &status("logout", T1 + 1))
    );
    // A subject's revocation too: it adds one small field, and must not be refused.
    let marked = store
        .revoke_subject(&family.subject, None, IDLE, Some(T1 + 2))
        .await?;
    assert_eq!(marked.revoked_at_ms, T1 + 2);
    assert_eq!(h.get(&family).await?, None, "swept");
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
    let first = h.fresh();
    h.issue(&first).await?; // loads issue.lua while there is room
    let (used, _) = h.memory().await?;
    let limit = (used / 2).to_string();
    let _: () = h.cmd(&["CONFIG", "SET", "maxmemory", &limit]).await?;

    let family = h.fresh();
    let err = h
        .store
        .create_family(&issue().new_family(&family))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    let direct = h.call(issue(), &family).await;
    assert_invalid(
        direct,
        "command not allowed when used memory",
        "issue.lua past maxmemory",
    );
    // With the default mark, the script refuses first: full as well.
    let marked = h.store_with(DEFAULT_HIGH_WATER_PERMILLE)?;
    let err = marked
        .create_family(&issue().new_family(&family))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    assert_eq!(
        h.snapshot(&family, None).await?,
        (Hash::new(), -2),
        "past maxmemory, a family was written"
    );

    // Room again: the same family is created.
    let _: () = h.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await?;
    let created = h.store.create_family(&issue().new_family(&family)).await?;
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
        standard_record().replace(" 3", ""),
        standard_record().replacen('1', "x", 1),
        standard_record().replacen(&b36(ABSOLUTE), "later-on", 1),
        // A scope mask that is not hex: scope names, as the old format had them.
        standard_record().replace(" 3", " read write"),
        standard_record().replace(" 3", " xyz"),
        // The old format: decimal times, no issue time, scope names.
        format!("1 {NOW} k1 {ABSOLUTE} a {CLIENT} read write"),
        // Two spaces where one separates fields.
        standard_record().replacen(' ', "  ", 1),
    ];
    // Calls that would rotate, roll forward or revoke a sound family; issue.lua does not
    // overwrite it either. Through the store, each error is a broken invariant, not an outage.
    let probes: [(Op, &str); 6] = [
        (rotate(1, NOW + 1).into(), "corrupt family record"),
        (rotate(2, NOW + 1).into(), "corrupt family record"),
        (rotate(9, NOW + 1).into(), "corrupt family record"),
        (revoke(NOW + 1).into(), "corrupt family record"),
        (read(), "corrupt family record"),
        (issue().mask(1).into(), "issue: family already exists"),
    ];
    let rows: Vec<Row> = corrupt
        .iter()
        .flat_map(|record| {
            probes.iter().map(move |(op, error)| {
                let case = format!("{record:?}, {} {op:?}", op.name());
                row(case, written(record), *op, Expect::Error(error), Unchanged)
            })
        })
        .collect();
    h.run(&rows).await?;

    // Listing the subject's families too.
    for record in corrupt {
        let at = h.fresh();
        let _: () = h
            .cmd(&["HSET", &at.key, &at.family.to_string(), &record])
            .await?;
        let err = h.store.subject_families(&at.subject).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{record:?}: {err:?}");
    }
    Ok(())
}

/// A subject's key holding something other than a hash (here an old-format family string):
/// every script answers an error and leaves it as it was.
#[tokio::test]
async fn a_subject_key_of_another_type_is_an_error_and_stays_as_it_was() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let at = h.fresh();
    let old = format!("1 {NOW} k1 {ABSOLUTE} a {CLIENT} read write");
    let ms = HOUR.to_string();
    let _: () = h.cmd(&["SET", &at.key, &old, "PX", &ms]).await?;
    let before = h.deadline(&at.key).await?;
    assert!(before > 0);

    let calls: [Op; 6] = [
        rotate(1, NOW + 1).into(),
        revoke(NOW + 1).into(),
        read(),
        issue().mask(1).into(),
        mark_all(NOW + 1).into(),
        mark_client(CLIENT, NOW + 1).into(),
    ];
    for op in calls {
        let result = h.call(op, &at).await;
        assert_invalid(result, "WRONGTYPE", op.name());
    }
    let err = h
        .store
        .rotate(&rotate(1, NOW + 1).request(&at))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    assert_eq!(h.cmd::<String>(&["GET", &at.key]).await?, old);
    assert_eq!(h.deadline(&at.key).await?, before);
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
    let (family, bare) = (h.fresh(), h.fresh());
    let active = |generation, rotated_at_ms, key_id: &str| FamilyState {
        client_id: CLIENT.into(),
        scope_mask: MASK,
        generation,
        issued_at_ms: NOW,
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
        scope_mask: 0,
        status,
        ..active(1, NOW, "k1")
    };
    // Calls through the store, and the family Rust must read from the record each leaves:
    // issue.lua; rotate.lua's rotation, roll-forward and revocation on reuse; revoke.lua on a
    // family with no scopes (mask 0).
    #[rustfmt::skip]
    let steps: [(&At, Op, FamilyState); 6] = [
        (&family, issue().into(),                    active(1, NOW, "k1")),
        (&family, rotate(1, T1).into(),              active(2, T1, "k2")),
        (&family, rotate(7, T2).key("k-3_x").into(), active(8, T2, "k-3_x")),
        (&family, rotate(7, t3).into(),              FamilyState { status: revoked("reuse", t3), ..active(8, T2, "k-3_x") }),
        (&bare,   issue().mask(0).into(),            no_scopes(FamilyStatus::Active)),
        (&bare,   logout.into(),                     no_scopes(revoked("user_logout-1", NOW + 5))),
    ];
    for (at, op, expected) in steps {
        h.through_store(&op, at).await?;
        assert_round_trip(&h.record(at).await?, &expected);
        // The store's typed reads are the same decoding.
        assert_eq!(
            h.store.family(&at.subject, at.family).await?,
            Some(expected.clone())
        );
        let listed = h.store.subject_families(&at.subject).await?;
        assert_eq!(listed, vec![(at.family, expected)]);
    }
    let record = h.record(&bare).await?;
    assert_eq!(
        record,
        "1 loyw3v28 k1 loyw3v28 lq5rbf28 r:user_logout-1:loyw3v2d web 0"
    );
    Ok(())
}

/// The fields of `family` as `lua/record_codec.lua` takes and gives them.
fn codec_fields(family: &FamilyState) -> Vec<String> {
    let status = match &family.status {
        FamilyStatus::Active => "a".to_owned(),
        FamilyStatus::Revoked { reason, at_ms } => status(reason, *at_ms),
    };
    let mask = family.access_scope_mask.map(|m| m.to_string());
    vec![
        family.generation.to_string(),
        mask.unwrap_or_default(),
        family.rotated_at_ms.to_string(),
        family.key_id.clone(),
        family.issued_at_ms.to_string(),
        family.absolute_expiry_ms.to_string(),
        status,
        family.client_id.clone(),
        format!("{:x}", family.scope_mask),
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
    let family = |generation, mask, scope_mask, status| FamilyState {
        client_id: CLIENT.into(),
        scope_mask,
        generation,
        issued_at_ms: NOW,
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
    let big = 1u64 << 52;
    const MAX_WHOLE: u64 = (1 << 53) - 1;
    let (t1, i, x) = (b36(T1), b36(NOW), b36(ABSOLUTE));
    #[rustfmt::skip]
    let rows: [(&str, FamilyState, String); 9] = [
        ("active, two scopes",  family(2, None, 3, FamilyStatus::Active),
            format!("2 {t1} k-3_x {i} {x} a {CLIENT} 3")),
        ("no scopes",           family(1, None, 0, FamilyStatus::Active),
            format!("1 {t1} k-3_x {i} {x} a {CLIENT} 0")),
        ("revoked",             family(3, None, 1, revoked("user_logout-1", T2)),
            format!("3 {t1} k-3_x {i} {x} r:user_logout-1:{} {CLIENT} 1", b36(T2))),
        ("narrowed",            family(4, Some(5), 7, FamilyStatus::Active),
            format!("4/5 {t1} k-3_x {i} {x} a {CLIENT} 7")),
        ("widest access mask",  family(5, Some(u64::MAX), 1, revoked("reuse", T2)),
            format!("5/{} {t1} k-3_x {i} {x} r:reuse:{} {CLIENT} 1", u64::MAX, b36(T2))),
        ("64 scopes",           family(6, Some(0), u64::MAX, FamilyStatus::Active),
            format!("6/0 {t1} k-3_x {i} {x} a {CLIENT} ffffffffffffffff")),
        ("a mask with letters", family(1, None, 0xab, FamilyStatus::Active),
            format!("1 {t1} k-3_x {i} {x} a {CLIENT} ab")),
        ("2^52 generation",     family(big, None, 3, FamilyStatus::Active),
            format!("{big} {t1} k-3_x {i} {x} a {CLIENT} 3")),
        ("times 0 and 2^53 - 1", FamilyState { issued_at_ms: 0, rotated_at_ms: 0, absolute_expiry_ms: MAX_WHOLE,
                                               ..family(1, None, 3, revoked("r", MAX_WHOLE)) },
            format!("1 0 k-3_x 0 2gosa7pa2gv r:r:2gosa7pa2gv {CLIENT} 3")),
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
    #[rustfmt::skip]
    let bad = [
        "", "1 2 k", "x 2 k 3 4 a c 1", "1/x 2 k 3 4 a c 1", "1 2 k 3 4 a c", "1 2 k 3 4 a c g",
        "1 2- k 3 4 a c 1", "1 2 k 3 4 a c 1 extra", "1 2 k 3 a c 1", "1  2 k 3 4 a c 1",
    ];
    for bad in bad {
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
    let at = h.fresh();
    if h.call(issue().key("k\t1"), &at).await.is_ok() {
        assert_eq!(h.decoded(&at).await?.key_id, "k\t1");
        let rotated = h.call(rotate(1, NOW + 1), &at).await;
        assert!(
            matches!(rotated.as_deref(), Ok([outcome, ..]) if outcome == "rotated"),
            "issue.lua accepted key id \"k\\t1\" and wrote {:?}, which rotate.lua cannot read: {rotated:?}",
            h.get(&at).await?
        );
    } else {
        assert!(!h.exists(&at.key).await?);
    }
    Ok(())
}

#[tokio::test]
async fn rotate_refuses_a_key_id_with_a_tab_or_stores_it_readably() -> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let at = h.fresh();
    h.issue(&at).await?;
    if h.call(rotate(1, NOW + 1).key("k\t2"), &at).await.is_ok() {
        assert_eq!(h.decoded(&at).await?.key_id, "k\t2");
        let next = h.call(rotate(2, NOW + 2).key("k3"), &at).await;
        assert!(
            matches!(next.as_deref(), Ok([outcome, ..]) if outcome == "rotated"),
            "rotate.lua accepted key id \"k\\t2\" and wrote {:?}, which it cannot read back: {next:?}",
            h.get(&at).await?
        );
    } else {
        assert_eq!(h.record(&at).await?, standard_record());
    }
    Ok(())
}

/// The family of client "we\tb" must stay that client's, not pass to client "we".
#[tokio::test]
async fn issue_refuses_a_client_id_with_a_tab_or_keeps_the_family_that_clients()
-> anyhow::Result<()> {
    let mut h = Harness::start().await?;
    let at = h.fresh();
    if h.call(issue().by("we\tb").mask(1), &at).await.is_ok() {
        let before = h.snapshot(&at, None).await?;
        assert_eq!(h.decoded(&at).await?.client_id, "we\tb");
        let foreign = h.call(rotate(1, NOW + 1).by("we"), &at).await;
        assert_eq!(
            foreign.as_deref().ok(),
            Some(["client_mismatch".to_owned()].as_slice()),
            "issue.lua accepted client \"we\\tb\"; rotate.lua as client \"we\" answered {foreign:?} and left {:?}",
            h.get(&at).await?
        );
        assert_eq!(h.snapshot(&at, None).await?, before);
        let foreign = h.call(revoke(NOW + 1).by("we"), &at).await;
        assert_eq!(
            foreign.as_deref().ok(),
            Some(["client_mismatch".to_owned()].as_slice()),
            "revoke.lua as client \"we\""
        );
        assert_eq!(h.snapshot(&at, None).await?, before);
    } else {
        assert!(!h.exists(&at.key).await?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create_client.lua, set_client_secret.lua, delete_client.lua

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

/// The two scopes the standard family's client is allowed ([`MASK`] selects both).
fn scopes() -> Scopes {
    Scopes::parse("scopes", &["write", "read"]).expect("valid scopes")
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
