//! The stored form of a family: one string, fields separated by single spaces, scopes last:
//!
//! ```text
//! <generation>[/<access mask>] <rotated at, ms> <key id> <absolute expiry, ms> <status>
//!     <client id> [<scopes>]
//! ```
//!
//! The access mask (which scopes the current generation's access token carries, when the
//! refresh that made it narrowed them) matters only to `rotate.lua`'s replays; it is read past
//! here.
//!
//! `status` is `a` (active) or `r:<reason>:<revoked at, ms>`. The format is defined once, by
//! `encode_family` / `decode_family` in `lua/prelude.lua`, which the scripts (the only writers
//! of families) use; this module is its reading in Rust, for introspection, and is checked
//! against the prelude inside a real Redis by `tests/scripts.rs`
//! (`family_record_agrees_with_the_prelude`): change the format there first. One compact
//! string rather than a hash keeps a family within its memory budget (about 245 bytes with
//! realistic ids and scopes, against about 295 as a hash) and stays readable with `GET`.

use token_core::store::{FamilyState, FamilyStatus};
use token_core::{Scopes, StoreError};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("family record: {what}"))
}

/// Parses a stored family record.
pub fn decode(record: &str) -> Result<FamilyState, StoreError> {
    let mut fields = record.splitn(7, ' ');
    let mut next = |what: &str| fields.next().ok_or_else(|| corrupt(what));
    let number = |text: &str, what: &str| text.parse::<u64>().map_err(|_| corrupt(what));
    let generation = next("generation")?;
    let (generation, access_scope_mask) = match generation.split_once('/') {
        Some((generation, mask)) => (generation, Some(number(mask, "access mask")?)),
        None => (generation, None),
    };
    let generation = number(generation, "generation")?;
    let rotated_at_ms = number(next("rotation time")?, "rotation time")?;
    let key_id = next("key id")?.to_owned();
    let absolute_expiry_ms = number(next("absolute expiry")?, "absolute expiry")?;
    let status = match next("status")? {
        "a" => FamilyStatus::Active,
        revoked => {
            let mut parts = revoked.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("r"), Some(reason), Some(at)) => FamilyStatus::Revoked {
                    reason: reason.to_owned(),
                    at_ms: number(at, "revocation time")?,
                },
                _ => return Err(corrupt("status")),
            }
        }
    };
    let client_id = next("client id")?.to_owned();
    let scopes = Scopes::from_space_separated(fields.next().unwrap_or(""))
        .ok_or_else(|| corrupt("more scopes than a family may hold"))?;
    Ok(FamilyState {
        client_id,
        scopes,
        generation,
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
        FamilyStatus::Revoked { reason, at_ms } => format!("r:{reason}:{at_ms}"),
    };
    let generation = match family.access_scope_mask {
        Some(mask) => format!("{}/{mask}", family.generation),
        None => family.generation.to_string(),
    };
    let mut record = format!(
        "{generation} {} {} {} {status} {}",
        family.rotated_at_ms, family.key_id, family.absolute_expiry_ms, family.client_id
    );
    if !family.scopes.is_empty() {
        record.push(' ');
        record.push_str(&family.scopes.to_space_separated());
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = "2 1795734250422 k1795732032 1803510244827 a client-2Afu email openid";
        let family = decode(record).unwrap();
        assert_eq!(family.generation, 2);
        assert_eq!(family.client_id, "client-2Afu");
        assert_eq!(family.scopes.to_space_separated(), "email openid");
        assert_eq!(encode(&family), record);

        let narrowed = decode("4/5 10 k1 20 a web a b c").unwrap();
        assert_eq!(
            (narrowed.generation, narrowed.access_scope_mask),
            (4, Some(5))
        );
        assert_eq!(encode(&narrowed), "4/5 10 k1 20 a web a b c");
        assert!(decode("4/x 10 k1 20 a web").is_err());

        let revoked = "3 10 k1 20 r:reuse:15 web";
        let family = decode(revoked).unwrap();
        assert_eq!(
            family.status,
            FamilyStatus::Revoked {
                reason: "reuse".into(),
                at_ms: 15
            }
        );
        assert!(family.scopes.is_empty());
        assert_eq!(encode(&family), revoked);
    }

    #[test]
    fn corrupt_records_are_refused() {
        for bad in [
            "",
            "1 2 k",
            "x 2 k 3 a c",
            "1 2 k 3 q c",
            "1 2 k 3 r:reuse c",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        // One scope more than the access-token mask has bits: corrupt, not truncated.
        let scopes: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(decode(&format!("1 2 k 3 a c {}", scopes.join(" "))).is_err());
        assert!(decode(&format!("1 2 k 3 a c {}", scopes[..64].join(" "))).is_ok());
    }
}
