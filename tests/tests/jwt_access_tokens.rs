//! JWT access tokens (RFC 9068) for clients registered with `access_token_format: "jwt"`,
//! checked by a resource server nobody here wrote: PyJWT with cryptography
//! (`tests/python/pyjwt_resource_server.py`), which knows only the gateway's URL. It reads the
//! RFC 8414 metadata and the JWK Set the gateway publishes, and verifies signature, `typ`,
//! `alg`, `iss`, `aud`, `exp` and the required claims, as any resource server would.
//!
//! Also here: storms over two instances and grace replays give byte-identical JWTs; a tampered
//! JWT fails verification and introspects inactive; revocation by a JWT ends its family;
//! a keyring without an Ed25519 signing key refuses `jwt` clients with a clear reason (at
//! registration, and at a refresh after a reload lost the key, before anything changes), and
//! bad registrations change nothing; and the Ed25519 key rotates under load the way the runbook
//! says (a JWT signed before the rotation verifies while its key is verify-only, and the JWKS
//! drops the key once it is retired).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use test_support::harness::gateway::{quick_retries, upstream_at};
use test_support::harness::load::RefreshLoad;
use test_support::harness::{
    self, KEYRING, RedisServer, ServerOptions, TestGateway, TestServer, issue, refresh_request,
    refresh_together, register_client, register_client_as, register_jwt_client, replace_file,
    stored_family, until_keyring,
};
use token_core::Keyring;
use token_core::jwt::JwtSettings;
use token_proto::v1 as pb;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_types::StatusExt as _;

/// A hang guard for the Python process, far beyond what a run takes (about a second).
const PYTHON_RUN_LIMIT: Duration = Duration::from_secs(120);
/// The audience one client names for itself.
const API: &str = "https://api.example";

/// One Redis, token servers whose `--issuer` is the gateway's own URL, and the gateway in
/// front of the first of them.
struct Env {
    servers: Vec<TestServer>,
    gateway: TestGateway,
    issuer: String,
    _redis: RedisServer,
}

impl Env {
    async fn start(instances: usize, options: ServerOptions) -> Self {
        let redis = RedisServer::start();
        // The gateway's port first: the servers must know it as their issuer.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let options = ServerOptions {
            jwt: JwtSettings {
                issuer: issuer.clone(),
                default_audience: issuer.clone(),
            },
            ..options
        };
        let mut servers = Vec::new();
        for _ in 0..instances {
            servers.push(TestServer::start(&redis.url(), options.clone()).await);
        }
        let gateway = TestGateway::start_on(
            listener,
            upstream_at(&servers[0].endpoint(), quick_retries()),
        );
        Self {
            servers,
            gateway,
            issuer,
            _redis: redis,
        }
    }

    /// PyJWT's verdict on each (token, audience it expects), with the metadata and JWK Set it
    /// fetched.
    async fn resource_server(&self, tokens: &[(&str, &str)]) -> Value {
        let tokens: Vec<Value> = tokens
            .iter()
            .map(|(token, audience)| json!({ "token": token, "audience": audience }))
            .collect();
        let input = json!({
            "gateway": self.gateway.url(""),
            "issuer": self.issuer,
            "tokens": tokens,
        });
        let out = harness::run_python(
            "pyjwt_resource_server.py",
            input.to_string().as_bytes(),
            PYTHON_RUN_LIMIT,
        )
        .await;
        serde_json::from_slice(&out).expect("the resource server prints JSON")
    }

    async fn stop(self) {
        self.gateway.stop().await;
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// The token with its claims' `sub` replaced and the signature kept: what a forger sends.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
        .expect("JWT claims are JSON");
    claims["sub"] = "mallory".into();
    let forged = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{forged}.{}", parts[0], parts[2])
}

async fn introspect(server: &TestServer, token: &str) -> pb::IntrospectTokenResponse {
    harness::introspect(&mut server.tokens().await, token).await
}

/// The `kid` of every key in a JWK Set, in order.
fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("a JWK Set has keys")
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pyjwt_verifies_jwt_access_tokens_with_what_the_gateway_publishes() {
    let env = Env::start(1, ServerOptions::default()).await;
    let server = &env.servers[0];
    let issuer = env.issuer.as_str();
    let mut registry = server.registry().await;
    let own_aud = register_jwt_client(&mut registry, &["read", "write"], API).await;
    let default_aud = register_jwt_client(&mut registry, &["read"], "").await;
    let opaque = register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;

    // GetClient shows each one's format and the audience its tokens carry.
    for (client, format, audience) in [
        (&own_aud, "jwt", API),
        (&default_aud, "jwt", issuer),
        (&opaque, "opaque", ""),
    ] {
        let shown = registry
            .get_client(pb::GetClientRequest {
                client_id: client.client_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                shown.access_token_format.as_str(),
                shown.access_token_audience.as_str()
            ),
            (format, audience),
            "{}",
            client.client_id
        );
    }

    let mut tokens = server.tokens().await;
    let issued = issue(&mut tokens, &own_aud, "alice").await;
    let refreshed = tokens
        .refresh_token_pair(refresh_request(&own_aud, &issued.refresh_token))
        .await
        .unwrap()
        .into_inner();
    let bobs = issue(&mut tokens, &default_aud, "bob").await;
    let opaques = issue(&mut tokens, &opaque, "carol").await;
    let forged = tampered(&refreshed.access_token);

    // (case, token, the audience the resource server expects, Ok((pair, sub, aud, scope)) or
    // the PyJWT error it must raise)
    type Expected<'a> = Result<(&'a pb::TokenPair, &'a str, &'a str, &'a str), &'a str>;
    let rows: [(&str, &str, &str, Expected); 6] = [
        (
            "issued",
            &issued.access_token,
            API,
            Ok((&issued, "alice", API, "read write")),
        ),
        (
            "refreshed",
            &refreshed.access_token,
            API,
            Ok((&refreshed, "alice", API, "read write")),
        ),
        (
            "server's default audience",
            &bobs.access_token,
            issuer,
            Ok((&bobs, "bob", issuer, "read")),
        ),
        (
            "for another audience",
            &bobs.access_token,
            API,
            Err("InvalidAudienceError"),
        ),
        ("tampered", &forged, API, Err("InvalidSignatureError")),
        (
            "opaque, not a JWT",
            &opaques.access_token,
            API,
            Err("DecodeError"),
        ),
    ];
    let answer = env
        .resource_server(&rows.map(|(_, token, aud, _)| (token, aud)))
        .await;

    // The metadata names this gateway's endpoints under the issuer; both documents cacheable.
    let metadata = &answer["metadata"];
    for (field, path) in [
        ("token_endpoint", "/oauth/token"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(metadata[field], format!("{issuer}{path}"), "{field}");
    }
    assert_eq!(metadata["issuer"], issuer);
    assert_eq!(metadata["grant_types_supported"], json!(["refresh_token"]));
    assert_eq!(metadata["response_types_supported"], json!([]));
    for field in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
    ] {
        let methods = metadata[field].as_array().expect(field);
        assert!(methods.contains(&json!("client_secret_basic")), "{field}");
    }
    assert_eq!(answer["metadata_cache_control"], "public, max-age=300");
    assert_eq!(answer["jwks_cache_control"], "public, max-age=300");

    // The JWK Set: the public key, nothing private.
    let public = &KEYRING.public_keys()[0];
    assert_eq!(
        answer["jwks"],
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": public.x(), "kid": "test1-ed",
            "alg": "EdDSA", "use": "sig",
        }]})
    );

    for ((case, _, _, expected), result) in rows.iter().zip(answer["results"].as_array().unwrap()) {
        match expected {
            Ok((pair, sub, aud, scope)) => {
                assert_eq!(result["valid"], true, "{case}: {result}");
                let header = &result["header"];
                assert_eq!(
                    (&header["typ"], &header["alg"], &header["kid"]),
                    (&json!("at+jwt"), &json!("EdDSA"), &json!("test1-ed")),
                    "{case}"
                );
                let claims = &result["claims"];
                assert_eq!(claims["iss"], issuer, "{case}");
                assert_eq!(claims["sub"], *sub, "{case}");
                assert_eq!(claims["aud"], *aud, "{case}");
                assert_eq!(claims["scope"], *scope, "{case}");
                let client = if *sub == "alice" {
                    &own_aud
                } else {
                    &default_aud
                };
                assert_eq!(claims["client_id"], client.client_id.as_str(), "{case}");
                let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
                assert_eq!(lifetime, pair.expires_in, "{case}: exp - iat is expires_in");
                let jti = claims["jti"].as_str().unwrap();
                assert!(
                    jti.starts_with(&format!("{}:", pair.family_id)),
                    "{case}: {jti}"
                );
            }
            Err(error) => {
                assert_eq!(result["valid"], false, "{case}: {result}");
                assert_eq!(result["error"], *error, "{case}");
            }
        }
    }

    // Introspection sees a JWT as it sees an opaque token; a tampered one is inactive.
    for (case, token, active) in [
        ("issued", issued.access_token.as_str(), true),
        ("refreshed", &refreshed.access_token, true),
        ("tampered", &forged, false),
        ("opaque", &opaques.access_token, true),
    ] {
        let found = introspect(server, token).await;
        assert_eq!(found.active, active, "{case}");
    }
    let found = introspect(server, &refreshed.access_token).await;
    assert_eq!(
        (
            found.client_id.as_str(),
            found.subject.as_str(),
            found.scopes.join(" "),
            found.token_type.as_str(),
            found.family_id.as_str(),
        ),
        (
            own_aud.client_id.as_str(),
            "alice",
            "read write".to_owned(),
            "Bearer",
            refreshed.family_id.as_str(),
        )
    );
    let claims = &answer["results"][1]["claims"];
    assert_eq!(
        (json!(found.exp), json!(found.iat)),
        (claims["exp"].clone(), claims["iat"].clone())
    );

    // RFC 7009 with a JWT access token revokes its family, as an opaque one does: its JWTs
    // introspect inactive and its refresh token is refused. Other families are untouched.
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            client_id: own_aud.client_id.clone(),
            client_secret: own_aud.client_secret.clone(),
            token: refreshed.access_token.clone(),
            token_type_hint: "access_token".to_owned(),
        })
        .await
        .expect("RevokeToken");
    assert!(!introspect(server, &refreshed.access_token).await.active);
    assert!(!introspect(server, &issued.access_token).await.active);
    assert!(introspect(server, &bobs.access_token).await.active);
    let refused = tokens
        .refresh_token_pair(refresh_request(&own_aud, &refreshed.refresh_token))
        .await
        .expect_err("the family is revoked");
    assert_eq!(harness::reason(&refused), "TOKEN_REVOKED");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storms_over_two_instances_and_grace_replays_give_identical_jwts() {
    const ROUNDS: u64 = 5;
    const PARALLEL: usize = 32;
    let env = Env::start(2, ServerOptions::default()).await;
    let client = register_jwt_client(&mut env.servers[0].registry().await, &["read"], "").await;
    let mut channels = Vec::new();
    for server in &env.servers {
        for _ in 0..2 {
            channels.push(server.tokens().await);
        }
    }
    let first = issue(&mut channels[0], &client, "storm").await;
    let mut token = first.refresh_token;
    for round in 0..ROUNDS {
        let responses = refresh_together(&channels, &client, &token, PARALLEL).await;
        let winners: Vec<&pb::TokenPair> = responses.iter().filter(|p| !p.replayed).collect();
        assert_eq!(winners.len(), 1, "round {round}: one winner");
        let winner = winners[0];
        for pair in &responses {
            assert_eq!(pair.access_token, winner.access_token, "round {round}");
            assert_eq!(pair.refresh_token, winner.refresh_token, "round {round}");
        }
        let claims = KEYRING
            .verify_jwt(&winner.access_token)
            .expect("the storm's JWT verifies");
        assert_eq!(claims.generation, round + 2, "round {round}");
        // A retry after a lost reply, on each instance: the same JWT again.
        for channel in &mut channels[..] {
            let replay = channel
                .refresh_token_pair(refresh_request(&client, &token))
                .await
                .expect("a grace replay")
                .into_inner();
            assert!(replay.replayed, "round {round}");
            assert_eq!(replay.access_token, winner.access_token, "round {round}");
        }
        token = winner.refresh_token.clone();
    }
    env.stop().await;
}

#[tokio::test]
async fn jwt_registrations_are_checked_and_need_an_ed25519_signing_key() {
    // An HMAC-only keyring, as every keyring was before JWTs: it still loads and serves.
    let hmac_only = Keyring::parse(&Keyring::generate_line("h1")).unwrap();
    let env = Env::start(
        1,
        ServerOptions {
            keyring: hmac_only,
            ..ServerOptions::default()
        },
    )
    .await;
    let server = &env.servers[0];
    let mut registry = server.registry().await;
    let long = "a".repeat(257);
    // (case, format, audience, expected code, reason, field named by the BadRequest)
    let rows: [(&str, &str, &str, Code, &str, &str); 6] = [
        (
            "jwt without an ed25519 key",
            "jwt",
            "",
            Code::FailedPrecondition,
            "NO_JWT_SIGNING_KEY",
            "",
        ),
        (
            "jwt with its own audience",
            "jwt",
            API,
            Code::FailedPrecondition,
            "NO_JWT_SIGNING_KEY",
            "",
        ),
        (
            "unknown format",
            "paseto",
            "",
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            "access_token_format",
        ),
        (
            "audience with a space",
            "jwt",
            "two words",
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            "access_token_audience",
        ),
        (
            "audience too long",
            "jwt",
            &long,
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            "access_token_audience",
        ),
        (
            "audience for an opaque client",
            "opaque",
            API,
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            "access_token_audience",
        ),
    ];
    for (i, (case, format, audience, code, reason, field)) in rows.into_iter().enumerate() {
        let client_id = format!("refused-{i}");
        let status = registry
            .create_client(pb::CreateClientRequest {
                client_id: client_id.clone(),
                access_token_format: format.to_owned(),
                access_token_audience: audience.to_owned(),
                ..harness::client_request("confidential", "", &["read"])
            })
            .await
            .expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert_eq!(harness::reason(&status), reason, "{case}");
        if !field.is_empty() {
            let violations = status
                .get_details_bad_request()
                .expect(case)
                .field_violations;
            assert!(
                violations.iter().any(|v| v.field == field),
                "{case}: {violations:?}"
            );
        }
        // Nothing was created.
        let lookup = registry
            .get_client(pb::GetClientRequest { client_id })
            .await
            .expect_err(case);
        assert_eq!(lookup.code(), Code::NotFound, "{case}");
    }

    // Opaque clients are served as before; the JWKS is empty, the issuer still published.
    let opaque = register_client_as(
        &mut registry,
        harness::client_request("confidential", "", &["read"]),
    )
    .await;
    let mut tokens = server.tokens().await;
    let pair = issue(&mut tokens, &opaque, "dave").await;
    assert!(pair.access_token.starts_with("at1."));
    let jwks = tokens
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (jwks.issuer.as_str(), jwks.keys.len()),
        (env.issuer.as_str(), 0)
    );
    env.stop().await;
}

/// A keyring file: the HMAC key `h1`, signing, and the Ed25519 keys given with their roles.
fn keyring_text(hmac: &str, ed25519: &[(&str, &str, &str)]) -> String {
    let mut text = format!("{hmac}\n");
    for (id, line, role) in ed25519 {
        let seed = line.split_whitespace().nth(1).unwrap();
        text.push_str(&format!("{id} {seed} {role}\n"));
    }
    text
}

/// Waits (bounded) until every server's keyring signs JWTs with `signing` and holds exactly
/// the Ed25519 keys `ids` (signing first).
async fn until_loaded(servers: &[TestServer], signing: &str, ids: &[&str]) {
    until_keyring(servers, &format!("{signing} of {ids:?}"), |k| {
        let held: Vec<String> = k.public_keys().into_iter().map(|p| p.key_id).collect();
        k.jwt_signing_key_id() == Some(signing) && held == ids
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ed25519_key_rotates_under_load_as_the_runbook_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let hmac = Keyring::generate_line("h1");
    let (e1, e2) = (
        Keyring::generate_ed25519_line("e1"),
        Keyring::generate_ed25519_line("e2"),
    );
    replace_file(&path, &keyring_text(&hmac, &[("e1", &e1, "sign")]));
    let env = Env::start(
        2,
        ServerOptions {
            keyring_file: Some(path.clone()),
            ..ServerOptions::default()
        },
    )
    .await;
    let servers = &env.servers;
    let client = register_jwt_client(&mut servers[0].registry().await, &["read"], "").await;
    let mut tokens = servers[0].tokens().await;
    // Signed with e1; nobody refreshes it until the end.
    let kept = issue(&mut tokens, &client, "kept").await;
    let audience = env.issuer.as_str();

    // Callers refreshing one after another through both instances, the whole time.
    let mut load = RefreshLoad::issue_and_start(servers, &client, 4, 10).await;
    load.progress().await;

    // 1. Add e2, verify-only: published before anything is signed with it.
    replace_file(
        &path,
        &keyring_text(&hmac, &[("e1", &e1, "sign"), ("e2", &e2, "verify")]),
    );
    until_loaded(servers, "e1", &["e1", "e2"]).await;
    load.progress().await;
    let answer = env.resource_server(&[(&kept.access_token, audience)]).await;
    assert_eq!(kids(&answer["jwks"]), ["e1", "e2"]);
    assert_eq!(answer["results"][0]["valid"], true, "{answer}");

    // 2. Promote e2. New JWTs carry kid e2; the one signed with e1 still verifies.
    replace_file(
        &path,
        &keyring_text(&hmac, &[("e1", &e1, "verify"), ("e2", &e2, "sign")]),
    );
    until_loaded(servers, "e2", &["e2", "e1"]).await;
    load.progress().await;
    let fresh = issue(&mut tokens, &client, "fresh").await;
    let answer = env
        .resource_server(&[
            (&kept.access_token, audience),
            (&fresh.access_token, audience),
        ])
        .await;
    assert_eq!(kids(&answer["jwks"]), ["e2", "e1"]);
    let results = &answer["results"];
    assert_eq!(results[0]["valid"], true, "{answer}");
    assert_eq!(results[0]["header"]["kid"], "e1");
    assert_eq!(results[1]["valid"], true, "{answer}");
    assert_eq!(results[1]["header"]["kid"], "e2");
    assert!(introspect(&servers[1], &kept.access_token).await.active);

    // 3. Retire e1 (in production: once the longest access-token lifetime has passed).
    replace_file(&path, &keyring_text(&hmac, &[("e2", &e2, "sign")]));
    until_loaded(servers, "e2", &["e2"]).await;
    load.progress().await;
    let answer = env.resource_server(&[(&kept.access_token, audience)]).await;
    assert_eq!(kids(&answer["jwks"]), ["e2"]);
    assert_eq!(answer["results"][0]["valid"], false, "{answer}");
    for server in servers {
        assert!(!introspect(server, &kept.access_token).await.active);
    }
    // Its family lives on (its refresh token is HMAC-sealed): the next pair is signed by e2.
    let next = load.sdks()[1]
        .refresh_token_pair(refresh_request(&client, &kept.refresh_token))
        .await
        .expect("the family refreshes onto e2");
    assert_eq!(kid_of(&next.access_token), "e2", "signed by the new key");

    let (refreshes, replayed) = load.counts();
    load.stop().await;
    println!(
        "ed25519 rotation e1 -> e2 over 2 instances: {refreshes} caller refreshes \
         ({replayed} replayed), 0 failed"
    );
    env.stop().await;
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_keyring_reloaded_without_its_ed25519_key_refuses_jwt_refreshes_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let hmac = Keyring::generate_line("h1");
    let e1 = Keyring::generate_ed25519_line("e1");
    replace_file(&path, &keyring_text(&hmac, &[("e1", &e1, "sign")]));
    let env = Env::start(
        1,
        ServerOptions {
            keyring_file: Some(path.clone()),
            ..ServerOptions::default()
        },
    )
    .await;
    let server = &env.servers[0];
    let client = register_jwt_client(&mut server.registry().await, &["read"], "").await;
    let mut tokens = server.tokens().await;
    let pair = issue(&mut tokens, &client, "erin").await;
    let before = stored_family(&server.service, &pair.refresh_token).await;

    // An operator's mistake: the Ed25519 key removed while jwt clients exist.
    replace_file(&path, &format!("{hmac}\n"));
    let mut keyring = server.service.watch_keyring();
    tokio::time::timeout(
        Duration::from_secs(20),
        keyring.wait_for(|k| k.jwt_signing_key_id().is_none()),
    )
    .await
    .expect("the keyring reloads")
    .expect("the service is alive");
    let refused = tokens
        .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
        .await
        .expect_err("no key to sign the JWT with");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(harness::reason(&refused), "NO_JWT_SIGNING_KEY");
    assert_eq!(
        stored_family(&server.service, &pair.refresh_token).await,
        before
    );

    // The key back: the same refresh token rotates as if nothing had happened.
    replace_file(&path, &keyring_text(&hmac, &[("e1", &e1, "sign")]));
    until_loaded(&env.servers, "e1", &["e1"]).await;
    let next = tokens
        .refresh_token_pair(refresh_request(&client, &pair.refresh_token))
        .await
        .expect("refreshes once the key is back")
        .into_inner();
    assert!(!next.replayed);
    assert_eq!(kid_of(&next.access_token), "e1");
    env.stop().await;
}
