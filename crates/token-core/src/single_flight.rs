//! Coalescing of identical in-flight calls: while one call for a key runs, later calls for the
//! same key wait for its result instead of repeating the work. A storm of N identical
//! refreshes on one instance thus costs one Redis rotation, not N round trips.
//!
//! If the running call is cancelled (its client went away), one of the waiting calls takes
//! over and runs its own work, so nobody is left waiting for a result that will never come.
//! Hence [`TakeoverFlight`]: the work runs inside the leading caller's future and may borrow
//! from it (the SDK's `DetachedFlight` instead shares one `'static` future that carries on).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Identical calls share one run of the work; a cancelled leader's work is taken over by a
/// waiter, which runs its own.
pub struct TakeoverFlight<K, V> {
    /// Calls in flight by key. An entry lives from the first call until the last caller of
    /// that flight has its result (or gave up).
    flights: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for TakeoverFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> TakeoverFlight<K, V> {
    /// Runs `work`, unless a call with the same key is already running, in which case waits
    /// for that call's value. Returns the value and whether this call did the work.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = self
            .lock()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        // The guard holds this caller's only handle on the cell, so that when it drops, the
        // holder count it reads is exact.
        let leave = Leave {
            flights: self,
            key,
            cell,
        };
        let mut worked = false;
        let value = leave
            .cell
            .get_or_init(|| {
                worked = true;
                work()
            })
            .await
            .clone();
        (value, worked)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<OnceCell<V>>>> {
        // A poisoned map only means a panic elsewhere; its entries are still valid.
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

/// Removes the flight's entry once it has a value (later calls start a new flight and see the
/// store's current state) or when its last caller leaves without one (cancelled).
struct Leave<'a, K: Eq + Hash + Clone, V: Clone> {
    flights: &'a TakeoverFlight<K, V>,
    key: K,
    cell: Arc<OnceCell<V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Drop for Leave<'_, K, V> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock();
        let ours = flights
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell));
        // Two holders left: the map and this caller.
        if ours && (self.cell.initialized() || Arc::strong_count(&self.cell) == 2) {
            flights.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// How many handles on the flight for `key` exist: the map's, plus one per caller that has
    /// joined it. Zero when there is no flight.
    fn holders(flights: &TakeoverFlight<&'static str, u32>, key: &str) -> usize {
        flights.lock().get(key).map_or(0, Arc::strong_count)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_calls_share_one_run() {
        let flights = Arc::new(TakeoverFlight::<&str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        // Either caller may lead; this test makes the leader's work start first, announce that
        // it runs, and hold until released, so the second call can only join it.
        let leader = {
            let (flights, runs) = (flights.clone(), runs.clone());
            tokio::spawn(async move {
                flights
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        started_tx.send(()).expect("the test waits for the start");
                        released.await.expect("the test releases the leader");
                        7
                    })
                    .await
            })
        };
        started.await.expect("the leader's work started");
        assert_eq!(holders(&flights, "k"), 2, "the map and the leader");
        let follower = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", || async { 8 }).await })
        };
        // The follower has joined the running flight once it holds the cell too. The leader
        // cannot finish before it is released, so this only waits for the follower's task to
        // be scheduled (bounded, so that a bug fails here instead of hanging).
        tokio::time::timeout(Duration::from_secs(30), async {
            while holders(&flights, "k") < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the follower never joined the running flight");
        release.send(()).expect("the leader still runs");
        assert_eq!(leader.await.unwrap(), (7, true));
        assert_eq!(follower.await.unwrap(), (7, false));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "a finished flight leaves no entry");
    }

    #[tokio::test]
    async fn a_cancelled_lone_call_leaves_no_entry() {
        let flights = TakeoverFlight::<&str, u32>::default();
        let never = flights.run("k", std::future::pending::<u32>);
        assert!(
            tokio::time::timeout(Duration::from_millis(1), never)
                .await
                .is_err()
        );
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.run("k", || async { 3 }).await, (3, true));
    }
}
