//! `lua/create_client.lua`: registers a client unless its id exists or existed.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::{Client, StoreError};

use super::{ScriptCall, with_prelude};
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("create_client.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Registers `client` under `key`; answers whether it was created.
pub(crate) struct CreateClient<'a> {
    pub key: String,
    pub client: &'a Client,
}

impl ScriptCall for CreateClient<'_> {
    type Reply = i64;
    type Output = bool;
    const OPERATION: Operation = Operation::script("create_client", "EVALSHA create_client");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let client = self.client;
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(&client.name)
            .arg(client.client_type.as_str())
            .arg(client.allowed_scopes.to_space_separated())
            .arg(client.reuse_policy.as_str())
            .arg(&client.secret_hash)
            .arg(client.created_at_ms)
            .arg(client.access_token_format.as_str())
            .arg(&client.access_token_audience);
        invocation
    }

    fn parse(&self, created: i64) -> Result<bool, StoreError> {
        Ok(created == 1)
    }
}
