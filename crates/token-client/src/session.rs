//! [`Session`]: one client's saved token pair, refreshed through a [`PairStore`] that several
//! processes may share, so that losing a rotation race to another process is not an error.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use token_proto::v1 as pb;
use token_proto::v1::{ErrorReason, TokenPair};

use crate::client::TokenClient;
use crate::error::Error;

/// What a [`PairStore`] fails with: anything its backend reports.
pub type PairStoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Where a [`Session`] keeps its current token pair: a cache that every process of one caller
/// reads and writes (a Redis key, a file, a database row), or memory ([`MemoryPairStore`]).
///
/// Two pairs are "the same" when their refresh tokens are equal.
pub trait PairStore: Send + Sync {
    /// The saved pair, or `None` when there is none.
    fn load(&self) -> impl Future<Output = Result<Option<TokenPair>, PairStoreError>> + Send;

    /// Saves `pair`, replacing whatever was saved.
    fn save(&self, pair: &TokenPair) -> impl Future<Output = Result<(), PairStoreError>> + Send;

    /// Saves `new` only if the store still holds `expected` (or already holds `new`), and
    /// returns whether it now holds `new`. [`Session::refresh`] saves through this, so that a
    /// slow process cannot overwrite a newer pair that another process saved meanwhile.
    ///
    /// The provided implementation is [`load`](PairStore::load), compare, then
    /// [`save`](PairStore::save): not atomic across processes. Override it with the backend's
    /// compare-and-set (a Lua script or `WATCH`/`MULTI` in Redis, a conditional `UPDATE` in
    /// SQL) where one exists.
    fn save_if_current(
        &self,
        expected: &TokenPair,
        new: &TokenPair,
    ) -> impl Future<Output = Result<bool, PairStoreError>> + Send {
        async move {
            match self.load().await? {
                Some(held) if same(&held, expected) || same(&held, new) => {
                    self.save(new).await?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }
}

impl<S: PairStore> PairStore for Arc<S> {
    fn load(&self) -> impl Future<Output = Result<Option<TokenPair>, PairStoreError>> + Send {
        (**self).load()
    }

    fn save(&self, pair: &TokenPair) -> impl Future<Output = Result<(), PairStoreError>> + Send {
        (**self).save(pair)
    }

    fn save_if_current(
        &self,
        expected: &TokenPair,
        new: &TokenPair,
    ) -> impl Future<Output = Result<bool, PairStoreError>> + Send {
        (**self).save_if_current(expected, new)
    }
}

fn same(a: &TokenPair, b: &TokenPair) -> bool {
    a.refresh_token == b.refresh_token
}

/// A [`PairStore`] in memory: for tests, and for a single process whose sessions share one
/// pair. Clones share the same slot; [`save_if_current`](PairStore::save_if_current) is atomic.
#[derive(Clone, Default)]
pub struct MemoryPairStore {
    slot: Arc<Mutex<Option<TokenPair>>>,
}

impl MemoryPairStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `pair`.
    pub fn with_pair(pair: TokenPair) -> Self {
        let store = Self::new();
        store.set(Some(pair));
        store
    }

    /// The saved pair, synchronously.
    pub fn get(&self) -> Option<TokenPair> {
        self.lock().clone()
    }

    /// Replaces (or, with `None`, clears) the saved pair, synchronously.
    pub fn set(&self, pair: Option<TokenPair>) {
        *self.lock() = pair;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TokenPair>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PairStore for MemoryPairStore {
    async fn load(&self) -> Result<Option<TokenPair>, PairStoreError> {
        Ok(self.get())
    }

    async fn save(&self, pair: &TokenPair) -> Result<(), PairStoreError> {
        self.set(Some(pair.clone()));
        Ok(())
    }

    async fn save_if_current(
        &self,
        expected: &TokenPair,
        new: &TokenPair,
    ) -> Result<bool, PairStoreError> {
        let mut slot = self.lock();
        match slot.as_ref() {
            Some(held) if same(held, expected) || same(held, new) => {
                *slot = Some(new.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl fmt::Debug for MemoryPairStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print tokens.
        f.debug_struct("MemoryPairStore")
            .field("holds_pair", &self.lock().is_some())
            .finish()
    }
}

/// A client's credentials and the [`PairStore`] holding its current pair.
///
/// Meant for callers whose processes (or tasks) share one saved pair: each may call
/// [`refresh`](Session::refresh) when the access token runs out, and the one that loses the
/// rotation race picks up the winner's pair from the store instead of failing.
pub struct Session<S> {
    client: TokenClient,
    client_id: String,
    client_secret: String,
    store: S,
}

impl<S: PairStore> Session<S> {
    /// A session for `client_id` (with `client_secret`; empty for a public client) whose
    /// current pair lives in `store`. Put the first pair there with [`PairStore::save`].
    pub fn new(
        client: TokenClient,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        store: S,
    ) -> Self {
        Self {
            client,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            store,
        }
    }

    /// The store holding this session's pair.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The client this session calls through.
    pub fn client(&self) -> &TokenClient {
        &self.client
    }

    /// Rotates the saved pair and returns the pair to use from now on. Precisely:
    ///
    /// 1. Loads the saved pair (`used`); none is [`SessionError::NoSavedPair`].
    /// 2. Refreshes `used.refresh_token` through [`TokenClient::refresh_token_pair`] (with its
    ///    retries and single-flight; no scope narrowing).
    /// 3. On success with `new`: saves it with [`PairStore::save_if_current`]`(used, new)` and
    ///    returns `new`. If the store no longer held `used` (another process saved a newer
    ///    pair meanwhile), nothing is saved and the saved pair is returned instead; if the store
    ///    was emptied meanwhile, `new` is returned and not saved. A failed save is
    ///    [`SessionError::Save`], which carries `new` so it is not lost.
    /// 4. On `TOKEN_REUSED` or `TOKEN_REVOKED`: loads the saved pair again. If it differs from
    ///    `used` (another process rotated and saved first) and the error does not prove it dead,
    ///    returns it instead of the error. The error proves it dead when it is of the same
    ///    family and the family is revoked: `TOKEN_REVOKED`, or `TOKEN_REUSED` unless its
    ///    `ErrorInfo` metadata says `family_revoked: "false"` (a `reject-only` client). A saved
    ///    pair of another family (a process that signed in again) is always returned.
    /// 5. Any other error, or no newer saved pair: the error, as [`SessionError::Refresh`].
    ///
    /// The pair returned in step 4 is taken from the store as is; the session does not call the
    /// server again to check it.
    pub async fn refresh(&self) -> Result<TokenPair, SessionError> {
        let used = self
            .store
            .load()
            .await
            .map_err(SessionError::Load)?
            .ok_or(SessionError::NoSavedPair)?;
        let result = self
            .client
            .refresh_token_pair(pb::RefreshTokenPairRequest {
                client_id: self.client_id.clone(),
                client_secret: self.client_secret.clone(),
                refresh_token: used.refresh_token.clone(),
                scopes: Vec::new(),
            })
            .await;
        match result {
            Ok(new) => match self.store.save_if_current(&used, &new).await {
                Ok(true) => Ok(new),
                Ok(false) => match self.store.load().await.map_err(SessionError::Load)? {
                    Some(saved) => {
                        tracing::debug!(
                            family_id = %saved.family_id,
                            "another process saved a newer pair meanwhile; using it"
                        );
                        Ok(saved)
                    }
                    None => Ok(new),
                },
                Err(source) => Err(SessionError::Save { pair: new, source }),
            },
            Err(err)
                if matches!(
                    err.error_reason(),
                    Some(ErrorReason::TokenReused | ErrorReason::TokenRevoked)
                ) =>
            {
                let saved = self.store.load().await.map_err(SessionError::Load)?;
                match saved {
                    Some(saved) if !same(&saved, &used) && !proven_dead(&err, &used, &saved) => {
                        tracing::debug!(
                            family_id = %saved.family_id,
                            reason = err.reason().unwrap_or(""),
                            "lost the rotation race to another process; using its pair"
                        );
                        Ok(saved)
                    }
                    _ => Err(SessionError::Refresh(err)),
                }
            }
            Err(err) => Err(SessionError::Refresh(err)),
        }
    }
}

/// Whether `err` (for `used`) shows that `saved`'s family is revoked.
fn proven_dead(err: &Error, used: &TokenPair, saved: &TokenPair) -> bool {
    if saved.family_id != used.family_id {
        return false;
    }
    match err.error_reason() {
        Some(ErrorReason::TokenReused) => err.metadata("family_revoked") != Some("false"),
        _ => true,
    }
}

impl<S: fmt::Debug> fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Session")
            .field("client_id", &self.client_id)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Why [`Session::refresh`] failed.
#[derive(thiserror::Error)]
pub enum SessionError {
    /// The store holds no pair: issue one and [`save`](PairStore::save) it first.
    #[error("the pair store holds no token pair to refresh")]
    NoSavedPair,
    /// The refresh failed and no newer pair was saved by anyone else.
    #[error(transparent)]
    Refresh(#[from] Error),
    /// The store could not be read.
    #[error("cannot read the saved token pair")]
    Load(#[source] PairStoreError),
    /// The refresh succeeded but the new pair could not be saved. The old refresh token is now
    /// retired: use `pair`, and save it when the store is back.
    #[error("refreshed, but cannot save the new pair")]
    Save {
        pair: TokenPair,
        #[source]
        source: PairStoreError,
    },
}

impl SessionError {
    /// The `ErrorInfo.reason` of a failed refresh.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Refresh(err) => err.reason(),
            _ => None,
        }
    }
}

impl fmt::Debug for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print tokens: the pair of `Save` is shown by its family only.
        match self {
            Self::NoSavedPair => f.write_str("NoSavedPair"),
            Self::Refresh(err) => f.debug_tuple("Refresh").field(err).finish(),
            Self::Load(source) => f.debug_tuple("Load").field(source).finish(),
            Self::Save { pair, source } => f
                .debug_struct("Save")
                .field("family_id", &pair.family_id)
                .field("source", source)
                .finish_non_exhaustive(),
        }
    }
}
