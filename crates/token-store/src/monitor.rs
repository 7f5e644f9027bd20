//! Redis as a database, not a cache. What the health watcher learns from Redis every interval
//! and what follows from it:
//! - the eviction policy: any policy but `noeviction` drops families (every family carries a
//!   TTL, so every `volatile-*` policy can take one), so the server refuses to start on one
//!   unless overridden, and logs and shows it if the policy changes while running;
//! - how full it is: past the high-water mark `issue.lua` refuses new families (on each node,
//!   with that node's own figures), and the audit pauses a little before that, so that the
//!   families that exist, whose rotations never grow memory, never meet Redis's own
//!   out-of-memory refusal;
//! - evicted keys, which should never move;
//! - how far this instance's clock is from Redis's (the one clock, see `token_core::clock`).
//!
//! The policy and figures come from `INFO`, which every deployment allows (managed services
//! often disable `CONFIG`); `CONFIG GET maxmemory-policy` is asked only where `INFO` does not
//! name the policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use deadpool_redis::redis::Value;
use token_core::StoreError;

/// The one policy under which Redis never drops a key to make room.
pub const NO_EVICTION: &str = "noeviction";

/// The audit pauses this many permille of `maxmemory` below the high-water mark: it is the
/// first thing to give way as Redis fills, before new families are refused.
pub const AUDIT_MARGIN_PERMILLE: u32 = 50;

/// What one `INFO` said, over all the nodes that answered (one, or every Cluster node).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryReport {
    /// The fullest node's used memory, bytes.
    pub used_bytes: u64,
    /// The fullest node's `maxmemory`, bytes; 0 when it has no limit.
    pub max_bytes: u64,
    /// An evicting policy if any node has one, else `noeviction`.
    pub policy: String,
    /// Keys evicted since the nodes started, summed.
    pub evicted_keys: u64,
}

impl MemoryReport {
    /// Whether Redis may drop keys, families among them, to make room.
    pub fn evicting(&self) -> bool {
        self.policy != NO_EVICTION
    }

    /// Used memory in permille of `maxmemory`; `None` without a limit.
    pub fn fill_permille(&self) -> Option<u64> {
        (self.max_bytes > 0).then(|| self.used_bytes.saturating_mul(1000) / self.max_bytes)
    }

    /// Reads the reply of `INFO`: one node's text, or a map of node to text (Cluster).
    pub fn from_info(reply: &Value) -> Result<Self, StoreError> {
        let mut texts = Vec::new();
        collect_texts(reply, &mut texts);
        let nodes: Vec<NodeMemory> = texts.iter().filter_map(|t| NodeMemory::parse(t)).collect();
        if nodes.is_empty() {
            return Err(StoreError::Corrupt(
                "INFO names no used_memory and maxmemory".to_owned(),
            ));
        }
        let fullest = nodes
            .iter()
            .max_by_key(|n| match n.max_bytes {
                0 => 0,
                max => n.used_bytes.saturating_mul(1000) / max,
            })
            .expect("at least one node");
        let policy = worst_policy(nodes.iter().filter_map(|n| n.policy.as_deref()))
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            used_bytes: fullest.used_bytes,
            max_bytes: fullest.max_bytes,
            policy,
            evicted_keys: nodes.iter().map(|n| n.evicted_keys).sum(),
        })
    }
}

/// The policy of the reply of `CONFIG GET maxmemory-policy`: `[name, value]`, or that per
/// node in a Cluster.
pub fn policy_from_config(reply: &Value) -> Option<String> {
    let mut texts = Vec::new();
    collect_texts(reply, &mut texts);
    worst_policy(
        texts
            .iter()
            .map(String::as_str)
            .filter(|text| *text != "maxmemory-policy"),
    )
    .map(str::to_owned)
}

/// Below this `hash-max-listpack-value`, Redis stores a subject's hash in its larger
/// hashtable form once one record is longer than the limit: a realistic record is about 68
/// bytes (longer for JWT clients' families and revoked ones), and a subject with one family
/// then costs about 360 bytes instead of about 250 (BENCHMARKS.md).
pub const RECOMMENDED_LISTPACK_VALUE: u64 = 128;

/// The smallest `hash-max-listpack-value` of the reply of `CONFIG GET
/// hash-max-listpack-value` (per node in a Cluster); `None` when it names none.
pub fn listpack_value_from_config(reply: &Value) -> Option<u64> {
    let mut texts = Vec::new();
    collect_texts(reply, &mut texts);
    texts.iter().filter_map(|text| text.parse().ok()).min()
}

/// Of several nodes' policies, one that can evict if any can: that is the one that loses
/// families.
fn worst_policy<'a>(policies: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    policies
        .clone()
        .find(|policy| *policy != NO_EVICTION)
        .or_else(|| policies.into_iter().next())
}

fn collect_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(bytes) => out.push(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => out.push(text.clone()),
        Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_texts(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_texts(v, out)),
        _ => {}
    }
}

struct NodeMemory {
    used_bytes: u64,
    max_bytes: u64,
    /// Absent from `INFO` on some proxies; then `CONFIG GET` is asked.
    policy: Option<String>,
    evicted_keys: u64,
}

impl NodeMemory {
    fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        Some(Self {
            used_bytes: field("used_memory")?.parse().ok()?,
            max_bytes: field("maxmemory")?.parse().ok()?,
            policy: field("maxmemory_policy").map(str::to_owned),
            evicted_keys: field("evicted_keys")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// The latest figures, shared by the watcher that writes them, the audit that reads them and
/// the gauges that show them. Atomics: read on every audit batch and every scrape.
#[derive(Debug)]
pub struct StoreMonitor {
    /// The high-water mark in permille of `maxmemory`; 0 turns the refusals off.
    high_water_permille: u32,
    used_bytes: AtomicU64,
    max_bytes: AtomicU64,
    evicted_keys: AtomicU64,
    evicting: AtomicBool,
    /// Set once a report arrived: until then nothing is paused.
    known: AtomicBool,
    /// This instance's wall clock minus Redis's, ms.
    clock_offset_ms: AtomicI64,
}

/// What changed with a new report, for the watcher to log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The policy now evicts and did not before (or this is the first report and it evicts).
    pub began_evicting: bool,
    /// Keys evicted since the previous report.
    pub newly_evicted: u64,
    /// Crossed the high-water mark upwards (`Some(true)`) or back down (`Some(false)`).
    pub high_water: Option<bool>,
}

impl StoreMonitor {
    pub fn new(high_water_permille: u32) -> Arc<Self> {
        Arc::new(Self {
            high_water_permille,
            used_bytes: AtomicU64::new(0),
            max_bytes: AtomicU64::new(0),
            evicted_keys: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            known: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(0),
        })
    }

    pub fn high_water_permille(&self) -> u32 {
        self.high_water_permille
    }

    /// Takes a new report and says what changed since the last one.
    pub fn record(&self, report: &MemoryReport) -> Changes {
        let first = !self.known.swap(true, Ordering::AcqRel);
        let was_above = !first && self.above(0);
        let was_evicting = self.evicting.swap(report.evicting(), Ordering::AcqRel);
        let before = self
            .evicted_keys
            .swap(report.evicted_keys, Ordering::AcqRel);
        self.used_bytes.store(report.used_bytes, Ordering::Release);
        self.max_bytes.store(report.max_bytes, Ordering::Release);
        let is_above = self.above(0);
        Changes {
            began_evicting: report.evicting() && (first || !was_evicting),
            // The first report counts from Redis's start: those keys may be long gone too.
            newly_evicted: if first {
                report.evicted_keys
            } else {
                report.evicted_keys.saturating_sub(before)
            },
            high_water: (is_above != was_above).then_some(is_above),
        }
    }

    /// Whether the last report was at or past the high-water mark less `margin` permille.
    fn above(&self, margin: u32) -> bool {
        let (used, max) = (
            self.used_bytes.load(Ordering::Acquire),
            self.max_bytes.load(Ordering::Acquire),
        );
        self.high_water_permille > 0
            && max > 0
            && self.known.load(Ordering::Acquire)
            && used.saturating_mul(1000)
                >= max.saturating_mul(self.high_water_permille.saturating_sub(margin) as u64)
    }

    /// Whether the audit should hold back: Redis is within [`AUDIT_MARGIN_PERMILLE`] of the
    /// high-water mark (by the last report).
    pub fn audit_paused(&self) -> bool {
        self.above(AUDIT_MARGIN_PERMILLE)
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Acquire)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Acquire)
    }

    pub fn evicted_keys(&self) -> u64 {
        self.evicted_keys.load(Ordering::Acquire)
    }

    pub fn evicting(&self) -> bool {
        self.evicting.load(Ordering::Acquire)
    }

    /// The high-water mark in bytes by the last report; 0 without a limit or a mark.
    pub fn high_water_bytes(&self) -> u64 {
        self.max_bytes() * self.high_water_permille as u64 / 1000
    }

    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.clock_offset_ms.store(offset_ms, Ordering::Release);
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(used: u64, max: u64, policy: &str, evicted: u64) -> String {
        format!(
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:1M\r\nmaxmemory:{max}\r\n\
             maxmemory_policy:{policy}\r\n# Stats\r\nevicted_keys:{evicted}\r\n"
        )
    }

    #[test]
    fn one_node_and_a_cluster_read_alike() {
        let one = Value::BulkString(info(900, 1000, "noeviction", 0).into_bytes());
        let report = MemoryReport::from_info(&one).unwrap();
        assert_eq!(
            (report.used_bytes, report.max_bytes, report.evicting()),
            (900, 1000, false)
        );
        assert_eq!(report.fill_permille(), Some(900));
        // A Cluster answers per node: the fullest node and any evicting policy count.
        let cluster = Value::Map(vec![
            (
                Value::BulkString(b"a:1".to_vec()),
                Value::BulkString(info(100, 1000, "noeviction", 2).into_bytes()),
            ),
            (
                Value::BulkString(b"b:2".to_vec()),
                Value::BulkString(info(950, 1000, "volatile-lru", 3).into_bytes()),
            ),
        ]);
        let report = MemoryReport::from_info(&cluster).unwrap();
        assert_eq!(
            report,
            MemoryReport {
                used_bytes: 950,
                max_bytes: 1000,
                policy: "volatile-lru".to_owned(),
                evicted_keys: 5
            }
        );
        assert!(MemoryReport::from_info(&Value::Nil).is_err());
    }

    #[test]
    fn config_get_replies_of_one_node_and_of_a_cluster() {
        let pair = |policy: &str| {
            Value::Array(vec![
                Value::BulkString(b"maxmemory-policy".to_vec()),
                Value::BulkString(policy.as_bytes().to_vec()),
            ])
        };
        assert_eq!(
            policy_from_config(&pair("noeviction")).as_deref(),
            Some("noeviction")
        );
        let cluster = Value::Map(vec![
            (Value::BulkString(b"a:1".to_vec()), pair("noeviction")),
            (Value::BulkString(b"b:2".to_vec()), pair("allkeys-lru")),
        ]);
        assert_eq!(policy_from_config(&cluster).as_deref(), Some("allkeys-lru"));
        assert_eq!(policy_from_config(&Value::Array(vec![])), None);
    }

    #[test]
    fn the_audit_pauses_before_the_high_water_mark() {
        let monitor = StoreMonitor::new(900);
        assert!(!monitor.audit_paused(), "nothing known yet: nothing paused");
        let report = |used| MemoryReport {
            used_bytes: used,
            max_bytes: 1000,
            policy: NO_EVICTION.to_owned(),
            evicted_keys: 0,
        };
        let changes = [849, 850, 900, 10].map(|used| {
            let changes = monitor.record(&report(used));
            (monitor.audit_paused(), changes.high_water)
        });
        assert_eq!(
            changes,
            [
                (false, None),
                (true, None),
                (true, Some(true)),
                (false, Some(false))
            ]
        );
        assert_eq!(monitor.high_water_bytes(), 900);
    }

    #[test]
    fn eviction_is_reported_once_and_evicted_keys_by_difference() {
        let monitor = StoreMonitor::new(900);
        let report = |policy: &str, evicted| MemoryReport {
            used_bytes: 0,
            max_bytes: 0,
            policy: policy.to_owned(),
            evicted_keys: evicted,
        };
        let first = monitor.record(&report("allkeys-lru", 4));
        assert!(first.began_evicting);
        assert_eq!(first.newly_evicted, 4);
        let second = monitor.record(&report("allkeys-lru", 10));
        assert!(!second.began_evicting);
        assert_eq!(second.newly_evicted, 6);
        assert!(!monitor.record(&report(NO_EVICTION, 10)).began_evicting);
        assert!(monitor.record(&report("volatile-ttl", 10)).began_evicting);
    }
}
