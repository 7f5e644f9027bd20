//! Bad input, over real gRPC against a real redis-server: every malformed, forged, misdirected
//! or unauthenticated request gets exactly the status code, `ErrorInfo.reason` and
//! `oauth_error` of the contract (DESIGN.md, the reasons table), never echoes the secret or
//! token it carried, and changes no state.
//!
//! "No state change" is shown three ways: the family read from the store is identical before
//! and after, Redis holds the same number of keys (so no family or client was created), and
//! the legitimate current refresh token still rotates normally afterwards.

use e2e::{
    RedisServer, ServerOptions, TestClient, TestServer, issue, oauth_error, reason,
    refresh_request, register_client,
};
use token_core::store::{FamilyState, FamilyStatus};
use token_core::{FamilyId, Keyring, Store};
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// What every test client may be granted.
const ALLOWED_SCOPES: &[&str] = &["read", "write"];

/// One Redis, one token server, and a client of each service.
struct Env {
    server: TestServer,
    tokens: TokenServiceClient<Channel>,
    registry: ClientRegistryClient<Channel>,
    /// Declared last so it is dropped last: the server's pool never sees Redis vanish first.
    redis: RedisServer,
}

/// Everything a refused request must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    family: FamilyState,
    redis_keys: u64,
}

impl Env {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
        let tokens = server.tokens().await;
        let registry = server.registry().await;
        Self {
            server,
            tokens,
            registry,
            redis,
        }
    }

    async fn client(&mut self, client_type: &str) -> TestClient {
        register_client(&mut self.registry, client_type, "", ALLOWED_SCOPES).await
    }

    async fn issue(&mut self, client: &TestClient) -> pb::TokenPair {
        issue(&mut self.tokens, client, "subject-1").await
    }

    async fn family(&self, pair: &pb::TokenPair) -> FamilyState {
        read_family(self.server.service.store(), pair).await
    }

    async fn snapshot(&self, pair: &pb::TokenPair) -> Snapshot {
        Snapshot {
            family: self.family(pair).await,
            redis_keys: self.redis_key_count().await,
        }
    }

    /// Keys in Redis besides the refresh audit (`<prefix>a:{client}` streams): a refused
    /// request is audited, and that is the only trace it may leave.
    async fn redis_key_count(&self) -> u64 {
        let mut conn = deadpool_redis::redis::Client::open(self.redis.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("cannot connect to redis-server");
        let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        keys.iter().filter(|k| !k.contains(":a:{")).count() as u64
    }

    async fn refresh(&mut self, req: pb::RefreshTokenPairRequest) -> Result<pb::TokenPair, Status> {
        self.tokens
            .refresh_token_pair(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn revoke(&mut self, client: &TestClient, token: &str, hint: &str) -> Result<(), Status> {
        self.tokens
            .revoke_token(pb::RevokeTokenRequest {
                client_id: client.client_id.clone(),
                client_secret: client.client_secret.clone(),
                token: token.to_owned(),
                token_type_hint: hint.to_owned(),
            })
            .await
            .map(|_| ())
    }

    async fn introspect(&mut self, token: &str) -> Result<pb::IntrospectTokenResponse, Status> {
        self.tokens
            .introspect_token(pb::IntrospectTokenRequest {
                token: token.to_owned(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get_client(&mut self, client_id: &str) -> Result<pb::Client, Status> {
        self.registry
            .get_client(pb::GetClientRequest {
                client_id: client_id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn create_client(&mut self, req: pb::CreateClientRequest) -> Result<(), Status> {
        self.registry.create_client(req).await.map(|_| ())
    }

    async fn assert_still_rotates(
        &mut self,
        client: &TestClient,
        pair: &pb::TokenPair,
    ) -> pb::TokenPair {
        assert_still_rotates(&mut self.tokens, self.server.service.store(), client, pair).await
    }
}

fn family_id(pair: &pb::TokenPair) -> FamilyId {
    pair.family_id.parse().expect("TokenPair.family_id parses")
}

async fn read_family(store: &impl Store, pair: &pb::TokenPair) -> FamilyState {
    store
        .family(family_id(pair))
        .await
        .expect("store read")
        .expect("the family exists")
}

/// Refreshes `pair` as its rightful client and checks that this is an ordinary rotation: not
/// a replay, same family, generation advanced by exactly one, family still active.
async fn assert_still_rotates(
    tokens: &mut TokenServiceClient<Channel>,
    store: &impl Store,
    client: &TestClient,
    pair: &pb::TokenPair,
) -> pb::TokenPair {
    let before = read_family(store, pair).await;
    let next = tokens
        .refresh_token_pair(refresh_request(client, &pair.refresh_token))
        .await
        .expect("the legitimate current refresh token must still rotate")
        .into_inner();
    assert!(!next.replayed, "an ordinary rotation, not a replay");
    assert_eq!(next.family_id, pair.family_id);
    assert_ne!(next.refresh_token, pair.refresh_token);
    let after = read_family(store, pair).await;
    assert_eq!(after.generation, before.generation + 1, "exactly one step");
    assert_eq!(after.status, FamilyStatus::Active);
    next
}

/// The status is exactly this refusal of the contract.
#[track_caller]
fn assert_refused(case: &str, status: &Status, code: Code, expected_reason: &str, oauth: &str) {
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert_eq!(reason(status), expected_reason, "{case}: {status:?}");
    assert_eq!(oauth_error(status), oauth, "{case}: {status:?}");
}

/// For operator errors the contract fixes code and reason; the OAuth2 code must be present.
#[track_caller]
fn assert_operator_refused(case: &str, status: &Status, code: Code, expected_reason: &str) {
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert_eq!(reason(status), expected_reason, "{case}: {status:?}");
    assert!(!oauth_error(status).is_empty(), "{case}: {status:?}");
}

/// MALFORMED_REQUEST whose BadRequest detail names `field`.
#[track_caller]
fn assert_malformed(case: &str, status: &Status, field: &str) {
    assert_refused(
        case,
        status,
        Code::InvalidArgument,
        "MALFORMED_REQUEST",
        "invalid_request",
    );
    let bad_request = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("{case}: no BadRequest detail: {status:?}"));
    assert!(
        bad_request
            .field_violations
            .iter()
            .any(|v| v.field == field),
        "{case}: BadRequest must name {field:?}: {:?}",
        bad_request.field_violations
    );
}

/// Neither the message nor the details of a refusal carry a secret or token that was sent.
#[track_caller]
fn assert_no_echo(case: &str, status: &Status, sent: &[&str]) {
    let details = String::from_utf8_lossy(status.details());
    for value in sent.iter().filter(|v| !v.is_empty()) {
        assert!(
            !status.message().contains(value),
            "{case}: the status message echoes a secret or token: {:?}",
            status.message()
        );
        assert!(
            !details.contains(value),
            "{case}: the status details echo a secret or token"
        );
    }
}

/// `token` with one character of its MAC (the third part) replaced.
fn with_mac_char_changed(token: &str) -> String {
    let mac_start = token.rfind('.').expect("a token has three parts") + 1;
    // A character in the middle, so all six of its bits are MAC bits.
    let at = mac_start + 5;
    let replacement = if &token[at..=at] == "A" { "B" } else { "A" };
    let mut changed = token.to_owned();
    changed.replace_range(at..=at, replacement);
    changed
}

#[tokio::test]
async fn garbled_refresh_tokens_are_token_invalid_and_change_nothing() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;

    let cases = [
        ("not a token at all", "not-a-token".to_owned()),
        ("right shape, not base64 payloads", "rt1.x.y".to_owned()),
        (
            "real refresh token with one MAC character changed",
            with_mac_char_changed(&pair.refresh_token),
        ),
        ("access token as refresh_token", pair.access_token.clone()),
    ];
    for (case, token) in &cases {
        let before = env.snapshot(&pair).await;
        let status = env
            .refresh(refresh_request(&client, token))
            .await
            .expect_err(case);
        assert_refused(
            case,
            &status,
            Code::Unauthenticated,
            "TOKEN_INVALID",
            "invalid_grant",
        );
        assert_no_echo(case, &status, &[token, &client.client_secret]);
        assert_eq!(env.snapshot(&pair).await, before, "{case}: state changed");
    }

    env.assert_still_rotates(&client, &pair).await;
}

#[tokio::test]
async fn token_minted_with_another_keyring_is_token_invalid() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    // Same key id as the main keyring, different secret: only the MAC can tell them apart.
    let other_keyring =
        Keyring::parse(&Keyring::generate_line("test1")).expect("second test keyring");
    let other = TestServer::start(
        &env.redis.url(),
        ServerOptions {
            keyring: other_keyring,
            ..ServerOptions::default()
        },
    )
    .await;
    let mut other_tokens = other.tokens().await;
    let foreign = issue(&mut other_tokens, &client, "subject-1").await;

    let before = env.snapshot(&foreign).await;
    let status = env
        .refresh(refresh_request(&client, &foreign.refresh_token))
        .await
        .expect_err("a foreign-keyring token must be refused");
    assert_refused(
        "foreign keyring",
        &status,
        Code::Unauthenticated,
        "TOKEN_INVALID",
        "invalid_grant",
    );
    assert_no_echo(
        "foreign keyring",
        &status,
        &[&foreign.refresh_token, &client.client_secret],
    );
    assert_eq!(env.snapshot(&foreign).await, before, "state changed");
    // Nor does it introspect as active here, though its family exists in this Redis.
    let seen = env
        .introspect(&foreign.access_token)
        .await
        .expect("introspect");
    assert_eq!(seen, pb::IntrospectTokenResponse::default());

    // The server that minted it still rotates it normally.
    assert_still_rotates(&mut other_tokens, other.service.store(), &client, &foreign).await;
}

#[tokio::test]
async fn refresh_by_another_client_is_client_mismatch() {
    let mut env = Env::start().await;
    let owner = env.client("confidential").await;
    let intruder = env.client("confidential").await;
    let pair = env.issue(&owner).await;

    let before = env.snapshot(&pair).await;
    // The intruder authenticates correctly; only the token is not theirs.
    let status = env
        .refresh(refresh_request(&intruder, &pair.refresh_token))
        .await
        .expect_err("another client's token must be refused");
    assert_refused(
        "another client's token",
        &status,
        Code::Unauthenticated,
        "CLIENT_MISMATCH",
        "invalid_grant",
    );
    assert_no_echo(
        "another client's token",
        &status,
        &[&pair.refresh_token, &intruder.client_secret],
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");

    env.assert_still_rotates(&owner, &pair).await;
}

#[tokio::test]
async fn failed_client_authentication_is_invalid_client() {
    let mut env = Env::start().await;
    let confidential = env.client("confidential").await;
    let public = env.client("public").await;
    let bystander = env.client("confidential").await;
    let confidential_pair = env.issue(&confidential).await;
    let public_pair = env.issue(&public).await;

    let as_client = |client: &TestClient, secret: &str| TestClient {
        client_id: client.client_id.clone(),
        client_secret: secret.to_owned(),
    };
    let cases = [
        (
            "another client's valid secret",
            as_client(&confidential, &bystander.client_secret),
            &confidential_pair,
        ),
        (
            "empty secret for a confidential client",
            as_client(&confidential, ""),
            &confidential_pair,
        ),
        (
            "a secret for a public client",
            as_client(&public, &bystander.client_secret),
            &public_pair,
        ),
        (
            "unknown client id",
            TestClient {
                client_id: "no-such-client".to_owned(),
                client_secret: confidential.client_secret.clone(),
            },
            &confidential_pair,
        ),
    ];
    for (case, caller, pair) in &cases {
        let before = env.snapshot(pair).await;
        let status = env
            .refresh(refresh_request(caller, &pair.refresh_token))
            .await
            .expect_err(case);
        assert_refused(
            case,
            &status,
            Code::Unauthenticated,
            "INVALID_CLIENT",
            "invalid_client",
        );
        assert_no_echo(case, &status, &[&caller.client_secret, &pair.refresh_token]);
        assert_eq!(env.snapshot(pair).await, before, "{case}: state changed");
    }

    env.assert_still_rotates(&confidential, &confidential_pair)
        .await;
    env.assert_still_rotates(&public, &public_pair).await;
}

/// A request that should fail validation before any I/O.
enum BadCall {
    Issue(pb::IssueTokenPairRequest),
    Refresh(pb::RefreshTokenPairRequest),
}

#[tokio::test]
async fn oversize_and_empty_fields_are_malformed_and_name_the_field() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;

    // Each case is a valid request with exactly one field broken.
    let issue_ok = pb::IssueTokenPairRequest {
        client_id: client.client_id.clone(),
        subject: "subject-2".to_owned(),
        scopes: vec![],
    };
    let refresh_ok = refresh_request(&client, &pair.refresh_token);
    let too_many_scopes: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let long_secret = "s".repeat(257);
    let long_token = "t".repeat(1025);
    let cases = [
        (
            "refresh: client_id of 129 characters",
            "client_id",
            BadCall::Refresh(pb::RefreshTokenPairRequest {
                client_id: "c".repeat(129),
                ..refresh_ok.clone()
            }),
        ),
        (
            "issue: client_id of 129 characters",
            "client_id",
            BadCall::Issue(pb::IssueTokenPairRequest {
                client_id: "c".repeat(129),
                ..issue_ok.clone()
            }),
        ),
        (
            "issue: subject of 257 characters",
            "subject",
            BadCall::Issue(pb::IssueTokenPairRequest {
                subject: "u".repeat(257),
                ..issue_ok.clone()
            }),
        ),
        (
            "refresh: refresh_token of 1025 characters",
            "refresh_token",
            BadCall::Refresh(pb::RefreshTokenPairRequest {
                refresh_token: long_token.clone(),
                ..refresh_ok.clone()
            }),
        ),
        (
            "refresh: client_secret of 257 characters",
            "client_secret",
            BadCall::Refresh(pb::RefreshTokenPairRequest {
                client_secret: long_secret.clone(),
                ..refresh_ok.clone()
            }),
        ),
        (
            "refresh: 65 scopes",
            "scopes",
            BadCall::Refresh(pb::RefreshTokenPairRequest {
                scopes: too_many_scopes.clone(),
                ..refresh_ok.clone()
            }),
        ),
        (
            "issue: 65 scopes",
            "scopes",
            BadCall::Issue(pb::IssueTokenPairRequest {
                scopes: too_many_scopes.clone(),
                ..issue_ok.clone()
            }),
        ),
        (
            "refresh: empty client_id",
            "client_id",
            BadCall::Refresh(pb::RefreshTokenPairRequest {
                client_id: String::new(),
                ..refresh_ok.clone()
            }),
        ),
        (
            "issue: empty client_id",
            "client_id",
            BadCall::Issue(pb::IssueTokenPairRequest {
                client_id: String::new(),
                ..issue_ok.clone()
            }),
        ),
        (
            "refresh: empty refresh_token",
            "refresh_token",
            BadCall::Refresh(pb::RefreshTokenPairRequest {
                refresh_token: String::new(),
                ..refresh_ok.clone()
            }),
        ),
        (
            "issue: empty subject",
            "subject",
            BadCall::Issue(pb::IssueTokenPairRequest {
                subject: String::new(),
                ..issue_ok.clone()
            }),
        ),
    ];
    for (case, field, call) in cases {
        let before = env.snapshot(&pair).await;
        let status = match call {
            BadCall::Issue(req) => env.tokens.issue_token_pair(req).await.map(|_| ()),
            BadCall::Refresh(req) => env.refresh(req).await.map(|_| ()),
        }
        .expect_err(case);
        assert_malformed(case, &status, field);
        assert_no_echo(
            case,
            &status,
            &[
                &client.client_secret,
                &pair.refresh_token,
                &long_secret,
                &long_token,
            ],
        );
        // The same key count also shows that no refused IssueTokenPair created a family.
        assert_eq!(env.snapshot(&pair).await, before, "{case}: state changed");
    }

    env.assert_still_rotates(&client, &pair).await;
}

#[tokio::test]
async fn an_oversize_message_is_malformed_and_changes_nothing() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let cases = [
        // Under the message bound: the field's own limit answers, naming the field.
        ("refresh_token of 60 KiB", 60 * 1024, "refresh_token"),
        // Over it: refused before decoding, as a malformed request.
        ("refresh_token of 100 KiB", 100 * 1024, "request"),
        ("refresh_token of 5 MiB", 5 * 1024 * 1024, "request"),
    ];
    for (case, size, field) in cases {
        let before = env.snapshot(&pair).await;
        let huge = "t".repeat(size);
        let status = env
            .refresh(refresh_request(&client, &huge))
            .await
            .expect_err(case);
        assert_malformed(case, &status, field);
        assert_no_echo(case, &status, &[&client.client_secret, &huge]);
        assert_eq!(env.snapshot(&pair).await, before, "{case}: state changed");
    }
    env.assert_still_rotates(&client, &pair).await;
}

#[tokio::test]
async fn widened_scope_is_invalid_scope() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env
        .tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: client.client_id.clone(),
            subject: "subject-1".to_owned(),
            scopes: vec!["read".to_owned()],
        })
        .await
        .expect("issue with a narrow scope")
        .into_inner();
    assert_eq!(pair.scopes, ["read"]);

    // "write" is allowed for the client but was not granted to this family; "admin" is
    // allowed for no one.
    for wider in [["read", "write"], ["read", "admin"]] {
        let case = format!("refresh asking for {wider:?}");
        let before = env.snapshot(&pair).await;
        let status = env
            .refresh(pb::RefreshTokenPairRequest {
                scopes: wider.iter().map(|s| s.to_string()).collect(),
                ..refresh_request(&client, &pair.refresh_token)
            })
            .await
            .expect_err(&case);
        assert_refused(
            &case,
            &status,
            Code::InvalidArgument,
            "INVALID_SCOPE",
            "invalid_scope",
        );
        assert_no_echo(
            &case,
            &status,
            &[&client.client_secret, &pair.refresh_token],
        );
        assert_eq!(env.snapshot(&pair).await, before, "{case}: state changed");
    }

    // Issuing beyond the client's allowed scopes creates no family: the key count holds.
    let before = env.snapshot(&pair).await;
    let status = env
        .tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: client.client_id.clone(),
            subject: "subject-2".to_owned(),
            scopes: vec!["read".to_owned(), "admin".to_owned()],
        })
        .await
        .expect_err("issue beyond the allowed scopes");
    assert_refused(
        "issue beyond the allowed scopes",
        &status,
        Code::InvalidArgument,
        "INVALID_SCOPE",
        "invalid_scope",
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");
    // The key count is a real witness: an accepted IssueTokenPair adds exactly one key.
    issue(&mut env.tokens, &client, "subject-2").await;
    assert_eq!(env.redis_key_count().await, before.redis_keys + 1);

    let next = env.assert_still_rotates(&client, &pair).await;
    assert_eq!(next.scopes, ["read"], "the family keeps its granted scope");
}

#[tokio::test]
async fn revoked_family_refuses_refresh_and_its_access_token_is_inactive() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let active = env
        .introspect(&pair.access_token)
        .await
        .expect("introspect");
    assert!(
        active.active,
        "the access token is active before revocation"
    );

    env.revoke(&client, &pair.refresh_token, "refresh_token")
        .await
        .expect("RevokeToken");
    let revoked = env.snapshot(&pair).await;
    assert!(matches!(
        revoked.family.status,
        FamilyStatus::Revoked { .. }
    ));

    let status = env
        .refresh(refresh_request(&client, &pair.refresh_token))
        .await
        .expect_err("refresh of a revoked family");
    assert_refused(
        "revoked family",
        &status,
        Code::Unauthenticated,
        "TOKEN_REVOKED",
        "invalid_grant",
    );
    assert_no_echo(
        "revoked family",
        &status,
        &[&client.client_secret, &pair.refresh_token],
    );
    assert_eq!(env.snapshot(&pair).await, revoked, "state changed");

    for token in [&pair.access_token, &pair.refresh_token] {
        let seen = env.introspect(token).await.expect("introspect");
        assert_eq!(seen, pb::IntrospectTokenResponse::default());
    }
}

#[tokio::test]
async fn revoking_a_garbage_token_is_ok_and_changes_nothing() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;

    // RFC 7009: a token the server does not recognise is not an error, and must not touch
    // the family it claims to belong to.
    let garbage = [
        "not-a-token".to_owned(),
        with_mac_char_changed(&pair.refresh_token),
        with_mac_char_changed(&pair.access_token),
    ];
    for token in &garbage {
        let before = env.snapshot(&pair).await;
        env.revoke(&client, token, "")
            .await
            .unwrap_or_else(|status| panic!("revoking {token:?} must be OK: {status:?}"));
        assert_eq!(
            env.snapshot(&pair).await,
            before,
            "{token:?}: state changed"
        );
    }

    env.assert_still_rotates(&client, &pair).await;
}

#[tokio::test]
async fn revoke_with_an_unknown_token_type_hint_is_malformed() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;

    let before = env.snapshot(&pair).await;
    let status = env
        .revoke(&client, &pair.refresh_token, "id_token")
        .await
        .expect_err("token_type_hint id_token");
    assert_malformed("token_type_hint id_token", &status, "token_type_hint");
    assert_no_echo(
        "token_type_hint id_token",
        &status,
        &[&client.client_secret, &pair.refresh_token],
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");

    env.assert_still_rotates(&client, &pair).await;
}

#[tokio::test]
async fn revoking_another_clients_token_is_client_mismatch_and_keeps_the_family() {
    let mut env = Env::start().await;
    let owner = env.client("confidential").await;
    let intruder = env.client("confidential").await;
    let pair = env.issue(&owner).await;

    for (case, token) in [
        ("another client's refresh token", &pair.refresh_token),
        ("another client's access token", &pair.access_token),
    ] {
        let before = env.snapshot(&pair).await;
        let status = env.revoke(&intruder, token, "").await.expect_err(case);
        assert_refused(
            case,
            &status,
            Code::Unauthenticated,
            "CLIENT_MISMATCH",
            "invalid_grant",
        );
        assert_no_echo(case, &status, &[&intruder.client_secret, token]);
        let after = env.snapshot(&pair).await;
        assert_eq!(after, before, "{case}: state changed");
        assert_eq!(after.family.status, FamilyStatus::Active);
    }
    let seen = env
        .introspect(&pair.access_token)
        .await
        .expect("introspect");
    assert!(seen.active, "the owner's access token stays active");

    env.assert_still_rotates(&owner, &pair).await;
}

#[tokio::test]
async fn introspecting_a_garbage_token_is_inactive_with_every_field_empty() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;

    for token in [
        "not-a-token".to_owned(),
        "at1.x.y".to_owned(),
        with_mac_char_changed(&pair.access_token),
        with_mac_char_changed(&pair.refresh_token),
    ] {
        let seen = env
            .introspect(&token)
            .await
            .unwrap_or_else(|status| panic!("introspecting {token:?} must be OK: {status:?}"));
        assert_eq!(
            seen,
            pb::IntrospectTokenResponse::default(),
            "{token:?}: inactive, and nothing else revealed"
        );
    }

    let status = env.introspect("").await.expect_err("empty token");
    assert_malformed("introspect an empty token", &status, "token");
}

#[tokio::test]
async fn an_introspection_caller_that_names_itself_must_authenticate_as_a_confidential_client() {
    let mut env = Env::start().await;
    let owner = env.client("confidential").await;
    let resource_server = env.client("confidential").await;
    let public = env.client("public").await;
    let pair = env.issue(&owner).await;
    let as_caller = |caller: &TestClient, secret: &str| pb::IntrospectTokenRequest {
        token: pair.access_token.clone(),
        client_id: caller.client_id.clone(),
        client_secret: secret.to_owned(),
    };

    // Any registered confidential client may introspect any token (it is the resource server).
    let request = as_caller(&resource_server, &resource_server.client_secret);
    let seen = env.tokens.introspect_token(request).await.unwrap();
    assert!(seen.get_ref().active);
    assert_eq!(seen.get_ref().client_id, owner.client_id);

    // The caller is checked before the token: an unauthenticated caller learns nothing.
    let refusals = [
        (
            "wrong secret",
            as_caller(&resource_server, "not-the-secret"),
        ),
        ("no secret", as_caller(&resource_server, "")),
        ("a public client", as_caller(&public, "")),
        (
            "unknown client",
            as_caller(
                &TestClient {
                    client_id: "no-such-client".to_owned(),
                    client_secret: "x".to_owned(),
                },
                "x",
            ),
        ),
    ];
    for (case, request) in refusals {
        let status = env.tokens.introspect_token(request).await.unwrap_err();
        assert_refused(
            case,
            &status,
            Code::Unauthenticated,
            "INVALID_CLIENT",
            "invalid_client",
        );
        assert_no_echo(case, &status, &[&pair.access_token, "not-the-secret"]);
    }
    let status = env
        .tokens
        .introspect_token(pb::IntrospectTokenRequest {
            token: pair.access_token.clone(),
            client_id: String::new(),
            client_secret: resource_server.client_secret.clone(),
        })
        .await
        .unwrap_err();
    assert_malformed("a secret without a client id", &status, "client_id");
}

#[tokio::test]
async fn create_client_with_an_unknown_type_or_reuse_policy_is_malformed() {
    let mut env = Env::start().await;
    let keys_before = env.redis_key_count().await;

    // The contract spells these in lower case with a hyphen; near misses are refused, not
    // guessed at, so that a typo never yields a weaker client than the operator meant.
    let cases = [
        ("client_type \"Public\"", "client_type", "Public", ""),
        ("reuse_policy \"revoke\"", "reuse_policy", "", "revoke"),
    ];
    for (case, field, client_type, reuse_policy) in cases {
        let client_id = format!("bad-{field}");
        let status = env
            .create_client(pb::CreateClientRequest {
                client_id: client_id.clone(),
                name: "misconfigured".to_owned(),
                client_type: client_type.to_owned(),
                allowed_scopes: vec!["read".to_owned()],
                reuse_policy: reuse_policy.to_owned(),
            })
            .await
            .expect_err(case);
        assert_malformed(case, &status, field);
        let status = env.get_client(&client_id).await.expect_err("not created");
        assert_operator_refused(case, &status, Code::NotFound, "CLIENT_NOT_FOUND");
    }
    assert_eq!(
        env.redis_key_count().await,
        keys_before,
        "a client was stored"
    );
}

#[tokio::test]
async fn duplicate_client_id_is_client_exists_and_keeps_the_original() {
    let mut env = Env::start().await;
    let created = env
        .registry
        .create_client(pb::CreateClientRequest {
            client_id: "web-app".to_owned(),
            name: "original".to_owned(),
            client_type: "confidential".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            reuse_policy: String::new(),
        })
        .await
        .expect("CreateClient")
        .into_inner();
    let original = TestClient {
        client_id: created.client_id,
        client_secret: created.client_secret,
    };
    let record = env.get_client("web-app").await.expect("GetClient");

    // A public client under the same id would let anyone refresh the original's tokens.
    let status = env
        .create_client(pb::CreateClientRequest {
            client_id: "web-app".to_owned(),
            name: "impostor".to_owned(),
            client_type: "public".to_owned(),
            allowed_scopes: vec!["read".to_owned(), "write".to_owned()],
            reuse_policy: "reject-only".to_owned(),
        })
        .await
        .expect_err("duplicate client id");
    assert_operator_refused(
        "duplicate client id",
        &status,
        Code::AlreadyExists,
        "CLIENT_EXISTS",
    );
    assert_eq!(env.get_client("web-app").await.expect("GetClient"), record);

    let pair = env.issue(&original).await;
    env.assert_still_rotates(&original, &pair).await;
}

#[tokio::test]
async fn get_unknown_client_is_not_found() {
    let mut env = Env::start().await;
    let status = env
        .get_client("no-such-client")
        .await
        .expect_err("unknown client");
    assert_operator_refused(
        "GetClient unknown",
        &status,
        Code::NotFound,
        "CLIENT_NOT_FOUND",
    );
}

#[tokio::test]
async fn rotating_a_public_clients_secret_is_public_client() {
    let mut env = Env::start().await;
    let public = env.client("public").await;
    let pair = env.issue(&public).await;
    let record = env.get_client(&public.client_id).await.expect("GetClient");

    let before = env.snapshot(&pair).await;
    let status = env
        .registry
        .rotate_client_secret(pb::RotateClientSecretRequest {
            client_id: public.client_id.clone(),
        })
        .await
        .expect_err("RotateClientSecret on a public client");
    assert_operator_refused(
        "RotateClientSecret on a public client",
        &status,
        Code::FailedPrecondition,
        "PUBLIC_CLIENT",
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");
    assert_eq!(
        env.get_client(&public.client_id).await.expect("GetClient"),
        record
    );

    // Still public: it refreshes by its id alone.
    env.assert_still_rotates(&public, &pair).await;
}

#[tokio::test]
async fn rotated_secret_replaces_the_old_one_at_once() {
    let mut env = Env::start().await;
    let old = env.client("confidential").await;
    let pair = env.issue(&old).await;

    let rotated = env
        .registry
        .rotate_client_secret(pb::RotateClientSecretRequest {
            client_id: old.client_id.clone(),
        })
        .await
        .expect("RotateClientSecret")
        .into_inner();
    assert_ne!(rotated.client_secret, old.client_secret);
    let new = TestClient {
        client_id: old.client_id.clone(),
        client_secret: rotated.client_secret,
    };

    let before = env.snapshot(&pair).await;
    let status = env
        .refresh(refresh_request(&old, &pair.refresh_token))
        .await
        .expect_err("the old secret must stop working at once");
    assert_refused(
        "old secret after rotation",
        &status,
        Code::Unauthenticated,
        "INVALID_CLIENT",
        "invalid_client",
    );
    assert_no_echo(
        "old secret after rotation",
        &status,
        &[&old.client_secret, &new.client_secret, &pair.refresh_token],
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");

    env.assert_still_rotates(&new, &pair).await;
}

#[tokio::test]
async fn deleted_client_cannot_refresh_its_tokens_are_inactive_and_its_id_stays_taken() {
    let mut env = Env::start().await;
    let client = env.client("confidential").await;
    let pair = env.issue(&client).await;
    let seen = env
        .introspect(&pair.access_token)
        .await
        .expect("introspect");
    assert!(seen.active, "the access token is active before deletion");

    env.registry
        .delete_client(pb::DeleteClientRequest {
            client_id: client.client_id.clone(),
        })
        .await
        .expect("DeleteClient");

    let before = env.snapshot(&pair).await;
    let status = env
        .refresh(refresh_request(&client, &pair.refresh_token))
        .await
        .expect_err("a deleted client cannot refresh");
    assert_refused(
        "refresh by a deleted client",
        &status,
        Code::Unauthenticated,
        "INVALID_CLIENT",
        "invalid_client",
    );
    assert_no_echo(
        "refresh by a deleted client",
        &status,
        &[&client.client_secret, &pair.refresh_token],
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");

    for token in [&pair.access_token, &pair.refresh_token] {
        let seen = env.introspect(token).await.expect("introspect");
        assert_eq!(seen, pb::IntrospectTokenResponse::default());
    }

    let status = env
        .get_client(&client.client_id)
        .await
        .expect_err("deleted");
    assert_operator_refused(
        "GetClient after delete",
        &status,
        Code::NotFound,
        "CLIENT_NOT_FOUND",
    );

    // A new client under the old id would inherit the old one's families.
    let status = env
        .create_client(pb::CreateClientRequest {
            client_id: client.client_id.clone(),
            name: "successor".to_owned(),
            client_type: "public".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            reuse_policy: String::new(),
        })
        .await
        .expect_err("a deleted id stays reserved");
    assert_operator_refused(
        "CreateClient with a deleted id",
        &status,
        Code::AlreadyExists,
        "CLIENT_EXISTS",
    );
    assert_eq!(env.snapshot(&pair).await, before, "state changed");
}
