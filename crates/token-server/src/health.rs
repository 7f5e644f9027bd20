//! `grpc.health.v1`: SERVING only while Redis answers. Kubernetes probes and load balancers
//! read it, so an instance cut off from Redis stops receiving traffic without restarting.

use std::time::Duration;

use token_store::RedisStore;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Services whose status follows Redis; "" is the server as a whole.
pub const REPORTED_SERVICES: [&str; 3] = ["", "tokens.v1.TokenService", "tokens.v1.ClientRegistry"];

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in REPORTED_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Pings Redis every `interval` and reports the result until `stop` turns true.
pub async fn watch_store(
    reporter: HealthReporter,
    store: RedisStore,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = match store.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(err) => {
                store.reset_connections().await;
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %err, "Redis unreachable: reporting NOT_SERVING");
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
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
