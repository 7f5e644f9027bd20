//! `lua/revoke_subject.lua` and `lua/revoke_subject_sweep.lua`: a subject's families revoked
//! by one marker, then removed and counted a batch at a time.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;

use super::{ScriptCall, allowed_when_full, corrupt, fixed_now, with_prelude};
use crate::lanes::Operation;

/// Runs past `maxmemory`: a full Redis must not stop a revocation. It adds at most one small
/// field per subject and client.
pub const SOURCE: &str = allowed_when_full!("revoke_subject.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Runs past `maxmemory`: it only deletes.
pub const SWEEP_SOURCE: &str = allowed_when_full!("revoke_subject_sweep.lua");
pub static SWEEP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SWEEP_SOURCE));

/// Writes the marker revoking the subject's families (of `client_id`, or every client's).
pub(crate) struct RevokeSubject<'a> {
    pub key: String,
    pub client_id: Option<&'a str>,
    pub fixed_now_ms: Option<u64>,
}

/// When the marker now says, and what that marker field said before (0: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marked {
    pub at_ms: u64,
    pub before_ms: u64,
}

impl ScriptCall for RevokeSubject<'_> {
    type Reply = (u64, u64);
    type Output = Marked;
    const OPERATION: Operation = Operation::script("revoke_subject", "EVALSHA revoke_subject");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(self.client_id.unwrap_or(""))
            .arg(fixed_now(self.fixed_now_ms));
        invocation
    }

    fn parse(&self, (at_ms, before_ms): (u64, u64)) -> Result<Marked, StoreError> {
        Ok(Marked { at_ms, before_ms })
    }
}

/// Removes the families among `families` that the marker covers; counts the active ones.
pub(crate) struct SweepSubject<'a> {
    pub key: String,
    pub client_id: Option<&'a str>,
    pub marked: Marked,
    pub idle_ttl_ms: u64,
    pub families: Vec<String>,
}

impl ScriptCall for SweepSubject<'_> {
    type Reply = Vec<(String, u64)>;
    type Output = Vec<(String, u64)>;
    const OPERATION: Operation =
        Operation::script("revoke_subject_sweep", "EVALSHA revoke_subject_sweep");

    fn key(&self) -> &str {
        &self.key
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SWEEP_SCRIPT.prepare_invoke();
        invocation
            .key(&self.key)
            .arg(self.client_id.unwrap_or(""))
            .arg(self.marked.at_ms)
            .arg(self.idle_ttl_ms)
            .arg(self.marked.before_ms);
        for family in &self.families {
            invocation.arg(family);
        }
        invocation
    }

    fn parse(&self, counts: Vec<(String, u64)>) -> Result<Vec<(String, u64)>, StoreError> {
        if counts.iter().any(|(client, _)| client.is_empty()) {
            return Err(corrupt("revoke_subject_sweep: empty client id"));
        }
        Ok(counts)
    }
}
