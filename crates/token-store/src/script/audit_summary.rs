//! `lua/audit_summary.lua`: counts of a client's audit events by outcome over a window.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;
use token_core::audit::EventSummary;

use super::audit_list::number;
use super::{ScriptCall, with_prelude};
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("audit_summary.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Counts the events of `stream` in `[since_ms, until_ms)`.
pub(crate) struct AuditSummary {
    pub stream: String,
    pub since_ms: u64,
    pub until_ms: u64,
}

impl ScriptCall for AuditSummary {
    type Reply = Vec<String>;
    type Output = EventSummary;
    const OPERATION: Operation = Operation::script("audit_summary", "EVALSHA audit_summary");

    fn key(&self) -> &str {
        &self.stream
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.stream)
            .arg(self.since_ms)
            .arg(self.until_ms);
        invocation
    }

    fn parse(&self, reply: Vec<String>) -> Result<EventSummary, StoreError> {
        let [first, last, counts @ ..] = reply.as_slice() else {
            return Err(StoreError::Corrupt("audit summary: short reply".into()));
        };
        if counts.len() % 2 != 0 {
            return Err(StoreError::Corrupt("audit summary: odd counts".into()));
        }
        let id_ms = |id: &String| -> Result<Option<u64>, StoreError> {
            match id.split_once('-') {
                None if id.is_empty() => Ok(None),
                Some((ms, _)) => number(ms).map(Some),
                None => Err(StoreError::Corrupt("audit summary: bad event id".into())),
            }
        };
        Ok(EventSummary {
            counts: counts
                .chunks_exact(2)
                .map(|c| Ok((c[0].clone(), number(&c[1])?)))
                .collect::<Result<_, StoreError>>()?,
            first_event_ms: id_ms(first)?,
            last_event_ms: id_ms(last)?,
        })
    }
}
