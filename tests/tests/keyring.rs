//! Key rotation through the keyring: a server whose keyring has a new signing key and the old
//! one as verify-only still accepts tokens signed with the old key and signs new generations
//! with the new one; a server without the old key refuses its tokens as TOKEN_INVALID.

use test_support::harness;
use test_support::harness::{
    KEYRING, RedisServer, ServerOptions, TestServer, issue, reason, refresh_request,
};
use token_core::Keyring;

fn keyring(lines: &[String]) -> Keyring {
    Keyring::parse(&lines.join("\n")).expect("keyring")
}

#[tokio::test]
async fn tokens_of_a_verify_only_key_refresh_into_the_new_signing_key() {
    let redis = RedisServer::start();
    let old_line = Keyring::generate_line("old");
    let new_line = Keyring::generate_line("new");
    let before = TestServer::start(
        &redis.url(),
        ServerOptions {
            keyring: keyring(std::slice::from_ref(&old_line)),
            ..ServerOptions::default()
        },
    )
    .await;
    let rotated = TestServer::start(
        &redis.url(),
        ServerOptions {
            keyring: keyring(&[new_line.clone(), old_line.replace(" sign", " verify")]),
            ..ServerOptions::default()
        },
    )
    .await;
    let stranger = TestServer::start(&redis.url(), ServerOptions::default()).await;
    assert_ne!(KEYRING.signing_key_id(), "old");

    let client =
        harness::register_client(&mut before.registry().await, "public", "", &["read"]).await;
    let first = issue(&mut before.tokens().await, &client, "alice").await;

    let mut tokens = rotated.tokens().await;
    let second = tokens
        .refresh_token_pair(refresh_request(&client, &first.refresh_token))
        .await
        .expect("a verify-only key still verifies")
        .into_inner();
    // The new generation is signed with the new key: the old-key-only server cannot read it.
    let err = before
        .tokens()
        .await
        .refresh_token_pair(refresh_request(&client, &second.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TOKEN_INVALID");
    tokens
        .refresh_token_pair(refresh_request(&client, &second.refresh_token))
        .await
        .expect("the new key's token refreshes");

    // A server that never had the old key refuses its tokens, before touching Redis.
    let other = issue(&mut before.tokens().await, &client, "bob").await;
    let err = stranger
        .tokens()
        .await
        .refresh_token_pair(refresh_request(&client, &other.refresh_token))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TOKEN_INVALID");
}
