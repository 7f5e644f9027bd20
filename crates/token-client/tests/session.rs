//! Sessions sharing one saved pair, as processes sharing a cache do: the one that loses the
//! rotation race recovers the winner's pair from the store instead of failing, but never
//! resurrects a family the server revoked.
//!
//! The servers here run without a grace period, so presenting a retired refresh token is a
//! reuse (`TOKEN_REUSED`) rather than a replay, which is the case the hook exists for.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Fixture, fixture, issue_request};
use test_support::harness::{ServerOptions, TestClient};
use token_client::{
    ClientConfig, MemoryPairStore, PairStore, PairStoreError, Session, SessionError, pb,
};
use token_core::Lifetimes;
use tokio::sync::Notify;

fn no_grace() -> ServerOptions {
    ServerOptions {
        lifetimes: Lifetimes {
            grace: Duration::ZERO,
            ..Lifetimes::default()
        },
        ..ServerOptions::default()
    }
}

/// A view of a shared store whose first `load` returns the saved pair and then holds on until
/// released: the window in which another process rotates that same pair.
struct HeldAfterFirstLoad {
    shared: MemoryPairStore,
    first: AtomicBool,
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

impl PairStore for HeldAfterFirstLoad {
    async fn load(&self) -> Result<Option<pb::TokenPair>, PairStoreError> {
        let pair = self.shared.load().await?;
        if self.first.swap(false, Ordering::SeqCst) {
            self.loaded.notify_one();
            self.release.notified().await;
        }
        Ok(pair)
    }

    async fn save(&self, pair: &pb::TokenPair) -> Result<(), PairStoreError> {
        self.shared.save(pair).await
    }

    async fn save_if_current(
        &self,
        expected: &pb::TokenPair,
        new: &pb::TokenPair,
    ) -> Result<bool, PairStoreError> {
        self.shared.save_if_current(expected, new).await
    }
}

/// Two "processes" (separate SDK clients, so no in-process coalescing) sharing `shared`.
/// Session B's first load is held open while A rotates; returns B's refresh result and A's.
async fn b_loses_the_race_to_a(
    fx: &Fixture,
    client: &TestClient,
    shared: &MemoryPairStore,
) -> (Result<pb::TokenPair, SessionError>, pb::TokenPair) {
    let session_a = Session::new(
        fx.sdk(ClientConfig::default()),
        &client.client_id,
        &client.client_secret,
        shared.clone(),
    );
    let (loaded, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let session_b = Session::new(
        fx.sdk(ClientConfig::default()),
        &client.client_id,
        &client.client_secret,
        HeldAfterFirstLoad {
            shared: shared.clone(),
            first: AtomicBool::new(true),
            loaded: loaded.clone(),
            release: release.clone(),
        },
    );

    let b = tokio::spawn(async move {
        let result = session_b.refresh().await;
        (result, session_b.client().rpcs_sent())
    });
    loaded.notified().await; // B holds the pair it is about to present.
    let a_pair = session_a.refresh().await.expect("A wins the rotation");
    assert_eq!(shared.get().as_ref(), Some(&a_pair), "A saved its pair");
    release.notify_one();
    let (b_result, b_rpcs) = b.await.expect("session B task");
    assert_eq!(b_rpcs, 1, "B's stale refresh is answered once, not retried");
    (b_result, a_pair)
}

#[tokio::test]
async fn the_process_that_loses_the_race_uses_the_winners_saved_pair() -> anyhow::Result<()> {
    let fx = fixture(no_grace()).await;
    // reject-only: B's stale token is refused and the family stays alive.
    let client = fx.client("confidential", "reject-only").await;
    let sdk = fx.sdk(ClientConfig::default());
    let first = sdk.issue_token_pair(issue_request(&client)).await?;
    let shared = MemoryPairStore::with_pair(first.clone());

    let (b_result, a_pair) = b_loses_the_race_to_a(&fx, &client, &shared).await;
    let b_pair = b_result.expect("B recovers A's pair instead of failing");
    assert_eq!(b_pair, a_pair);
    assert_ne!(a_pair.refresh_token, first.refresh_token);
    assert_eq!(shared.get(), Some(a_pair.clone()), "B did not overwrite it");

    // What B did was a reuse, refused without revoking: the recovered pair is live...
    let active = sdk
        .introspect_token(pb::IntrospectTokenRequest {
            token: b_pair.access_token.clone(),
            ..Default::default()
        })
        .await?;
    assert!(active.active);
    // ...and the next refresh, by either session, continues the chain.
    let session = Session::new(
        sdk.clone(),
        &client.client_id,
        &client.client_secret,
        shared.clone(),
    );
    let next = session.refresh().await?;
    assert_eq!(next.family_id, first.family_id);
    assert!(!next.replayed);
    assert_eq!(shared.get(), Some(next));
    fx.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_revoked_family_is_not_masked_by_the_saved_pair() -> anyhow::Result<()> {
    let fx = fixture(no_grace()).await;
    // revoke-family (the default): B's reuse revokes the family, A's saved pair included.
    let client = fx.client("public", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let first = sdk.issue_token_pair(issue_request(&client)).await?;
    let shared = MemoryPairStore::with_pair(first);

    let (b_result, a_pair) = b_loses_the_race_to_a(&fx, &client, &shared).await;
    let err = b_result.expect_err("the saved pair is of a revoked family: the error stands");
    assert_eq!(err.reason(), Some("TOKEN_REUSED"));
    let SessionError::Refresh(err) = err else {
        panic!("not a refresh error: {err:?}");
    };
    assert_eq!(
        err.error_info()
            .unwrap()
            .metadata
            .get("family_revoked")
            .map(String::as_str),
        Some("true")
    );
    let active = sdk
        .introspect_token(pb::IntrospectTokenRequest {
            token: a_pair.access_token,
            ..Default::default()
        })
        .await?;
    assert!(!active.active, "the server did revoke the family");
    fx.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_stale_pair_nobody_replaced_is_an_error() -> anyhow::Result<()> {
    let fx = fixture(no_grace()).await;
    let client = fx.client("confidential", "reject-only").await;
    let sdk = fx.sdk(ClientConfig::default());
    let first = sdk.issue_token_pair(issue_request(&client)).await?;
    let store = MemoryPairStore::new();
    let session = Session::new(sdk, &client.client_id, &client.client_secret, store.clone());
    assert!(matches!(
        session.refresh().await,
        Err(SessionError::NoSavedPair)
    ));

    store.set(Some(first.clone()));
    let second = session.refresh().await?;
    assert_eq!(store.get(), Some(second.clone()));
    // Someone puts the retired pair back: the session has nothing newer to fall back on.
    store.set(Some(first.clone()));
    let err = session.refresh().await.unwrap_err();
    assert_eq!(err.reason(), Some("TOKEN_REUSED"));
    assert_eq!(store.get(), Some(first), "a failed refresh saves nothing");
    fx.server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_pair_of_a_new_family_saved_meanwhile_is_used_after_token_revoked() -> anyhow::Result<()>
{
    let fx = fixture(no_grace()).await;
    let client = fx.client("public", "").await;
    let sdk = fx.sdk(ClientConfig::default());
    let old = sdk.issue_token_pair(issue_request(&client)).await?;
    let shared = MemoryPairStore::with_pair(old.clone());
    let (loaded, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let session_b = Session::new(
        fx.sdk(ClientConfig::default()),
        &client.client_id,
        "",
        HeldAfterFirstLoad {
            shared: shared.clone(),
            first: AtomicBool::new(true),
            loaded: loaded.clone(),
            release: release.clone(),
        },
    );
    let b = tokio::spawn(async move { session_b.refresh().await });
    loaded.notified().await;
    // Meanwhile another process signs out (revokes the family) and signs in again.
    sdk.revoke_token(pb::RevokeTokenRequest {
        client_id: client.client_id.clone(),
        client_secret: String::new(),
        token: old.refresh_token.clone(),
        token_type_hint: String::new(),
    })
    .await?;
    let fresh = sdk.issue_token_pair(issue_request(&client)).await?;
    shared.set(Some(fresh.clone()));
    release.notify_one();

    let recovered = b.await?.expect("B picks up the new family's pair");
    assert_eq!(recovered, fresh);
    assert_ne!(recovered.family_id, old.family_id);
    fx.server.stop().await;
    Ok(())
}
