//! `grpc.health.v1`: SERVING only while Redis answers. Kubernetes probes and load balancers
//! read it, so an instance cut off from Redis stops receiving traffic without restarting. The
//! same look at Redis every interval keeps the instance's clock in step with Redis's and reads
//! its memory and eviction policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use token_core::Clock;
use token_store::monitor::NO_EVICTION;
use token_store::{MemoryReport, RedisStore};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Services whose status follows Redis; "" is the server as a whole.
pub const REPORTED_SERVICES: [&str; 3] = ["", "tokens.v1.TokenService", "tokens.v1.ClientRegistry"];

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in REPORTED_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// What the health watcher keeps an eye on: Redis's reachability (health status), its clock
/// (the one clock, see `token_core::clock`), and its memory and eviction policy (see
/// `token_store::monitor`).
pub struct StoreWatch {
    pub store: RedisStore,
    pub clock: Arc<dyn Clock>,
    /// `--redis-allow-eviction`: an evicting policy is still logged, as a warning.
    pub allow_evicting: bool,
}

impl StoreWatch {
    /// One look at Redis: its clock, then its memory. `None` when Redis does not answer.
    pub async fn check(&self) -> Option<MemoryReport> {
        let sent = Instant::now();
        let reference_ms = match self.store.time().await {
            Ok(ms) => ms,
            Err(err) => {
                tracing::debug!(error = %err, "Redis TIME failed");
                return None;
            }
        };
        if let Some(offset_ms) = self.clock.sync(reference_ms, sent, Instant::now()) {
            self.store.monitor().set_clock_offset_ms(offset_ms);
        }
        match self.store.memory().await {
            Ok(report) => {
                self.log_changes(&report);
                Some(report)
            }
            // Reachable but INFO failed (a proxy that filters it): health follows TIME alone.
            Err(err) => {
                tracing::warn!(error = %err, "cannot read Redis INFO: memory and eviction policy unknown");
                Some(MemoryReport {
                    policy: NO_EVICTION.to_owned(),
                    ..MemoryReport::default()
                })
            }
        }
    }

    fn log_changes(&self, report: &MemoryReport) {
        let monitor = self.store.monitor();
        let changes = monitor.record(report);
        if changes.began_evicting {
            if self.allow_evicting {
                tracing::warn!(
                    maxmemory_policy = %report.policy,
                    "Redis's maxmemory-policy can evict token families; serving anyway \
                     (--redis-allow-eviction). Set maxmemory-policy noeviction"
                );
            } else {
                tracing::error!(
                    maxmemory_policy = %report.policy,
                    "Redis's maxmemory-policy changed to one that can evict token families: \
                     users may be logged out without a word. Set maxmemory-policy noeviction"
                );
            }
        }
        if changes.newly_evicted > 0 {
            tracing::error!(
                evicted_keys = changes.newly_evicted,
                maxmemory_policy = %report.policy,
                "Redis evicted keys: token families may have been lost. Set maxmemory-policy \
                 noeviction and give Redis more memory"
            );
        }
        match changes.high_water {
            Some(true) => tracing::error!(
                used_bytes = report.used_bytes,
                maxmemory_bytes = report.max_bytes,
                high_water_permille = monitor.high_water_permille(),
                "Redis memory passed the high-water mark: new token families are refused \
                 (STORE_FULL) and the audit is paused; existing families keep rotating. Give \
                 Redis more memory"
            ),
            Some(false) => tracing::info!(
                used_bytes = report.used_bytes,
                maxmemory_bytes = report.max_bytes,
                "Redis memory back under the high-water mark: new token families accepted"
            ),
            None => {}
        }
    }

    /// Looks at Redis every `interval` and reports reachability until `stop` resolves.
    pub async fn run(
        self,
        reporter: HealthReporter,
        interval: Duration,
        stop: impl Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut last = None;
        loop {
            let status = match self.check().await {
                Some(_) => ServingStatus::Serving,
                None => {
                    self.store.reset_connections().await;
                    if last != Some(ServingStatus::NotServing) {
                        tracing::warn!("Redis unreachable: reporting NOT_SERVING");
                    }
                    ServingStatus::NotServing
                }
            };
            if last != Some(status) {
                if status == ServingStatus::Serving {
                    tracing::info!("Redis reachable: reporting SERVING");
                }
                set_all(&reporter, status).await;
                last = Some(status);
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                () = &mut stop => return,
            }
        }
    }
}
