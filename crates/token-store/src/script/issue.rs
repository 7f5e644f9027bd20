//! `lua/issue.lua`: creates a family at generation 1, unless Redis is past the memory
//! high-water mark.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;
use token_core::store::{Current, NewFamily};

use super::{ScriptCall, corrupt, fixed_now, number, with_prelude};
use crate::lanes::Operation;

/// Refused past `maxmemory`: a new family grows memory.
pub const SOURCE: &str = with_prelude!("issue.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Creates `family` in its subject's hash at `key`, refused once the node's memory reaches `high_water_permille`.
pub(crate) struct Issue<'a> {
    pub key: String,
    pub family: &'a NewFamily,
    pub high_water_permille: u32,
}

impl ScriptCall for Issue<'_> {
    type Reply = Vec<String>;
    type Output = Current;
    const OPERATION: Operation = Operation::script("issue", "EVALSHA issue");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let family = self.family;
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(&family.client_id)
            .arg(format!("{:x}", family.scope_mask))
            .arg(fixed_now(family.fixed_now_ms))
            .arg(&family.key_id)
            .arg(family.absolute_ttl_ms)
            .arg(family.idle_ttl_ms)
            .arg(self.high_water_permille)
            .arg(family.family.to_string());
        invocation
    }

    fn parse(&self, reply: Vec<String>) -> Result<Current, StoreError> {
        match reply.as_slice() {
            [outcome, issued_at, absolute_expiry] if outcome == "created" => Ok(Current {
                generation: 1,
                rotated_at_ms: number(issued_at, "issue: bad issue time")?,
                key_id: self.family.key_id.clone(),
                scope_mask: self.family.scope_mask,
                absolute_expiry_ms: number(absolute_expiry, "issue: bad expiry")?,
                access_scope_mask: None,
            }),
            [outcome] if outcome == "store_full" => Err(StoreError::Full(format!(
                "Redis memory is past the high-water mark ({} permille of maxmemory)",
                self.high_water_permille
            ))),
            _ => Err(corrupt("issue: unexpected reply")),
        }
    }
}
