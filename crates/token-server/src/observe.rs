//! What the server records about refreshes: each outcome is counted (by outcome, reason and
//! client) and appended to the client's audit with the request's trace id.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use token_core::audit::{DETAIL_COALESCED, RefreshEvent, RefreshObserver, RefreshOutcome};
use token_store::AuditLog;
use token_store::audit::AuditRecord;

/// The `client` label of refreshes whose client id names no registered client (or was not
/// looked up): ids callers make up must not become label values without bound.
pub const UNKNOWN_CLIENT: &str = "(unknown)";

pub struct RefreshRecorder {
    refreshes: Counter<u64>,
    coalesced: Counter<u64>,
    sessions_revoked: Counter<u64>,
    audit: AuditLog,
}

impl RefreshRecorder {
    pub fn new(meter: &Meter, audit: AuditLog) -> Self {
        let coalesced = meter
            .u64_counter("tokens.refreshes.coalesced")
            .with_description(
                "Refreshes answered from an identical refresh in flight on this instance \
                 instead of a Redis call of their own",
            )
            .with_unit("{refresh}")
            .build();
        // Exported as 0 from the start, so that dashboards and rate() see the series before
        // the first coalesced refresh (it has no labels, so there is one series to start).
        coalesced.add(0, &[]);
        Self {
            refreshes: meter
                .u64_counter("tokens.refreshes")
                .with_description(
                    "Refresh requests by outcome (rotated, replayed, rolled_forward, reused, \
                     expired, revoked, invalid_client, invalid_token, rejected, unavailable), \
                     ErrorInfo reason and client",
                )
                .with_unit("{refresh}")
                .build(),
            coalesced,
            sessions_revoked: meter
                .u64_counter("tokens.subject_sessions.revoked")
                .with_description(
                    "Sessions (token families) revoked by RevokeSubjectSessions, by client",
                )
                .with_unit("{session}")
                .build(),
            audit,
        }
    }
}

impl RefreshObserver for RefreshRecorder {
    fn refreshed(&self, event: RefreshEvent) {
        let client = match event.client_registered {
            Some(true) => event.client_id.clone(),
            _ => UNKNOWN_CLIENT.to_owned(),
        };
        self.refreshes.add(
            1,
            &[
                KeyValue::new("outcome", event.outcome.as_str()),
                KeyValue::new("reason", event.reason),
                KeyValue::new("client", client),
            ],
        );
        if event.outcome == RefreshOutcome::Replayed && event.detail == DETAIL_COALESCED {
            self.coalesced.add(1, &[]);
        }
        tracing::Span::current().record("tokens.outcome", event.outcome.as_str());
        // Only ids that may name a client reach Redis; the append script drops ids that name
        // none, so made-up ids never create audit streams.
        let auditable = event.client_registered != Some(false)
            && token_core::validate::client_id("client_id", &event.client_id).is_ok();
        if auditable {
            self.audit.append(AuditRecord {
                trace_id: telemetry::propagation::current_trace_id(),
                event,
            });
        }
    }

    fn sessions_revoked(&self, event: RefreshEvent, count: u64) {
        // Reported once per registered client whose sessions were revoked: a bounded label.
        self.sessions_revoked
            .add(count, &[KeyValue::new("client", event.client_id.clone())]);
        self.audit.append(AuditRecord {
            trace_id: telemetry::propagation::current_trace_id(),
            event,
        });
    }
}
