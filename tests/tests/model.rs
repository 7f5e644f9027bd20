//! Model-based test: random sequences of issue / refresh / replay / reuse / revoke /
//! introspect / time-advance / lost-write steps run against the real service over a real Redis
//! and against a plain in-memory model of DESIGN.md's state machine. After every step the
//! outcomes agree and every family's stored state equals the model's. Time is a manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use test_support::harness;

use deadpool_redis::redis;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use test_support::harness::RedisServer;
use token_core::store::{FamilyStatus, Rotation};
use token_core::{
    Error, FamilyId, IntrospectRequest, IssueRequest, Lifetimes, ManualClock, NewClient,
    RefreshRequest, RevokeRequest, Store as _, TokenService,
};
use token_store::{RedisStore, StoreConfig};

const GRACE_MS: u64 = 60_000;
const IDLE_MS: u64 = 10 * 60_000;
const ABSOLUTE_MS: u64 = 60 * 60_000;
const ACCESS_MS: u64 = 5 * 60_000;

fn lifetimes() -> Lifetimes {
    Lifetimes {
        access_ttl: Duration::from_millis(ACCESS_MS),
        refresh_idle_ttl: Duration::from_millis(IDLE_MS),
        refresh_absolute_ttl: Duration::from_millis(ABSOLUTE_MS),
        grace: Duration::from_millis(GRACE_MS),
    }
}

/// The clients of every case: (type, reuse policy).
const CLIENTS: [(&str, &str); 3] = [
    ("confidential", "revoke-family"),
    ("public", "revoke-family"),
    ("confidential", "reject-only"),
];

#[derive(Debug, Clone)]
enum Op {
    Issue {
        client: usize,
    },
    /// Refresh with the `token`-th refresh token ever handed out, as `client`.
    Refresh {
        token: usize,
        client: usize,
    },
    Revoke {
        token: usize,
        client: usize,
        access: bool,
    },
    Introspect {
        token: usize,
        access: bool,
    },
    Advance {
        ms: u64,
    },
    /// A failover lost the family's last rotation: its generation steps back by one.
    LoseLastWrite {
        token: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let token = any::<prop::sample::Index>().prop_map(|i| i.index(usize::MAX));
    // Mostly the owning client (chosen later as "same as the token's"), sometimes another.
    let client = prop_oneof![6 => Just(usize::MAX), 1 => 0..CLIENTS.len()];
    prop_oneof![
        2 => (0..CLIENTS.len()).prop_map(|client| Op::Issue { client }),
        8 => (token.clone(), client.clone()).prop_map(|(token, client)| Op::Refresh { token, client }),
        1 => (token.clone(), client, any::<bool>())
            .prop_map(|(token, client, access)| Op::Revoke { token, client, access }),
        2 => (token.clone(), any::<bool>()).prop_map(|(token, access)| Op::Introspect { token, access }),
        3 => prop::sample::select(vec![
            1, 1_000, GRACE_MS - 1, GRACE_MS, GRACE_MS + 1, ACCESS_MS, IDLE_MS, IDLE_MS / 2,
        ])
        .prop_map(|ms| Op::Advance { ms }),
        1 => token.prop_map(|token| Op::LoseLastWrite { token }),
    ]
}

/// A family as the model sees it.
/// Every family of a case belongs to one subject, as a user's sessions do.
const SUBJECT: &str = "subject";

#[derive(Debug, Clone)]
struct ModelFamily {
    client: usize,
    generation: u64,
    rotated_at: u64,
    absolute_expiry: u64,
    revoked: bool,
    /// The pair of the current generation, as first delivered: replays must equal it.
    current_pair: (String, String),
    /// Earlier (generation, rotation time, pair), so a lost write can be rolled back whole.
    history: Vec<(u64, u64, (String, String))>,
}

/// A token handed out, and what the model knows of it.
#[derive(Debug, Clone)]
struct Handed {
    family: FamilyId,
    generation: u64,
    refresh: String,
    access: String,
    access_expiry: u64,
}

/// What a step produced, comparable between model and service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pair { rotation: Rotation, generation: u64 },
    Refused(&'static str),
    Active(bool),
    Done,
}

fn reason(err: &Error) -> &'static str {
    token_server::status::classify(&err.clone().into())
        .1
        .as_str_name()
}

struct Case {
    service: TokenService<RedisStore>,
    clock: ManualClock,
    redis_url: String,
    prefix: String,
    clients: Vec<(String, String)>,
    families: HashMap<FamilyId, ModelFamily>,
    handed: Vec<Handed>,
}

impl Case {
    async fn new(redis_url: &str, case_number: u64) -> Self {
        let clock = ManualClock::starting_now();
        let prefix = format!("m{case_number}:");
        let store = RedisStore::new(&StoreConfig {
            url: redis_url.to_owned(),
            pool_size: 2,
            timeout: Duration::from_secs(5),
            key_prefix: prefix.clone(),
            replica_wait: None,
            high_water_permille: token_store::DEFAULT_HIGH_WATER_PERMILLE,
        })
        .unwrap();
        let service = TokenService::new(
            store,
            harness::KEYRING.clone(),
            Arc::new(clock.clone()),
            lifetimes(),
        );
        let mut clients = Vec::new();
        for (client_type, policy) in CLIENTS {
            let issued = service
                .create_client(NewClient {
                    client_id: "",
                    name: "model",
                    client_type,
                    allowed_scopes: &["read".to_owned(), "write".to_owned()],
                    reuse_policy: policy,
                    access_token_format: "",
                    access_token_audience: "",
                })
                .await
                .unwrap();
            clients.push((issued.client_id, issued.client_secret));
        }
        Self {
            service,
            clock,
            redis_url: redis_url.to_owned(),
            prefix,
            clients,
            families: HashMap::new(),
            handed: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        use token_core::Clock as _;
        self.clock.now_ms()
    }

    fn is_expired(&self, family: &ModelFamily) -> bool {
        let now = self.now();
        now >= family.absolute_expiry || now >= family.rotated_at + IDLE_MS
    }

    /// Runs one step on both sides and returns (service outcome, model outcome).
    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op.clone() {
            Op::Issue { client } => {
                let pair = self
                    .service
                    .issue(IssueRequest {
                        client_id: &self.clients[client].0,
                        subject: SUBJECT,
                        scopes: &[],
                    })
                    .await
                    .map_err(|e| TestCaseError::fail(format!("issue failed: {e}")))?;
                let now = self.now();
                self.families.insert(
                    pair.family,
                    ModelFamily {
                        client,
                        generation: 1,
                        rotated_at: now,
                        absolute_expiry: now + ABSOLUTE_MS,
                        revoked: false,
                        current_pair: (pair.refresh_token.clone(), pair.access_token.clone()),
                        history: Vec::new(),
                    },
                );
                self.hand_out(&pair, now);
            }
            Op::Refresh { token, client } => {
                let Some(handed) = self.pick(token) else {
                    return Ok(());
                };
                let client = self.caller(&handed, client);
                let expected = self.model_refresh(&handed, client);
                let (id, secret) = self.clients[client].clone();
                let actual = match self
                    .service
                    .refresh(RefreshRequest {
                        client_id: &id,
                        client_secret: &secret,
                        refresh_token: &handed.refresh,
                        scopes: &[],
                    })
                    .await
                {
                    Ok(pair) => {
                        let family = &self.families[&pair.family];
                        if pair.rotation == Rotation::Replayed {
                            prop_assert_eq!(
                                (&pair.refresh_token, &pair.access_token),
                                (&family.current_pair.0, &family.current_pair.1),
                                "a replay must be byte-identical to the winner's pair"
                            );
                        } else {
                            let f = self.families.get_mut(&pair.family).unwrap();
                            f.current_pair =
                                (pair.refresh_token.clone(), pair.access_token.clone());
                        }
                        let now = self.now();
                        self.hand_out(&pair, now);
                        Outcome::Pair {
                            rotation: pair.rotation,
                            generation: pair.generation,
                        }
                    }
                    Err(err) => Outcome::Refused(reason(&err)),
                };
                prop_assert_eq!(actual, expected, "refresh of {:?}", handed);
            }
            Op::Revoke {
                token,
                client,
                access,
            } => {
                let Some(handed) = self.pick(token) else {
                    return Ok(());
                };
                let client = self.caller(&handed, client);
                // An expired family may have left the store (a script that found it expired
                // removed it): revoking it is then revoking nothing, whoever asks (RFC 7009).
                let gone = self.is_expired(&self.families[&handed.family])
                    && self
                        .service
                        .store()
                        .family(SUBJECT, handed.family)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?
                        .is_none();
                let family = self.families.get_mut(&handed.family).unwrap();
                let expected = if gone {
                    Outcome::Done
                } else if family.client != client {
                    Outcome::Refused("CLIENT_MISMATCH")
                } else {
                    family.revoked = true;
                    Outcome::Done
                };
                let (id, secret) = self.clients[client].clone();
                let token = if access {
                    &handed.access
                } else {
                    &handed.refresh
                };
                let actual = match self
                    .service
                    .revoke(RevokeRequest {
                        client_id: &id,
                        client_secret: &secret,
                        token,
                        token_type_hint: "",
                    })
                    .await
                {
                    Ok(_) => Outcome::Done,
                    Err(err) => Outcome::Refused(reason(&err)),
                };
                prop_assert_eq!(actual, expected);
            }
            Op::Introspect { token, access } => {
                let Some(handed) = self.pick(token) else {
                    return Ok(());
                };
                let expected = Outcome::Active(self.model_active(&handed, access));
                let token = if access {
                    &handed.access
                } else {
                    &handed.refresh
                };
                let found = self
                    .service
                    .introspect(IntrospectRequest {
                        token,
                        client_id: "",
                        client_secret: "",
                    })
                    .await
                    .map_err(|e| TestCaseError::fail(format!("introspect failed: {e}")))?;
                prop_assert_eq!(Outcome::Active(found.is_some()), expected);
            }
            Op::Advance { ms } => self.clock.advance(Duration::from_millis(ms)),
            Op::LoseLastWrite { token } => {
                let Some(handed) = self.pick(token) else {
                    return Ok(());
                };
                let family = self.families.get_mut(&handed.family).unwrap();
                // A failover loses the newest write whole: generation, time and pair together.
                if !family.revoked
                    && let Some((generation, rotated_at, pair)) = family.history.pop()
                {
                    family.generation = generation;
                    family.rotated_at = rotated_at;
                    family.current_pair = pair;
                    let key =
                        token_store::keys::KeyLayout::new(self.prefix.clone()).subject(SUBJECT);
                    let field = handed.family.to_string();
                    let mut conn = redis::Client::open(self.redis_url.as_str())
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap();
                    let record: Option<String> = redis::cmd("HGET")
                        .arg(&key)
                        .arg(&field)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    // A family found expired leaves the subject's hash: nothing to lose.
                    let Some(record) = record else {
                        return self.compare_state().await;
                    };
                    let mut stored = token_store::family_record::decode(&record).unwrap();
                    stored.generation = family.generation;
                    stored.rotated_at_ms = family.rotated_at;
                    let _: () = redis::cmd("HSET")
                        .arg(&key)
                        .arg(&field)
                        .arg(token_store::family_record::encode(&stored))
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
        }
        self.compare_state().await
    }

    /// The state machine of DESIGN.md, written plainly.
    fn model_refresh(&mut self, handed: &Handed, client: usize) -> Outcome {
        let now = self.now();
        let expired = self.is_expired(&self.families[&handed.family]);
        let family = self.families.get_mut(&handed.family).unwrap();
        let p = handed.generation;
        let g = family.generation;
        if expired {
            return Outcome::Refused("TOKEN_EXPIRED");
        }
        if family.revoked {
            return Outcome::Refused("TOKEN_REVOKED");
        }
        if family.client != client {
            return Outcome::Refused("CLIENT_MISMATCH");
        }
        if p >= g {
            family.history.push((
                family.generation,
                family.rotated_at,
                family.current_pair.clone(),
            ));
            family.generation = p + 1;
            family.rotated_at = now;
            let rotation = if p == g {
                Rotation::Rotated
            } else {
                Rotation::RolledForward
            };
            return Outcome::Pair {
                rotation,
                generation: p + 1,
            };
        }
        if p + 1 == g && now - family.rotated_at <= GRACE_MS {
            return Outcome::Pair {
                rotation: Rotation::Replayed,
                generation: g,
            };
        }
        if CLIENTS[family.client].1 == "revoke-family" {
            family.revoked = true;
        }
        Outcome::Refused("TOKEN_REUSED")
    }

    fn model_active(&self, handed: &Handed, access: bool) -> bool {
        let family = &self.families[&handed.family];
        let now = self.now();
        if family.revoked || self.is_expired(family) {
            return false;
        }
        if access {
            return now < handed.access_expiry;
        }
        let (p, g) = (handed.generation, family.generation);
        p >= g || (p + 1 == g && now - family.rotated_at <= GRACE_MS)
    }

    async fn compare_state(&self) -> Result<(), TestCaseError> {
        for (id, model) in &self.families {
            let stored = self
                .service
                .store()
                .family(SUBJECT, *id)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Redis TTLs run on real time, far longer than a case: a family leaves the store
            // only when a script found it expired.
            let Some(stored) = stored else {
                prop_assert!(self.is_expired(model), "family {} is gone unexpired", id);
                continue;
            };
            prop_assert_eq!(stored.generation, model.generation, "generation of {}", id);
            prop_assert_eq!(
                stored.rotated_at_ms,
                model.rotated_at,
                "rotation time of {}",
                id
            );
            let revoked = matches!(stored.status, FamilyStatus::Revoked { .. });
            prop_assert_eq!(revoked, model.revoked, "status of {}", id);
        }
        Ok(())
    }

    fn hand_out(&mut self, pair: &token_core::TokenPair, now: u64) {
        let family = &self.families[&pair.family];
        // Access tokens carry their rotation time; a replay's is the winner's.
        let issued_at = if pair.rotation == Rotation::Replayed {
            family.rotated_at
        } else {
            now
        };
        self.handed.push(Handed {
            family: pair.family,
            generation: pair.generation,
            refresh: pair.refresh_token.clone(),
            access: pair.access_token.clone(),
            access_expiry: (issued_at + ACCESS_MS).min(family.absolute_expiry),
        });
    }

    fn pick(&self, index: usize) -> Option<Handed> {
        (!self.handed.is_empty()).then(|| self.handed[index % self.handed.len()].clone())
    }

    /// `usize::MAX` means "the client the token belongs to".
    fn caller(&self, handed: &Handed, client: usize) -> usize {
        if client == usize::MAX {
            self.families[&handed.family].client
        } else {
            client
        }
    }
}

#[test]
fn service_agrees_with_the_model() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let case_number = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        runtime.block_on(async {
            let n = case_number.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut case = Case::new(&redis.url(), n).await;
            for op in &ops {
                case.step(op).await?;
            }
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("the service disagrees with the model: {err}");
    }
}
