//! Time limits measured on the caller's [`Clock`], never on tokio's own timer, so
//! a simulated rack under a `ManualClock` times out only when its clock says so.

use std::future::Future;
use std::time::Duration;
use tinker_core::clock::Clock;

/// The time limit passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `fut` until it finishes or `limit` passes on `clock`, whichever is first.
pub(crate) async fn within<F: Future>(
    clock: &dyn Clock,
    limit: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    tokio::select! {
        out = fut => Ok(out),
        () = clock.sleep(limit) => Err(Elapsed),
    }
}

/// A time limit as the whole seconds an error message names (at least 1).
pub(crate) fn whole_seconds(limit: Duration) -> u64 {
    limit.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use std::sync::Arc;
    use tinker_core::clock::ManualClock;

    #[tokio::test]
    async fn the_limit_is_read_on_the_given_clock() {
        let clock = Arc::new(ManualClock::new(Timestamp::UNIX_EPOCH));
        let task = {
            let clock = clock.clone();
            tokio::spawn(async move {
                within(
                    &*clock,
                    Duration::from_secs(30),
                    std::future::pending::<()>(),
                )
                .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "gave up before the clock moved");
        clock.advance(Duration::from_secs(30));
        assert_eq!(task.await.unwrap(), Err(Elapsed));
        assert_eq!(
            within(&*clock, Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
    }
}
