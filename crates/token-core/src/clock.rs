//! The one clock. Time about a family comes from one place, Redis (the shard's clock in a
//! Cluster), never from whichever instance served a call: instances' clocks may be seconds or
//! an hour apart. The store scripts read Redis's `TIME` themselves for every decision they
//! make (grace, expiry, the rotation time that goes into tokens); what the instance decides
//! outside a script (introspection's expiry, `expires_in`, the stamp of a request for the
//! stale-duplicate rule, audit times) reads [`SyncedClock`], Redis's time as last measured,
//! carried forward by the monotonic clock. Tests pin both with a [`ManualClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now, as this instance reads the one clock.
    fn now_ms(&self) -> u64;

    /// The time the store scripts are to decide with: `None` (production) lets each script
    /// read the store's own clock; a test clock pins it so that tests drive time.
    fn fixed_ms(&self) -> Option<u64> {
        None
    }

    /// Takes a reading of the reference clock (Redis's `TIME`), asked for at `sent` and
    /// answered at `received`. Clocks that follow the reference return this machine's wall
    /// clock minus the reference, in ms; the rest ignore it.
    fn sync(&self, reference_ms: u64, sent: Instant, received: Instant) -> Option<i64> {
        let _ = (reference_ms, sent, received);
        None
    }
}

/// The machine's clock, for tools and tests that run without a store to follow. The service
/// uses [`SyncedClock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for tests and models.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// Shared so that a test keeps a handle while the service owns another.
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Starts at the real current time, so Redis TTLs (which run on Redis's own clock and only
    /// collect garbage) stay far longer than anything the test does.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn fixed_ms(&self) -> Option<u64> {
        Some(self.now_ms())
    }
}

/// The longest round trip of a reading [`SyncedClock`] takes: its error is at most half of it.
pub const MAX_SYNC_ROUND_TRIP: Duration = Duration::from_millis(100);

/// Redis's clock as this instance last measured it, advanced by the monotonic clock since:
/// an NTP step, a paused VM or a skewed host moves the machine's wall clock, not this.
/// [`SyncedClock::sync`] takes each new reading; before the first one it falls back to the
/// machine's clock (and says so through [`SyncedClock::is_synced`]).
#[derive(Debug)]
pub struct SyncedClock {
    /// The monotonic origin the offset is counted from.
    origin: Instant,
    /// Reference time minus monotonic milliseconds since `origin`.
    offset_ms: AtomicI64,
    synced: AtomicBool,
}

impl Default for SyncedClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            offset_ms: AtomicI64::new(0),
            synced: AtomicBool::new(false),
        }
    }
}

impl SyncedClock {
    /// Whether a reading has been taken yet.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

impl Clock for SyncedClock {
    fn now_ms(&self) -> u64 {
        if !self.is_synced() {
            return SystemClock.now_ms();
        }
        let since_origin = self.origin.elapsed().as_millis() as i64;
        (since_origin + self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// The reading is placed halfway through its round trip, so its error is at most half
    /// the round trip; a reading whose round trip took longer than [`MAX_SYNC_ROUND_TRIP`]
    /// (a stalled or reconnecting call) is too vague to use and is ignored.
    fn sync(&self, reference_ms: u64, sent: Instant, received: Instant) -> Option<i64> {
        let round_trip = received.saturating_duration_since(sent);
        if round_trip > MAX_SYNC_ROUND_TRIP {
            return None;
        }
        let midpoint = sent + round_trip / 2;
        let since_origin = midpoint.saturating_duration_since(self.origin).as_millis() as i64;
        self.offset_ms
            .store(reference_ms as i64 - since_origin, Ordering::Relaxed);
        self.synced.store(true, Ordering::Release);
        Some(SystemClock.now_ms() as i64 - self.now_ms() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_clock_follows_the_reference_not_the_machine() {
        let clock = SyncedClock::default();
        let sent = Instant::now();
        // A reference an hour behind this machine, read with a 10 ms round trip: the reading
        // stands for the round trip's midpoint.
        let reference = SystemClock.now_ms() - 3_600_000;
        let skew = clock
            .sync(reference + 5, sent - Duration::from_millis(10), sent)
            .unwrap();
        assert!(clock.is_synced());
        assert!((3_599_000..=3_601_000).contains(&skew), "skew {skew}");
        let now = clock.now_ms();
        assert!(
            now >= reference && now < reference + 1_000,
            "{now} vs {reference}"
        );
        assert_eq!(clock.fixed_ms(), None, "scripts read the store's own clock");

        // A reading that took too long is ignored: the clock stays where it was.
        let later = Instant::now();
        let vague = clock.sync(0, later - MAX_SYNC_ROUND_TRIP * 2, later);
        assert_eq!(vague, None);
        assert!(clock.now_ms() >= reference, "the earlier reading stands");
    }

    #[test]
    fn a_manual_clock_pins_the_scripts_too() {
        let clock = ManualClock::new(5_000);
        clock.advance(Duration::from_millis(7));
        assert_eq!((clock.now_ms(), clock.fixed_ms()), (5_007, Some(5_007)));
        let now = Instant::now();
        assert_eq!(
            clock.sync(1, now, now),
            None,
            "a test clock ignores Redis's"
        );
    }
}
