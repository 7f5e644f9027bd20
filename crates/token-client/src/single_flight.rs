//! Coalescing of identical calls in flight: the first caller for a key starts the work, every
//! caller that arrives while it runs waits for the same result, and nobody repeats the work.
//!
//! The work is a [`Shared`] future: whichever waiter polls drives it, so cancelling the caller
//! that started it does not cancel it while others still wait. It is dropped (cancelled) only
//! when its last waiter goes away. Hence [`DetachedFlight`]: the work is detached from the
//! caller that started it (unlike the server's `TakeoverFlight`, where a waiter restarts it).
//!
//! An entry lives in the map from the first join until the work has a result (later callers
//! then start a new flight, which sees the server's current state) or its last waiter is
//! dropped. Each waiter is counted under the map's lock, so the count is exact.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// Identical calls share one `'static` future, which carries on when its starter is cancelled.
pub(crate) struct DetachedFlight<K, V> {
    flights: Mutex<Flights<K, V>>,
}

struct Flights<K, V> {
    by_key: HashMap<K, Flight<V>>,
    /// Tells a finished flight's entry apart from a newer flight for the same key.
    next_id: u64,
}

struct Flight<V> {
    id: u64,
    work: Shared<BoxFuture<'static, V>>,
    waiters: usize,
}

impl<K, V> DetachedFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            flights: Mutex::new(Flights {
                by_key: HashMap::new(),
                next_id: 0,
            }),
        }
    }

    /// Joins the flight for `key`, or registers a new one whose work `start` builds. Joining
    /// happens now, not when the returned future is first polled; the work starts when any of
    /// its waiters is first polled.
    pub(crate) fn join<F>(
        self: &Arc<Self>,
        key: K,
        start: F,
    ) -> impl Future<Output = V> + Send + 'static + use<K, V, F>
    where
        F: FnOnce() -> BoxFuture<'static, V>,
    {
        let (id, work) = {
            let mut flights = self.lock();
            let next_id = flights.next_id;
            let flight = flights.by_key.entry(key.clone()).or_insert_with(|| Flight {
                id: next_id,
                work: start().shared(),
                waiters: 0,
            });
            flight.waiters += 1;
            let joined = (flight.id, flight.work.clone());
            if joined.0 == next_id {
                flights.next_id += 1;
            }
            joined
        };
        let waiter = Waiter {
            flights: self.clone(),
            key,
            id,
        };
        async move {
            let value = work.await;
            drop(waiter);
            value
        }
    }

    /// How many distinct flights are in the map.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    fn lock(&self) -> MutexGuard<'_, Flights<K, V>> {
        // A poisoned lock only means a panic elsewhere; the map is still consistent, since
        // every critical section leaves it so before anything can panic.
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One caller's membership of a flight; leaving (with a result, or cancelled) updates the map.
struct Waiter<K: Eq + Hash, V> {
    flights: Arc<DetachedFlight<K, V>>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash, V> Drop for Waiter<K, V> {
    fn drop(&mut self) {
        let mut flights = self
            .flights
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(flight) = flights.by_key.get_mut(&self.key) else {
            return;
        };
        if flight.id != self.id {
            return; // Our flight finished and was removed; this entry is a newer one.
        }
        flight.waiters -= 1;
        if flight.waiters == 0 || flight.work.peek().is_some() {
            // Removing the entry drops the map's handle on the work; once the last waiter's
            // handle is gone too, an unfinished work is dropped, i.e. cancelled. That drop
            // runs outside the lock.
            let removed = flights.by_key.remove(&self.key);
            drop(flights);
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn joined_callers_share_one_run_and_the_entry_goes_when_done() {
        let flights = Arc::new(DetachedFlight::<&str, u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = oneshot::channel::<u32>();
        let start = {
            let runs = runs.clone();
            move || -> BoxFuture<'static, u32> {
                runs.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move { released.await.unwrap() })
            }
        };
        let first = flights.join("k", start);
        let second = flights.join("k", || unreachable!("joins the running flight"));
        assert_eq!(flights.len(), 1);
        let (first, second) = (tokio::spawn(first), tokio::spawn(second));
        release.send(7).unwrap();
        assert_eq!((first.await.unwrap(), second.await.unwrap()), (7, 7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "a finished flight leaves no entry");
        // The next call starts afresh.
        assert_eq!(flights.join("k", || Box::pin(async { 8 })).await, 8);
    }

    #[tokio::test]
    async fn cancelling_the_starter_does_not_cancel_the_others() {
        let flights = Arc::new(DetachedFlight::<&str, u32>::new());
        let (release, released) = oneshot::channel::<u32>();
        let (started_tx, started) = oneshot::channel::<()>();
        let starter = tokio::spawn(flights.join("k", move || {
            Box::pin(async move {
                let _ = started_tx.send(());
                released.await.unwrap()
            })
        }));
        let follower = flights.join("k", || unreachable!());
        started.await.unwrap(); // The starter is driving the work.
        starter.abort();
        assert!(starter.await.unwrap_err().is_cancelled());
        assert_eq!(flights.len(), 1, "the follower still waits");
        release.send(9).unwrap();
        assert_eq!(follower.await, 9, "the same run finishes for the follower");
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn the_last_waiter_leaving_removes_the_entry_and_cancels_the_work() {
        let flights = Arc::new(DetachedFlight::<&str, u32>::new());
        let (dropped_tx, dropped) = oneshot::channel::<()>();
        struct OnDrop(Option<oneshot::Sender<()>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                let _ = self.0.take().unwrap().send(());
            }
        }
        let guard = OnDrop(Some(dropped_tx));
        let (started_tx, started) = oneshot::channel::<()>();
        let a = flights.join("k", move || {
            Box::pin(async move {
                let _guard = guard;
                let _ = started_tx.send(());
                std::future::pending::<u32>().await
            })
        });
        let b = flights.join("k", || unreachable!());
        let a = tokio::spawn(a);
        started.await.unwrap(); // `a` is driving the work: what is cancelled below is running.
        drop(b); // Never polled: leaving still counts.
        assert_eq!(flights.len(), 1);
        a.abort();
        let _ = a.await;
        assert_eq!(flights.len(), 0);
        dropped.await.expect("the work was dropped, i.e. cancelled");
    }
}
