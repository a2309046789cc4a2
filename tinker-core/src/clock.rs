//! Time as an input: the one [`Clock`] every part of Tinker reads the time from.
//!
//! Library code never calls `Timestamp::now`, `SystemTime::now` or
//! `Instant::now`, and never sleeps by itself: it asks the clock it was given. In
//! production that is [`SystemClock`]; in tests and simulations it is a
//! [`ManualClock`] that only moves when told to, so a rack of simulated machines
//! runs hours in a second and the same inputs give the same run.

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// A source of the current time that can also wait until a deadline.
///
/// Object-safe; share it as `Arc<dyn Clock>`.
///
/// ```
/// # tokio_test_block_on(async {
/// use std::sync::Arc;
/// use tinker_core::clock::{Clock, ManualClock};
/// use jiff::Timestamp;
///
/// let clock = Arc::new(ManualClock::new(Timestamp::from_second(1_800_000_000).unwrap()));
/// let deadline = clock.now() + std::time::Duration::from_secs(30);
/// let waiter = {
///     let clock = clock.clone();
///     tokio::spawn(async move { clock.sleep_until(deadline).await; clock.now() })
/// };
/// clock.advance(std::time::Duration::from_secs(30));
/// assert_eq!(waiter.await.unwrap(), deadline);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Returns once the clock reads `deadline` or later.
    async fn sleep_until(&self, deadline: Timestamp);

    /// Returns once `duration` has passed on this clock.
    async fn sleep(&self, duration: Duration) {
        let deadline = self.now() + duration;
        self.sleep_until(deadline).await
    }
}

/// A shared clock, as every constructor takes it.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock, the default everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        // Re-read after waking: the wall clock may have been stepped meanwhile.
        loop {
            let left = deadline.duration_since(Timestamp::now());
            if left <= SignedDuration::ZERO {
                // A deadline already past is ready at once; charged to the
                // task's budget like any tokio timer, so a loop that keeps
                // waiting on one still gives the runtime its turn.
                tokio::task::consume_budget().await;
                return;
            }
            tokio::time::sleep(left.unsigned_abs()).await;
        }
    }
}

/// A clock that moves only when told to: [`ManualClock::advance`] or
/// [`ManualClock::set`]. Sleepers wake when the clock reaches their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<Timestamp>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: tokio::sync::watch::Sender::new(start),
        }
    }

    /// Moves the clock forward by `by`, waking every sleeper whose deadline passed.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|t| *t += by);
    }

    /// Sets the clock to `to` (forward or back).
    pub fn set(&self, to: Timestamp) {
        self.now.send_replace(to);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        let mut rx = self.now.subscribe();
        // The sender lives as long as `self`, which outlives this borrow.
        let _ = rx.wait_for(|now| *now >= deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits on an already-past deadline, over and over, on a one-thread
    /// runtime, and says whether another task got to run meanwhile (the loop
    /// gives up after far more turns than a task's budget allows).
    async fn past_deadlines_let_others_run(clock: Arc<dyn Clock>) -> bool {
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let ran = ran.clone();
            tokio::spawn(async move { ran.store(true, std::sync::atomic::Ordering::SeqCst) })
        };
        let past = clock.now() - Duration::from_secs(1);
        for _ in 0..100_000 {
            if ran.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            clock.sleep_until(past).await;
        }
        let ran_meanwhile = ran.load(std::sync::atomic::Ordering::SeqCst);
        other.await.unwrap();
        ran_meanwhile
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_loop_on_a_past_deadline_still_yields_to_the_runtime() {
        assert!(
            past_deadlines_let_others_run(SystemClock::shared()).await,
            "the system clock's past deadline never yielded"
        );
        let manual = Arc::new(ManualClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        assert!(
            past_deadlines_let_others_run(manual).await,
            "the manual clock's past deadline never yielded"
        );
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_in_deadline_order() {
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for secs in [20u64, 10] {
            let (clock, order) = (clock.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                clock.sleep(Duration::from_secs(secs)).await;
                order.lock().unwrap().push(secs);
            }));
        }
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(10));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(*order.lock().unwrap(), vec![10]);
        clock.advance(Duration::from_secs(10));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20]);
        assert_eq!(clock.now(), start + Duration::from_secs(20));
    }
}
