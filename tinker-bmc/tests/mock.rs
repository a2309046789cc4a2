//! The mock BMC runs the conformance suite, and its faults show the policy
//! wrapper's retries, time limits and session limit.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tinker_bmc::{MockBmc, Resilient, RetryPolicy};
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

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let mock = MockBmc::new("flaky");
    mock.faults().unreachable_for(3);
    let policy = RetryPolicy {
        attempts: 4,
        backoff: Duration::from_millis(20),
        ..RetryPolicy::fast()
    };
    let bmc = Resilient::new(mock.clone(), policy);
    let start = Instant::now();
    bmc.power(PowerAction::On).await.unwrap();
    // 20 + 40 + 50 (capped) ms of backoff at least.
    assert!(
        start.elapsed() >= Duration::from_millis(110),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        mock.calls()
            .iter()
            .filter(|c| c.starts_with("failed"))
            .count(),
        3
    );
    assert!(mock.is_on());

    // One more failure than attempts: the error comes back, naming the BMC.
    mock.faults().unreachable_for(4);
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("mock://flaky"), "{err}");
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

    mock.faults().hang_for(10);
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("power status timed out"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_not_retried() {
    let mock = MockBmc::new("locked");
    mock.faults().reject_password(true);
    let bmc = Resilient::new(mock.clone(), RetryPolicy::fast());
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
    assert_eq!(
        mock.calls().len(),
        1,
        "retried a wrong password: {:?}",
        mock.calls()
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
    assert_eq!(mock.calls().len(), 16);
}
