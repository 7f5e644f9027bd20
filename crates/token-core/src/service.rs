//! The use cases. Each one validates all input first, checks MACs before any I/O, calls the
//! store at most a few times, and returns domain types; the gRPC layer only translates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::audit::{self, RefreshEvent, RefreshObserver, RefreshOutcome};
use crate::auth_throttle::AuthThrottle;
use crate::client::{self, AccessTokenFormat, Client, ClientType, ReusePolicy};
use crate::client_cache::ClientCache;
use crate::clock::Clock;
use crate::error::Error;
use crate::jwt::{JwtClaims, JwtSettings};
use crate::keyring::Keyring;
use crate::scope::Scopes;
use crate::sessions::{self, Session, SessionPage, SessionQuery, SubjectRevokeRequest};
use crate::single_flight::TakeoverFlight;
use crate::store::{
    Current, FamilyStatus, NewFamily, RevokeOutcome, RotateOutcome, RotateRequest, Rotation, Store,
};
use crate::token::{AccessClaims, Claims, FamilyId, RefreshClaims};
use crate::validate::{
    self, MAX_HINT_LEN, MAX_JWT_LEN, MAX_NAME_LEN, MAX_SECRET_LEN, MAX_SUBJECT_LEN, MAX_TOKEN_LEN,
};

/// How long things live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_ttl: Duration,
    /// A family unused this long lapses.
    pub refresh_idle_ttl: Duration,
    /// A family lapses this long after it was issued, however much it is used.
    pub refresh_absolute_ttl: Duration,
    /// How long the immediate predecessor of the current refresh token still gets the
    /// current pair; zero turns replays off.
    pub grace: Duration,
}

/// [`Lifetimes::access_ttl`] unless configured (`--access-ttl`).
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// [`Lifetimes::refresh_idle_ttl`] unless configured (`--refresh-idle-ttl`).
pub const DEFAULT_REFRESH_IDLE_TTL: Duration = Duration::from_secs(30 * 86_400);
/// [`Lifetimes::refresh_absolute_ttl`] unless configured (`--refresh-absolute-ttl`).
pub const DEFAULT_REFRESH_ABSOLUTE_TTL: Duration = Duration::from_secs(90 * 86_400);
/// [`Lifetimes::grace`] unless configured (`--grace-period`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_idle_ttl: DEFAULT_REFRESH_IDLE_TTL,
            refresh_absolute_ttl: DEFAULT_REFRESH_ABSOLUTE_TTL,
            grace: DEFAULT_GRACE,
        }
    }
}

pub struct IssueRequest<'a> {
    pub client_id: &'a str,
    pub subject: &'a str,
    pub scopes: &'a [String],
}

pub struct RefreshRequest<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub refresh_token: &'a str,
    pub scopes: &'a [String],
}

pub struct RevokeRequest<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub token: &'a str,
    pub token_type_hint: &'a str,
}

pub struct IntrospectRequest<'a> {
    pub token: &'a str,
    /// The caller, when it authenticates as a registered client (RFC 7662 section 2.1, as the
    /// HTTP gateway does for every introspection); empty for callers trusted by the network.
    /// Only a confidential client can authenticate: a public client's id is no secret.
    pub client_id: &'a str,
    /// The caller's secret; must be empty when `client_id` is.
    pub client_secret: &'a str,
}

pub struct NewClient<'a> {
    /// Empty: generate one.
    pub client_id: &'a str,
    pub name: &'a str,
    pub client_type: &'a str,
    pub allowed_scopes: &'a [String],
    pub reuse_policy: &'a str,
    /// "opaque" (default) or "jwt".
    pub access_token_format: &'a str,
    /// Only for "jwt"; empty: the server's default audience.
    pub access_token_audience: &'a str,
}

/// A pair as handed to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_s: i64,
    pub refresh_expires_in_s: i64,
    pub scopes: Scopes,
    pub family: FamilyId,
    pub generation: u64,
    /// How this pair came about; `Replayed` means a re-delivery of an issued pair.
    pub rotation: Rotation,
}

/// What introspection reveals about an active token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    pub client_id: String,
    pub subject: String,
    pub scopes: Scopes,
    pub exp_s: i64,
    pub iat_s: i64,
    /// "Bearer" or "refresh_token".
    pub token_type: &'static str,
    pub family: FamilyId,
}

/// A client secret shown exactly once.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    pub client_id: String,
    /// Empty for public clients.
    pub client_secret: String,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

pub const TOKEN_TYPE_ACCESS: &str = "Bearer";
pub const TOKEN_TYPE_REFRESH: &str = "refresh_token";
/// The reason a family carries after `RevokeToken`.
pub const REVOKED_BY_CLIENT: &str = "revoked_by_client";

/// The token service's use cases over a store, a keyring and a clock.
pub struct TokenService<S> {
    store: S,
    /// Replaced whole when the keyring file changes ([`TokenService::replace_keyring`]); each
    /// use takes the current one. A watch channel: the current value and its changes in one.
    keyring: watch::Sender<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    lifetimes: Lifetimes,
    /// `iss` and the default `aud` of JWT access tokens.
    jwt: JwtSettings,
    /// Off (TTL zero) unless [`TokenService::with_client_cache`] turns it on.
    clients: ClientCache,
    /// Identical refreshes in flight on this instance share one rotation.
    refreshes: TakeoverFlight<RefreshKey, RefreshAttempt>,
    failed_authentications: AuthThrottle,
    /// Told every refresh outcome (metrics, audit); none unless set.
    observer: Option<Arc<dyn RefreshObserver>>,
}

/// One run of the refresh: its result and what the audit needs to know about it.
#[derive(Clone)]
struct RefreshAttempt {
    result: Result<TokenPair, Error>,
    seen: Seen,
}

/// What a refresh learnt on its way, filled in as far as it got.
#[derive(Clone, Copy, Default)]
struct Seen {
    family: Option<FamilyId>,
    generation: u64,
    client_registered: Option<bool>,
    detail: &'static str,
}

/// Failed authentications a client may make before being throttled, and how fast that
/// allowance comes back.
pub const AUTH_FAILURE_BURST: u32 = 10;
pub const AUTH_FAILURE_REFILL: Duration = Duration::from_secs(1);

/// Everything that can change a refresh's result: requests equal in all of it are one refresh.
/// Held in memory only while the refresh runs; never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RefreshKey {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    scopes: Vec<String>,
}

impl<S: Store> TokenService<S> {
    pub fn new(store: S, keyring: Keyring, clock: Arc<dyn Clock>, lifetimes: Lifetimes) -> Self {
        Self {
            store,
            keyring: watch::Sender::new(Arc::new(keyring)),
            clock,
            lifetimes,
            jwt: JwtSettings::default(),
            clients: ClientCache::new(Duration::ZERO),
            refreshes: TakeoverFlight::default(),
            failed_authentications: AuthThrottle::new(AUTH_FAILURE_BURST, AUTH_FAILURE_REFILL),
            observer: None,
        }
    }

    /// The keys in use now.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.borrow().clone()
    }

    /// The keyring now and every replacement from here on.
    pub fn watch_keyring(&self) -> watch::Receiver<Arc<Keyring>> {
        self.keyring.subscribe()
    }

    /// Uses `keyring` from now on: rotation without a restart. Calls already running finish
    /// with the keys they started with.
    pub fn replace_keyring(&self, keyring: Keyring) {
        self.keyring.send_replace(Arc::new(keyring));
    }

    /// Signs JWT access tokens as `settings.issuer`.
    pub fn with_jwt_settings(mut self, settings: JwtSettings) -> Self {
        self.jwt = settings;
        self
    }

    pub fn jwt_settings(&self) -> &JwtSettings {
        &self.jwt
    }

    /// Reports every refresh outcome to `observer`.
    pub fn with_refresh_observer(mut self, observer: Arc<dyn RefreshObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Caches client records for `ttl` (see [`ClientCache`] for the staleness it allows).
    pub fn with_client_cache(mut self, ttl: Duration) -> Self {
        self.clients = ClientCache::new(ttl);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Now, by the clock every decision reads.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Starts a family and returns its first pair.
    pub async fn issue(&self, req: IssueRequest<'_>) -> Result<TokenPair, Error> {
        validate::client_id("client_id", req.client_id)?;
        validate::required("subject", req.subject, MAX_SUBJECT_LEN)?;
        let requested = Scopes::parse("scopes", req.scopes)?;
        let client = self
            .client(req.client_id)
            .await?
            .ok_or(Error::InvalidClient)?;
        let scopes = if requested.is_empty() {
            client.allowed_scopes.clone()
        } else {
            requested.check_within(&client.allowed_scopes)?;
            requested
        };

        let family = NewFamily {
            family: FamilyId::random(),
            subject: req.subject.to_owned(),
            client_id: client.client_id.clone(),
            scope_mask: client.allowed_scopes.mask_of(&scopes),
            fixed_now_ms: self.clock.fixed_ms(),
            key_id: signing_key_ids(&self.keyring(), &client)?,
            absolute_ttl_ms: millis(self.lifetimes.refresh_absolute_ttl),
            idle_ttl_ms: millis(self.lifetimes.refresh_idle_ttl),
        };
        // The store's clock stamps generation 1: its issue time goes into the tokens.
        let current = self.store.create_family(&family).await?;
        self.mint_pair(
            &client,
            family.family,
            req.subject,
            &current,
            Rotation::Rotated,
            current.rotated_at_ms,
        )
    }

    /// Authenticates the client and runs the refresh state machine. Identical refreshes in
    /// flight on this instance share one run; all but the first get the pair as a replay.
    /// Every outcome, success or refusal, is reported to the observer.
    pub async fn refresh(&self, req: RefreshRequest<'_>) -> Result<TokenPair, Error> {
        let client_id = req.client_id;
        let attempt = self.refresh_coalesced(req).await;
        if let Some(observer) = &self.observer {
            observer.refreshed(self.refresh_event(client_id, &attempt));
        }
        attempt.result
    }

    async fn refresh_coalesced(&self, req: RefreshRequest<'_>) -> RefreshAttempt {
        // Sizes first: an oversize request is refused before it is copied into a flight key.
        let valid = validate::client_id("client_id", req.client_id)
            .and_then(|()| validate::optional("client_secret", req.client_secret, MAX_SECRET_LEN))
            .and_then(|()| validate::required("refresh_token", req.refresh_token, MAX_TOKEN_LEN));
        if let Err(err) = valid {
            return RefreshAttempt {
                result: Err(err),
                seen: Seen::default(),
            };
        }
        let key = RefreshKey {
            client_id: req.client_id.to_owned(),
            client_secret: req.client_secret.to_owned(),
            refresh_token: req.refresh_token.to_owned(),
            scopes: req.scopes.to_vec(),
        };
        // Boxed: the full refresh (with its Redis call) is a large state machine, and only the
        // leader of a flight needs it; inline, every follower's future would carry (and tonic
        // would copy) its size. Measured: a storm of 1,000 spent a fifth of its CPU in memcpy.
        let (mut attempt, led) = self
            .refreshes
            .run(key, || {
                Box::pin(async move {
                    let mut seen = Seen::default();
                    let result = self.refresh_once(req, &mut seen).await;
                    RefreshAttempt { result, seen }
                })
            })
            .await;
        if !led && let Ok(pair) = &mut attempt.result {
            pair.rotation = Rotation::Replayed;
            attempt.seen.detail = audit::DETAIL_COALESCED;
        }
        attempt
    }

    fn refresh_event(&self, client_id: &str, attempt: &RefreshAttempt) -> RefreshEvent {
        let (outcome, reason) = match &attempt.result {
            Ok(pair) => (RefreshOutcome::of_rotation(pair.rotation), ""),
            Err(err) => (RefreshOutcome::of_error(err), err.reason()),
        };
        RefreshEvent {
            at_ms: self.clock.now_ms(),
            client_id: client_id.to_owned(),
            client_registered: attempt.seen.client_registered,
            family: attempt.seen.family,
            generation: attempt.seen.generation,
            outcome,
            reason,
            detail: attempt.seen.detail.into(),
        }
    }

    /// The refresh itself, for requests whose fields `refresh` has validated.
    async fn refresh_once(
        &self,
        req: RefreshRequest<'_>,
        seen: &mut Seen,
    ) -> Result<TokenPair, Error> {
        // When the request reached us, on the one clock: see `RotateRequest::stamp_ms`.
        let stamp_ms = self.clock.now_ms();
        let requested = Scopes::parse("scopes", req.scopes)?;
        let Claims::Refresh(claims) = self.keyring().verify("refresh_token", req.refresh_token)?
        else {
            return Err(Error::TokenInvalid);
        };
        seen.family = Some(claims.family);
        seen.generation = claims.generation;
        let found = self.client(req.client_id).await?;
        seen.client_registered = Some(found.is_some());
        let client = self.check_secret(req.client_id, found, req.client_secret)?;

        // Narrowing is checked against the family before the rotation, so a widened scope is
        // refused without changing anything. A family's scopes never change, so reading them
        // first is race-free. Missing or foreign families are left to the state machine.
        let mut access_scope_mask = None;
        if !requested.is_empty()
            && let Some(family) = self.store.family(&claims.subject, claims.family).await?
            && family.client_id == client.client_id
        {
            let family_scopes = client.allowed_scopes.select(family.scope_mask);
            requested.check_within(&family_scopes)?;
            access_scope_mask = Some(family_scopes.mask_of(&requested));
        }

        // Refused before anything changes if the client's tokens cannot be signed.
        let signing_key_id = signing_key_ids(&self.keyring(), &client)?;
        let outcome = self
            .store
            .rotate(&RotateRequest {
                family: claims.family,
                subject: &claims.subject,
                presented_generation: claims.generation,
                presented_rotated_at_ms: claims.issued_at_ms,
                client_id: &client.client_id,
                fixed_now_ms: self.clock.fixed_ms(),
                stamp_ms,
                grace_ms: millis(self.lifetimes.grace),
                idle_ttl_ms: millis(self.lifetimes.refresh_idle_ttl),
                signing_key_id: &signing_key_id,
                reuse_policy: client.reuse_policy,
                access_scope_mask,
            })
            .await?;
        match outcome {
            RotateOutcome::Issued(rotation, current) => {
                seen.detail = match rotation {
                    Rotation::Rotated => "",
                    Rotation::Replayed => "grace replay",
                    Rotation::RolledForward => "ahead of the store (lost write)",
                };
                // A fresh pair is counted from its rotation (the store's now), so `expires_in`
                // is the access token's whole lifetime (a JWT's `exp - iat`); a replay, from now.
                let now_ms = match rotation {
                    Rotation::Replayed => self.clock.now_ms().max(current.rotated_at_ms),
                    Rotation::Rotated | Rotation::RolledForward => current.rotated_at_ms,
                };
                // A replay carries the winner's scopes, whatever this caller asked for: it
                // re-delivers what was issued and never mints anything else.
                self.mint_pair(
                    &client,
                    claims.family,
                    &claims.subject,
                    &current,
                    rotation,
                    now_ms,
                )
            }
            RotateOutcome::Expired => Err(Error::TokenExpired),
            RotateOutcome::Revoked => Err(Error::TokenRevoked),
            RotateOutcome::ClientMismatch => Err(Error::ClientMismatch),
            RotateOutcome::Reused(reuse) => {
                seen.detail = audit::detail_of_reuse(reuse);
                Err(Error::TokenReused {
                    family_revoked: reuse.family_revoked(),
                })
            }
        }
    }

    /// RFC 7009: revokes the token's family. A token that does not verify, or whose family is
    /// gone, is not an error: the caller cannot do anything useful with one.
    pub async fn revoke(&self, req: RevokeRequest<'_>) -> Result<RevokeOutcome, Error> {
        validate::client_id("client_id", req.client_id)?;
        validate::optional("client_secret", req.client_secret, MAX_SECRET_LEN)?;
        validate::required("token", req.token, MAX_JWT_LEN)?;
        // RFC 7009 section 2.1: a hint the server does not understand is ignored and the token
        // is looked for anyway. (Ours needs none: the token says what it is.)
        validate::optional("token_type_hint", req.token_type_hint, MAX_HINT_LEN)?;
        let client = self.authenticate(req.client_id, req.client_secret).await?;
        let claims = match self.keyring().verify("token", req.token) {
            Ok(claims) => claims,
            Err(Error::TokenInvalid) => return Ok(RevokeOutcome::NotFound),
            Err(err) => return Err(err),
        };
        let outcome = self
            .store
            .revoke(
                claims.subject(),
                claims.family(),
                &client.client_id,
                REVOKED_BY_CLIENT,
                self.clock.fixed_ms(),
            )
            .await?;
        match outcome {
            RevokeOutcome::ClientMismatch => Err(Error::ClientMismatch),
            other => Ok(other),
        }
    }

    /// RFC 7662: `None` for any token that is not active, whatever the reason. A caller that
    /// names itself (`client_id`) is authenticated first, before the token is looked at, and
    /// must be a confidential client.
    pub async fn introspect(
        &self,
        req: IntrospectRequest<'_>,
    ) -> Result<Option<Introspection>, Error> {
        validate::required("token", req.token, MAX_JWT_LEN)?;
        if !req.client_id.is_empty() {
            validate::client_id("client_id", req.client_id)?;
            validate::optional("client_secret", req.client_secret, MAX_SECRET_LEN)?;
            let caller = self.authenticate(req.client_id, req.client_secret).await?;
            if caller.client_type == ClientType::Public {
                return Err(Error::InvalidClient);
            }
        } else if !req.client_secret.is_empty() {
            return Err(Error::malformed(
                "client_id",
                "is required when client_secret is set",
            ));
        }
        let claims = match self.keyring().verify("token", req.token) {
            Ok(claims) => claims,
            Err(Error::TokenInvalid) => return Ok(None),
            Err(err) => return Err(err),
        };
        let Some(family) = self.store.family(claims.subject(), claims.family()).await? else {
            return Ok(None);
        };
        // A deleted client's tokens are dead too; a live one's allowed scopes decode the
        // family's scope mask.
        let Some(client) = self.client(&family.client_id).await? else {
            return Ok(None);
        };
        let family_scopes = client.allowed_scopes.select(family.scope_mask);
        let now_ms = self.clock.now_ms();
        let idle_ttl_ms = millis(self.lifetimes.refresh_idle_ttl);
        let family_expires_ms = family.expires_at_ms(idle_ttl_ms);
        if family.status != FamilyStatus::Active || now_ms >= family_expires_ms {
            return Ok(None);
        }
        let (scopes, exp_ms, iat_ms, token_type) = match &claims {
            Claims::Access(c) => {
                if now_ms >= c.expires_at_ms {
                    return Ok(None);
                }
                let scopes = family_scopes.select(c.scope_mask);
                (scopes, c.expires_at_ms, c.issued_at_ms, TOKEN_TYPE_ACCESS)
            }
            Claims::Jwt(c) => {
                let (exp_ms, iat_ms) = (c.expires_at_s * 1000, c.issued_at_s * 1000);
                if now_ms >= exp_ms
                    || c.client_id != family.client_id
                    || c.scopes.check_within(&family_scopes).is_err()
                {
                    return Ok(None);
                }
                (c.scopes.clone(), exp_ms, iat_ms, TOKEN_TYPE_ACCESS)
            }
            Claims::Refresh(c) => {
                let grace_ms = millis(self.lifetimes.grace);
                // The same predicate as the state machine: would a refresh with it succeed?
                let exp_ms = if c.generation >= family.generation {
                    family_expires_ms
                } else if c.generation + 1 == family.generation
                    && grace_ms > 0
                    && now_ms.saturating_sub(family.rotated_at_ms) <= grace_ms
                {
                    family.rotated_at_ms + grace_ms
                } else {
                    return Ok(None);
                };
                (family_scopes, exp_ms, c.issued_at_ms, TOKEN_TYPE_REFRESH)
            }
        };
        Ok(Some(Introspection {
            client_id: family.client_id,
            subject: claims.subject().to_owned(),
            scopes,
            exp_s: (exp_ms / 1000) as i64,
            iat_s: (iat_ms / 1000) as i64,
            token_type,
            family: claims.family(),
        }))
    }

    /// `ListSubjectSessions`: the subject's active families (of one client, when the query
    /// names one), newest first, a page at a time. Revoked, lapsed and deleted clients'
    /// families are not sessions.
    pub async fn list_subject_sessions(&self, query: &SessionQuery) -> Result<SessionPage, Error> {
        if let Some(client_id) = &query.client_id {
            self.named_client(client_id).await?;
        }
        let now_ms = self.clock.now_ms();
        let idle_ttl_ms = millis(self.lifetimes.refresh_idle_ttl);
        let mut clients: HashMap<String, Option<Arc<Client>>> = HashMap::new();
        let mut active = Vec::new();
        for (family, state) in self.store.subject_families(&query.subject).await? {
            if !state.is_active(now_ms, idle_ttl_ms)
                || query
                    .client_id
                    .as_ref()
                    .is_some_and(|c| *c != state.client_id)
            {
                continue;
            }
            let client = match clients.get(&state.client_id) {
                Some(client) => client.clone(),
                None => {
                    let client = self.client(&state.client_id).await?;
                    clients.insert(state.client_id.clone(), client.clone());
                    client
                }
            };
            let Some(client) = client else { continue };
            active.push(Session {
                family,
                scopes: client.allowed_scopes.select(state.scope_mask),
                client_id: state.client_id,
                issued_at_ms: state.issued_at_ms,
                last_refreshed_at_ms: state.rotated_at_ms,
                generation: state.generation,
            });
        }
        Ok(sessions::page(active, query))
    }

    /// `RevokeSubjectSessions`: revokes every family of the subject (or of one client) issued
    /// until now, atomically against their refreshes; answers how many were active. Each
    /// client affected gets an audit event.
    pub async fn revoke_subject_sessions(&self, req: &SubjectRevokeRequest) -> Result<u64, Error> {
        if let Some(client_id) = &req.client_id {
            self.named_client(client_id).await?;
        }
        let revocation = self
            .store
            .revoke_subject(
                &req.subject,
                req.client_id.as_deref(),
                millis(self.lifetimes.refresh_idle_ttl),
                self.clock.fixed_ms(),
            )
            .await?;
        // A deleted client's families were dead already (they neither refresh nor introspect
        // as active): the marker covers them, but they are not counted or audited.
        let mut revoked = Vec::new();
        for (client_id, count) in revocation.revoked_by_client {
            if self.client(&client_id).await?.is_some() {
                revoked.push((client_id, count));
            }
        }
        if let Some(observer) = &self.observer {
            for (client_id, count) in &revoked {
                observer.sessions_revoked(
                    RefreshEvent {
                        at_ms: revocation.revoked_at_ms,
                        client_id: client_id.clone(),
                        client_registered: Some(true),
                        family: None,
                        generation: 0,
                        outcome: RefreshOutcome::SessionsRevoked,
                        reason: "",
                        detail: audit::detail_of_sessions_revoked(*count).into(),
                    },
                    *count,
                );
            }
        }
        Ok(revoked.iter().map(|(_, count)| count).sum())
    }

    /// A live client an operator RPC names, or `CLIENT_NOT_FOUND`.
    async fn named_client(&self, client_id: &str) -> Result<Arc<Client>, Error> {
        self.client(client_id)
            .await?
            .ok_or_else(|| Error::ClientNotFound(client_id.to_owned()))
    }

    /// Registers a client; a confidential one gets its secret here, once.
    pub async fn create_client(&self, req: NewClient<'_>) -> Result<IssuedSecret, Error> {
        let client_id = if req.client_id.is_empty() {
            client::generate_client_id()
        } else {
            validate::client_id("client_id", req.client_id)?;
            req.client_id.to_owned()
        };
        validate::optional("name", req.name, MAX_NAME_LEN)?;
        let client_type: ClientType = req.client_type.parse()?;
        let reuse_policy: ReusePolicy = req.reuse_policy.parse()?;
        let access_token_format: AccessTokenFormat = req.access_token_format.parse()?;
        if !req.access_token_audience.is_empty() {
            client::validate_audience("access_token_audience", req.access_token_audience)?;
            if access_token_format != AccessTokenFormat::Jwt {
                return Err(Error::malformed(
                    "access_token_audience",
                    "is only for clients whose access_token_format is \"jwt\"",
                ));
            }
        }
        let allowed_scopes = Scopes::parse("allowed_scopes", req.allowed_scopes)?;
        let (client_secret, secret_hash) = match client_type {
            ClientType::Confidential => client::generate_secret(),
            ClientType::Public => (String::new(), String::new()),
        };
        let client = Client {
            client_id: client_id.clone(),
            // A client needs no display name; its id serves when none is given.
            name: if req.name.is_empty() {
                client_id.clone()
            } else {
                req.name.to_owned()
            },
            client_type,
            allowed_scopes,
            reuse_policy,
            secret_hash,
            created_at_ms: self.clock.now_ms(),
            access_token_format,
            access_token_audience: req.access_token_audience.to_owned(),
        };
        // After every field is valid: the one refusal an operator fixes in the keyring.
        if access_token_format == AccessTokenFormat::Jwt
            && self.keyring().jwt_signing_key_id().is_none()
        {
            return Err(Error::NoJwtSigningKey);
        }
        if !self.store.create_client(&client).await? {
            return Err(Error::ClientExists(client_id));
        }
        Ok(IssuedSecret {
            client_id,
            client_secret,
        })
    }

    /// A client's registration; a `jwt` client's audience is the one its tokens carry (the
    /// server's default when it named none).
    pub async fn get_client(&self, client_id: &str) -> Result<Client, Error> {
        validate::client_id("client_id", client_id)?;
        let mut client = self
            .store
            .client(client_id)
            .await?
            .ok_or_else(|| Error::ClientNotFound(client_id.to_owned()))?;
        if client.access_token_format == AccessTokenFormat::Jwt
            && client.access_token_audience.is_empty()
        {
            client.access_token_audience = self.jwt.default_audience.clone();
        }
        Ok(client)
    }

    /// Replaces a confidential client's secret; the old one stops working at once.
    pub async fn rotate_client_secret(&self, client_id: &str) -> Result<IssuedSecret, Error> {
        let client = self.get_client(client_id).await?;
        if client.client_type == ClientType::Public {
            return Err(Error::PublicClient(client.client_id));
        }
        let (client_secret, secret_hash) = client::generate_secret();
        self.clients.forget(&client.client_id);
        if !self
            .store
            .set_client_secret(&client.client_id, &secret_hash)
            .await?
        {
            return Err(Error::ClientNotFound(client.client_id));
        }
        // Again after the write: a read racing with it may have cached the old record.
        self.clients.forget(&client.client_id);
        Ok(IssuedSecret {
            client_id: client.client_id,
            client_secret,
        })
    }

    pub async fn delete_client(&self, client_id: &str) -> Result<(), Error> {
        validate::client_id("client_id", client_id)?;
        self.clients.forget(client_id);
        if self
            .store
            .delete_client(client_id, self.clock.now_ms())
            .await?
        {
            self.clients.forget(client_id);
            Ok(())
        } else {
            Err(Error::ClientNotFound(client_id.to_owned()))
        }
    }

    async fn authenticate(&self, client_id: &str, secret: &str) -> Result<Arc<Client>, Error> {
        let found = self.client(client_id).await?;
        self.check_secret(client_id, found, secret)
    }

    /// Authenticates a looked-up client; failures count towards the client's throttle.
    fn check_secret(
        &self,
        client_id: &str,
        found: Option<Arc<Client>>,
        secret: &str,
    ) -> Result<Arc<Client>, Error> {
        let authenticated = match found {
            Some(client) => client.authenticate(secret).map(|()| client),
            None => Err(Error::InvalidClient),
        };
        authenticated.map_err(|_| {
            self.failed_authentications
                .failed(client_id, self.clock.now_ms())
        })
    }

    /// A live client, from the cache when fresh enough, else from the store.
    async fn client(&self, client_id: &str) -> Result<Option<Arc<Client>>, Error> {
        let now_ms = self.clock.now_ms();
        if let Some(client) = self.clients.get(client_id, now_ms) {
            return Ok(Some(client));
        }
        Ok(self
            .store
            .client(client_id)
            .await?
            .map(|client| self.clients.put(client, now_ms)))
    }

    /// Derives the pair of `current`: the same inputs always give the same tokens, which is
    /// what makes replays byte-identical.
    fn mint_pair(
        &self,
        client: &Client,
        family: FamilyId,
        subject: &str,
        current: &Current,
        rotation: Rotation,
        now_ms: u64,
    ) -> Result<TokenPair, Error> {
        let family_scopes = client.allowed_scopes.select(current.scope_mask);
        let scopes = match current.access_scope_mask {
            Some(mask) => family_scopes.select(mask),
            None => family_scopes.clone(),
        };
        let access_expires_ms = (current.rotated_at_ms + millis(self.lifetimes.access_ttl))
            .min(current.absolute_expiry_ms);
        let refresh_expires_ms = (current.rotated_at_ms + millis(self.lifetimes.refresh_idle_ttl))
            .min(current.absolute_expiry_ms);
        let keyring = self.keyring();
        let (hmac_key_id, jwt_key_id) = split_key_ids(&current.key_id);
        let mut expires_in_s = seconds_until(access_expires_ms, now_ms);
        let access_token = match client.access_token_format {
            AccessTokenFormat::Opaque => keyring.mint_access(&AccessClaims {
                family,
                generation: current.generation,
                issued_at_ms: current.rotated_at_ms,
                expires_at_ms: access_expires_ms,
                scope_mask: family_scopes.mask_of(&scopes),
                key_id: hmac_key_id.to_owned(),
                subject: subject.to_owned(),
            })?,
            AccessTokenFormat::Jwt => {
                let key_id = jwt_key_id.ok_or_else(|| {
                    Error::Internal(format!(
                        "family {family} of jwt client {:?} names no ed25519 key",
                        client.client_id
                    ))
                })?;
                // Whole seconds, both derived from the rotation, so `exp - iat` is the
                // lifetime a fresh pair's `expires_in` reports.
                let issued_at_s = current.rotated_at_ms / 1000;
                let lifetime_s = access_expires_ms.saturating_sub(current.rotated_at_ms) / 1000;
                expires_in_s = expires_in_s.min(lifetime_s as i64);
                keyring.mint_jwt(&JwtClaims {
                    family,
                    generation: current.generation,
                    key_id: key_id.to_owned(),
                    issuer: self.jwt.issuer.clone(),
                    audience: if client.access_token_audience.is_empty() {
                        self.jwt.default_audience.clone()
                    } else {
                        client.access_token_audience.clone()
                    },
                    subject: subject.to_owned(),
                    client_id: client.client_id.clone(),
                    scopes: scopes.clone(),
                    issued_at_s,
                    expires_at_s: issued_at_s + lifetime_s,
                })?
            }
        };
        let refresh_token = keyring.mint_refresh(&RefreshClaims {
            family,
            generation: current.generation,
            issued_at_ms: current.rotated_at_ms,
            key_id: hmac_key_id.to_owned(),
            subject: subject.to_owned(),
        })?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in_s,
            refresh_expires_in_s: seconds_until(refresh_expires_ms, now_ms),
            scopes,
            family,
            generation: current.generation,
            rotation,
        })
    }
}

/// Separates the HMAC key id from the Ed25519 key id in what a family stores as its key id
/// (`h1+e1`, for a `jwt` client's family): replays must re-sign with both keys the generation
/// was minted with, and the family record keeps one key-id field. Neither kind of id can
/// contain it.
pub const KEY_ID_SEPARATOR: char = '+';

/// The key ids a new generation of `client`'s family is minted with, as the family stores
/// them: the HMAC signing key, and for a `jwt` client the Ed25519 one too.
fn signing_key_ids(keyring: &Keyring, client: &Client) -> Result<String, Error> {
    let hmac = keyring.signing_key_id();
    match client.access_token_format {
        AccessTokenFormat::Opaque => Ok(hmac.to_owned()),
        AccessTokenFormat::Jwt => {
            let jwt = keyring.jwt_signing_key_id().ok_or(Error::NoJwtSigningKey)?;
            Ok(format!("{hmac}{KEY_ID_SEPARATOR}{jwt}"))
        }
    }
}

/// The stored key id split into (HMAC key, Ed25519 key if any).
fn split_key_ids(stored: &str) -> (&str, Option<&str>) {
    match stored.split_once(KEY_ID_SEPARATOR) {
        Some((hmac, jwt)) => (hmac, Some(jwt)),
        None => (stored, None),
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Whole seconds left, rounded down, never negative.
fn seconds_until(deadline_ms: u64, now_ms: u64) -> i64 {
    (deadline_ms.saturating_sub(now_ms) / 1000) as i64
}
