//! Throttling of repeated failed client authentication, per client id and per instance. Each
//! client may fail `burst` times, earning one more failure every `refill`; past that, a failed
//! attempt is answered RATE_LIMITED (with the time until the next allowance) instead of
//! INVALID_CLIENT. Correct credentials always pass: someone who knows a client id cannot lock
//! the real client out, while a misconfigured client is told, in a retryable way, to back off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Error;

/// Beyond this many tracked clients the table is cleared rather than grown.
const MAX_TRACKED: usize = 10_000;

pub struct AuthThrottle {
    burst: u64,
    refill_ms: u64,
    /// Client id to (failures still allowed, when that was last brought up to date).
    allowances: Mutex<HashMap<String, (u64, u64)>>,
}

impl AuthThrottle {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst: u64::from(burst.max(1)),
            refill_ms: (refill.as_millis() as u64).max(1),
            allowances: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failed authentication: `InvalidClient` while failures are allowed, then
    /// `RateLimited`.
    pub fn failed(&self, client_id: &str, now_ms: u64) -> Error {
        let mut allowances = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
        if allowances.len() >= MAX_TRACKED && !allowances.contains_key(client_id) {
            allowances.clear();
        }
        let (left, updated) = allowances
            .entry(client_id.to_owned())
            .or_insert((self.burst, now_ms));
        let earned = now_ms.saturating_sub(*updated) / self.refill_ms;
        if earned > 0 {
            *left = (*left + earned).min(self.burst);
            *updated += earned * self.refill_ms;
        }
        if *left > 0 {
            *left -= 1;
            Error::InvalidClient
        } else {
            let next = self.refill_ms - now_ms.saturating_sub(*updated) % self.refill_ms;
            Error::RateLimited {
                retry_after: Duration::from_millis(next),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_burst_are_rate_limited_until_refilled() {
        let throttle = AuthThrottle::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(matches!(throttle.failed("c", 10_000), Error::InvalidClient));
        }
        match throttle.failed("c", 10_400) {
            Error::RateLimited { retry_after } => {
                assert_eq!(retry_after, Duration::from_millis(600))
            }
            other => panic!("unexpected {other:?}"),
        }
        // Another client is unaffected; one second later one more failure is allowed.
        assert!(matches!(
            throttle.failed("other", 10_400),
            Error::InvalidClient
        ));
        assert!(matches!(throttle.failed("c", 11_000), Error::InvalidClient));
        assert!(matches!(
            throttle.failed("c", 11_001),
            Error::RateLimited { .. }
        ));
    }
}
