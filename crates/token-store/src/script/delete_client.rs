//! `lua/delete_client.lua`: deletes a live client, leaving a tombstone that keeps its id.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;

use super::{ScriptCall, with_prelude};
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("delete_client.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Deletes the client at `key` at `now_ms`; answers whether there was a live one.
pub(crate) struct DeleteClient {
    pub key: String,
    pub now_ms: u64,
}

impl ScriptCall for DeleteClient {
    type Reply = i64;
    type Output = bool;
    const OPERATION: Operation = Operation::script("delete_client", "EVALSHA delete_client");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation.key(&self.key).arg(self.now_ms);
        invocation
    }

    fn parse(&self, deleted: i64) -> Result<bool, StoreError> {
        Ok(deleted == 1)
    }
}
