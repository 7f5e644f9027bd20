//! `lua/set_client_secret.lua`: replaces a live confidential client's secret hash.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;

use super::{ScriptCall, with_prelude};
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("set_client_secret.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Sets the secret hash of the client at `key`; answers whether it was replaced.
pub(crate) struct SetClientSecret<'a> {
    pub key: String,
    pub secret_hash: &'a str,
}

impl ScriptCall for SetClientSecret<'_> {
    type Reply = i64;
    type Output = bool;
    const OPERATION: Operation =
        Operation::script("set_client_secret", "EVALSHA set_client_secret");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(&self.key).arg(self.secret_hash);
        invocation
    }

    fn parse(&self, replaced: i64) -> Result<bool, StoreError> {
        Ok(replaced == 1)
    }
}
