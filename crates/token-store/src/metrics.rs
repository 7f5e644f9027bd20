//! The store's instruments: lost connections by phase, connection pool state, and how long
//! calls wait for a connection.

use std::time::Duration;

use deadpool::managed::Pool;

use crate::connector::Connector;
use crate::monitor::StoreMonitor;
use opentelemetry::KeyValue;
use opentelemetry::metrics::noop::NoopMeterProvider;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, ObservableGauge};
use std::sync::Arc;

/// How far a request got when its connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No connection could be had: the request was not sent, so it did not run.
    BeforeSend,
    /// The request was written (or queued) on a connection that then failed or went silent:
    /// it may or may not have run, and its reply is lost.
    AfterSend,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::BeforeSend => "before_send",
            Phase::AfterSend => "after_send",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Phase::BeforeSend => "redis connection failed before the request was sent",
            Phase::AfterSend => "redis connection lost after the request was sent; reply lost",
        }
    }
}

#[derive(Clone)]
pub(crate) struct StoreMetrics {
    connection_errors: Counter<u64>,
    wait: Histogram<f64>,
    replica_wait_unmet: Counter<u64>,
    /// Kept so the pool's gauges live as long as the store.
    _pool_gauges: Option<[ObservableGauge<u64>; 2]>,
    /// Kept so the memory, policy and clock gauges live as long as the store.
    _monitor_gauges: Option<MonitorGauges>,
}

/// Redis memory, eviction and clock figures, as [`StoreMonitor`] last saw them.
#[derive(Clone)]
#[allow(dead_code)] // held only to keep the callbacks registered
struct MonitorGauges {
    bytes: ObservableGauge<u64>,
    evicted: ObservableGauge<u64>,
    evicting: ObservableGauge<u64>,
    clock_offset: ObservableGauge<f64>,
}

impl MonitorGauges {
    fn new(meter: &Meter, monitor: Arc<StoreMonitor>) -> Self {
        let m = monitor.clone();
        let bytes = meter
            .u64_observable_gauge("tokens.redis.memory")
            .with_description(
                "Redis memory by state: used (the fullest node), limit (maxmemory; 0 = none),                  high_water (where new families are refused)",
            )
            .with_unit("By")
            .with_callback(move |gauge| {
                gauge.observe(m.used_bytes(), &[KeyValue::new("state", "used")]);
                gauge.observe(m.max_bytes(), &[KeyValue::new("state", "limit")]);
                gauge.observe(m.high_water_bytes(), &[KeyValue::new("state", "high_water")]);
            })
            .build();
        let m = monitor.clone();
        let evicted = meter
            .u64_observable_gauge("tokens.redis.evicted_keys")
            .with_description(
                "Keys Redis evicted since it started (INFO evicted_keys); any rise means                  families were lost: set maxmemory-policy noeviction",
            )
            .with_unit("{key}")
            .with_callback(move |gauge| gauge.observe(m.evicted_keys(), &[]))
            .build();
        let m = monitor.clone();
        let evicting = meter
            .u64_observable_gauge("tokens.redis.eviction_policy.evicting")
            .with_description(
                "1 when Redis's maxmemory-policy can evict keys (anything but noeviction)",
            )
            .with_callback(move |gauge| gauge.observe(u64::from(m.evicting()), &[]))
            .build();
        let clock_offset = meter
            .f64_observable_gauge("tokens.clock.offset")
            .with_description(
                "This instance's wall clock minus Redis's; decisions use Redis's clock, so this                  is for diagnosis only",
            )
            .with_unit("s")
            .with_callback(move |gauge| {
                gauge.observe(monitor.clock_offset_ms() as f64 / 1000.0, &[])
            })
            .build();
        Self {
            bytes,
            evicted,
            evicting,
            clock_offset,
        }
    }
}

impl StoreMetrics {
    /// Instruments that record nothing, until [`StoreMetrics::new`] replaces them.
    pub(crate) fn disabled() -> Self {
        let meter = NoopMeterProvider::new().meter("token-store");
        Self::instruments(&meter, None, None)
    }

    pub(crate) fn new(meter: &Meter, pool: Pool<Connector>, monitor: Arc<StoreMonitor>) -> Self {
        let in_use = pool.clone();
        let connections = meter
            .u64_observable_gauge("db.client.connection.count")
            .with_description("Redis connections in the pool, by state (used: held by a lane)")
            .with_unit("{connection}")
            .with_callback(move |gauge| {
                let status = in_use.status();
                let idle = status.available as u64;
                gauge.observe(
                    (status.size as u64).saturating_sub(idle),
                    &[KeyValue::new("db.client.connection.state", "used")],
                );
                gauge.observe(idle, &[KeyValue::new("db.client.connection.state", "idle")]);
            })
            .build();
        let pending = meter
            .u64_observable_gauge("db.client.connection.pending_requests")
            .with_description("Calls waiting for the pool to hand out a connection")
            .with_unit("{request}")
            .with_callback(move |gauge| gauge.observe(pool.status().waiting as u64, &[]))
            .build();
        let monitor_gauges = MonitorGauges::new(meter, monitor);
        Self::instruments(meter, Some([connections, pending]), Some(monitor_gauges))
    }

    fn instruments(
        meter: &Meter,
        pool_gauges: Option<[ObservableGauge<u64>; 2]>,
        monitor_gauges: Option<MonitorGauges>,
    ) -> Self {
        Self {
            connection_errors: meter
                .u64_counter("tokens.redis.connection.errors")
                .with_description(
                    "Redis calls whose connection failed, by phase (before_send: not run; \
                     after_send: may have run, reply lost) and kind",
                )
                .with_unit("{error}")
                .build(),
            wait: meter
                .f64_histogram("db.client.connection.wait_time")
                .with_description("Time a Redis call waited for its connection")
                .with_unit("s")
                .with_boundaries(vec![
                    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ])
                .build(),
            replica_wait_unmet: meter
                .u64_counter("tokens.redis.wait.unmet")
                .with_description(
                    "Revocations that replicas did not confirm (WAIT) within the timeout: they \
                     stand on the primary but a failover could undo them",
                )
                .with_unit("{revocation}")
                .build(),
            _pool_gauges: pool_gauges,
            _monitor_gauges: monitor_gauges,
        }
    }

    pub(crate) fn connection_error(&self, phase: Phase, kind: &'static str) {
        self.connection_errors.add(
            1,
            &[
                KeyValue::new("phase", phase.as_str()),
                KeyValue::new("kind", kind),
            ],
        );
    }

    pub(crate) fn replica_wait_unmet(&self) {
        self.replica_wait_unmet.add(1, &[]);
    }

    pub(crate) fn waited(&self, waited: Duration) {
        self.wait.record(waited.as_secs_f64(), &[]);
    }
}
