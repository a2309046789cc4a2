//! Passwords never appear in logs or errors: every log line of this test binary is
//! captured (a global subscriber at TRACE), failed logins are made against the real
//! emulators, and neither the logs nor the errors may contain the password.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tinker_bmc::{
    IpmiPower, MockBmc, RedfishAuth, RedfishPower, Resilient, RetryPolicy, Secret, TlsVerification,
};
use tinker_core::PowerController;

const WRONG: &str = "Wr0ng-hunter2-password";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let c = Capture::default();
            let writer = c.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .init();
            c
        })
        .clone()
}

fn check(err: &tinker_core::Error, logs: &Capture) {
    for secret in [WRONG, support::PASSWORD] {
        assert!(
            !err.to_string().contains(secret),
            "error shows a password: {err}"
        );
        assert!(
            !format!("{err:?}").contains(secret),
            "error Debug shows a password: {err:?}"
        );
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        !text.is_empty(),
        "nothing was logged: the check could not fail"
    );
    for secret in [WRONG, support::PASSWORD] {
        assert!(
            !text.contains(secret),
            "a password reached the logs:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_leave_no_password_in_logs_or_errors() {
    let logs = capture();

    let mock = MockBmc::new("m");
    mock.faults().reject_password(true);
    let err = Resilient::new(mock, RetryPolicy::fast())
        .power_state()
        .await
        .unwrap_err();
    check(&err, &logs);

    if let Some(sim) = support::ipmi_sim() {
        let bmc = IpmiPower::new("127.0.0.1", sim.port, support::USER, Secret::new(WRONG));
        assert!(!format!("{bmc:?}").contains(WRONG));
        let err = Resilient::new(bmc, RetryPolicy::fast())
            .power_state()
            .await
            .unwrap_err();
        check(&err, &logs);
        // A successful session's logs hold no password either.
        let ok = IpmiPower::new(
            "127.0.0.1",
            sim.port,
            support::USER,
            Secret::new(support::PASSWORD),
        );
        Resilient::new(ok, RetryPolicy::fast())
            .power_state()
            .await
            .unwrap();
        check(&err, &logs);
    }

    if let Some((sim, _)) = support::sushy(false) {
        let base = format!("http://127.0.0.1:{}", sim.port);
        for auth in [RedfishAuth::Basic, RedfishAuth::Session] {
            let bmc = RedfishPower::new(
                &base,
                support::USER,
                Secret::new(WRONG),
                auth,
                TlsVerification::WebPki,
            )
            .unwrap();
            assert!(!format!("{bmc:?}").contains(WRONG));
            let err = Resilient::new(bmc, RetryPolicy::fast())
                .power_state()
                .await
                .unwrap_err();
            check(&err, &logs);
        }
    }
}
