//! What the fuzz targets check. Each `fuzz_targets/<name>.rs` is one line that calls the
//! function of the same name here; keeping the checks in a library lets `examples/seeds.rs`
//! write the seed corpus with the very types and keyring the targets use.
//!
//! Every target asserts more than "does not panic": each has properties taken from the
//! documentation of the code under test (token re-minting, error texts without secrets,
//! the documented field limits, record round trips). A failed assertion is a crash to
//! libFuzzer, like a panic in the code under test.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use token_core::audit::{
    DEFAULT_PAGE_SIZE, DEFAULT_SUMMARY_WINDOW, EventQuery, MAX_PAGE_SIZE, RefreshOutcome,
    SummaryQuery,
};
use token_core::store::{FamilyState, FamilyStatus};
use token_core::token::{ACCESS_PREFIX, AccessClaims, Claims, REFRESH_PREFIX, RefreshClaims};
use token_core::validate::{
    self, MAX_CLIENT_ID_LEN, MAX_NAME_LEN, MAX_SCOPE_LEN, MAX_SCOPES, MAX_SECRET_LEN,
    MAX_SUBJECT_LEN, MAX_JWT_LEN,
};
use token_core::{ClientType, Error, FamilyId, Keyring, ReusePolicy, Scopes};
use token_gateway::Error as GatewayError;
use token_gateway::client_auth::{
    BasicError, ClientCredentials, MAX_CLIENT_ID_BYTES, MAX_SECRET_BYTES, Method,
};
use token_gateway::form::{DecodeError, FORM_CONTENT_TYPE, Form};
use token_store::family_record;

/// The fixed keyring every target verifies with: `k1` signs, `k0` only verifies. These are
/// public test values (the secrets spell out what they are), used nowhere but here.
pub const TEST_KEYRING: &str = "\
# Fuzzing only: fixed, public test keys. Never use them anywhere else.
k1 ZnV6ei10ZXN0LWtleS1rMS1ub3QtYS1zZWNyZXQhISE sign
k0 ZnV6ei10ZXN0LWtleS1rMC1ub3QtYS1zZWNyZXQhISE verify
";

/// Same key ids as [`TEST_KEYRING`], other secrets: nothing it signs may verify there.
pub const OTHER_KEYRING: &str = "k1 b3RoZXItcmluZy1rZXktazEtbm90LWEtc2VjcmV0ISE sign\n";

/// The parsed [`TEST_KEYRING`].
pub fn keyring() -> &'static Keyring {
    static RING: LazyLock<Keyring> =
        LazyLock::new(|| Keyring::parse(TEST_KEYRING).expect("the test keyring parses"));
    &RING
}

fn other_keyring() -> &'static Keyring {
    static RING: LazyLock<Keyring> =
        LazyLock::new(|| Keyring::parse(OTHER_KEYRING).expect("the other keyring parses"));
    &RING
}

// ---------------------------------------------------------------------------------------------
// token_parse
// ---------------------------------------------------------------------------------------------

/// `token_parse`: the input, as text, goes to [`Keyring::verify`]; the same bytes, read as
/// [`MintCase`], are minted, verified and tampered with.
///
/// - `verify` never panics and fails only with `TokenInvalid`, or `Malformed` exactly when
///   the input is longer than `MAX_JWT_LEN`; its error text never contains the token.
/// - A token that verifies is the one its claims re-mint to, byte for byte (so there is one
///   spelling of every token and a grace replay re-derives exactly what was issued).
/// - A minted token verifies to its claims; for a subject within `MAX_SUBJECT_LEN` it fits
///   `MAX_JWT_LEN`; any one edit of it, a swapped prefix, or a keyring with other secrets
///   makes it fail.
pub fn token_parse(data: &[u8]) {
    check_verify(&String::from_utf8_lossy(data));
    if let Ok(case) = MintCase::arbitrary_take_rest(Unstructured::new(data)) {
        check_mint(&case);
    }
}

fn check_verify(token: &str) {
    let ring = keyring();
    let result = ring.verify("refresh_token", token);
    match &result {
        Ok(claims) => {
            assert!(token.len() <= MAX_JWT_LEN);
            let reminted = match claims {
                Claims::Refresh(c) => ring.mint_refresh(c),
                Claims::Access(c) => ring.mint_access(c),
                Claims::Jwt(c) => ring.mint_jwt(c),
            }
            .expect("the claims of a verified token re-mint");
            assert_eq!(
                reminted, token,
                "a verified token is not the canonical form of its claims"
            );
        }
        Err(Error::TokenInvalid) => assert!(token.len() <= MAX_JWT_LEN),
        Err(Error::Malformed { field, problem }) => {
            assert!(token.len() > MAX_JWT_LEN, "Malformed for a short token");
            assert_eq!(*field, "refresh_token");
            let expected = format!("is {} bytes, the limit is {MAX_JWT_LEN}", token.len());
            assert_eq!(*problem, expected);
        }
        Err(other) => panic!("verify answered {other:?}"),
    }
    if let Err(err) = &result {
        // The texts of both errors are fixed (the Malformed one names only the length), so
        // any input longer than them that shows up in one was copied from the input.
        if token.len() > 64 {
            assert!(!err.to_string().contains(token), "error echoes the token");
            assert!(
                !format!("{err:?}").contains(token),
                "error echoes the token"
            );
        }
    }
}

/// Claims to mint, and one edit to make to the minted token.
#[derive(Debug, Arbitrary)]
pub struct MintCase {
    pub access: bool,
    /// Sign with `k0` (verify-only keys still sign for replays) instead of `k1`.
    pub old_key: bool,
    pub family: [u8; 16],
    pub generation: u64,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub scope_mask: u64,
    pub subject: Text,
    pub edit: Edit,
}

#[derive(Debug, Arbitrary)]
pub enum Edit {
    Replace { at: u16, with: u8 },
    Insert { at: u16, byte: u8 },
    Delete { at: u16 },
    Truncate { at: u16 },
    Append { byte: u8 },
}

impl Edit {
    fn apply(&self, token: &str) -> String {
        let mut out = token.to_owned();
        let pos = |at: u16| usize::from(at) % token.len();
        match *self {
            Edit::Replace { at, with } => {
                let at = pos(at);
                out.replace_range(at..at + 1, &char::from(with).to_string());
            }
            Edit::Insert { at, byte } => out.insert(pos(at), char::from(byte)),
            Edit::Delete { at } => {
                out.remove(pos(at));
            }
            Edit::Truncate { at } => out.truncate(pos(at)),
            Edit::Append { byte } => out.push(char::from(byte)),
        }
        out
    }
}

fn check_mint(case: &MintCase) {
    let ring = keyring();
    let family: FamilyId = URL_SAFE_NO_PAD
        .encode(case.family)
        .parse()
        .expect("16 bytes are a family id");
    let key_id = if case.old_key { "k0" } else { "k1" }.to_owned();
    let subject = case.subject.0.clone();
    let (claims, minted) = if case.access {
        let claims = AccessClaims {
            family,
            generation: case.generation,
            issued_at_ms: case.issued_at_ms,
            expires_at_ms: case.expires_at_ms,
            scope_mask: case.scope_mask,
            key_id,
            subject,
        };
        let minted = ring.mint_access(&claims);
        (Claims::Access(claims), minted)
    } else {
        let claims = RefreshClaims {
            family,
            generation: case.generation,
            issued_at_ms: case.issued_at_ms,
            key_id,
            subject,
        };
        let minted = ring.mint_refresh(&claims);
        (Claims::Refresh(claims), minted)
    };
    let subject = claims.subject();
    let token = match minted {
        Ok(token) => token,
        Err(Error::Malformed {
            field: "subject", ..
        }) if subject.len() > usize::from(u16::MAX) => {
            return;
        }
        Err(err) => panic!("minting failed: {err:?}"),
    };
    let prefix = if case.access {
        ACCESS_PREFIX
    } else {
        REFRESH_PREFIX
    };
    assert!(token.starts_with(&format!("{prefix}.")));
    if subject.len() <= MAX_SUBJECT_LEN {
        assert!(
            token.len() <= MAX_JWT_LEN,
            "a token for a {}-byte subject is {} bytes, over the {MAX_JWT_LEN}-byte limit",
            subject.len(),
            token.len()
        );
    }
    match ring.verify("t", &token) {
        Ok(verified) => assert_eq!(verified, claims),
        Err(Error::Malformed { .. }) => assert!(token.len() > MAX_JWT_LEN),
        Err(err) => panic!("a freshly minted token fails to verify: {err:?}"),
    }
    if token.len() > MAX_JWT_LEN {
        return;
    }
    let edited = case.edit.apply(&token);
    if edited != token {
        assert!(
            ring.verify("t", &edited).is_err(),
            "an edited token still verifies: {edited:?}"
        );
    }
    let other_prefix = if case.access {
        REFRESH_PREFIX
    } else {
        ACCESS_PREFIX
    };
    let swapped = format!("{other_prefix}{}", &token[prefix.len()..]);
    assert!(
        ring.verify("t", &swapped).is_err(),
        "a swapped prefix verifies"
    );
    assert!(
        other_keyring().verify("t", &token).is_err(),
        "another keyring with the same key ids accepts the token"
    );
}

// ---------------------------------------------------------------------------------------------
// keyring_parse
// ---------------------------------------------------------------------------------------------

/// Every problem `Keyring::parse` reports (crates/token-core/src/keyring.rs). The check is
/// deliberately exact: an error that carries text from the file could carry a secret, so a
/// new message should be added here only after a look at what it includes.
pub const KEYRING_PROBLEMS: &[&str] = &[
    "expected `<key-id> <secret> <sign|verify>`",
    "key id must be 1 to 32 letters, digits, '-' or '_'",
    "secret is not URL-safe base64",
    "secret must be at least 32 bytes",
    "unusable secret",
    "duplicate key id",
    "more than one signing key",
    "role must be `sign` or `verify`",
    "no HMAC signing key (mark exactly one HMAC key `sign`; Ed25519 keys sign only JWTs)",
    "ed25519 seed is not URL-safe base64",
    "ed25519 seed must be exactly 32 bytes",
    "unusable ed25519 seed",
    "more than one ed25519 signing key",
    "unknown key type (the only typed secret is `ed25519:`)",
];

/// `keyring_parse`: the input, as text, goes to [`Keyring::parse`].
///
/// - It never panics.
/// - An error is `keyring line <n>: <problem>` with a problem from [`KEYRING_PROBLEMS`] and a
///   line that exists (0 for "no HMAC signing key"); neither its text nor its `Debug` contains any
///   secret-sized field of the file.
/// - A keyring that loads signs with a key marked `sign` in the file, shows no secret in its
///   `Debug`, and verifies the tokens it mints.
pub fn keyring_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Fields of 16 bytes or more: no run of 16 non-blank characters occurs in any problem
    // text, so finding one in an error can only mean it was copied from the input.
    let long_fields: Vec<&str> = text
        .split_whitespace()
        .filter(|field| field.len() >= 16)
        .collect();
    match Keyring::parse(&text) {
        Ok(ring) => {
            let id = ring.signing_key_id();
            let marked = text.lines().any(|line| {
                let content = line.split('#').next().unwrap_or("");
                let fields: Vec<&str> = content.split_whitespace().collect();
                fields.len() == 3 && fields[0] == id && fields[2] == "sign"
            });
            assert!(marked, "signing key {id:?} is not marked `sign`");
            // The secrets that loaded (each at least 43 characters) are not in its Debug.
            let shown = format!("{ring:?}");
            for line in text.lines() {
                let content = line.split('#').next().unwrap_or("");
                let fields: Vec<&str> = content.split_whitespace().collect();
                if let [_, secret, _] = fields[..] {
                    assert!(!shown.contains(secret), "Debug shows the secret {secret:?}");
                }
            }
            let claims = RefreshClaims {
                family: "AAAAAAAAAAAAAAAAAAAAAA".parse().expect("a family id"),
                generation: 1,
                issued_at_ms: 1,
                key_id: id.to_owned(),
                subject: "s".to_owned(),
            };
            let token = ring.mint_refresh(&claims).expect("the signing key mints");
            assert_eq!(
                ring.verify("t", &token).expect("its own token verifies"),
                Claims::Refresh(claims)
            );
        }
        Err(err) => {
            let shown = err.to_string();
            assert!(
                KEYRING_PROBLEMS.contains(&err.problem.as_str()),
                "unexpected keyring error {shown:?}"
            );
            assert_eq!(shown, format!("keyring line {}: {}", err.line, err.problem));
            if err.line == 0 {
                assert_eq!(err.problem, KEYRING_PROBLEMS[8]);
            } else {
                assert!(err.line <= text.lines().count(), "no line {}", err.line);
            }
            let debug = format!("{err:?}");
            for field in &long_fields {
                assert!(!shown.contains(field), "error shows {field:?}: {shown}");
                assert!(!debug.contains(field), "error Debug shows {field:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// request_validation
// ---------------------------------------------------------------------------------------------

/// A request field: often a realistic value (so that random input reaches the "accepted"
/// paths), sometimes one of a given length (so that it reaches every limit), otherwise any
/// string at all.
#[derive(Debug, Clone)]
pub struct Text(pub String);

const SAMPLES: &[&str] = &[
    "",
    "web",
    "web-app.prod_1:eu",
    "client-2Afu",
    "{tag}",
    "has space",
    "alice@example.com",
    "read",
    "write",
    "openid",
    "email",
    "a:b/c!~",
    "quote\"",
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "ünïcode",
    "\u{7f}",
    "\u{85}",
    "rotated",
    "replayed",
    "rolled_forward",
    "reused",
    "expired",
    "invalid_token",
    "unavailable",
    "Reused",
    "12-3",
    "1-0",
    "0-1",
    "0-0",
    "-1",
    "1-",
    "+1-2",
    "18446744073709551615-18446744073709551615",
    "18446744073709551616-1",
    "1-99999999999999999999999",
    "confidential",
    "public",
    "revoke-family",
    "reject-only",
];

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Text(match u.int_in_range(0u8..=9)? {
            0..=4 => (*u.choose(SAMPLES)?).to_owned(),
            5 | 6 => {
                let byte = *u.choose(b"aZ9._:-!~ \"\\\x7f")?;
                // Up to a little past the largest limit (MAX_JWT_LEN).
                let len = u.int_in_range(0usize..=1100)?;
                String::from_utf8(vec![byte; len]).expect("ASCII")
            }
            _ => String::arbitrary(u)?,
        }))
    }
}

/// The fields of the requests that are validated before any I/O.
#[derive(Debug, Arbitrary)]
pub struct Request {
    /// For `validate::required` / `optional` against each of the service's limits.
    pub field: Text,
    pub any_max: u16,
    pub client_id: Text,
    pub scopes: Vec<Text>,
    /// Appends `s00`, `s01`, ... so that lists reach and pass the 64-scope limit.
    pub numbered_scopes: u8,
    pub narrow_mask: u64,
    pub client_type: Text,
    pub reuse_policy: Text,
    pub outcomes: Vec<Text>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    #[arbitrary(with = page_size)]
    pub page_size: u32,
    pub page_token: Text,
    pub now_ms: u64,
    pub window_ns: Option<u64>,
    pub retention_s: u32,
}

/// Mostly around the 1,000 limit, sometimes any u32.
fn page_size(u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
    if u.ratio(7u8, 8)? {
        u.int_in_range(0..=1100)
    } else {
        u.arbitrary()
    }
}

/// The documented rule for a required or optional field.
fn field_ok(value: &str, max: usize, required: bool) -> bool {
    (!required || !value.is_empty()) && value.len() <= max && !value.chars().any(char::is_control)
}

fn client_id_ok(value: &str) -> bool {
    (1..=MAX_CLIENT_ID_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
}

fn scope_ok(value: &str) -> bool {
    (1..=MAX_SCOPE_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// A page token as documented: a Redis stream id after `0-0`, i.e. `<ms>-<seq>` with both
/// parts u64 in plain digits (no sign), at most 48 bytes.
fn page_token_ok(token: &str) -> bool {
    let plain = |part: &str| {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse::<u64>().ok()
    };
    token.len() <= 48
        && token
            .split_once('-')
            .and_then(|(ms, seq)| Some((plain(ms)?, plain(seq)?)))
            .is_some_and(|id| id != (0, 0))
}

/// `request_validation`: the field checks every use case runs before any I/O.
///
/// - `validate::required` / `optional` / `client_id`, `Scopes::parse`, `ClientType` and
///   `ReusePolicy` parsing, `EventQuery::parse` and `SummaryQuery::parse` never panic.
/// - Each accepts exactly what its documentation says (sizes, alphabets, counts, ranges),
///   checked against an independent statement of the rule.
/// - What they return respects the limits: a scope set is sorted, duplicate-free, at most 64
///   scopes, round-trips through its stored form, and its masks select what they say; a
///   query has `since < until`, a page size of 1 to 1,000 and a page token that names an
///   event id; a summary window lies within the retention.
pub fn request_validation(req: Request) {
    // Plain fields, against each limit the service uses and one arbitrary limit.
    let value = req.field.0.as_str();
    for max in [
        MAX_CLIENT_ID_LEN,
        MAX_SUBJECT_LEN,
        MAX_NAME_LEN,
        MAX_SECRET_LEN,
        MAX_JWT_LEN,
        usize::from(req.any_max),
    ] {
        let required = validate::required("f", value, max);
        assert_eq!(
            required.is_ok(),
            field_ok(value, max, true),
            "required({max})"
        );
        let optional = validate::optional("f", value, max);
        assert_eq!(
            optional.is_ok(),
            field_ok(value, max, false),
            "optional({max})"
        );
        for err in [required.err(), optional.err()].into_iter().flatten() {
            assert!(
                matches!(err, Error::Malformed { field: "f", .. }),
                "{err:?}"
            );
        }
    }
    let client_id = req.client_id.0.as_str();
    for id in [value, client_id] {
        assert_eq!(
            validate::client_id("client_id", id).is_ok(),
            client_id_ok(id),
            "client_id {id:?}"
        );
    }

    // Scopes.
    let mut items: Vec<String> = req.scopes.iter().map(|t| t.0.clone()).collect();
    items.extend((0..req.numbered_scopes % 80).map(|i| format!("s{i:02}")));
    let expected = items.len() <= MAX_SCOPES && items.iter().all(|s| scope_ok(s));
    match Scopes::parse("scopes", &items) {
        Ok(scopes) => {
            assert!(expected, "accepted scopes {items:?}");
            check_scope_set(&scopes, &items, req.narrow_mask);
        }
        Err(err) => {
            assert!(!expected, "refused valid scopes {items:?}: {err}");
            assert!(matches!(
                err,
                Error::Malformed {
                    field: "scopes",
                    ..
                }
            ));
        }
    }

    // Client registry enums; empty means the default.
    let client_type = req.client_type.0.as_str();
    match client_type.parse::<ClientType>() {
        Ok(t) => assert!(client_type.is_empty() || t.as_str() == client_type),
        Err(_) => assert!(!["", "confidential", "public"].contains(&client_type)),
    }
    let policy = req.reuse_policy.0.as_str();
    match policy.parse::<ReusePolicy>() {
        Ok(p) => assert!(policy.is_empty() || p.as_str() == policy),
        Err(_) => assert!(!["", "revoke-family", "reject-only"].contains(&policy)),
    }

    // ListRefreshEvents. `now_ms` is the service clock (ms since 1970), never u64::MAX:
    // `EventQuery::parse` and `SummaryQuery::parse` add one to it.
    let now_ms = req.now_ms.min(u64::MAX - 1);
    let outcomes: Vec<String> = req.outcomes.iter().map(|t| t.0.clone()).collect();
    let page_token = req.page_token.0.as_str();
    let since = req.since_ms.unwrap_or(0);
    let until = req.until_ms.unwrap_or(now_ms + 1);
    let expected = client_id_ok(client_id)
        && outcomes
            .iter()
            .all(|o| RefreshOutcome::ALL.iter().any(|k| k.as_str() == o))
        && since < until
        && req.page_size <= MAX_PAGE_SIZE
        && (page_token.is_empty() || page_token_ok(page_token));
    let query = EventQuery::parse(
        client_id,
        &outcomes,
        req.since_ms,
        req.until_ms,
        req.page_size,
        page_token,
        now_ms,
    );
    assert_eq!(query.is_ok(), expected, "EventQuery::parse: {query:?}");
    if let Ok(q) = query {
        assert_eq!(q.client_id, client_id);
        assert_eq!(q.outcomes.len(), outcomes.len());
        for (parsed, given) in q.outcomes.iter().zip(&outcomes) {
            assert_eq!(parsed.as_str(), given);
        }
        assert!(q.since_ms < q.until_ms);
        assert_eq!((q.since_ms, q.until_ms), (since, until));
        assert!((1..=MAX_PAGE_SIZE).contains(&q.page_size));
        if req.page_size == 0 {
            assert_eq!(q.page_size, DEFAULT_PAGE_SIZE);
        }
        match &q.before_event {
            None => assert!(page_token.is_empty()),
            Some(event) => assert!(event == page_token && page_token_ok(event)),
        }
    }

    // SummarizeRefreshEvents.
    let window = req.window_ns.map(Duration::from_nanos);
    let retention = Duration::from_secs(u64::from(req.retention_s));
    let effective = window.unwrap_or(DEFAULT_SUMMARY_WINDOW);
    let expected = client_id_ok(client_id) && !effective.is_zero() && effective <= retention;
    let summary = SummaryQuery::parse(client_id, window, retention, now_ms);
    assert_eq!(
        summary.is_ok(),
        expected,
        "SummaryQuery::parse: {summary:?}"
    );
    if let Ok(s) = summary {
        assert_eq!(s.until_ms, now_ms + 1);
        assert!(s.since_ms <= s.until_ms);
        assert!(u128::from(s.until_ms - s.since_ms) <= effective.as_millis());
    }
}

fn check_scope_set(scopes: &Scopes, items: &[String], narrow_mask: u64) {
    let listed: Vec<&str> = scopes.iter().collect();
    assert!(listed.len() <= MAX_SCOPES);
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "not sorted and unique"
    );
    assert!(
        listed
            .iter()
            .all(|s| items.iter().any(|i| i.as_str() == *s))
    );
    assert!(items.iter().all(|i| listed.contains(&i.as_str())));
    let stored = scopes.to_space_separated();
    assert_eq!(Scopes::from_space_separated(&stored).as_ref(), Some(scopes));
    let full = if listed.len() == 64 {
        u64::MAX
    } else {
        (1u64 << listed.len()) - 1
    };
    assert_eq!(scopes.mask_of(scopes), full);
    let narrow = scopes.select(narrow_mask);
    assert_eq!(scopes.mask_of(&narrow), narrow_mask & full);
    assert_eq!(scopes.select(scopes.mask_of(&narrow)), narrow);
    assert!(narrow.check_within(scopes).is_ok());
    if narrow.len() < scopes.len() {
        assert!(matches!(
            scopes.check_within(&narrow),
            Err(Error::InvalidScope(_))
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// family_record
// ---------------------------------------------------------------------------------------------

/// A family record as the Lua scripts write it: valid key id, client id and scopes.
#[derive(Debug)]
pub struct ValidRecord(pub FamilyState);

fn word(
    u: &mut Unstructured<'_>,
    alphabet: &[u8],
    min: usize,
    max: usize,
) -> arbitrary::Result<String> {
    let len = u.int_in_range(min..=max)?;
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(char::from(*u.choose(alphabet)?));
    }
    Ok(out)
}

const KEY_ID_CHARS: &[u8] = b"ABCXYZabcxyz0189-_";
const CLIENT_ID_CHARS: &[u8] = b"ABCXYZabcxyz0189.:_-";
const SCOPE_CHARS: &[u8] = b"!#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~";

impl<'a> Arbitrary<'a> for ValidRecord {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let key_id = word(u, KEY_ID_CHARS, 1, 32)?;
        let client_id = word(u, CLIENT_ID_CHARS, 1, MAX_CLIENT_ID_LEN)?;
        let count = u.int_in_range(0..=MAX_SCOPES)?;
        let mut scopes = Vec::with_capacity(count);
        for _ in 0..count {
            let max = if u.ratio(1, 8)? { MAX_SCOPE_LEN } else { 12 };
            scopes.push(word(u, SCOPE_CHARS, 1, max)?);
        }
        let scopes = Scopes::parse("scopes", &scopes).expect("generated scopes are valid");
        let status = if u.arbitrary()? {
            FamilyStatus::Active
        } else {
            FamilyStatus::Revoked {
                // Written by the scripts: `reuse`, or the reason a revocation gave.
                reason: word(u, b"abcdefghijklmnopqrstuvwxyz_-", 0, 24)?,
                at_ms: u.arbitrary()?,
            }
        };
        Ok(ValidRecord(FamilyState {
            client_id,
            scopes,
            generation: u.arbitrary()?,
            rotated_at_ms: u.arbitrary()?,
            key_id,
            status,
            absolute_expiry_ms: u.arbitrary()?,
            access_scope_mask: u.arbitrary()?,
        }))
    }
}

/// `family_record`: the input, as text, goes to `family_record::decode`; the same bytes, read
/// as a [`ValidRecord`], are encoded and decoded.
///
/// - `decode` never panics, and errors only as `StoreError::Corrupt`.
/// - Whatever it accepts, `encode` writes back in a form that decodes to the same family
///   (and encodes to the same text again).
/// - Every valid family round-trips exactly: `decode(encode(x)) == x`, as one line of text
///   in the shape the scripts' pattern in `lua/prelude.lua` matches.
pub fn family_record(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match family_record::decode(&text) {
        Ok(family) => {
            let encoded = family_record::encode(&family);
            let again = family_record::decode(&encoded).expect("an encoded record decodes");
            assert_eq!(again, family, "{text:?} -> {encoded:?}");
            assert_eq!(family_record::encode(&again), encoded);
        }
        Err(token_core::StoreError::Corrupt(_)) => {}
        Err(other) => panic!("decode answered {other:?}"),
    }
    if let Ok(ValidRecord(family)) = ValidRecord::arbitrary_take_rest(Unstructured::new(data)) {
        let encoded = family_record::encode(&family);
        assert!(
            lua_pattern_matches(&encoded),
            "the scripts would refuse {encoded:?}"
        );
        let decoded = family_record::decode(&encoded).expect("a valid record decodes");
        assert_eq!(decoded, family, "{encoded:?}");
    }
}

/// `^(%d+) (%d+) ([^ ]+) (%d+) ([^ ]+) ([^ ]+) ?(.*)$`, the scripts' `decode_family`.
fn lua_pattern_matches(record: &str) -> bool {
    let fields: Vec<&str> = record.splitn(7, ' ').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    fields.len() >= 6
        && digits(fields[0])
        && digits(fields[1])
        && !fields[2].is_empty()
        && digits(fields[3])
        && !fields[4].is_empty()
        && !fields[5].is_empty()
        && !record.contains('\n')
}

// ---------------------------------------------------------------------------------------------
// The HTTP gateway's edge: gateway_form and gateway_basic
// ---------------------------------------------------------------------------------------------

/// The parameters the gateway's endpoints read, together: what a body is parsed against.
pub const GATEWAY_KNOWN: &[&str] = &[
    "grant_type",
    "refresh_token",
    "scope",
    "token",
    "token_type_hint",
    "client_id",
    "client_secret",
];

/// Strict form decoding as `token_gateway::form::decode` documents it, written again here
/// (index arithmetic instead of slice patterns): `+` is a space, `%XX` a byte, anything else
/// itself; a `%` without two hex digits is an error, and so is a result that is not UTF-8.
fn model_form_decode(input: &[u8]) -> Result<String, DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let digits = input
                    .get(i + 1..i + 3)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
                let Some(digits) = digits else {
                    return Err(DecodeError::BadPercent);
                };
                out.push(u8::from_str_radix(digits, 16).expect("two hex digits"));
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

/// What `Form::parse` documents for `body`: the known parameters, or the exact description of
/// the first problem in body order.
fn model_form(body: &[u8]) -> Result<BTreeMap<&'static str, String>, String> {
    let mut values = BTreeMap::new();
    for pair in body.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        let name = model_form_decode(name).map_err(|why| format!("a parameter name {why}"))?;
        let known = GATEWAY_KNOWN.iter().copied().find(|k| *k == name);
        let value = model_form_decode(value).map_err(|why| match known {
            Some(name) => format!("parameter {name} {why}"),
            None => format!("a parameter value {why}"),
        })?;
        let Some(name) = known else { continue };
        if value.is_empty() {
            continue;
        }
        if name != "scope" && value.chars().any(char::is_control) {
            return Err(format!("parameter {name} contains control characters"));
        }
        if values.insert(name, value).is_some() {
            return Err(format!("parameter {name} is included more than once"));
        }
    }
    Ok(values)
}

fn form_values(form: &Form) -> BTreeMap<&'static str, String> {
    GATEWAY_KNOWN
        .iter()
        .filter_map(|name| form.get(name).map(|value| (*name, value.to_owned())))
        .collect()
}

/// `gateway_form`: the input is a request body for `token_gateway::form::Form::parse`.
///
/// - It never panics, and fails only with `invalid_request` whose description is exactly the
///   one the module documents for the first problem in the body (so it names a known
///   parameter at most, never a value).
/// - It accepts exactly the bodies of the documented rules ([`model_form`]) with the same
///   values.
/// - Whatever it accepts, the lenient WHATWG decoder (`form_urlencoded::parse`) reads the
///   same: each known parameter at most once with a value, and that value (strictness only
///   ever refuses, never reinterprets); known values are non-empty and, `scope` aside, free
///   of control characters; re-encoded, they parse back to the same values.
pub fn gateway_form(body: &[u8]) {
    let parsed = Form::parse(Some(FORM_CONTENT_TYPE), body, GATEWAY_KNOWN);
    let model = model_form(body);
    let values = match (parsed, model) {
        (Ok(form), Ok(model)) => {
            let values = form_values(&form);
            assert_eq!(values, model, "values differ from the documented rules");
            values
        }
        (Err(GatewayError::InvalidRequest(text)), Err(model)) => {
            assert_eq!(text, model, "another problem than the documented first one");
            return;
        }
        (got, model) => panic!("Form::parse answered {got:?}, the rules say {model:?}"),
    };
    let mut lenient: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if let Some(name) = GATEWAY_KNOWN.iter().find(|k| **k == name)
            && !value.is_empty()
        {
            lenient.entry(*name).or_default().push(value.into_owned());
        }
    }
    for name in GATEWAY_KNOWN {
        let got = values
            .get(name)
            .map(|v| vec![v.clone()])
            .unwrap_or_default();
        assert_eq!(
            lenient.get(name).cloned().unwrap_or_default(),
            got,
            "{name}: the lenient decoder reads otherwise"
        );
    }
    let mut again = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &values {
        assert!(!value.is_empty());
        assert!(*name == "scope" || !value.chars().any(char::is_control));
        again.append_pair(name, value);
    }
    let again = again.finish();
    let reparsed = Form::parse(Some(FORM_CONTENT_TYPE), again.as_bytes(), GATEWAY_KNOWN)
        .expect("re-encoded values parse");
    assert_eq!(form_values(&reparsed), values, "{again:?}");
}

/// What `parse_basic` documents for a header value: RFC 7617 Basic over RFC 6749 section
/// 2.3.1's form-encoded id and secret, with the limits the token service has. Written from
/// the documentation: scheme up to the first space (any case), base64 with canonical or no
/// padding, the first `:` splits, each side strictly form-decoded, then checked.
fn model_basic(header: &[u8]) -> Result<(String, String), BasicError> {
    let header = header.trim_ascii();
    let space = header.iter().position(|&b| b == b' ');
    let scheme = &header[..space.unwrap_or(header.len())];
    if !scheme.eq_ignore_ascii_case(b"Basic") {
        return Err(BasicError::UnsupportedScheme);
    }
    let encoded = space.map_or(&b""[..], |at| header[at + 1..].trim_ascii());
    if encoded.is_empty() {
        return Err(BasicError::Missing);
    }
    // Padding, if any, must complete the last quantum; then the unpadded decoder, which
    // refuses non-zero trailing bits.
    let unpadded = encoded
        .strip_suffix(b"==")
        .or_else(|| encoded.strip_suffix(b"="));
    let bare = match unpadded {
        Some(bare) if encoded.len() % 4 == 0 => bare,
        Some(_) => return Err(BasicError::NotBase64),
        None => encoded,
    };
    let decoded = STANDARD_NO_PAD
        .decode(bare)
        .map_err(|_| BasicError::NotBase64)?;
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Err(BasicError::NoColon);
    };
    let check = |raw: &[u8], secret: bool, max: usize| {
        let text =
            model_form_decode(raw).map_err(|why| BasicError::NotFormEncoded { secret, why })?;
        if text.chars().any(char::is_control) {
            Err(BasicError::ControlCharacters { secret })
        } else if text.len() > max {
            Err(BasicError::TooLong { secret })
        } else {
            Ok(text)
        }
    };
    let id = check(&decoded[..colon], false, MAX_CLIENT_ID_BYTES)?;
    if id.is_empty() {
        return Err(BasicError::EmptyId);
    }
    let secret = check(&decoded[colon + 1..], true, MAX_SECRET_BYTES)?;
    Ok((id, secret))
}

/// A form body holding `params`, encoded.
fn body_of(params: &[(&str, &str)]) -> Form {
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        body.append_pair(name, value);
    }
    Form::parse(
        Some(FORM_CONTENT_TYPE),
        body.finish().as_bytes(),
        GATEWAY_KNOWN,
    )
    .expect("a generated body parses")
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 section 2.3.1 asks.
fn basic_header(id: &str, secret: &str) -> String {
    let user_pass: String = form_urlencoded::byte_serialize(id.as_bytes())
        .chain([":"])
        .chain(form_urlencoded::byte_serialize(secret.as_bytes()))
        .collect();
    format!("Basic {}", STANDARD.encode(user_pass))
}

/// One request's credentials through `ClientCredentials::from_request`, against `expected`
/// (what the documentation says of the header alone), with the body variations whose answer
/// is fixed: none, the same `client_id`, another `client_id`, a `client_secret`, and the header
/// twice.
fn check_credentials(header: &[u8], expected: &Result<(String, String), BasicError>) {
    let texts: Vec<String> = BasicError::ALL.iter().map(ToString::to_string).collect();
    let empty = Form::default();
    match (ClientCredentials::from_request(&[header], &empty), expected) {
        (Ok(got), Ok((id, secret))) => {
            assert_eq!((&got.client_id, &got.client_secret), (id, secret));
            assert_eq!(got.method, Method::Basic);
            assert!(!id.is_empty() && id.len() <= MAX_CLIENT_ID_BYTES);
            assert!(secret.len() <= MAX_SECRET_BYTES);
            let hidden = ClientCredentials {
                client_secret: "another secret".to_owned(),
                ..got.clone()
            };
            assert_eq!(
                format!("{got:?}"),
                format!("{hidden:?}"),
                "Debug shows the secret"
            );
            // The canonical spelling of the same credentials reads the same.
            let canonical = basic_header(id, secret);
            let again = ClientCredentials::from_request(&[canonical.as_bytes()], &empty)
                .expect("the canonical header parses");
            assert_eq!(again, got);
            // The same client_id in the body is identification; another one is refused.
            let same = body_of(&[("client_id", id)]);
            assert_eq!(
                ClientCredentials::from_request(&[header], &same).ok(),
                Some(got.clone())
            );
            let other = format!("{id}x");
            let other = body_of(&[("client_id", &other)]);
            assert!(matches!(
                ClientCredentials::from_request(&[header], &other),
                Err(GatewayError::InvalidRequest(_))
            ));
        }
        (Err(GatewayError::InvalidClient(text)), Err(err)) => {
            assert_eq!(text, err.to_string().as_str(), "{header:?}");
            assert!(texts.iter().any(|t| t == &text));
        }
        (got, expected) => panic!("from_request answered {got:?}, the rules say {expected:?}"),
    }
    // Whatever the header holds: a client_secret in the body as well is two methods, and two
    // Authorization headers are one failed authentication.
    let with_secret = body_of(&[("client_id", "c"), ("client_secret", "s")]);
    assert!(matches!(
        ClientCredentials::from_request(&[header], &with_secret),
        Err(GatewayError::InvalidRequest(_))
    ));
    match ClientCredentials::from_request(&[header, header], &empty) {
        Err(GatewayError::InvalidClient(text)) => {
            assert_eq!(text, BasicError::Repeated.to_string().as_str());
        }
        other => panic!("two headers answered {other:?}"),
    }
}

/// A client id or secret to put in a well-formed Basic header: samples near every rule
/// (control characters, `%`, `:`, `+`, non-ASCII, the length limits) or anything.
#[derive(Debug)]
pub struct Credential(pub String);

impl<'a> Arbitrary<'a> for Credential {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Credential(match u.int_in_range(0u8..=5)? {
            0 => (*u.choose(&[
                "", "web", "web:eu", "SEC\0RET", "a b+c%41", "ünï", "\t", "\u{7f}", "\u{85}", "%",
                ":",
            ])?)
            .to_owned(),
            1 | 2 => {
                let unit = *u.choose(&["a", "%", ":", "+", " ", "é", "\0"])?;
                let len = u.int_in_range(0usize..=300)?;
                unit.repeat(len)
            }
            _ => String::arbitrary(u)?,
        }))
    }
}

/// `gateway_basic`: the input is an `Authorization` header value for
/// `ClientCredentials::from_request`; the same bytes, read as an id and a secret, are put in
/// a well-formed Basic header and read back.
///
/// - It never panics; each failure of the header is `invalid_client` with exactly the fixed
///   description of the documented first problem ([`model_basic`], `BasicError::ALL`), so it
///   never carries the header.
/// - It accepts exactly the headers of the documented rules, with the same id and secret:
///   an id of 1 to 128 bytes, a secret of at most 256, neither with a control character.
/// - Accepted credentials read the same in their canonical spelling, and the `Debug` of the
///   result hides the secret.
/// - With a `client_secret` in the body as well it is `invalid_request` (two methods); with
///   the same `client_id` in the body the same credentials, with another `invalid_request`;
///   twice, it is `invalid_client`.
/// - Any id and secret, form-encoded into Basic as RFC 6749 section 2.3.1 says, read back as
///   they were, or fail with the rule they break.
pub fn gateway_basic(data: &[u8]) {
    check_credentials(data, &model_basic(data));
    let mut u = Unstructured::new(data);
    if let (Ok(Credential(id)), Ok(Credential(secret))) =
        (Credential::arbitrary(&mut u), Credential::arbitrary(&mut u))
    {
        let header = basic_header(&id, &secret);
        let expected = model_basic(header.as_bytes());
        check_credentials(header.as_bytes(), &expected);
        let valid =
            |text: &str, max: usize| !text.chars().any(char::is_control) && text.len() <= max;
        if !id.is_empty() && valid(&id, MAX_CLIENT_ID_BYTES) && valid(&secret, MAX_SECRET_BYTES) {
            assert_eq!(expected.as_ref().ok(), Some(&(id, secret)));
        } else {
            assert!(expected.is_err());
        }
    }
}
