//! `lua/audit_append.lua`: appends one client's refresh events to its audit stream and trims
//! it by count and by age.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;

use super::{ScriptCall, with_prelude};
use crate::audit::AuditRecord;
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("audit_append.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Appends `records` (one client's, oldest first) to `stream`, if `client` (the client's
/// record key) names a live client.
pub(crate) struct AuditAppend<'a> {
    pub stream: String,
    pub client: String,
    pub now_ms: u64,
    pub retention_ms: u64,
    pub max_events: u64,
    pub records: &'a [&'a AuditRecord],
}

impl ScriptCall for AuditAppend<'_> {
    /// How many events were appended: 0 for a client that does not exist.
    type Reply = u64;
    type Output = u64;
    const OPERATION: Operation = Operation::script("audit_append", "EVALSHA audit_append");

    fn key(&self) -> &str {
        &self.stream
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.stream)
            .key(&self.client)
            .arg(self.now_ms)
            .arg(self.retention_ms)
            .arg(self.max_events);
        // Seven arguments per event, in the header's order.
        for record in self.records {
            let event = &record.event;
            invocation
                .arg(event.at_ms)
                .arg(event.outcome.as_str())
                .arg(event.reason)
                .arg(event.detail.as_ref())
                .arg(event.family.map(|f| f.to_string()).unwrap_or_default())
                .arg(event.generation)
                .arg(&record.trace_id);
        }
        invocation
    }

    fn parse(&self, appended: u64) -> Result<u64, StoreError> {
        Ok(appended)
    }
}
