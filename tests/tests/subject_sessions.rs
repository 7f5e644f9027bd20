//! A subject's sessions over real gRPC and real Redis: `ListSubjectSessions` and
//! `RevokeSubjectSessions` (logging a subject out everywhere).
//!
//! - The listing answers exactly the subject's active families (revoked, reused-and-revoked
//!   and other subjects' families absent), each with its client, scopes, issue and refresh
//!   times and generation, newest first, paged without skipping or repeating one; the client
//!   filter, the default page size, bad input and unknown clients, and the operator gate.
//! - The revocation refuses every refresh of the sessions it covers (TOKEN_REVOKED), makes every
//!   access and refresh token of them inactive, audits once per client affected, spares other
//!   subjects, other clients (with the filter) and sessions issued afterwards, and answers 0
//!   when retried or when there is nothing to revoke.
//! - It is atomic against concurrent refreshes over two instances: no refresh minted while it
//!   ran survives it, and its count is exact.
//! - The same on a Redis Cluster, for subjects on every primary.
//! - 2,000 sessions of one subject in one call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use futures::future::join_all;
use test_support::harness::{
    self, RedisServer, ServerOptions, TestClient, TestServer, reason, refresh_request,
    register_client,
};
use test_support::topology::RedisCluster;
use token_core::FamilyId;
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

type Tokens = TokenServiceClient<Channel>;

/// A family as the test holds it: its client, its latest pair and every token it ever got.
#[derive(Clone)]
struct Family {
    client: TestClient,
    latest: pb::TokenPair,
    /// Every access and refresh token delivered for it, oldest first.
    every_token: Vec<String>,
}

impl Family {
    fn id(&self) -> &str {
        &self.latest.family_id
    }
}

/// One Redis, one token server on it, and a stub of each of its services: how most tests
/// here begin.
async fn start() -> (
    RedisServer,
    TestServer,
    ClientRegistryClient<Channel>,
    Tokens,
) {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let registry = server.registry().await;
    let tokens = server.tokens().await;
    (redis, server, registry, tokens)
}

/// Issues a family of `client` for `subject` with `scopes` (empty: all the client's).
async fn issue(tokens: &mut Tokens, client: &TestClient, subject: &str, scopes: &[&str]) -> Family {
    let pair = tokens
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: client.client_id.clone(),
            subject: subject.to_owned(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .expect("IssueTokenPair")
        .into_inner();
    Family {
        client: client.clone(),
        every_token: vec![pair.access_token.clone(), pair.refresh_token.clone()],
        latest: pair,
    }
}

/// `n` families of `client` for `subject`, issued `parallel` at a time.
async fn issue_many(
    tokens: &Tokens,
    client: &TestClient,
    subject: &str,
    n: usize,
    parallel: usize,
) -> Vec<Family> {
    futures::stream::iter(0..n)
        .map(|_| {
            let mut tokens = tokens.clone();
            async move { issue(&mut tokens, client, subject, &[]).await }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Refreshes the family's latest token; the family follows the new pair.
async fn refresh(tokens: &mut Tokens, family: &mut Family) {
    let pair = tokens
        .refresh_token_pair(refresh_request(
            &family.client,
            &family.latest.refresh_token,
        ))
        .await
        .unwrap_or_else(|s| panic!("refresh of {} failed: {s:?}", family.id()))
        .into_inner();
    assert!(!pair.replayed, "a fresh rotation");
    family.every_token.push(pair.access_token.clone());
    family.every_token.push(pair.refresh_token.clone());
    family.latest = pair;
}

async fn list(
    tokens: &mut Tokens,
    subject: &str,
    client_id: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListSubjectSessionsResponse, Status> {
    tokens
        .list_subject_sessions(pb::ListSubjectSessionsRequest {
            subject: subject.to_owned(),
            client_id: client_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every page of the listing at `page_size`, concatenated; checks each page's size and that
/// only the last page has no next token.
async fn list_walk(
    tokens: &mut Tokens,
    subject: &str,
    client_id: &str,
    page_size: u32,
) -> Vec<pb::SubjectSession> {
    let (mut all, mut token, mut pages) = (Vec::new(), String::new(), 0usize);
    loop {
        let page = list(tokens, subject, client_id, page_size, &token)
            .await
            .expect("ListSubjectSessions");
        pages += 1;
        assert!(pages < 100_000, "the page walk does not end");
        assert!(page.sessions.len() <= page_size as usize, "page too big");
        let last = page.next_page_token.is_empty();
        if !last {
            assert_eq!(
                page.sessions.len(),
                page_size as usize,
                "a page before the last is full"
            );
        }
        all.extend(page.sessions);
        if last {
            return all;
        }
        token = page.next_page_token;
    }
}

/// Every session of the listing (pages of 1000).
async fn list_all(tokens: &mut Tokens, subject: &str, client_id: &str) -> Vec<pb::SubjectSession> {
    list_walk(tokens, subject, client_id, 1000).await
}

fn ids(sessions: &[pb::SubjectSession]) -> Vec<String> {
    sessions.iter().map(|s| s.family_id.clone()).collect()
}

fn id_set<'a>(families: impl IntoIterator<Item = &'a Family>) -> BTreeSet<String> {
    families.into_iter().map(|f| f.id().to_owned()).collect()
}

async fn revoke_subject(tokens: &mut Tokens, subject: &str, client_id: &str) -> u64 {
    try_revoke_subject(tokens, subject, client_id)
        .await
        .expect("RevokeSubjectSessions")
}

async fn try_revoke_subject(
    tokens: &mut Tokens,
    subject: &str,
    client_id: &str,
) -> Result<u64, Status> {
    tokens
        .revoke_subject_sessions(pb::RevokeSubjectSessionsRequest {
            subject: subject.to_owned(),
            client_id: client_id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().revoked_count)
}

async fn introspect_active(tokens: &mut Tokens, token: &str) -> bool {
    harness::introspect(tokens, token).await.active
}

/// The family's latest refresh is refused with TOKEN_REVOKED, and every token it ever had
/// introspects inactive.
async fn assert_revoked(tokens: &mut Tokens, family: &Family) {
    let status = tokens
        .refresh_token_pair(refresh_request(
            &family.client,
            &family.latest.refresh_token,
        ))
        .await
        .expect_err("a revoked session must not refresh");
    assert_eq!(
        reason(&status),
        "TOKEN_REVOKED",
        "{}: {status:?}",
        family.id()
    );
    for token in &family.every_token {
        assert!(
            !introspect_active(tokens, token).await,
            "a token of revoked session {} is active",
            family.id()
        );
    }
}

/// The family still refreshes, and its new tokens are active.
async fn assert_alive(tokens: &mut Tokens, family: &mut Family) {
    refresh(tokens, family).await;
    assert!(introspect_active(tokens, &family.latest.access_token).await);
    assert!(introspect_active(tokens, &family.latest.refresh_token).await);
}

/// The `sessions_revoked` audit events of `client` (the server's audit flushed first).
async fn sessions_revoked_events(server: &TestServer, client: &TestClient) -> Vec<String> {
    server.audit.flush().await;
    let mut tokens = server.tokens().await;
    tokens
        .list_refresh_events(pb::ListRefreshEventsRequest {
            client_id: client.client_id.clone(),
            outcomes: vec!["sessions_revoked".into()],
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListRefreshEvents")
        .into_inner()
        .events
        .into_iter()
        .map(|e| {
            assert_eq!(e.outcome, "sessions_revoked");
            assert_eq!(e.client_id, client.client_id);
            assert!(e.family_id.is_empty(), "not one family's event: {e:?}");
            e.detail
        })
        .collect()
}

/// Each client's `sessions_revoked` audit details are exactly these.
async fn assert_audits(server: &TestServer, audits: &[(&TestClient, Vec<String>)]) {
    for (client, want) in audits {
        assert_eq!(
            &sessions_revoked_events(server, client).await,
            want,
            "{}",
            client.client_id
        );
    }
}

fn detail(count: u64) -> String {
    match count {
        1 => "1 session of one subject revoked by an operator".to_owned(),
        n => format!("{n} sessions of one subject revoked by an operator"),
    }
}

fn ms(ts: &Option<prost_types::Timestamp>) -> u64 {
    let ts = ts.as_ref().expect("a timestamp");
    ts.seconds as u64 * 1000 + ts.nanos as u64 / 1_000_000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the wall clock (Redis's, on this machine) is past `ms`, so that the next write
/// happens in a later millisecond. A condition, not a delay.
async fn until_past(ms: u64) {
    while now_ms() <= ms {
        tokio::task::yield_now().await;
    }
}

/// Newest first: by issue time, then by family id, both descending.
fn assert_newest_first(sessions: &[pb::SubjectSession]) {
    let keys: Vec<(u64, FamilyId)> = sessions
        .iter()
        .map(|s| (ms(&s.issued_at), s.family_id.parse().expect("a family id")))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "not newest first");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_sessions_listing_shows_the_active_families_newest_first_filtered_and_paged() {
    let (_redis, server, mut registry, mut tokens) = start().await;
    let web = register_client(
        &mut registry,
        "confidential",
        "revoke-family",
        &["read", "write"],
    )
    .await;
    let mobile = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    let cli = register_client(
        &mut registry,
        "confidential",
        "revoke-family",
        &["admin", "read", "write"],
    )
    .await;

    // alice's families, in issue order; scopes as granted.
    let w1 = issue(&mut tokens, &web, "alice", &["read"]).await;
    let mut w2 = issue(&mut tokens, &web, "alice", &[]).await;
    let m1 = issue(&mut tokens, &mobile, "alice", &[]).await;
    let mut revoked = issue(&mut tokens, &mobile, "alice", &[]).await;
    let mut reused = issue(&mut tokens, &cli, "alice", &["write"]).await;
    let m2 = issue(&mut tokens, &mobile, "alice", &[]).await;
    let c1 = issue(&mut tokens, &cli, "alice", &["read", "admin"]).await;
    // Other subjects, one differing only in case.
    let bob = issue(&mut tokens, &web, "bob", &[]).await;
    let alice_upper = issue(&mut tokens, &mobile, "Alice", &[]).await;

    // One revoked by RevokeToken, one revoked for reuse (generation 1 presented at 3).
    refresh(&mut tokens, &mut revoked).await;
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            client_id: mobile.client_id.clone(),
            token: revoked.latest.access_token.clone(),
            ..Default::default()
        })
        .await
        .expect("RevokeToken");
    let first = reused.latest.refresh_token.clone();
    refresh(&mut tokens, &mut reused).await;
    refresh(&mut tokens, &mut reused).await;
    let status = tokens
        .refresh_token_pair(refresh_request(&cli, &first))
        .await
        .expect_err("reuse");
    assert_eq!(reason(&status), "TOKEN_REUSED");

    // Before w2's refresh: all five, each as issued.
    let active: Vec<String> = [&w1, &w2, &m1, &m2, &c1]
        .iter()
        .map(|f| f.id().to_owned())
        .collect();
    let before = list_all(&mut tokens, "alice", "").await;
    assert_eq!(
        sorted(ids(&before)),
        sorted(active.clone()),
        "exactly alice's active families"
    );
    let issued_w2 = before
        .iter()
        .find(|s| s.family_id == w2.id())
        .unwrap()
        .clone();
    assert_eq!(issued_w2.generation, 1);
    assert_eq!(ms(&issued_w2.last_refreshed_at), ms(&issued_w2.issued_at));

    // w2 refreshed in a later millisecond: its generation and last refresh move, not its issue.
    until_past(ms(&issued_w2.issued_at)).await;
    refresh(&mut tokens, &mut w2).await;
    let sessions = list_all(&mut tokens, "alice", "").await;
    assert_eq!(sorted(ids(&sessions)), sorted(ids(&before)));
    assert_newest_first(&sessions);
    #[rustfmt::skip]
    let expected: [(&Family, &TestClient, &[&str], u64); 5] = [
        (&w1, &web,    &["read"],          1),
        (&w2, &web,    &["read", "write"], 2),
        (&m1, &mobile, &["read"],          1),
        (&m2, &mobile, &["read"],          1),
        (&c1, &cli,    &["admin", "read"], 1),
    ];
    for (family, client, scopes, generation) in expected {
        let s = sessions
            .iter()
            .find(|s| s.family_id == family.id())
            .unwrap();
        let stored = harness::stored_family(&server.service, &family.latest.refresh_token)
            .await
            .expect("stored");
        assert_eq!(s.client_id, client.client_id, "{}", family.id());
        assert_eq!(sorted(s.scopes.clone()), *scopes, "{}", family.id());
        assert_eq!(s.generation, generation, "{}", family.id());
        assert_eq!(ms(&s.issued_at), stored.issued_at_ms, "{}", family.id());
        assert_eq!(
            ms(&s.last_refreshed_at),
            stored.rotated_at_ms,
            "{}",
            family.id()
        );
        if generation == 1 {
            assert_eq!(
                ms(&s.last_refreshed_at),
                ms(&s.issued_at),
                "{}",
                family.id()
            );
        }
    }
    let now_w2 = sessions.iter().find(|s| s.family_id == w2.id()).unwrap();
    assert_eq!(now_w2.issued_at, issued_w2.issued_at, "issued_at stays");
    assert!(ms(&now_w2.last_refreshed_at) > ms(&issued_w2.last_refreshed_at));
    // Issued one after another: issue times never go back in issue order.
    let issued: Vec<u64> = active
        .iter()
        .map(|f| {
            ms(&sessions
                .iter()
                .find(|s| s.family_id == *f)
                .unwrap()
                .issued_at)
        })
        .collect();
    assert!(issued.windows(2).all(|w| w[0] <= w[1]), "{issued:?}");

    // The client filter keeps the full listing's order; other subjects see only their own.
    #[rustfmt::skip]
    let filters: [(&str, &str, Vec<&Family>); 6] = [
        ("alice", &web.client_id,    vec![&w1, &w2]),
        ("alice", &mobile.client_id, vec![&m1, &m2]),
        ("alice", &cli.client_id,    vec![&c1]),
        ("bob",   "",                vec![&bob]),
        ("bob",   &mobile.client_id, vec![]),
        ("Alice", "",                vec![&alice_upper]),
    ];
    for (subject, client_id, want) in filters {
        let got = list_all(&mut tokens, subject, client_id).await;
        let want = id_set(want.into_iter());
        let in_full_order: Vec<String> = if subject == "alice" {
            ids(&sessions)
                .into_iter()
                .filter(|id| want.contains(id))
                .collect()
        } else {
            want.iter().cloned().collect()
        };
        assert_eq!(ids(&got), in_full_order, "{subject} {client_id:?}");
    }
    assert!(list_all(&mut tokens, "carol", "").await.is_empty());

    // Every page size walks every session exactly once, in the full listing's order.
    for size in [1, 2, 3, 4, 5, 6] {
        assert_eq!(
            ids(&list_walk(&mut tokens, "alice", "", size).await),
            ids(&sessions),
            "page size {size}"
        );
    }
    assert_eq!(
        ids(&list_walk(&mut tokens, "alice", &mobile.client_id, 1).await),
        ids(&list_all(&mut tokens, "alice", &mobile.client_id).await)
    );

    // page_size 0 means 100.
    let many = issue_many(&tokens, &mobile, "many", 101, 16).await;
    let page = list(&mut tokens, "many", "", 0, "").await.unwrap();
    assert_eq!(page.sessions.len(), 100);
    assert!(!page.next_page_token.is_empty());
    let rest = list(&mut tokens, "many", "", 0, &page.next_page_token)
        .await
        .unwrap();
    assert_eq!(rest.sessions.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let mut walked = ids(&page.sessions);
    walked.extend(ids(&rest.sessions));
    assert_eq!(sorted(walked), sorted(id_set(&many).into_iter().collect()));
    server.stop().await;
}

/// (rpc, subject, client_id, page_size, page_token, (code, reason) or accepted, field named)
type BadCase<'a> = (
    Rpc,
    &'a str,
    &'a str,
    u32,
    &'a str,
    Option<(&'a str, &'a str)>,
    &'a str,
);

#[derive(Debug, Clone, Copy)]
enum Rpc {
    List,
    Revoke,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_sessions_bad_requests_are_refused_naming_the_field_and_change_nothing() {
    let (_redis, server, mut registry, mut tokens) = start().await;
    let web = register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mut family = issue(&mut tokens, &web, "alice", &[]).await;
    let deleted = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    registry
        .delete_client(pb::DeleteClientRequest {
            client_id: deleted.client_id.clone(),
        })
        .await
        .expect("DeleteClient");

    let long_subject = "s".repeat(257);
    let long_client = "c".repeat(129);
    let max_subject = "s".repeat(256);
    let bad = Some(("INVALID_ARGUMENT", "MALFORMED_REQUEST"));
    let missing = Some(("NOT_FOUND", "CLIENT_NOT_FOUND"));
    // (rpc, subject, client_id, page_size, page_token, refusal, field)
    #[rustfmt::skip]
    let cases: Vec<BadCase> = vec![
        (Rpc::List,   "",           "",                  0,    "",        bad,     "subject"),
        (Rpc::List,   &long_subject, "",                 0,    "",        bad,     "subject"),
        (Rpc::List,   "alice",      "web app",           0,    "",        bad,     "client_id"),
        (Rpc::List,   "alice",      &long_client,        0,    "",        bad,     "client_id"),
        (Rpc::List,   "alice",      "",                  1001, "",        bad,     "page_size"),
        (Rpc::List,   "alice",      "",                  0,    "garbage", bad,     "page_token"),
        (Rpc::List,   "alice",      "",                  0,    "12.!!",   bad,     "page_token"),
        (Rpc::List,   "alice",      "no-such-client",    0,    "",        missing, ""),
        (Rpc::List,   "alice",      &deleted.client_id,  0,    "",        missing, ""),
        (Rpc::Revoke, "",           "",                  0,    "",        bad,     "subject"),
        (Rpc::Revoke, &long_subject, "",                 0,    "",        bad,     "subject"),
        (Rpc::Revoke, "alice",      "web app",           0,    "",        bad,     "client_id"),
        (Rpc::Revoke, "alice",      "no-such-client",    0,    "",        missing, ""),
        (Rpc::Revoke, "alice",      &deleted.client_id,  0,    "",        missing, ""),
        // The limits themselves are accepted.
        (Rpc::List,   &max_subject, "",                  1000, "",        None,    ""),
        (Rpc::Revoke, &max_subject, "",                  0,    "",        None,    ""),
    ];
    for (rpc, subject, client_id, page_size, page_token, refusal, field) in cases {
        let case = format!("{rpc:?} {subject:.12}/{client_id:.12}/{page_size}/{page_token}");
        let result = match rpc {
            Rpc::List => list(&mut tokens, subject, client_id, page_size, page_token)
                .await
                .map(|_| ()),
            Rpc::Revoke => try_revoke_subject(&mut tokens, subject, client_id)
                .await
                .map(|n| assert_eq!(n, 0, "{case}")),
        };
        let Some((code, want_reason)) = refusal else {
            result.unwrap_or_else(|s| panic!("{case}: {s:?}"));
            continue;
        };
        let status = result.expect_err(&case);
        let want_code = match code {
            "INVALID_ARGUMENT" => Code::InvalidArgument,
            _ => Code::NotFound,
        };
        assert_eq!(status.code(), want_code, "{case}: {status:?}");
        assert_eq!(reason(&status), want_reason, "{case}");
        if !field.is_empty() {
            let violations = status
                .get_details_bad_request()
                .unwrap_or_else(|| panic!("{case}: no BadRequest"))
                .field_violations;
            assert!(
                violations.iter().any(|v| v.field == field),
                "{case}: must name {field}: {violations:?}"
            );
        }
    }
    // Nothing was revoked.
    assert_eq!(
        ids(&list_all(&mut tokens, "alice", "").await),
        [family.id()]
    );
    assert_alive(&mut tokens, &mut family).await;
    assert!(sessions_revoked_events(&server, &web).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_sessions_only_callers_the_operator_policy_names_may_list_or_revoke() {
    let redis = RedisServer::start();
    let credential = "sessions-operator-credential";
    let server = TestServer::start(
        &redis.url(),
        ServerOptions {
            operators: harness::bearer_policy(credential),
            ..ServerOptions::default()
        },
    )
    .await;
    let channel = server.channel().await;
    // An `authorization` header when given, none otherwise.
    let as_caller = |header: Option<String>| {
        let value: Option<tonic::metadata::MetadataValue<_>> =
            header.map(|h| h.parse().expect("a header value"));
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &value {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        }
    };
    let operator_header = Some(format!("Bearer {credential}"));
    let mut operator =
        TokenServiceClient::with_interceptor(channel.clone(), as_caller(operator_header.clone()));
    let mut registry = pb::client_registry_client::ClientRegistryClient::with_interceptor(
        channel.clone(),
        as_caller(operator_header),
    );
    let client_id = registry
        .create_client(harness::client_request(
            "public",
            "revoke-family",
            &["read"],
        ))
        .await
        .expect("CreateClient")
        .into_inner()
        .client_id;
    let pair = operator
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id,
            subject: "alice".into(),
            scopes: vec![],
        })
        .await
        .expect("IssueTokenPair")
        .into_inner();

    let callers = [
        ("no credential", None),
        ("wrong credential", Some(format!("Bearer {credential}x"))),
        ("another scheme", Some(format!("Basic {credential}"))),
    ];
    for (who, header) in callers {
        let mut tokens = TokenServiceClient::with_interceptor(channel.clone(), as_caller(header));
        for rpc in [Rpc::List, Rpc::Revoke] {
            let status = match rpc {
                Rpc::List => tokens
                    .list_subject_sessions(pb::ListSubjectSessionsRequest {
                        subject: "alice".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
                Rpc::Revoke => tokens
                    .revoke_subject_sessions(pb::RevokeSubjectSessionsRequest {
                        subject: "alice".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
            }
            .expect_err(who);
            assert_eq!(status.code(), Code::PermissionDenied, "{who} {rpc:?}");
            assert_eq!(reason(&status), "CALLER_NOT_AUTHORIZED", "{who} {rpc:?}");
        }
    }
    // The refused revocations revoked nothing; the operator lists and revokes.
    let listed = operator
        .list_subject_sessions(pb::ListSubjectSessionsRequest {
            subject: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("the operator lists")
        .into_inner();
    assert_eq!(ids(&listed.sessions), [pair.family_id.as_str()]);
    let revoked = operator
        .revoke_subject_sessions(pb::RevokeSubjectSessionsRequest {
            subject: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("the operator revokes")
        .into_inner();
    assert_eq!(revoked.revoked_count, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_sessions_revoked_refuse_and_go_inactive_and_nothing_else_does() {
    let (_redis, server, mut registry, mut tokens) = start().await;
    let web = register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mobile = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    let cli = register_client(&mut registry, "confidential", "reject-only", &["read"]).await;
    let other = register_client(&mut registry, "public", "revoke-family", &["read"]).await;

    let mut web_families = [
        issue(&mut tokens, &web, "alice", &[]).await,
        issue(&mut tokens, &web, "alice", &[]).await,
    ];
    // One refreshed twice: its earlier tokens must go inactive too.
    refresh(&mut tokens, &mut web_families[0]).await;
    refresh(&mut tokens, &mut web_families[0]).await;
    let mut mobile_families = vec![
        issue(&mut tokens, &mobile, "alice", &[]).await,
        issue(&mut tokens, &mobile, "alice", &[]).await,
    ];
    let cli_family = issue(&mut tokens, &cli, "alice", &[]).await;
    // Revoked before: neither counted nor audited again.
    let revoked_before = issue(&mut tokens, &web, "alice", &[]).await;
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            client_id: web.client_id.clone(),
            client_secret: web.client_secret.clone(),
            token: revoked_before.latest.refresh_token.clone(),
            ..Default::default()
        })
        .await
        .expect("RevokeToken");
    let mut bob = vec![
        issue(&mut tokens, &web, "bob", &[]).await,
        issue(&mut tokens, &other, "bob", &[]).await,
    ];

    // The client filter: only cli's session goes.
    assert_eq!(
        revoke_subject(&mut tokens, "alice", &cli.client_id).await,
        1
    );
    assert_revoked(&mut tokens, &cli_family).await;
    for family in web_families.iter_mut().chain(&mut mobile_families) {
        assert_alive(&mut tokens, family).await;
    }
    assert_eq!(sessions_revoked_events(&server, &cli).await, [detail(1)]);
    assert!(sessions_revoked_events(&server, &web).await.is_empty());
    assert!(sessions_revoked_events(&server, &mobile).await.is_empty());
    let listed = list_all(&mut tokens, "alice", "").await;
    assert_eq!(
        id_set(web_families.iter().chain(&mobile_families)),
        ids(&listed).into_iter().collect(),
    );

    // Every client: the four left.
    assert_eq!(revoke_subject(&mut tokens, "alice", "").await, 4);
    for family in web_families
        .iter()
        .chain(&mobile_families)
        .chain([&cli_family, &revoked_before])
    {
        assert_revoked(&mut tokens, family).await;
    }
    assert!(list_all(&mut tokens, "alice", "").await.is_empty());
    #[rustfmt::skip]
    let audits: [(&TestClient, Vec<String>); 4] = [
        (&web,    vec![detail(2)]),
        (&mobile, vec![detail(2)]),
        (&cli,    vec![detail(1)]),
        (&other,  vec![]),
    ];
    assert_audits(&server, &audits).await;
    // bob is untouched.
    for family in &mut bob {
        assert_alive(&mut tokens, family).await;
    }
    assert_eq!(list_all(&mut tokens, "bob", "").await.len(), 2);

    // A retry answers 0 and changes nothing; so does a subject without sessions.
    #[rustfmt::skip]
    let nothing_left: [(&str, &str); 5] = [
        ("alice",  ""),
        ("alice",  &web.client_id),
        ("alice",  &cli.client_id),
        ("nobody", ""),
        ("nobody", &web.client_id),
    ];
    for (subject, client_id) in nothing_left {
        assert_eq!(
            revoke_subject(&mut tokens, subject, client_id).await,
            0,
            "{subject} {client_id:?}"
        );
    }
    assert_audits(&server, &audits).await;
    for family in &mut bob {
        assert_alive(&mut tokens, family).await;
    }
    assert!(list_all(&mut tokens, "nobody", "").await.is_empty());

    // A session issued after the call is unaffected, listed alone, and refreshes.
    let mut after = issue(&mut tokens, &web, "alice", &[]).await;
    assert_alive(&mut tokens, &mut after).await;
    assert_eq!(ids(&list_all(&mut tokens, "alice", "").await), [after.id()]);
    server.stop().await;
}

/// Families of the storm test.
const STORM_FAMILIES: usize = 40;
/// Refreshes each storm caller makes before the revocation starts.
const BEFORE_REVOKE: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subject_sessions_revocation_is_atomic_against_refreshes_on_two_instances() {
    let redis = RedisServer::start();
    let servers = [
        TestServer::start(&redis.url(), ServerOptions::default()).await,
        TestServer::start(&redis.url(), ServerOptions::default()).await,
    ];
    let mut registry = servers[0].registry().await;
    let client = register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mut channels = Vec::new();
    for server in &servers {
        for _ in 0..2 {
            channels.push(server.tokens().await);
        }
    }
    let families = issue_many(&channels[0], &client, "storm-subject", STORM_FAMILIES, 8).await;
    let bystander = issue(&mut channels[1].clone(), &client, "bystander", &[]).await;

    // Each caller refreshes its family, alternating instances, until it is refused.
    let (sent, returned) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let during = Arc::new(AtomicU64::new(0));
    let (report, mut progress) = mpsc::unbounded_channel();
    let callers: Vec<_> = families
        .into_iter()
        .enumerate()
        .map(|(i, mut family)| {
            let channels = channels.clone();
            let (sent, returned) = (sent.clone(), returned.clone());
            let (during, report) = (during.clone(), report.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let mut tokens = channels[(i + done as usize) % channels.len()].clone();
                    let after_sent = sent.load(Ordering::SeqCst);
                    let after_return = returned.load(Ordering::SeqCst);
                    let result = tokens
                        .refresh_token_pair(refresh_request(
                            &family.client,
                            &family.latest.refresh_token,
                        ))
                        .await;
                    match result {
                        Ok(pair) => {
                            let pair = pair.into_inner();
                            assert!(
                                !after_return,
                                "{}: a refresh sent after RevokeSubjectSessions returned \
                                 succeeded",
                                family.id()
                            );
                            assert!(!pair.replayed);
                            family.every_token.push(pair.access_token.clone());
                            family.every_token.push(pair.refresh_token.clone());
                            family.latest = pair;
                            done += 1;
                            if done == BEFORE_REVOKE {
                                let _ = report.send(());
                            }
                            if after_sent {
                                during.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(status) => {
                            assert_eq!(reason(&status), "TOKEN_REVOKED", "{status:?}");
                            assert!(done >= BEFORE_REVOKE, "refused before the revocation");
                            return family;
                        }
                    }
                }
            })
        })
        .collect();
    drop(report);
    // Mid-load: every caller has made its first refreshes and goes on refreshing.
    for _ in 0..STORM_FAMILIES {
        progress.recv().await.expect("a caller stopped early");
    }
    sent.store(true, Ordering::SeqCst);
    let revoked = revoke_subject(&mut channels[3].clone(), "storm-subject", "").await;
    returned.store(true, Ordering::SeqCst);
    let families: Vec<Family> = join_all(callers)
        .await
        .into_iter()
        .map(|c| c.expect("a caller failed"))
        .collect();
    eprintln!(
        "refreshes sent after the revocation started that succeeded (their tokens refused since): {}",
        during.load(Ordering::Relaxed)
    );
    assert_eq!(revoked, STORM_FAMILIES as u64, "every family counted once");

    // Every family's latest token, minted by whichever refresh won the race, is refused on
    // both instances; none of its tokens is active.
    for family in &families {
        for tokens in [&mut channels[0].clone(), &mut channels[2].clone()] {
            assert_revoked(tokens, family).await;
        }
    }
    let mut tokens = channels[0].clone();
    assert!(list_all(&mut tokens, "storm-subject", "").await.is_empty());
    let mut bystander = bystander;
    assert_alive(&mut tokens, &mut bystander).await;
    // One event, written by the instance that revoked; both read the one audit.
    servers[1].audit.flush().await;
    for server in &servers {
        assert_eq!(
            sessions_revoked_events(server, &client).await,
            [detail(STORM_FAMILIES as u64)]
        );
    }
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subject_sessions_on_a_cluster_list_and_revoke_on_every_primary() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster");
    let server = TestServer::start(&cluster.seed_url(), ServerOptions::default()).await;
    let mut registry = server.registry().await;
    let tokens = server.tokens().await;
    let web = register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mobile = register_client(&mut registry, "public", "revoke-family", &["read"]).await;

    // One subject per primary.
    let layout = token_store::keys::KeyLayout::new("t:");
    let mut subjects: BTreeMap<std::net::SocketAddr, String> = BTreeMap::new();
    for n in 0..400 {
        let subject = format!("subject-{n}");
        let primary = cluster.primary_for_slot(RedisCluster::slot_of(&layout.subject(&subject)));
        subjects.entry(primary).or_insert(subject);
    }
    assert_eq!(
        subjects.len(),
        cluster.primaries().len(),
        "a subject on every primary"
    );

    let checks = subjects.into_values().map(|subject| {
        let (mut tokens, web, mobile) = (tokens.clone(), web.clone(), mobile.clone());
        async move {
            let mut web_families = Vec::new();
            let mut mobile_families = Vec::new();
            for _ in 0..3 {
                web_families.push(issue(&mut tokens, &web, &subject, &[]).await);
            }
            for _ in 0..2 {
                mobile_families.push(issue(&mut tokens, &mobile, &subject, &[]).await);
            }
            refresh(&mut tokens, &mut web_families[0]).await;
            let mut bystander = issue(&mut tokens, &web, &format!("{subject}-other"), &[]).await;

            let all = list_all(&mut tokens, &subject, "").await;
            assert_newest_first(&all);
            let want = id_set(web_families.iter().chain(&mobile_families));
            assert_eq!(
                ids(&all).into_iter().collect::<BTreeSet<_>>(),
                want,
                "{subject}"
            );
            assert_eq!(
                ids(&list_walk(&mut tokens, &subject, "", 2).await),
                ids(&all)
            );
            let web_listed = list_all(&mut tokens, &subject, &web.client_id).await;
            assert_eq!(
                ids(&web_listed).into_iter().collect::<BTreeSet<_>>(),
                id_set(&web_families)
            );
            let refreshed = all
                .iter()
                .find(|s| s.family_id == web_families[0].id())
                .unwrap();
            assert_eq!(refreshed.generation, 2);

            assert_eq!(
                revoke_subject(&mut tokens, &subject, &mobile.client_id).await,
                2
            );
            for family in &mobile_families {
                assert_revoked(&mut tokens, family).await;
            }
            assert_alive(&mut tokens, &mut web_families[1]).await;
            assert_eq!(revoke_subject(&mut tokens, &subject, "").await, 3);
            for family in web_families.iter().chain(&mobile_families) {
                assert_revoked(&mut tokens, family).await;
            }
            assert!(list_all(&mut tokens, &subject, "").await.is_empty());
            assert_eq!(revoke_subject(&mut tokens, &subject, "").await, 0);
            assert_alive(&mut tokens, &mut bystander).await;
            let mut after = issue(&mut tokens, &mobile, &subject, &[]).await;
            assert_alive(&mut tokens, &mut after).await;
        }
    });
    join_all(checks).await;
    server.stop().await;
    drop(cluster);
}

/// Sessions of the one subject revoked in one call (the bench goes to 10,000).
const MANY: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subject_sessions_by_the_thousand_revoked_in_one_call() {
    let redis = RedisServer::start();
    let server = TestServer::start(&redis.url(), ServerOptions::default()).await;
    let mut registry = server.registry().await;
    let web = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    let mobile = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    let tokens = server.tokens().await;
    let mut families = issue_many(&tokens, &web, "celebrity", MANY / 2, 64).await;
    families.extend(issue_many(&tokens, &mobile, "celebrity", MANY / 2, 64).await);
    let mut bystander = issue(&mut tokens.clone(), &web, "fan", &[]).await;

    let mut t = tokens.clone();
    let listed = list_walk(&mut t, "celebrity", "", 1000).await;
    assert_eq!(listed.len(), MANY);
    assert_eq!(
        ids(&listed).into_iter().collect::<BTreeSet<_>>(),
        id_set(&families)
    );

    assert_eq!(revoke_subject(&mut t, "celebrity", "").await, MANY as u64);
    let refused = futures::stream::iter(&families)
        .map(|family| {
            let mut tokens = tokens.clone();
            async move {
                let status = tokens
                    .refresh_token_pair(refresh_request(
                        &family.client,
                        &family.latest.refresh_token,
                    ))
                    .await
                    .expect_err("revoked");
                (reason(&status) == "TOKEN_REVOKED"
                    && !introspect_active(&mut tokens, &family.latest.access_token).await)
                    as usize
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum::<usize>();
    assert_eq!(refused, MANY, "refused TOKEN_REVOKED and inactive");
    assert!(list_all(&mut t, "celebrity", "").await.is_empty());
    assert_eq!(
        sessions_revoked_events(&server, &web).await,
        [detail(MANY as u64 / 2)]
    );
    assert_eq!(
        sessions_revoked_events(&server, &mobile).await,
        [detail(MANY as u64 / 2)]
    );
    assert_alive(&mut t, &mut bystander).await;
    server.stop().await;
}

/// A deleted client's families are not sessions: ListSubjectSessions leaves them out, so the
/// count of sessions RevokeSubjectSessions revoked ("those that were active") leaves them out
/// too, and the deleted client gets no audit event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_sessions_of_a_deleted_client_are_neither_listed_nor_counted() {
    let (_redis, server, mut registry, mut tokens) = start().await;
    let kept = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    let deleted = register_client(&mut registry, "public", "revoke-family", &["read"]).await;
    let alive = issue(&mut tokens, &kept, "alice", &[]).await;
    let gone = [
        issue(&mut tokens, &deleted, "alice", &[]).await,
        issue(&mut tokens, &deleted, "alice", &[]).await,
    ];
    registry
        .delete_client(pb::DeleteClientRequest {
            client_id: deleted.client_id.clone(),
        })
        .await
        .expect("DeleteClient");
    for family in &gone {
        assert!(!introspect_active(&mut tokens, &family.latest.refresh_token).await);
    }
    assert_eq!(ids(&list_all(&mut tokens, "alice", "").await), [alive.id()]);
    assert_eq!(revoke_subject(&mut tokens, "alice", "").await, 1);
    assert_revoked(&mut tokens, &alive).await;
    assert!(sessions_revoked_events(&server, &deleted).await.is_empty());
    server.stop().await;
}
