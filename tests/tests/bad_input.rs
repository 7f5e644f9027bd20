//! Bad input, over real gRPC against a real redis-server: every malformed, forged, misdirected
//! or unauthenticated request gets exactly the status code, `ErrorInfo.reason` and
//! `oauth_error` of the contract (DESIGN.md, the reasons table), never echoes the secret or
//! token it carried, and changes no state.
//!
//! Cases of one shape are tables. [`ROWS`] holds the token service's: each row starts from a
//! valid baseline request ([`Call`]), changes one [`Slot`] to one [`Input`] and expects one
//! answer ([`Expect`]). The operator cases are a table of whole requests. A case that needs
//! state set up first (another keyring, a revoked family, a rotated secret, a deleted client)
//! is a test of its own.
//!
//! "No state change" is shown three ways: the families read from the store are identical
//! before and after, Redis holds the same number of keys (so no family or client was created),
//! and the legitimate current refresh token still rotates normally afterwards.

use test_support::harness::{
    RedisServer, ServerOptions, TestClient, TestServer, issue, oauth_error, reason,
    refresh_request, register_client, stored_family,
};
use token_core::store::{FamilyState, FamilyStatus};
use token_core::{Keyring, TokenService};
use token_proto::v1 as pb;
use token_proto::v1::client_registry_client::ClientRegistryClient;
use token_proto::v1::token_service_client::TokenServiceClient;
use token_store::RedisStore;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use Call::*;
use Expect::*;
use Fam::*;
use Input::*;
use Slot::*;

/// What every test client may be granted.
const ALLOWED_SCOPES: &[&str] = &["read", "write"];

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// One case: its name, the baseline it starts from, the slot it changes, what it puts there,
/// and the contract's answer.
type Row = (&'static str, Call, Slot, Input, Expect);

/// The token service's bad requests. After each row the [`Cast`]'s families are unchanged,
/// and the row's family still introspects as active and rotates normally.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    // (case,
    //  baseline           slot           input                     answer)

    // Garbled refresh tokens: the MAC check refuses them before Redis is asked.
    ("not a token at all",
        Refresh(Main),     Token,         Text("not-a-token"),      TOKEN_INVALID),
    ("right shape, not base64 payloads",
        Refresh(Main),     Token,         Text("rt1.x.y"),          TOKEN_INVALID),
    ("real refresh token with one MAC character changed",
        Refresh(Main),     Token,         AlteredRefreshToken,      TOKEN_INVALID),
    ("access token as refresh_token",
        Refresh(Main),     Token,         AccessToken,              TOKEN_INVALID),
    // The intruder authenticates correctly; only the token is not theirs.
    ("another client's token",
        Refresh(Main),     Caller,        AsOther,                  CLIENT_MISMATCH),
    // Failed client authentication.
    ("another client's valid secret",
        Refresh(Main),     ClientSecret,  OthersSecret,             INVALID_CLIENT),
    ("empty secret for a confidential client",
        Refresh(Main),     ClientSecret,  Text(""),                 INVALID_CLIENT),
    ("a secret for a public client",
        Refresh(Public),   ClientSecret,  OthersSecret,             INVALID_CLIENT),
    ("unknown client id",
        Refresh(Main),     ClientId,      Text("no-such-client"),   INVALID_CLIENT),
    // Oversize and empty fields fail validation before any I/O, naming the field.
    ("refresh: client_id of 129 characters",
        Refresh(Main),     ClientId,      Repeat("c", 129),         Malformed("client_id")),
    ("issue: client_id of 129 characters",
        Issue,             ClientId,      Repeat("c", 129),         Malformed("client_id")),
    ("issue: subject of 257 characters",
        Issue,             Subject,       Repeat("u", 257),         Malformed("subject")),
    ("refresh: refresh_token of 1025 characters",
        Refresh(Main),     Token,         Repeat("t", 1025),        Malformed("refresh_token")),
    ("refresh: client_secret of 257 characters",
        Refresh(Main),     ClientSecret,  Repeat("s", 257),         Malformed("client_secret")),
    ("refresh: 65 scopes",
        Refresh(Main),     Scopes,        NumberedScopes(65),       Malformed("scopes")),
    ("issue: 65 scopes",
        Issue,             Scopes,        NumberedScopes(65),       Malformed("scopes")),
    ("refresh: empty client_id",
        Refresh(Main),     ClientId,      Text(""),                 Malformed("client_id")),
    ("issue: empty client_id",
        Issue,             ClientId,      Text(""),                 Malformed("client_id")),
    ("refresh: empty refresh_token",
        Refresh(Main),     Token,         Text(""),                 Malformed("refresh_token")),
    ("issue: empty subject",
        Issue,             Subject,       Text(""),                 Malformed("subject")),
    // Under the message bound the field's own limit answers, naming the field; over it the
    // message is refused before decoding, as a malformed request.
    ("refresh_token of 60 KiB",
        Refresh(Main),     Token,         Repeat("t", 60 * KIB),    Malformed("refresh_token")),
    ("refresh_token of 100 KiB",
        Refresh(Main),     Token,         Repeat("t", 100 * KIB),   Malformed("request")),
    ("refresh_token of 5 MiB",
        Refresh(Main),     Token,         Repeat("t", 5 * MIB),     Malformed("request")),
    // "write" is allowed for the client but was not granted to the read-only family; "admin"
    // is allowed for no one, so issuing it creates no family either.
    ("refresh asking for [\"read\", \"write\"]",
        Refresh(ReadOnly), Scopes,        List(&["read", "write"]), INVALID_SCOPE),
    ("refresh asking for [\"read\", \"admin\"]",
        Refresh(ReadOnly), Scopes,        List(&["read", "admin"]), INVALID_SCOPE),
    ("issue beyond the allowed scopes",
        Issue,             Scopes,        List(&["read", "admin"]), INVALID_SCOPE),
    // RFC 7009: a token the server does not recognise is not an error, and must not touch
    // the family it claims to belong to.
    ("revoke: not a token at all",
        Revoke,            Token,         Text("not-a-token"),      Unrecognised),
    ("revoke: refresh token with one MAC character changed",
        Revoke,            Token,         AlteredRefreshToken,      Unrecognised),
    ("revoke: access token with one MAC character changed",
        Revoke,            Token,         AlteredAccessToken,       Unrecognised),
    // An unknown hint is ignored (RFC 7009 section 2.1; tests/tests/revoke_hints.rs); a hint
    // that is no text at all is malformed.
    ("token_type_hint with a control character",
        Revoke,            TokenTypeHint, Text("id\u{7}token"),    Malformed("token_type_hint")),
    ("another client's refresh token",
        Revoke,            Caller,        AsOther,                  CLIENT_MISMATCH),
    ("another client's access token",
        RevokeAccess,      Caller,        AsOther,                  CLIENT_MISMATCH),
    // RFC 7662: an unrecognised token is inactive, with every other field empty.
    ("introspect: not a token at all",
        Introspect,        Token,         Text("not-a-token"),      Unrecognised),
    ("introspect: right shape, not base64 payloads",
        Introspect,        Token,         Text("at1.x.y"),          Unrecognised),
    ("introspect: access token with one MAC character changed",
        Introspect,        Token,         AlteredAccessToken,       Unrecognised),
    ("introspect: refresh token with one MAC character changed",
        Introspect,        Token,         AlteredRefreshToken,      Unrecognised),
    ("introspect an empty token",
        Introspect,        Token,         Text(""),                 Malformed("token")),
    // A caller that names itself must authenticate as a confidential client, and is checked
    // before the token: an unauthenticated caller learns nothing.
    ("introspection caller: wrong secret",
        IntrospectAsOther, ClientSecret,  Text("not-the-secret"),   INVALID_CLIENT),
    ("introspection caller: no secret",
        IntrospectAsOther, ClientSecret,  Text(""),                 INVALID_CLIENT),
    ("introspection caller: a public client",
        IntrospectAsOther, Caller,        AsPublic,                 INVALID_CLIENT),
    ("introspection caller: unknown client",
        IntrospectAsOther, Caller,        AsUnknown,                INVALID_CLIENT),
    ("introspection caller: a secret without a client id",
        IntrospectAsOther, ClientId,      Text(""),                 Malformed("client_id")),
];

/// The families of the [`Cast`]; each row's baseline names one.
#[derive(Clone, Copy, Debug)]
enum Fam {
    /// The owner's, granted every allowed scope.
    Main,
    /// The owner's, granted "read" alone.
    ReadOnly,
    /// The public client's.
    Public,
}

/// The valid request a row starts from.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// IssueTokenPair for the owner, subject "subject-2", no scopes asked (all allowed ones).
    Issue,
    /// RefreshTokenPair of the family's current refresh token, by the family's client.
    Refresh(Fam),
    /// RevokeToken of the main family's current refresh token by the owner, with no hint.
    Revoke,
    /// The same for the main family's current access token.
    RevokeAccess,
    /// IntrospectToken of the main family's current access token, naming no caller.
    Introspect,
    /// The same, by the other client authenticated as a resource server.
    IntrospectAsOther,
}

/// The field of the baseline a row changes.
#[derive(Clone, Copy, Debug)]
enum Slot {
    ClientId,
    ClientSecret,
    /// `client_id` and `client_secret` together: another caller, correctly authenticated.
    Caller,
    Subject,
    /// `refresh_token` of a refresh, `token` of a revocation or introspection.
    Token,
    Scopes,
    TokenTypeHint,
}

/// What a row puts in its slot; tokens are the row's family's current ones.
#[derive(Clone, Copy, Debug)]
enum Input {
    Text(&'static str),
    /// The text repeated this many times.
    Repeat(&'static str, usize),
    /// Scopes, as named.
    List(&'static [&'static str]),
    /// Scopes "s0", "s1", ... of this count.
    NumberedScopes(usize),
    AccessToken,
    AlteredRefreshToken,
    AlteredAccessToken,
    /// The other client's valid secret.
    OthersSecret,
    /// The other client's id and secret.
    AsOther,
    /// The public client's id, and no secret.
    AsPublic,
    /// A client id nobody registered, with a secret.
    AsUnknown,
}

/// The contract's answer to a case.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// This code, `ErrorInfo.reason` and `oauth_error`.
    Refused(Code, &'static str, &'static str),
    /// An operator error: this code and reason, and some `oauth_error`.
    Operator(Code, &'static str),
    /// MALFORMED_REQUEST whose BadRequest names this field.
    Malformed(&'static str),
    /// OK, as for any token the server does not recognise: RevokeToken does nothing,
    /// IntrospectToken answers inactive with every other field empty.
    Unrecognised,
}

const TOKEN_INVALID: Expect = Refused(Code::Unauthenticated, "TOKEN_INVALID", "invalid_grant");
const TOKEN_REVOKED: Expect = Refused(Code::Unauthenticated, "TOKEN_REVOKED", "invalid_grant");
const CLIENT_MISMATCH: Expect = Refused(Code::Unauthenticated, "CLIENT_MISMATCH", "invalid_grant");
const INVALID_CLIENT: Expect = Refused(Code::Unauthenticated, "INVALID_CLIENT", "invalid_client");
const INVALID_SCOPE: Expect = Refused(Code::InvalidArgument, "INVALID_SCOPE", "invalid_scope");
const CLIENT_EXISTS: Expect = Operator(Code::AlreadyExists, "CLIENT_EXISTS");
const CLIENT_NOT_FOUND: Expect = Operator(Code::NotFound, "CLIENT_NOT_FOUND");
const PUBLIC_CLIENT: Expect = Operator(Code::FailedPrecondition, "PUBLIC_CLIENT");

/// One RPC of either service.
#[derive(Debug)]
enum Request {
    Issue(pb::IssueTokenPairRequest),
    Refresh(pb::RefreshTokenPairRequest),
    Revoke(pb::RevokeTokenRequest),
    Introspect(pb::IntrospectTokenRequest),
    CreateClient(pb::CreateClientRequest),
    GetClient(String),
    RotateSecret(String),
}

/// What a request was answered, when it was not refused.
#[derive(Debug, PartialEq)]
enum Answer {
    Pair(pb::TokenPair),
    Seen(pb::IntrospectTokenResponse),
    Client(pb::Client),
    Done,
}

/// What an [`Input`] stands for in a [`Cast`].
#[derive(Clone, Debug)]
enum Value {
    Text(String),
    List(Vec<String>),
    Caller(TestClient),
}

impl Request {
    /// The text field `slot` names in this request.
    fn text(&mut self, slot: Slot) -> &mut String {
        match (self, slot) {
            (Self::Issue(r), ClientId) => &mut r.client_id,
            (Self::Issue(r), Subject) => &mut r.subject,
            (Self::Refresh(r), ClientId) => &mut r.client_id,
            (Self::Refresh(r), ClientSecret) => &mut r.client_secret,
            (Self::Refresh(r), Token) => &mut r.refresh_token,
            (Self::Revoke(r), ClientId) => &mut r.client_id,
            (Self::Revoke(r), ClientSecret) => &mut r.client_secret,
            (Self::Revoke(r), Token) => &mut r.token,
            (Self::Revoke(r), TokenTypeHint) => &mut r.token_type_hint,
            (Self::Introspect(r), ClientId) => &mut r.client_id,
            (Self::Introspect(r), ClientSecret) => &mut r.client_secret,
            (Self::Introspect(r), Token) => &mut r.token,
            (request, slot) => panic!("{request:?} has no text field {slot:?}"),
        }
    }

    /// This request with `slot` set to `value`.
    fn with(mut self, slot: Slot, value: Value) -> Self {
        match (slot, value) {
            (Scopes, Value::List(scopes)) => match &mut self {
                Self::Issue(r) => r.scopes = scopes,
                Self::Refresh(r) => r.scopes = scopes,
                request => panic!("{request:?} has no scopes"),
            },
            (Caller, Value::Caller(caller)) => {
                *self.text(ClientId) = caller.client_id;
                *self.text(ClientSecret) = caller.client_secret;
            }
            (slot, Value::Text(text)) => *self.text(slot) = text,
            (slot, value) => panic!("{slot:?} cannot hold {value:?}"),
        }
        self
    }

    /// The answer to this request when it carries a token the server does not recognise.
    fn unrecognised_answer(&self) -> Option<Answer> {
        match self {
            Self::Revoke(_) => Some(Answer::Done),
            Self::Introspect(_) => Some(Answer::Seen(pb::IntrospectTokenResponse::default())),
            _ => None,
        }
    }

    /// The client id an operator request names.
    fn client_id(&self) -> Option<&str> {
        match self {
            Self::CreateClient(r) => Some(&r.client_id),
            Self::GetClient(id) | Self::RotateSecret(id) => Some(id),
            _ => None,
        }
    }
}

fn create_request(
    client_id: &str,
    name: &str,
    client_type: &str,
    allowed_scopes: &[&str],
    reuse_policy: &str,
) -> Request {
    Request::CreateClient(pb::CreateClientRequest {
        client_id: client_id.to_owned(),
        name: name.to_owned(),
        client_type: client_type.to_owned(),
        allowed_scopes: allowed_scopes.iter().map(|s| s.to_string()).collect(),
        reuse_policy: reuse_policy.to_owned(),
        access_token_format: String::new(),
        access_token_audience: String::new(),
    })
}

/// A confidential client's registration with this access token format and audience.
fn create_with_format(client_id: &str, format: &str, audience: &str) -> Request {
    let Request::CreateClient(request) = create_request(client_id, "jwt", "", &["read"], "") else {
        unreachable!("create_request makes a CreateClient");
    };
    Request::CreateClient(pb::CreateClientRequest {
        access_token_format: format.to_owned(),
        access_token_audience: audience.to_owned(),
        ..request
    })
}

/// The clients and families [`ROWS`] are played against.
struct Cast {
    /// A confidential client, allowed [`ALLOWED_SCOPES`]; holds the main and read-only
    /// families.
    owner: TestClient,
    public: TestClient,
    /// Another confidential client: the intruder, the bystander whose secret is tried, and
    /// the resource server that introspects.
    other: TestClient,
    /// The current pair of each family, indexed by [`Fam`]; a row's family is rotated after
    /// the row, so every row meets current tokens.
    pairs: [pb::TokenPair; 3],
}

impl Cast {
    async fn start(env: &mut Env) -> Self {
        let owner = env.client("confidential").await;
        let public = env.client("public").await;
        let other = env.client("confidential").await;
        let main = env.issue(&owner).await;
        let read_only = env
            .tokens
            .issue_token_pair(pb::IssueTokenPairRequest {
                client_id: owner.client_id.clone(),
                subject: "subject-1".to_owned(),
                scopes: vec!["read".to_owned()],
            })
            .await
            .expect("issue with a narrow scope")
            .into_inner();
        assert_eq!(read_only.scopes, ["read"]);
        let public_pair = env.issue(&public).await;
        Self {
            owner,
            public,
            other,
            pairs: [main, read_only, public_pair],
        }
    }

    fn pair(&self, fam: Fam) -> &pb::TokenPair {
        &self.pairs[fam as usize]
    }

    fn client(&self, fam: Fam) -> &TestClient {
        match fam {
            Main | ReadOnly => &self.owner,
            Public => &self.public,
        }
    }

    /// Every secret and current token of the cast: no refusal may carry any of them.
    fn secrets_and_tokens(&self) -> Vec<&str> {
        let secrets = [&self.owner, &self.public, &self.other].map(|c| c.client_secret.as_str());
        let tokens = self
            .pairs
            .iter()
            .flat_map(|p| [p.refresh_token.as_str(), p.access_token.as_str()]);
        secrets.into_iter().chain(tokens).collect()
    }

    fn baseline(&self, call: Call) -> Request {
        let main = self.pair(Main);
        let revoke = |token: &str| {
            Request::Revoke(pb::RevokeTokenRequest {
                client_id: self.owner.client_id.clone(),
                client_secret: self.owner.client_secret.clone(),
                token: token.to_owned(),
                token_type_hint: String::new(),
            })
        };
        let introspect = |caller: Option<&TestClient>| {
            Request::Introspect(pb::IntrospectTokenRequest {
                token: main.access_token.clone(),
                client_id: caller.map(|c| c.client_id.clone()).unwrap_or_default(),
                client_secret: caller.map(|c| c.client_secret.clone()).unwrap_or_default(),
            })
        };
        match call {
            Issue => Request::Issue(pb::IssueTokenPairRequest {
                client_id: self.owner.client_id.clone(),
                subject: "subject-2".to_owned(),
                scopes: vec![],
            }),
            Refresh(fam) => Request::Refresh(refresh_request(
                self.client(fam),
                &self.pair(fam).refresh_token,
            )),
            Revoke => revoke(&main.refresh_token),
            RevokeAccess => revoke(&main.access_token),
            Introspect => introspect(None),
            IntrospectAsOther => introspect(Some(&self.other)),
        }
    }

    fn resolve(&self, fam: Fam, input: Input) -> Value {
        let pair = self.pair(fam);
        match input {
            Text(text) => Value::Text(text.to_owned()),
            Repeat(text, times) => Value::Text(text.repeat(times)),
            List(scopes) => Value::List(scopes.iter().map(|s| s.to_string()).collect()),
            NumberedScopes(count) => Value::List((0..count).map(|i| format!("s{i}")).collect()),
            AccessToken => Value::Text(pair.access_token.clone()),
            AlteredRefreshToken => Value::Text(with_mac_char_changed(&pair.refresh_token)),
            AlteredAccessToken => Value::Text(with_mac_char_changed(&pair.access_token)),
            OthersSecret => Value::Text(self.other.client_secret.clone()),
            AsOther => Value::Caller(self.other.clone()),
            AsPublic => Value::Caller(self.public.clone()),
            AsUnknown => Value::Caller(TestClient {
                client_id: "no-such-client".to_owned(),
                client_secret: "x".to_owned(),
            }),
        }
    }
}

impl Call {
    fn family(self) -> Fam {
        match self {
            Refresh(fam) => fam,
            Issue | Revoke | RevokeAccess | Introspect | IntrospectAsOther => Main,
        }
    }
}

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
    families: Vec<FamilyState>,
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

    async fn snapshot(&self, pairs: &[&pb::TokenPair]) -> Snapshot {
        let mut families = Vec::new();
        for pair in pairs {
            families.push(read_family(&self.server.service, pair).await);
        }
        Snapshot {
            families,
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

    async fn send(&mut self, request: Request) -> Result<Answer, Status> {
        let (tokens, registry) = (&mut self.tokens, &mut self.registry);
        Ok(match request {
            Request::Issue(r) => Answer::Pair(tokens.issue_token_pair(r).await?.into_inner()),
            Request::Refresh(r) => Answer::Pair(tokens.refresh_token_pair(r).await?.into_inner()),
            Request::Revoke(r) => tokens.revoke_token(r).await.map(|_| Answer::Done)?,
            Request::Introspect(r) => Answer::Seen(tokens.introspect_token(r).await?.into_inner()),
            Request::CreateClient(r) => registry.create_client(r).await.map(|_| Answer::Done)?,
            Request::GetClient(client_id) => Answer::Client(
                registry
                    .get_client(pb::GetClientRequest { client_id })
                    .await?
                    .into_inner(),
            ),
            Request::RotateSecret(client_id) => registry
                .rotate_client_secret(pb::RotateClientSecretRequest { client_id })
                .await
                .map(|_| Answer::Done)?,
        })
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

    /// Sends `request` and checks that it gets `expect`'s answer (a refusal carrying none of
    /// `sent`), and that neither the families of `pairs` nor the keys in Redis changed.
    async fn check(
        &mut self,
        case: &str,
        request: Request,
        expect: Expect,
        sent: &[&str],
        pairs: &[&pb::TokenPair],
    ) {
        let before = self.snapshot(pairs).await;
        let unrecognised = request.unrecognised_answer();
        let outcome = self.send(request).await;
        if let Unrecognised = expect {
            let answer =
                outcome.unwrap_or_else(|status| panic!("{case}: must be answered OK: {status:?}"));
            assert_eq!(
                Some(answer),
                unrecognised,
                "{case}: answered as an unknown token, nothing else revealed"
            );
        } else {
            let status = outcome.expect_err(case);
            match expect {
                Refused(code, expected_reason, oauth) => {
                    assert_refused(case, &status, code, expected_reason, oauth);
                }
                Operator(code, expected_reason) => {
                    assert_operator_refused(case, &status, code, expected_reason);
                }
                Malformed(field) => assert_malformed(case, &status, field),
                Unrecognised => unreachable!(),
            }
            assert_no_echo(case, &status, sent);
        }
        assert_eq!(self.snapshot(pairs).await, before, "{case}: state changed");
    }

    async fn assert_still_rotates(
        &mut self,
        client: &TestClient,
        pair: &pb::TokenPair,
    ) -> pb::TokenPair {
        assert_still_rotates(&mut self.tokens, &self.server.service, client, pair).await
    }
}

async fn read_family(service: &TokenService<RedisStore>, pair: &pb::TokenPair) -> FamilyState {
    stored_family(service, &pair.refresh_token)
        .await
        .expect("the family exists")
}

/// Refreshes `pair` as its rightful client and checks that this is an ordinary rotation: not
/// a replay, same family and scopes, generation advanced by exactly one, family still active.
async fn assert_still_rotates(
    tokens: &mut TokenServiceClient<Channel>,
    service: &TokenService<RedisStore>,
    client: &TestClient,
    pair: &pb::TokenPair,
) -> pb::TokenPair {
    let before = read_family(service, pair).await;
    let next = tokens
        .refresh_token_pair(refresh_request(client, &pair.refresh_token))
        .await
        .expect("the legitimate current refresh token must still rotate")
        .into_inner();
    assert!(!next.replayed, "an ordinary rotation, not a replay");
    assert_eq!(next.family_id, pair.family_id);
    assert_eq!(
        next.scopes, pair.scopes,
        "the family keeps its granted scopes"
    );
    assert_ne!(next.refresh_token, pair.refresh_token);
    let after = read_family(service, pair).await;
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
async fn bad_token_requests_get_the_contract_answer_and_change_nothing() {
    let mut env = Env::start().await;
    let mut cast = Cast::start(&mut env).await;

    // Each baseline is valid, so a row's answer comes from the one slot it changes. Refresh
    // and anonymous introspection are shown after every row, issue and revocation at the end.
    match env.send(cast.baseline(IntrospectAsOther)).await {
        Ok(Answer::Seen(seen)) => {
            assert!(seen.active);
            assert_eq!(seen.client_id, cast.owner.client_id);
        }
        other => panic!("a resource server may introspect any token: {other:?}"),
    }

    for &(case, call, slot, input, expect) in ROWS {
        let fam = call.family();
        let value = cast.resolve(fam, input);
        let request = cast.baseline(call).with(slot, value.clone());
        let mut sent = cast.secrets_and_tokens();
        if let (ClientSecret | Token, Value::Text(text)) = (slot, &value) {
            sent.push(text);
        }
        env.check(case, request, expect, &sent, &cast.pairs.each_ref())
            .await;

        let holder = cast.pair(fam);
        let seen = env
            .introspect(&holder.access_token)
            .await
            .expect("introspect");
        assert!(
            seen.active,
            "{case}: the holder's access token stays active"
        );
        cast.pairs[fam as usize] = env.assert_still_rotates(cast.client(fam), holder).await;
    }

    // The key count is a real witness: an accepted IssueTokenPair adds exactly one key.
    let keys = env.redis_key_count().await;
    env.send(cast.baseline(Issue))
        .await
        .expect("the issue baseline");
    assert_eq!(env.redis_key_count().await, keys + 1);
    env.send(cast.baseline(Revoke))
        .await
        .expect("the revoke baseline");
    let revoked = env.snapshot(&[cast.pair(Main)]).await;
    assert!(matches!(
        revoked.families[0].status,
        FamilyStatus::Revoked { .. }
    ));
}

#[tokio::test]
async fn operator_requests_that_break_a_rule_are_refused_and_change_nothing() {
    let mut env = Env::start().await;
    let created = env
        .registry
        .create_client(pb::CreateClientRequest {
            client_id: "web-app".to_owned(),
            name: "original".to_owned(),
            client_type: "confidential".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            reuse_policy: String::new(),
            access_token_format: String::new(),
            access_token_audience: String::new(),
        })
        .await
        .expect("CreateClient")
        .into_inner();
    let original = TestClient {
        client_id: created.client_id,
        client_secret: created.client_secret,
    };
    let public = env.client("public").await;
    let mut pairs = [env.issue(&original).await, env.issue(&public).await];
    let clients = [original, public];

    #[rustfmt::skip]
    let rows = [
        // The contract spells these in lower case with a hyphen; near misses are refused, not
        // guessed at, so that a typo never yields a weaker client than the operator meant.
        ("client_type \"Public\"",
            create_request("bad-client_type", "misconfigured", "Public", &["read"], ""),
            Malformed("client_type")),
        ("reuse_policy \"revoke\"",
            create_request("bad-reuse_policy", "misconfigured", "", &["read"], "revoke"),
            Malformed("reuse_policy")),
        ("access_token_format \"JWT\"",
            create_with_format("bad-format", "JWT", ""),
            Malformed("access_token_format")),
        ("access_token_audience with a space",
            create_with_format("bad-audience", "jwt", "two words"),
            Malformed("access_token_audience")),
        // An audience would be silently meaningless on opaque tokens.
        ("access_token_audience for an opaque client",
            create_with_format("opaque-audience", "opaque", "https://api.example"),
            Malformed("access_token_audience")),
        // A public client under the same id would let anyone refresh the original's tokens.
        ("duplicate client id",
            create_request("web-app", "impostor", "public", &["read", "write"], "reject-only"),
            CLIENT_EXISTS),
        ("GetClient unknown",
            Request::GetClient("no-such-client".to_owned()),
            CLIENT_NOT_FOUND),
        // A public client has no secret to rotate, and stays public.
        ("RotateClientSecret on a public client",
            Request::RotateSecret(clients[1].client_id.clone()),
            PUBLIC_CLIENT),
    ];
    for (case, request, expect) in rows {
        let mut records = Vec::new();
        for client in &clients {
            records.push(env.get_client(&client.client_id).await.expect("GetClient"));
        }
        let named = request.client_id().map(str::to_owned);
        let sent = [clients[0].client_secret.as_str()];
        env.check(case, request, expect, &sent, &pairs.each_ref())
            .await;

        for (client, record) in clients.iter().zip(records) {
            let now = env.get_client(&client.client_id).await.expect("GetClient");
            assert_eq!(now, record, "{case}: {} changed", client.client_id);
        }
        if let Some(id) = named.filter(|id| clients.iter().all(|c| &c.client_id != id)) {
            let status = env.get_client(&id).await.expect_err("not created");
            assert_operator_refused(case, &status, Code::NotFound, "CLIENT_NOT_FOUND");
        }
        for (client, pair) in clients.iter().zip(&mut pairs) {
            *pair = env.assert_still_rotates(client, pair).await;
        }
    }
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

    // Its family is read through the server that can verify it (its subject is in the token).
    let before = read_family(&other.service, &foreign).await;
    env.check(
        "foreign keyring",
        Request::Refresh(refresh_request(&client, &foreign.refresh_token)),
        TOKEN_INVALID,
        &[&foreign.refresh_token, &client.client_secret],
        &[],
    )
    .await;
    assert_eq!(read_family(&other.service, &foreign).await, before);
    // Nor does it introspect as active here, though its family exists in this Redis.
    let seen = env
        .introspect(&foreign.access_token)
        .await
        .expect("introspect");
    assert_eq!(seen, pb::IntrospectTokenResponse::default());

    // The server that minted it still rotates it normally.
    assert_still_rotates(&mut other_tokens, &other.service, &client, &foreign).await;
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

    env.send(Request::Revoke(pb::RevokeTokenRequest {
        client_id: client.client_id.clone(),
        client_secret: client.client_secret.clone(),
        token: pair.refresh_token.clone(),
        token_type_hint: "refresh_token".to_owned(),
    }))
    .await
    .expect("RevokeToken");
    let revoked = env.snapshot(&[&pair]).await;
    assert!(matches!(
        revoked.families[0].status,
        FamilyStatus::Revoked { .. }
    ));

    env.check(
        "revoked family",
        Request::Refresh(refresh_request(&client, &pair.refresh_token)),
        TOKEN_REVOKED,
        &[&client.client_secret, &pair.refresh_token],
        &[&pair],
    )
    .await;
    for token in [&pair.access_token, &pair.refresh_token] {
        let seen = env.introspect(token).await.expect("introspect");
        assert_eq!(seen, pb::IntrospectTokenResponse::default());
    }
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

    // The old secret stops working at once.
    env.check(
        "old secret after rotation",
        Request::Refresh(refresh_request(&old, &pair.refresh_token)),
        INVALID_CLIENT,
        &[&old.client_secret, &new.client_secret, &pair.refresh_token],
        &[&pair],
    )
    .await;

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

    let before = env.snapshot(&[&pair]).await;
    let sent = [client.client_secret.as_str(), &pair.refresh_token];
    env.check(
        "refresh by a deleted client",
        Request::Refresh(refresh_request(&client, &pair.refresh_token)),
        INVALID_CLIENT,
        &sent,
        &[&pair],
    )
    .await;
    for token in [&pair.access_token, &pair.refresh_token] {
        let seen = env.introspect(token).await.expect("introspect");
        assert_eq!(seen, pb::IntrospectTokenResponse::default());
    }
    env.check(
        "GetClient after delete",
        Request::GetClient(client.client_id.clone()),
        CLIENT_NOT_FOUND,
        &sent,
        &[&pair],
    )
    .await;
    // A new client under the old id would inherit the old one's families.
    env.check(
        "CreateClient with a deleted id",
        create_request(&client.client_id, "successor", "public", &["read"], ""),
        CLIENT_EXISTS,
        &sent,
        &[&pair],
    )
    .await;
    assert_eq!(env.snapshot(&[&pair]).await, before, "state changed");
}
