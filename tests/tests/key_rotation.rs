//! Signing keys rotated while callers refresh and storms run, the way the runbook
//! (deploy/README.md, "Rotate the signing key") says: add the new key verify-only everywhere,
//! promote it to signing, retire the old one once no token signed with it can still be alive.
//! Two instances re-read one keyring file, each in its own time.
//!
//! No refresh fails at any step; a token signed with the old key keeps refreshing until the
//! key is retired, and then is TOKEN_INVALID.

use test_support::harness;

use test_support::harness::load::RefreshLoad;
use test_support::harness::{
    RedisServer, ServerOptions, TestServer, issue, refresh_request, refresh_together, replace_file,
    until_keyring,
};
use token_core::Keyring;
use tokio::sync::watch;

/// `<id> <secret> <role>` lines for `keys`, each secret fixed per id for the whole test.
fn keyring(secrets: &[(&str, String)], roles: &[(&str, &str)]) -> String {
    roles
        .iter()
        .map(|(id, role)| {
            let secret = &secrets.iter().find(|(k, _)| k == id).unwrap().1;
            format!("{id} {secret} {role}\n")
        })
        .collect()
}

fn secret_of(id: &str) -> (&str, String) {
    let line = Keyring::generate_line(id);
    let secret = line.split_whitespace().nth(1).unwrap().to_owned();
    (id, secret)
}

/// Waits (bounded) until every server's keyring is `signing` over exactly `ids`.
async fn until_loaded(servers: &[TestServer], signing: &str, ids: &[&str]) {
    until_keyring(servers, &format!("signing={signing} keys={ids:?}"), |k| {
        k.signing_key_id() == signing && k.key_ids() == ids
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_during_a_storm_without_a_failed_refresh() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let secrets = [secret_of("k1"), secret_of("k2")];
    replace_file(&path, &keyring(&secrets, &[("k1", "sign")]));
    let options = ServerOptions {
        keyring_file: Some(path.clone()),
        ..ServerOptions::default()
    };
    let servers = [
        TestServer::start(&redis.url(), options.clone()).await,
        TestServer::start(&redis.url(), options).await,
    ];
    let mut registry = servers[0].registry().await;
    let client =
        harness::register_client(&mut registry, "confidential", "revoke-family", &["read"]).await;
    let mut tokens = servers[0].tokens().await;

    // Tokens signed with k1 that nobody touches until the end.
    let kept = issue(&mut tokens, &client, "kept").await;
    let dropped = issue(&mut tokens, &client, "dropped").await;

    // Callers refreshing one after another, through both instances...
    let mut load = RefreshLoad::issue_and_start(&servers, &client, 8, 10).await;
    // ... and storms of 50 at once on one family, round after round, until told to stop.
    let mut channels = Vec::new();
    for server in &servers {
        for _ in 0..2 {
            channels.push(server.tokens().await);
        }
    }
    let (stop_storms, stop) = watch::channel(false);
    let storms = {
        let client = client.clone();
        let first = issue(&mut tokens, &client, "storm").await;
        tokio::spawn(async move {
            let mut token = first.refresh_token;
            let mut rounds = 0u64;
            while !*stop.borrow() {
                let responses = refresh_together(&channels, &client, &token, 50).await;
                let winners: Vec<_> = responses.iter().filter(|p| !p.replayed).collect();
                assert_eq!(winners.len(), 1, "storm round {rounds}: one winner");
                assert!(
                    responses
                        .iter()
                        .all(|p| p.refresh_token == winners[0].refresh_token)
                );
                token = winners[0].refresh_token.clone();
                rounds += 1;
            }
            rounds
        })
    };
    load.progress().await;

    // 1. Add k2, verify-only, everywhere.
    replace_file(
        &path,
        &keyring(&secrets, &[("k1", "sign"), ("k2", "verify")]),
    );
    until_loaded(&servers, "k1", &["k1", "k2"]).await;
    load.progress().await;

    // 2. Promote k2; k1 stays to verify what it signed.
    replace_file(
        &path,
        &keyring(&secrets, &[("k1", "verify"), ("k2", "sign")]),
    );
    until_loaded(&servers, "k2", &["k1", "k2"]).await;
    load.progress().await;
    // A token signed with k1 still refreshes; its family moves to k2.
    let kept_next = load.sdks()[1]
        .refresh_token_pair(refresh_request(&client, &kept.refresh_token))
        .await
        .expect("a k1 token refreshes while k1 may verify");
    let state = test_support::harness::stored_family(&servers[0].service, &kept.refresh_token)
        .await
        .expect("the family exists");
    assert_eq!(state.key_id, "k2");

    // 3. Retire k1 (in production: after the longest refresh lifetime).
    replace_file(&path, &keyring(&secrets, &[("k2", "sign")]));
    until_loaded(&servers, "k2", &["k2"]).await;
    load.progress().await;

    let _ = stop_storms.send(true);
    let rounds = storms.await.expect("a storm round failed");
    let (refreshes, replayed) = load.counts();
    let sdk = load.sdks()[0].clone();
    load.stop().await;

    // The token signed with k1 and never refreshed is now invalid, on both instances.
    for server in &servers {
        let refused = server
            .tokens()
            .await
            .refresh_token_pair(refresh_request(&client, &dropped.refresh_token))
            .await
            .expect_err("k1 is retired");
        assert_eq!(harness::reason(&refused), "TOKEN_INVALID");
    }
    // The one that moved to k2 lives on.
    sdk.refresh_token_pair(refresh_request(&client, &kept_next.refresh_token))
        .await
        .expect("a k2 token refreshes");
    println!(
        "key rotation k1 -> k2 over 2 instances: {refreshes} caller refreshes ({replayed} \
         replayed) and {rounds} storm rounds of 50, 0 failed"
    );
    for server in servers {
        server.stop().await;
    }
}
