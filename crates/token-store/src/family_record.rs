//! The stored form of a family: one field of its subject's hash (field: the family id), the
//! record's own fields separated by single spaces:
//!
//! ```text
//! <generation>[/<access mask>] <rotated at> <key id> <issued at> <absolute expiry> <status>
//!     <client id> <scope mask>
//! ```
//!
//! Times are ms since the epoch in base 36 (8 characters). The scope mask (hex) says which of
//! the client's allowed scopes, fixed at registration, the family holds. The access mask
//! (decimal; which of the family's scopes the current generation's access token carries, when
//! the refresh that made it narrowed them) matters only to `rotate.lua`'s replays.
//!
//! `status` is `a` (active) or `r:<reason>:<revoked at>`. The subject's hash also holds its
//! revocation markers, fields `!` (every client) and `!<client id>` (one client), each a time:
//! a family issued at or before a marker that applies to it is revoked ([`apply_marker`]).
//!
//! The format is defined once, by `encode_family` / `decode_family` in `lua/prelude.lua`,
//! which the scripts (the only writers of families) use; this module is its reading in Rust,
//! checked against the prelude inside a real Redis by `tests/scripts.rs`
//! (`family_record_agrees_with_the_prelude`): change the format there first. The record is
//! compact so that a realistic family stays under 64 bytes, where Redis keeps a small hash in
//! its listpack encoding: about 230 bytes for a subject's only family, less for each further
//! one (BENCHMARKS.md).

use token_core::StoreError;
use token_core::store::{FamilyState, FamilyStatus, REVOKED_WITH_SUBJECT};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("family record: {what}"))
}

/// The first character of a marker field: family ids (base64url) never start with it.
pub const MARKER_PREFIX: char = '!';

/// The marker field that revokes families of `client_id`, or of every client.
pub fn marker_field(client_id: Option<&str>) -> String {
    format!("{MARKER_PREFIX}{}", client_id.unwrap_or(""))
}

/// A time in base 36, as the records write it.
pub fn b36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// Reads a base-36 time; `None` unless it is one.
pub fn from_b36(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 11 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    u64::from_str_radix(&text.to_ascii_lowercase(), 36).ok()
}

/// Parses a stored family record (markers not applied).
pub fn decode(record: &str) -> Result<FamilyState, StoreError> {
    let mut fields = record.split(' ');
    let mut next = |what: &str| fields.next().ok_or_else(|| corrupt(what));
    let number = |text: &str, what: &str| text.parse::<u64>().map_err(|_| corrupt(what));
    let time = |text: &str, what: &str| from_b36(text).ok_or_else(|| corrupt(what));
    let generation = next("generation")?;
    let (generation, access_scope_mask) = match generation.split_once('/') {
        Some((generation, mask)) => (generation, Some(number(mask, "access mask")?)),
        None => (generation, None),
    };
    let generation = number(generation, "generation")?;
    let rotated_at_ms = time(next("rotation time")?, "rotation time")?;
    let key_id = next("key id")?.to_owned();
    let issued_at_ms = time(next("issue time")?, "issue time")?;
    let absolute_expiry_ms = time(next("absolute expiry")?, "absolute expiry")?;
    let status = match next("status")? {
        "a" => FamilyStatus::Active,
        revoked => {
            let mut parts = revoked.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("r"), Some(reason), Some(at)) if !reason.is_empty() => {
                    FamilyStatus::Revoked {
                        reason: reason.to_owned(),
                        at_ms: time(at, "revocation time")?,
                    }
                }
                _ => return Err(corrupt("status")),
            }
        }
    };
    let client_id = next("client id")?.to_owned();
    let scope_mask = next("scope mask")?;
    if scope_mask.is_empty() || scope_mask.len() > 16 {
        return Err(corrupt("scope mask"));
    }
    let scope_mask = u64::from_str_radix(scope_mask, 16).map_err(|_| corrupt("scope mask"))?;
    if fields.next().is_some() || key_id.is_empty() || client_id.is_empty() {
        return Err(corrupt("fields"));
    }
    Ok(FamilyState {
        client_id,
        scope_mask,
        generation,
        issued_at_ms,
        rotated_at_ms,
        key_id,
        status,
        absolute_expiry_ms,
        access_scope_mask,
    })
}

/// Writes a family record, as the scripts do. For tests and tools; the service itself only
/// changes families through the scripts.
pub fn encode(family: &FamilyState) -> String {
    let status = match &family.status {
        FamilyStatus::Active => "a".to_owned(),
        FamilyStatus::Revoked { reason, at_ms } => format!("r:{reason}:{}", b36(*at_ms)),
    };
    let generation = match family.access_scope_mask {
        Some(mask) => format!("{}/{mask}", family.generation),
        None => family.generation.to_string(),
    };
    format!(
        "{generation} {} {} {} {} {status} {} {:x}",
        b36(family.rotated_at_ms),
        family.key_id,
        b36(family.issued_at_ms),
        b36(family.absolute_expiry_ms),
        family.client_id,
        family.scope_mask
    )
}

/// The family as its subject's markers leave it: revoked (reason
/// [`REVOKED_WITH_SUBJECT`]) when issued at or before `revoked_at_ms`, the latest marker that
/// applies to it (0: none).
pub fn apply_marker(mut family: FamilyState, revoked_at_ms: u64) -> FamilyState {
    if family.status == FamilyStatus::Active && family.issued_at_ms <= revoked_at_ms {
        family.status = FamilyStatus::Revoked {
            reason: REVOKED_WITH_SUBJECT.to_owned(),
            at_ms: revoked_at_ms,
        };
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_base_36() {
        for n in [0, 1, 35, 36, 1_795_734_250_422, 9_007_199_254_740_991] {
            assert_eq!(from_b36(&b36(n)), Some(n), "{n}");
        }
        assert_eq!(b36(1_795_734_250_422).len(), 8);
        for bad in ["", "-1", "1 2", "zzzzzzzzzzzz", "é"] {
            assert_eq!(from_b36(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn records_round_trip() {
        let t = b36(1_795_734_250_422);
        let i = b36(1_795_732_032_000);
        let x = b36(1_803_510_244_827);
        let record = format!("2 {t} k1795732032 {i} {x} a client-2Afu 5");
        let family = decode(&record).unwrap();
        assert_eq!(family.generation, 2);
        assert_eq!(family.client_id, "client-2Afu");
        assert_eq!(family.scope_mask, 5);
        assert_eq!(family.issued_at_ms, 1_795_732_032_000);
        assert_eq!(encode(&family), record);

        let narrowed = decode("4/5 a k1 9 k a web ff").unwrap();
        assert_eq!(
            (
                narrowed.generation,
                narrowed.access_scope_mask,
                narrowed.rotated_at_ms
            ),
            (4, Some(5), 10)
        );
        assert_eq!(encode(&narrowed), "4/5 a k1 9 k a web ff");

        let revoked = "3 a k1 9 k r:reuse:f web 0";
        let family = decode(revoked).unwrap();
        assert_eq!(
            family.status,
            FamilyStatus::Revoked {
                reason: "reuse".into(),
                at_ms: 15
            }
        );
        assert_eq!(encode(&family), revoked);
    }

    #[test]
    fn markers_revoke_families_issued_until_them() {
        let family = decode("3 a k1 9 k a web 1").unwrap();
        assert_eq!(apply_marker(family.clone(), 0), family);
        assert_eq!(
            apply_marker(family.clone(), 8),
            family,
            "issued after the marker"
        );
        for at in [9, 10] {
            assert_eq!(
                apply_marker(family.clone(), at).status,
                FamilyStatus::Revoked {
                    reason: REVOKED_WITH_SUBJECT.into(),
                    at_ms: at
                }
            );
        }
        // A family revoked on its own keeps its own reason.
        let revoked = decode("3 a k1 9 k r:reuse:f web 1").unwrap();
        assert_eq!(apply_marker(revoked.clone(), 20), revoked);
        assert_eq!(marker_field(None), "!");
        assert_eq!(marker_field(Some("web")), "!web");
    }

    #[test]
    fn corrupt_records_are_refused() {
        for bad in [
            "",
            "1 2 k",
            "x 2 k 3 4 a c 1",
            "1 2 k 3 4 q c 1",
            "1 2 k 3 4 r:reuse c 1",
            "1 2 k 3 4 r::5 c 1",
            "4/x 2 k 3 4 a c 1",
            "1 2 k 3 4 a c",
            "1 2 k 3 4 a c g",
            "1 2 k 3 4 a c 1 extra",
            "1 2 k 3 4 a c 11111111111111111",
            "1 -2 k 3 4 a c 1",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
