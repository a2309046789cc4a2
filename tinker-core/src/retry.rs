//! One retry vocabulary for the whole project: a capped exponential [`Backoff`]
//! with jitter, and one rule ([`Retryable`]) for which errors are worth another
//! try. The engine's BMC steps, the BMC policy wrapper and the worker agent all use
//! these, so ten thousand machines that fail together do not retry together.
//!
//! The random source is injectable ([`Backoff::with_seed`]), so a test or a
//! simulated rack sees the same delays run after run.

use crate::error::Error;
use std::time::Duration;

/// Backoff settings: the first delay, the cap, and the growth per attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The delay before the first retry (before jitter).
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Growth per attempt (2.0 doubles).
    pub factor: f64,
}

impl BackoffConfig {
    /// Doubling from `base` up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        BackoffConfig {
            base,
            max,
            factor: 2.0,
        }
    }

    /// The delay before retry number `attempt` (1 is the first retry), without
    /// jitter: `base * factor^(attempt-1)`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(63) as i32;
        let secs = self.base.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig::new(Duration::from_millis(100), Duration::from_secs(15))
    }
}

/// A backoff in progress: each [`Backoff::next_delay`] gives the next wait,
/// "equal jitter" style: half the capped exponential delay, plus a random part of
/// the other half. So a retry never comes sooner than half the ceiling (the
/// remote gets its rest) and a crowd that failed together spreads out.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::retry::{Backoff, BackoffConfig};
///
/// let config = BackoffConfig::new(Duration::from_secs(1), Duration::from_secs(8));
/// let mut a = Backoff::with_seed(config, 7);
/// let mut b = Backoff::with_seed(config, 7);
/// for attempt in 1..=6 {
///     let d = a.next_delay();
///     assert_eq!(d, b.next_delay(), "same seed, same delays");
///     let ceiling = config.ceiling(attempt);
///     assert!(d >= ceiling / 2 && d <= ceiling);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff with a random source seeded from the operating system.
    pub fn new(config: BackoffConfig) -> Self {
        Backoff {
            config,
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// A backoff whose jitter is drawn from a seeded source: deterministic.
    pub fn with_seed(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            config,
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The delay before the next retry; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.delay_for(self.attempt)
    }

    /// The delay before retry number `attempt`, with jitter, without counting it
    /// (for callers that keep the attempt count in stored state, as the engine does).
    pub fn delay_for(&mut self, attempt: u32) -> Duration {
        let ceiling = self.config.ceiling(attempt);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_nanos().min(u128::from(u64::MAX)) as u64;
        half + Duration::from_nanos(if spread == 0 {
            0
        } else {
            self.rng.u64(0..=spread)
        })
    }

    /// `base` spread over `[base, 1.5 × base]` by the same (seeded) source as
    /// the delays: a wait that someone else set (a server's `Retry-After`)
    /// keeps the jitter that stops a rack from coming back all at once.
    pub fn spread(&mut self, base: Duration) -> Duration {
        let half = (base / 2).as_nanos().min(u128::from(u64::MAX)) as u64;
        base.saturating_add(Duration::from_nanos(if half == 0 {
            0
        } else {
            self.rng.u64(0..=half)
        }))
    }

    /// Retries made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Whether another try may cure an error: the one rule every retry loop asks.
pub trait Retryable {
    /// True when the same call, made again later, may succeed.
    fn is_retryable(&self) -> bool;
}

impl Retryable for Error {
    /// Unreachable, timed out, a remote that reported a failure, a lost
    /// optimistic-concurrency race, or a backend's own fault: worth another try.
    /// Bad credentials, invalid input, an unsupported operation, a missing object
    /// or a refused state transition: not.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::Timeout { .. }
                | Error::Remote { .. }
                | Error::Conflict { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_wait_is_within_half_again_and_follows_the_seed() {
        let config = BackoffConfig::new(Duration::from_millis(100), Duration::from_secs(5));
        let base = Duration::from_secs(2);
        let (mut a, mut b) = (Backoff::with_seed(config, 3), Backoff::with_seed(config, 3));
        let spread: Vec<Duration> = (0..50).map(|_| a.spread(base)).collect();
        assert!(
            spread.iter().all(|d| *d >= base && *d <= base * 3 / 2),
            "{spread:?}"
        );
        assert!(
            spread.iter().any(|d| *d != spread[0]),
            "spread, not one value"
        );
        let again: Vec<Duration> = (0..50).map(|_| b.spread(base)).collect();
        assert_eq!(spread, again, "the same seed, the same waits");
        assert_eq!(a.spread(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn ceiling_doubles_and_caps() {
        let c = BackoffConfig::new(Duration::from_secs(1), Duration::from_secs(10));
        let got: Vec<_> = (1..=6).map(|a| c.ceiling(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(c.ceiling(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_spreads_a_crowd() {
        let c = BackoffConfig::new(Duration::from_secs(8), Duration::from_secs(8));
        let delays: std::collections::BTreeSet<_> = (0..100)
            .map(|seed| Backoff::with_seed(c, seed).next_delay())
            .collect();
        assert!(
            delays.len() > 90,
            "100 machines, {} distinct delays",
            delays.len()
        );
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(4)));
    }

    #[test]
    fn the_rule() {
        let unreachable = Error::Unreachable {
            target: "x".into(),
            reason: "down".into(),
        };
        assert!(unreachable.is_retryable());
        assert!(!Error::AuthenticationFailed { target: "x".into() }.is_retryable());
    }
}
