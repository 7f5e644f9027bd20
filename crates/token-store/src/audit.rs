//! The per-client refresh audit in Redis Streams: one stream per client
//! (`<prefix>a:{<client id>}`, the client's hash tag, so Cluster keeps it in one slot), trimmed
//! to a maximum length and a retention time on every append, and expiring when idle.
//!
//! Requests never wait for the audit: [`AuditLog::append`] queues the event and a writer task
//! appends queued events in batches, one script call per client per batch. When Redis is away
//! the writer keeps its batch and retries; the queue is bounded, and events that find it full
//! are dropped and counted (`tokens.audit.dropped`). [`AuditLog::flush`] waits until
//! everything queued before it is written, so a reader sees its own instance's events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use token_core::audit::{
    AuditStore, EventPage, EventQuery, EventSummary, RefreshEvent, SummaryQuery,
};
use token_core::{Clock, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::redis_store::RedisStore;
use crate::script::audit_append::AuditAppend;
use crate::script::audit_list::AuditList;
use crate::script::audit_summary::AuditSummary;

/// How much audit to keep, and how much to buffer while Redis is away.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// Events older than this are trimmed and never listed.
    pub retention: Duration,
    /// The most events kept per client; older ones are trimmed first.
    pub max_events_per_client: u64,
    /// Events waiting to be written; beyond this, new events are dropped and counted.
    pub queue_capacity: usize,
}

/// [`AuditConfig::retention`] unless configured (`--audit-retention`).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// [`AuditConfig::max_events_per_client`] unless configured (`--audit-max-events`).
pub const DEFAULT_AUDIT_MAX_EVENTS: u64 = 10_000;
/// [`AuditConfig::queue_capacity`]; not a flag.
pub const DEFAULT_AUDIT_QUEUE_CAPACITY: usize = 65_536;

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: DEFAULT_AUDIT_RETENTION,
            max_events_per_client: DEFAULT_AUDIT_MAX_EVENTS,
            queue_capacity: DEFAULT_AUDIT_QUEUE_CAPACITY,
        }
    }
}

/// An event and the trace id of the request it describes.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub event: RefreshEvent,
    pub trace_id: String,
}

enum Command {
    Append(AuditRecord),
    Flush(oneshot::Sender<()>),
}

/// Events written per batch at most; a batch is one script call per client in it.
const MAX_BATCH: usize = 512;
/// How long the writer waits for more events before writing a batch.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Waits between attempts to write a batch while Redis is unavailable.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The audit log: queue events, flush, list and summarize.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Command>,
    store: RedisStore,
    config: AuditConfig,
    clock: Arc<dyn Clock>,
    outcomes: Counter<u64>,
}

impl AuditLog {
    /// The log and its writer, which the caller spawns. The writer ends, after writing what
    /// is queued, once every clone of the log is dropped.
    pub fn new(
        store: RedisStore,
        config: AuditConfig,
        clock: Arc<dyn Clock>,
        meter: &Meter,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, commands) = mpsc::channel(config.queue_capacity.max(1));
        let outcomes = meter
            .u64_counter("tokens.audit.events")
            .with_description(
                "Refresh events by what became of them: written, discarded (no such client), \
                 shed (Redis near its memory high-water mark) or dropped (queue full, or Redis \
                 refused the batch)",
            )
            .with_unit("{event}")
            .build();
        let log = Self {
            queue,
            store: store.clone(),
            config,
            clock: clock.clone(),
            outcomes: outcomes.clone(),
        };
        let writer = Writer {
            store,
            config,
            clock,
            outcomes,
        };
        (log, writer.run(commands))
    }

    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Queues an event; never waits. A full queue drops the event and counts it.
    pub fn append(&self, record: AuditRecord) {
        if self.queue.try_send(Command::Append(record)).is_err() {
            self.outcomes.add(1, &[KeyValue::new("result", "dropped")]);
            tracing::warn!("refresh audit queue full; event dropped");
        }
    }

    /// Waits until every event queued before this call is written (or was given up on).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Events before this time are past retention, even where trimming has not caught up.
    fn oldest_kept_ms(&self) -> u64 {
        self.clock
            .now_ms()
            .saturating_sub(self.config.retention.as_millis() as u64)
    }

    async fn flush_briefly(&self) {
        if tokio::time::timeout(self.store.timeout(), self.flush())
            .await
            .is_err()
        {
            tracing::warn!("refresh audit not flushed in time; the answer may miss recent events");
        }
    }
}

/// The audit RPCs' reading, through the domain's trait. Each answer first flushes this
/// instance's queue, so a reader sees its own instance's events.
impl AuditStore for AuditLog {
    fn retention(&self) -> Duration {
        self.config.retention
    }

    /// One page of the client's events, newest first. Flushes this instance's queue first,
    /// waiting at most the store's timeout for it.
    async fn list(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.flush_briefly().await;
        let key = self.store.keys().audit(&query.client_id);
        let since = query.since_ms.max(self.oldest_kept_ms());
        if since >= query.until_ms {
            return Ok(EventPage::default());
        }
        self.store
            .run(&AuditList {
                stream: key,
                query,
                since_ms: since,
                // Never more than a stream holds: one call reads it at most once.
                budget: self.config.max_events_per_client.max(1),
            })
            .await
    }

    /// Counts of the client's events by outcome over the query's window.
    async fn summarize(&self, query: &SummaryQuery) -> Result<EventSummary, StoreError> {
        self.flush_briefly().await;
        let key = self.store.keys().audit(&query.client_id);
        let since = query.since_ms.max(self.oldest_kept_ms());
        self.store
            .run(&AuditSummary {
                stream: key,
                since_ms: since,
                until_ms: query.until_ms.max(since + 1),
            })
            .await
    }
}

/// Appends queued events in batches.
struct Writer {
    store: RedisStore,
    config: AuditConfig,
    clock: Arc<dyn Clock>,
    outcomes: Counter<u64>,
}

impl Writer {
    async fn run(self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut flushes = Vec::new();
        let mut received = Vec::with_capacity(MAX_BATCH);
        while commands.recv_many(&mut received, MAX_BATCH).await > 0 {
            // Events are collected for up to BATCH_LINGER before a write, so a busy instance
            // makes a few large script calls rather than one per event (and wakes this task a
            // few hundred times a second, not once per refresh). A flush ends the wait.
            let linger_until = tokio::time::Instant::now() + BATCH_LINGER;
            loop {
                for command in received.drain(..) {
                    match command {
                        Command::Append(record) => batch.push(record),
                        Command::Flush(done) => flushes.push(done),
                    }
                }
                if !flushes.is_empty() || batch.len() >= MAX_BATCH {
                    break;
                }
                let more = commands.recv_many(&mut received, MAX_BATCH - batch.len());
                match tokio::time::timeout_at(linger_until, more).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            if !batch.is_empty() {
                self.write(&batch).await;
                batch.clear();
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Writes a batch, retrying while Redis is unavailable; a batch Redis refuses (a bug, not
    /// an outage) is logged and dropped.
    async fn write(&self, batch: &[AuditRecord]) {
        // Redis near its high-water mark: the audit gives way first, so that the families
        // that exist keep rotating (see `crate::monitor`).
        if self.store.monitor().audit_paused() {
            self.count("shed", batch.len() as u64);
            return;
        }
        let mut by_client: HashMap<&str, Vec<&AuditRecord>> = HashMap::new();
        for record in batch {
            by_client
                .entry(record.event.client_id.as_str())
                .or_default()
                .push(record);
        }
        let mut pending: Vec<(&str, Vec<&AuditRecord>)> = by_client.into_iter().collect();
        let mut wait = RETRY_FIRST;
        let span = tracing::info_span!("audit.write", events = batch.len());
        while !pending.is_empty() {
            let results = futures::future::join_all(
                pending
                    .iter()
                    .map(|(client, records)| self.append(client, records)),
            )
            .instrument(span.clone())
            .await;
            let mut retry = Vec::new();
            for ((client, records), result) in pending.into_iter().zip(results) {
                match result {
                    Ok(appended) => {
                        let discarded = records.len() as u64 - appended.min(records.len() as u64);
                        self.count("written", appended);
                        self.count("discarded", discarded);
                    }
                    Err(StoreError::Unavailable(_)) => retry.push((client, records)),
                    Err(StoreError::Full(_)) => self.count("shed", records.len() as u64),
                    Err(err @ StoreError::Corrupt(_)) => {
                        tracing::error!(error = %err, client_id = client, "refresh audit batch refused; events dropped");
                        self.count("dropped", records.len() as u64);
                    }
                }
            }
            pending = retry;
            if !pending.is_empty() {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }

    async fn append(&self, client: &str, records: &[&AuditRecord]) -> Result<u64, StoreError> {
        let keys = self.store.keys();
        self.store
            .run(&AuditAppend {
                stream: keys.audit(client),
                client: keys.client(client),
                now_ms: self.clock.now_ms(),
                retention_ms: self.config.retention.as_millis() as u64,
                max_events: self.config.max_events_per_client.max(1),
                records,
            })
            .await
    }

    fn count(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.outcomes.add(n, &[KeyValue::new("result", result)]);
        }
    }
}
