//! `lua/audit_list.lua`: one page of a client's audit, newest first, filtered by time and
//! outcome.

use std::sync::LazyLock;

use deadpool_redis::redis::{Script, ScriptInvocation};
use token_core::StoreError;
use token_core::audit::{AuditedEvent, EventPage, EventQuery};

use super::{ScriptCall, with_prelude};
use crate::lanes::Operation;

pub const SOURCE: &str = with_prelude!("audit_list.lua");
pub static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Fields per event in the reply, after the continuation id.
const EVENT_FIELDS: usize = 8;

/// The page `query` asks for from `stream`, from `since_ms` (the query's start, or the oldest
/// time kept), examining at most `budget` entries.
pub(crate) struct AuditList<'a> {
    pub stream: String,
    pub query: &'a EventQuery,
    pub since_ms: u64,
    pub budget: u64,
}

impl ScriptCall for AuditList<'_> {
    type Reply = Vec<String>;
    type Output = EventPage;
    const OPERATION: Operation = Operation::script("audit_list", "EVALSHA audit_list");

    fn key(&self) -> &str {
        &self.stream
    }

    fn invocation(&self) -> ScriptInvocation<'static> {
        let query = self.query;
        let outcomes: Vec<&str> = query.outcomes.iter().map(|o| o.as_str()).collect();
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(&self.stream)
            .arg(self.since_ms)
            .arg(query.until_ms)
            .arg(query.page_size)
            .arg(query.before_event.as_deref().unwrap_or(""))
            .arg(outcomes.join(" "))
            .arg(self.budget);
        invocation
    }

    fn parse(&self, reply: Vec<String>) -> Result<EventPage, StoreError> {
        let Some((next, events)) = reply.split_first() else {
            return Err(StoreError::Corrupt("audit list: empty reply".into()));
        };
        if events.len() % EVENT_FIELDS != 0 {
            return Err(StoreError::Corrupt("audit list: short reply".into()));
        }
        let events = events
            .chunks_exact(EVENT_FIELDS)
            .map(|e| {
                Ok(AuditedEvent {
                    event_id: e[0].clone(),
                    at_ms: number(&e[1])?,
                    client_id: self.query.client_id.clone(),
                    outcome: e[2].clone(),
                    reason: e[3].clone(),
                    detail: e[4].clone(),
                    family: e[5].clone(),
                    generation: number(&e[6])?,
                    trace_id: e[7].clone(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(EventPage {
            events,
            next_page_token: (!next.is_empty()).then(|| next.clone()),
        })
    }
}

pub(super) fn number(text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt("audit: bad number".into()))
}
