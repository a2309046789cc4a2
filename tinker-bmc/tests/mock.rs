//! The mock BMC runs the conformance suite, and its faults show the policy
//! wrapper's retries, time limits and session limit.

use jiff::Timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinker_bmc::{MockBmc, MockCall, Resilient, RetryPolicy};
use tinker_core::clock::{Clock, ManualClock};
use tinker_core::retry::{Backoff, BackoffConfig};
use tinker_core::testing::power::{Capabilities, run_all};
use tinker_core::{Error, PowerAction, PowerController, PowerState};

const ALL: Capabilities = Capabilities {
    reads_persistence: true,
    bios_setup: true,
    soft_off: true,
};

#[tokio::test]
async fn mock_conforms() {
    run_all(&MockBmc::new("m"), ALL).await;
    run_all(&Resilient::new(MockBmc::new("m"), RetryPolicy::fast()), ALL).await;
}

/// Lets every spawned task run until it waits (current-thread runtime).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn transient_failures_are_retried_with_jittered_backoff_on_the_clock() {
    let start = Timestamp::from_second(1_800_000_000).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let mock = MockBmc::new("flaky");
    mock.faults().unreachable_for(3);
    let policy = RetryPolicy {
        attempts: 4,
        backoff: BackoffConfig::new(Duration::from_millis(20), Duration::from_millis(50)),
        ..RetryPolicy::fast()
    };
    let bmc = Arc::new(
        Resilient::new(mock.clone(), policy.clone())
            .with_clock(clock.clone())
            .with_jitter_seed(7),
    );
    // The waits the policy takes: the same seeded backoff.
    let mut expected = Backoff::with_seed(policy.backoff, 7);
    let delays: Vec<Duration> = (0..3).map(|_| expected.next_delay()).collect();
    for (attempt, d) in (1..).zip(&delays) {
        let ceiling = policy.backoff.ceiling(attempt);
        assert!(*d >= ceiling / 2 && *d <= ceiling, "{d:?} vs {ceiling:?}");
    }
    let call = tokio::spawn({
        let bmc = bmc.clone();
        async move { bmc.power(PowerAction::On).await }
    });
    for (i, delay) in delays.iter().enumerate() {
        settle().await;
        assert_eq!(mock.calls().len(), i + 1);
        clock.advance(*delay - Duration::from_nanos(1));
        settle().await;
        assert_eq!(
            mock.calls().len(),
            i + 1,
            "retried before its wait was over"
        );
        clock.advance(Duration::from_nanos(1));
    }
    call.await.unwrap().unwrap();
    let on = MockCall::Power(PowerAction::On);
    assert_eq!(
        mock.calls(),
        [on.failed(), on.failed(), on.failed(), on.ok()]
    );
    assert_eq!(clock.now(), start + delays.iter().sum::<Duration>());
    assert!(mock.is_on());

    // One more failure than attempts: the error comes back, naming the BMC.
    mock.faults().unreachable_for(4);
    let err = Resilient::new(mock.clone(), policy)
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("mock://flaky"), "{err}");
    assert_eq!(
        mock.calls()[4..],
        [MockCall::ReadPowerState.failed(); 4],
        "four attempts, no more"
    );
}

#[tokio::test]
async fn a_hung_call_is_cut_off_then_retried() {
    let mock = MockBmc::new("slow");
    mock.faults().hang_for(1);
    let policy = RetryPolicy {
        call_timeout: Duration::from_millis(200),
        ..RetryPolicy::fast()
    };
    let bmc = Resilient::new(mock.clone(), policy.clone());
    let start = Instant::now();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited on a hung BMC: {:?}",
        start.elapsed()
    );
    // The hung call never answered; only the retry reached the machine.
    assert_eq!(mock.calls(), [MockCall::ReadPowerState.ok()]);

    mock.faults().hang_for(10);
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("power status timed out"), "{err}");
}

#[tokio::test]
async fn the_time_limit_runs_on_the_clock() {
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let mock = MockBmc::new("slow").with_clock(clock.clone());
    mock.faults().hang_for(1);
    let policy = RetryPolicy {
        attempts: 1,
        call_timeout: Duration::from_secs(20),
        ..RetryPolicy::fast()
    };
    let bmc = Arc::new(Resilient::new(mock.clone(), policy).with_clock(clock.clone()));
    let call = tokio::spawn({
        let bmc = bmc.clone();
        async move { bmc.power_state().await }
    });
    settle().await;
    clock.advance(Duration::from_secs(19));
    settle().await;
    assert!(!call.is_finished(), "cut off before its time limit");
    clock.advance(Duration::from_secs(1));
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { seconds: 20, .. }),
        "{err:?}"
    );
    assert!(mock.calls().is_empty(), "{:?}", mock.calls());
}

#[tokio::test]
async fn a_wrong_password_is_not_retried() {
    let mock = MockBmc::new("locked");
    mock.faults().reject_password(true);
    let bmc = Resilient::new(mock.clone(), RetryPolicy::fast());
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
    assert_eq!(
        mock.calls(),
        [MockCall::Power(PowerAction::On).failed()],
        "retried a wrong password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sessions_are_limited_per_bmc() {
    let mock = MockBmc::new("busy");
    mock.faults().latency(Duration::from_millis(30));
    // Without the wrapper, 16 callers reach the BMC at once.
    let raw = Arc::new(mock.clone());
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let b = raw.clone();
            tokio::spawn(async move { b.power_state().await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(mock.max_concurrent_calls() > 2, "the check could not fail");

    let mock = MockBmc::new("guarded");
    mock.faults().latency(Duration::from_millis(30));
    let bmc = Arc::new(Resilient::new(
        mock.clone(),
        RetryPolicy {
            max_sessions: 2,
            ..RetryPolicy::fast()
        },
    ));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let b = bmc.clone();
            tokio::spawn(async move { b.power_state().await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(mock.max_concurrent_calls(), 2);
    assert_eq!(mock.calls(), [MockCall::ReadPowerState.ok(); 16]);
}
