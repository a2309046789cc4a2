//! `Resilient<P>`: the dependability policy, as a wrapper that implements
//! `PowerController` around any other one (tower's layer idea, object_store's
//! wrappers): a time limit on every call, retries with exponential backoff for
//! transient errors (unreachable, timed out, BMC-reported failure), no retry where
//! a retry cannot help (wrong password, unsupported operation), and a limit on
//! concurrent sessions per BMC, since real BMCs fall over under parallel sessions.
//!
//! Retrying a power cycle whose answer was lost may cycle twice; the engine only
//! cycles a machine that is about to be netbooted anyway, so that is accepted.

use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tinker_core::{
    BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState, Result,
};
use tokio::sync::Semaphore;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// Delay after the first failure; doubled each time.
    pub backoff: Duration,
    /// Longest delay.
    pub max_backoff: Duration,
    /// Time limit of one attempt.
    pub call_timeout: Duration,
    /// Calls to one BMC at once; the rest wait their turn.
    pub max_sessions: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
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
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
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
}

impl<P: PowerController> Resilient<P> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        let sessions = Arc::new(Semaphore::new(policy.max_sessions.max(1)));
        Resilient {
            inner,
            policy,
            sessions,
        }
    }

    /// The wrapped controller.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    async fn call<T, F, Fut>(&self, operation: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let target = self.inner.target();
        let mut delay = self.policy.backoff;
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = self.sessions.acquire().await.map_err(|_| Error::Remote {
                    target: target.clone(),
                    reason: "controller shut down".into(),
                })?;
                match tokio::time::timeout(self.policy.call_timeout, f()).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        target: target.clone(),
                        operation: operation.to_string(),
                        seconds: self.policy.call_timeout.as_secs().max(1),
                    }),
                }
            };
            match result {
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!(bmc = %target, operation, attempt, "BMC call succeeded after retries");
                    }
                    return Ok(v);
                }
                Err(e) if retryable(&e) && attempt < self.policy.attempts => {
                    tracing::warn!(bmc = %target, operation, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "BMC call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.policy.max_backoff);
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

/// Whether a retry may cure this error.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Unreachable { .. } | Error::Timeout { .. } | Error::Remote { .. }
    )
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
