//! Registers a public client, issues a pair, and refreshes it twice through the SDK.
//!
//! Start the server with `make run` (it serves on 127.0.0.1:50051), then:
//!
//! ```sh
//! cargo run -p token-client --example refresh
//! TOKEN_ENDPOINT=http://10.0.0.5:50051 cargo run -p token-client --example refresh
//! ```
//!
//! The first refresh rotates the family (`replayed=false`). The second presents the same,
//! now retired, refresh token again, as a client would after losing the first response: inside
//! the grace period the server re-delivers the identical pair (`replayed=true`).

use token_client::{ClientConfig, TokenClient, pb};
use token_proto::v1::client_registry_client::ClientRegistryClient;
use tonic::transport::Endpoint;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("TOKEN_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let channel = Endpoint::from_shared(endpoint.clone())?
        .connect()
        .await
        .map_err(|err| format!("cannot connect to {endpoint} (is `make run` running?): {err}"))?;

    // Operators register clients through ClientRegistry; a generated id, no secret.
    let created = ClientRegistryClient::new(channel.clone())
        .create_client(pb::CreateClientRequest {
            client_id: String::new(),
            name: "token-client example".to_owned(),
            client_type: "public".to_owned(),
            allowed_scopes: vec!["read".to_owned()],
            reuse_policy: String::new(),
            access_token_format: String::new(),
            access_token_audience: String::new(),
        })
        .await?
        .into_inner();
    println!("client {}", created.client_id);

    let client = TokenClient::from_channel(channel, ClientConfig::default());
    let first = client
        .issue_token_pair(pb::IssueTokenPairRequest {
            client_id: created.client_id.clone(),
            subject: "alice".to_owned(),
            scopes: vec![],
        })
        .await?;
    println!("issued: family {}", first.family_id);

    let refresh = pb::RefreshTokenPairRequest {
        client_id: created.client_id.clone(),
        client_secret: created.client_secret.clone(),
        refresh_token: first.refresh_token.clone(),
        scopes: vec![],
    };
    let second = client.refresh_token_pair(refresh.clone()).await?;
    println!(
        "refresh 1: family {} replayed={}",
        second.family_id, second.replayed
    );
    // The same request again: a retry after a lost response.
    let again = client.refresh_token_pair(refresh).await?;
    println!(
        "refresh 2: family {} replayed={} (same pair as refresh 1: {})",
        again.family_id,
        again.replayed,
        again.refresh_token == second.refresh_token
    );
    println!("RPC attempts sent by the SDK: {}", client.rpcs_sent());
    Ok(())
}
