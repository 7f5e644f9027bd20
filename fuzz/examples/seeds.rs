//! Writes the seed corpus under `fuzz/corpus/<target>/`: real tokens minted with the test
//! keyring and tampered copies, keyring files good and bad, family records as the scripts
//! write them and corrupt ones, and request inputs that reach each accepted path. The output
//! is committed; run this again only when the formats change:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use token_core::audit::{EventQuery, SummaryQuery};
use token_core::token::{AccessClaims, RefreshClaims};
use token_core::{FamilyId, Keyring, Scopes};
use token_fuzz::{Request, TEST_KEYRING, keyring};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write(&root, "token_parse", &token_seeds());
    write(&root, "keyring_parse", &keyring_seeds());
    write(&root, "family_record", &record_seeds());
    write(&root, "request_validation", &request_seeds());
    write(&root, "gateway_form", &gateway_form_seeds());
    write(&root, "gateway_basic", &gateway_basic_seeds());
}

fn write(root: &Path, target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir: PathBuf = root.join(target);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("clear the old seeds");
    }
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("{target}: {} seeds", seeds.len());
}

fn family() -> FamilyId {
    "q2VmUVkYyE0cXbS4G6R0xw".parse().expect("a family id")
}

fn refresh(key_id: &str, subject: &str) -> RefreshClaims {
    RefreshClaims {
        family: family(),
        generation: 7,
        issued_at_ms: 1_795_734_250_422,
        key_id: key_id.to_owned(),
        subject: subject.to_owned(),
    }
}

fn token_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ring = keyring();
    let rt = ring
        .mint_refresh(&refresh("k1", "alice@example.com"))
        .unwrap();
    let at = ring
        .mint_access(&AccessClaims {
            family: family(),
            generation: 7,
            issued_at_ms: 1_795_734_250_422,
            expires_at_ms: 1_795_735_150_422,
            scope_mask: 0b101,
            key_id: "k1".into(),
            subject: "alice@example.com".into(),
        })
        .unwrap();
    let old_key = ring.mint_refresh(&refresh("k0", "bob")).unwrap();
    let long_subject = ring.mint_refresh(&refresh("k1", &"ü".repeat(128))).unwrap();
    // Well formed, but signed with a key id the test keyring does not have.
    let unknown_key = Keyring::parse("k9 ZnV6ei10ZXN0LWtleS1rOS1ub3QtYS1zZWNyZXQhISE sign")
        .unwrap()
        .mint_refresh(&refresh("k9", "alice@example.com"))
        .unwrap();
    let mut bad_mac = rt.clone();
    let last = bad_mac.pop().unwrap();
    bad_mac.push(if last == 'A' { 'B' } else { 'A' });
    let (head, mac) = rt.rsplit_once('.').unwrap();
    vec![
        ("refresh", rt.clone().into_bytes()),
        ("access", at.clone().into_bytes()),
        ("refresh_old_key", old_key.into_bytes()),
        ("refresh_long_subject", long_subject.into_bytes()),
        ("refresh_unknown_key", unknown_key.into_bytes()),
        ("bad_mac", bad_mac.into_bytes()),
        ("swapped_prefix", at.replacen("at1", "rt1", 1).into_bytes()),
        ("padded", format!("{rt}=").into_bytes()),
        ("no_mac", head.as_bytes().to_vec()),
        ("extra_part", format!("{head}.{mac}.{mac}").into_bytes()),
        ("empty_parts", b"rt1..".to_vec()),
        ("oversize", vec![b'a'; 1025]),
    ]
}

fn keyring_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let secret = "ZnV6ei10ZXN0LWtleS1rMS1ub3QtYS1zZWNyZXQhISE";
    let line = |id: &str, role: &str| format!("{id} {secret} {role}\n");
    vec![
        ("test_keyring", TEST_KEYRING.as_bytes().to_vec()),
        ("one_key", line("k1", "sign").into_bytes()),
        (
            "rotation",
            format!(
                "# promoted k2, k1 still verifies\r\n{}{}  # trailing comment\n",
                line("k1", "verify"),
                line("k2", "sign").trim_end()
            )
            .into_bytes(),
        ),
        ("padded_secret", format!("k1 {secret}= sign\n").into_bytes()),
        ("no_signing_key", line("k1", "verify").into_bytes()),
        (
            "two_signing_keys",
            format!("{}{}", line("k1", "sign"), line("k2", "sign")).into_bytes(),
        ),
        (
            "duplicate_id",
            format!("{}{}", line("k1", "sign"), line("k1", "verify")).into_bytes(),
        ),
        ("short_secret", b"k1 c2hvcnQ sign\n".to_vec()),
        (
            "not_base64",
            b"k1 !!!!not+base64/!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!! sign\n".to_vec(),
        ),
        ("bad_id", line("bad.id", "sign").into_bytes()),
        ("bad_role", line("k1", "owner").into_bytes()),
        ("two_fields", format!("k1 {secret}\n").into_bytes()),
    ]
}

fn record_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let many: Vec<String> = (0..64).map(|i| format!("s{i:02}")).collect();
    vec![
        (
            "active",
            b"2 1795734250422 k1795732032 1803510244827 a client-2Afu email openid".to_vec(),
        ),
        ("revoked", b"3 10 k1 20 r:reuse:15 web".to_vec()),
        (
            "revoked_by_operator",
            b"9 100 k2 200 r:operator:150 web read".to_vec(),
        ),
        (
            "sixty_four_scopes",
            format!("1 2 k1 3 a web {}", many.join(" ")).into_bytes(),
        ),
        (
            "max_numbers",
            b"18446744073709551615 18446744073709551615 k1 18446744073709551615 a c".to_vec(),
        ),
        ("overflow", b"18446744073709551616 1 k1 2 a c".to_vec()),
        ("empty", Vec::new()),
        ("too_few_fields", b"1 2 k".to_vec()),
        ("bad_generation", b"x 2 k 3 a c".to_vec()),
        ("bad_status", b"1 2 k 3 q c".to_vec()),
        ("revoked_without_time", b"1 2 k 3 r:reuse c".to_vec()),
        ("plus_sign", b"+1 2 k 3 a c".to_vec()),
    ]
}

/// Request inputs are bytes that `arbitrary` reads as a [`token_fuzz::Request`]; keep the
/// first pseudo-random blob that reaches each accepted path.
fn request_seeds() -> Vec<(&'static str, Vec<u8>)> {
    type Probe = fn(&Request) -> bool;
    let probes: [(&'static str, Probe); 5] = [
        ("scopes_accepted", |r| {
            let items: Vec<&str> = r.scopes.iter().map(|t| t.0.as_str()).collect();
            items.len() >= 2 && Scopes::parse("s", &items).is_ok()
        }),
        ("many_scopes", |r| r.numbered_scopes % 80 >= 60),
        ("event_query_accepted", |r| {
            let outcomes: Vec<String> = r.outcomes.iter().map(|t| t.0.clone()).collect();
            !r.page_token.0.is_empty()
                && EventQuery::parse(
                    &r.client_id.0,
                    &outcomes,
                    r.since_ms,
                    r.until_ms,
                    r.page_size,
                    &r.page_token.0,
                    r.now_ms.min(u64::MAX - 1),
                )
                .is_ok()
        }),
        ("summary_accepted", |r| {
            SummaryQuery::parse(
                &r.client_id.0,
                r.window_ns.map(Duration::from_nanos),
                Duration::from_secs(u64::from(r.retention_s)),
                r.now_ms.min(u64::MAX - 1),
            )
            .is_ok()
        }),
        ("client_registry_values", |r| {
            !r.client_type.0.is_empty()
                && r.client_type.0.parse::<token_core::ClientType>().is_ok()
                && !r.reuse_policy.0.is_empty()
                && r.reuse_policy.0.parse::<token_core::ReusePolicy>().is_ok()
        }),
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut seeds = Vec::new();
    for (name, probe) in probes {
        for attempt in 0..2_000_000 {
            let len = 64 + attempt % 448;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let Ok(request) = Request::arbitrary_take_rest(Unstructured::new(&bytes)) else {
                continue;
            };
            if probe(&request) {
                seeds.push((name, bytes));
                break;
            }
        }
    }
    seeds
}

/// Request bodies as the gateway's clients send them (authlib, curl, the README's examples),
/// and one of each way a body is malformed.
fn gateway_form_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rt = keyring()
        .mint_refresh(&refresh("k1", "alice@example.com"))
        .unwrap();
    let seeds: Vec<(&str, String)> = vec![
        (
            "refresh",
            format!("grant_type=refresh_token&refresh_token={rt}"),
        ),
        (
            "refresh_post_scope",
            format!(
                "grant_type=refresh_token&refresh_token={rt}&scope=read+write%3Aall\
                 &client_id=web-app.prod_1%3Aeu&client_secret=s3cr%2Bet"
            ),
        ),
        (
            "revoke_hint",
            format!("token={rt}&token_type_hint=refresh_token"),
        ),
        ("introspect_public", format!("token={rt}&client_id=app")),
        (
            "unknown_repeated_empty",
            "&&x=1&x=2&scope=&scope=read&grant_type&".to_owned(),
        ),
        (
            "encoded_name",
            "refresh%5Ftoken=a&Refresh_Token=b".to_owned(),
        ),
        ("duplicate", format!("token={rt}&token={rt}")),
        ("bad_escape", "client_secret=SEC%RET&token=a%4".to_owned()),
        (
            "nul_secret",
            "client_id=web&client_secret=SEC%00RET".to_owned(),
        ),
        ("scope_tab", "scope=read%09write&token=a%C2%85".to_owned()),
        ("not_utf8", "token=%FF%C3&client_id=w%C3%A9b".to_owned()),
    ];
    seeds
        .into_iter()
        .map(|(name, body)| (name, body.into_bytes()))
        .collect()
}

/// `Authorization` values: Basic as clients spell it (plain, form-encoded, public client,
/// padding left out, lower-case scheme) and the issue 14 report with its kind.
fn gateway_basic_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let basic = |user_pass: &[u8]| format!("Basic {}", STANDARD.encode(user_pass)).into_bytes();
    vec![
        ("plain", basic(b"web:s3cret")),
        ("form_encoded", basic(b"web%3Aeu:s3cr+et%2B%3A")),
        ("public", basic(b"app:")),
        ("no_padding", b"basic YTpi".to_vec()),
        (
            "at_limits",
            basic(format!("{}:{}", "i".repeat(128), "s".repeat(256)).as_bytes()),
        ),
        (
            "past_limits",
            basic(format!("{}:{}", "i".repeat(129), "s".repeat(257)).as_bytes()),
        ),
        ("report_nul_secret", basic(b"web:SEC%00RET")),
        ("raw_control", basic(b"w\reb:SEC\0RET")),
        ("bad_escape", basic(b"web:50%")),
        ("not_utf8", basic(b"web:%FF")),
        ("no_colon", basic(b"webSECRET")),
        ("empty_id", basic(b":SECRET")),
        ("not_base64", b"Basic SEC*RET".to_vec()),
        ("trailing_bits", b"Basic YTp".to_vec()),
        ("bearer", b"Bearer SECRET".to_vec()),
        ("scheme_only", b"Basic".to_vec()),
    ]
}
