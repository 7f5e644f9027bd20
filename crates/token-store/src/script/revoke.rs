//! `lua/revoke.lua`: revokes a family on behalf of the client it belongs to (RFC 7009).

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::store::RevokeOutcome;
use token_core::{FamilyId, StoreError};

use super::{ScriptCall, allowed_when_full, corrupt, fixed_now, with_prelude};
use crate::lanes::Operation;

/// Runs past `maxmemory`: a revocation rewrites its family in place.
pub const SOURCE: &str = allowed_when_full!("revoke.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Revokes `family` in its subject's hash at `key` if `client_id` owns it, recording `reason`.
pub(crate) struct Revoke<'a> {
    pub key: String,
    pub family: FamilyId,
    pub client_id: &'a str,
    pub reason: &'a str,
    pub fixed_now_ms: Option<u64>,
}

impl ScriptCall for Revoke<'_> {
    type Reply = String;
    type Output = RevokeOutcome;
    const OPERATION: Operation = Operation::script("revoke", "EVALSHA revoke");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(self.client_id)
            .arg(self.reason)
            .arg(fixed_now(self.fixed_now_ms))
            .arg(self.family.to_string());
        invocation
    }

    fn parse(&self, reply: String) -> Result<RevokeOutcome, StoreError> {
        match reply.as_str() {
            "revoked" => Ok(RevokeOutcome::Revoked),
            "already_revoked" => Ok(RevokeOutcome::AlreadyRevoked),
            "not_found" => Ok(RevokeOutcome::NotFound),
            "client_mismatch" => Ok(RevokeOutcome::ClientMismatch),
            _ => Err(corrupt("revoke: unknown outcome")),
        }
    }
}
