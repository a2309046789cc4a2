//! `Resilient<P>`: the dependability policy, as a wrapper that implements
//! `PowerController` around any other one (tower's layer idea, object_store's
//! wrappers): a time limit on every call, retries with the project's one
//! [`Backoff`] (capped exponential, with jitter) for errors the one
//! [`Retryable`] rule calls transient, no retry where a retry cannot help (wrong
//! password, unsupported operation), and a limit on concurrent sessions per BMC,
//! since real BMCs fall over under parallel sessions.
//!
//! Time limits and waits are read on a [`Clock`](tinker_core::clock::Clock), so a
//! simulated rack under a `ManualClock` retries on its own schedule.
//!
//! Retrying a power cycle whose answer was lost may cycle twice; the engine only
//! cycles a machine that is about to be netbooted anyway, so that is accepted.

use crate::time::{whole_seconds, within};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::retry::{Backoff, BackoffConfig, Retryable};
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result,
};
use tokio::sync::Semaphore;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// The waits between attempts (jittered, as every backoff in Tinker).
    pub backoff: BackoffConfig,
    /// Time limit of one attempt.
    pub call_timeout: Duration,
    /// Calls to one BMC at once; the rest wait their turn.
    pub max_sessions: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: BackoffConfig::new(Duration::from_millis(500), Duration::from_secs(8)),
            call_timeout: Duration::from_secs(20),
            max_sessions: 2,
        }
    }
}

impl RetryPolicy {
    /// Short delays and limits, for tests and simulations.
    pub fn fast() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: BackoffConfig::new(Duration::from_millis(5), Duration::from_millis(50)),
            call_timeout: Duration::from_secs(2),
            max_sessions: 2,
        }
    }
}

/// Any controller, made dependable.
#[derive(Debug, Clone)]
pub struct Resilient<P> {
    inner: P,
    policy: RetryPolicy,
    sessions: Arc<Semaphore>,
    clock: SharedClock,
    jitter_seed: Option<u64>,
}

impl<P: PowerController> Resilient<P> {
    /// Wraps `inner` with `policy`, timed on the system clock.
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        let sessions = Arc::new(Semaphore::new(policy.max_sessions.max(1)));
        Resilient {
            inner,
            policy,
            sessions,
            clock: SystemClock::shared(),
            jitter_seed: None,
        }
    }

    /// Reads time limits and waits on `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Draws every call's backoff jitter from a source seeded with `seed`, so the
    /// waits are the same run after run (tests, simulations).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// The wrapped controller.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn backoff(&self) -> Backoff {
        match self.jitter_seed {
            Some(seed) => Backoff::with_seed(self.policy.backoff, seed),
            None => Backoff::new(self.policy.backoff),
        }
    }

    /// Whether a call that failed with `error` on attempt number `attempt` gets
    /// another one.
    fn retry(&self, error: &Error, attempt: u32) -> bool {
        error.is_retryable() && attempt < self.policy.attempts
    }

    /// One attempt: a session slot, then the call within the time limit.
    async fn attempt<T>(
        &self,
        target: &str,
        operation: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        // The semaphore lives as long as `self` and is never closed.
        let _permit = self
            .sessions
            .acquire()
            .await
            .map_err(|e| Error::backend("tinker-bmc session limit", e))?;
        within(&*self.clock, self.policy.call_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    target: target.to_string(),
                    operation: operation.to_string(),
                    seconds: whole_seconds(self.policy.call_timeout),
                })
            })
    }

    async fn call<T, F, Fut>(&self, operation: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let target = self.inner.target();
        let mut backoff = self.backoff();
        let mut attempt = 1;
        loop {
            match self.attempt(&target, operation, f()).await {
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!(bmc = %target, operation, attempt, "BMC call succeeded after retries");
                    }
                    return Ok(v);
                }
                Err(e) if self.retry(&e, attempt) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(bmc = %target, operation, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "BMC call failed; retrying");
                    self.clock.sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(bmc = %target, operation, attempt, error = %e, "BMC call failed");
                    return Err(e);
                }
            }
        }
    }
}

#[async_trait]
impl<P: PowerController> PowerController for Resilient<P> {
    fn target(&self) -> String {
        self.inner.target()
    }

    async fn power_state(&self) -> Result<PowerState> {
        self.call("power status", || self.inner.power_state()).await
    }

    async fn power(&self, action: PowerAction) -> Result<()> {
        self.call(&format!("power {action:?}"), || self.inner.power(action))
            .await
    }

    async fn set_boot_device(&self, device: BootDevice, options: BootOptions) -> Result<()> {
        self.call(&format!("boot device {device:?}"), || {
            self.inner.set_boot_device(device, options)
        })
        .await
    }

    async fn boot_override(&self) -> Result<Option<(BootDevice, BootOptions)>> {
        self.call("read boot override", || self.inner.boot_override())
            .await
    }
}
