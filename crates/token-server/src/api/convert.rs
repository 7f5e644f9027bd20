//! Domain types to wire types, in one module.

use token_core::service::{IssuedSecret, TOKEN_TYPE_ACCESS};
use token_core::store::Rotation;
use token_core::{Client, Introspection, TokenPair};
use token_proto::v1 as pb;

pub fn token_pair(pair: TokenPair) -> pb::TokenPair {
    pb::TokenPair {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        token_type: TOKEN_TYPE_ACCESS.to_owned(),
        expires_in: pair.expires_in_s,
        refresh_expires_in: pair.refresh_expires_in_s,
        scopes: pair.scopes.to_vec(),
        family_id: pair.family.to_string(),
        replayed: pair.rotation == Rotation::Replayed,
    }
}

pub fn introspection(found: Option<Introspection>) -> pb::IntrospectTokenResponse {
    let Some(token) = found else {
        return pb::IntrospectTokenResponse::default();
    };
    pb::IntrospectTokenResponse {
        active: true,
        client_id: token.client_id,
        subject: token.subject,
        scopes: token.scopes.to_vec(),
        exp: token.exp_s,
        iat: token.iat_s,
        token_type: token.token_type.to_owned(),
        family_id: token.family.to_string(),
    }
}

pub fn client(client: Client) -> pb::Client {
    pb::Client {
        client_id: client.client_id,
        name: client.name,
        client_type: client.client_type.as_str().to_owned(),
        allowed_scopes: client.allowed_scopes.to_vec(),
        reuse_policy: client.reuse_policy.as_str().to_owned(),
        created_at: (client.created_at_ms / 1000) as i64,
    }
}

pub fn created_client(issued: IssuedSecret) -> pb::CreateClientResponse {
    pb::CreateClientResponse {
        client_id: issued.client_id,
        client_secret: issued.client_secret,
    }
}

pub fn rotated_secret(issued: IssuedSecret) -> pb::RotateClientSecretResponse {
    pb::RotateClientSecretResponse {
        client_id: issued.client_id,
        client_secret: issued.client_secret,
    }
}
