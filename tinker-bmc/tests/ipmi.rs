//! IPMI against OpenIPMI's `ipmi_sim`, cross-checked with `ipmitool`.

mod support;

use std::time::Duration;
use support::{PASSWORD, USER, ipmi_sim, ipmitool};
use tinker_bmc::{BmcEndpoint, IpmiPower, Resilient, RetryPolicy, Secret};
use tinker_core::retry::BackoffConfig;
use tinker_core::testing::power::{Capabilities, run_all};
use tinker_core::{BootDevice, BootOptions, Error, PowerAction, PowerController, PowerState};

fn controller(port: u16, password: &str) -> IpmiPower {
    IpmiPower::new("127.0.0.1", port, USER, Secret::new(password))
        .with_timeout(Duration::from_millis(800))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_conforms_against_ipmi_sim() {
    let Some(sim) = ipmi_sim() else { return };
    // ipmi_sim keeps the boot device but not its persistence or mode, and turns a
    // soft off into a shutdown request the chassis script answers.
    let caps = Capabilities {
        reads_persistence: false,
        bios_setup: true,
        soft_off: true,
    };
    run_all(&controller(sim.port, PASSWORD), caps).await;
    let log = support::read(&sim.path("calls.log"));
    for call in [
        "set power 1",
        "set power 0",
        "set boot pxe",
        "set boot default",
        "set reset 1",
        "set shutdown 1",
    ] {
        assert!(log.contains(call), "ipmi_sim never saw {call:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_sees_what_we_set() {
    let Some(sim) = ipmi_sim() else { return };
    let bmc = controller(sim.port, PASSWORD);
    bmc.power(PowerAction::Off).await.unwrap();
    assert!(
        ipmitool(&sim, &["chassis", "power", "status"])
            .unwrap()
            .contains("is off")
    );
    bmc.power(PowerAction::On).await.unwrap();
    assert!(
        ipmitool(&sim, &["chassis", "power", "status"])
            .unwrap()
            .contains("is on")
    );
    bmc.set_boot_device(
        BootDevice::Pxe,
        BootOptions {
            persistent: false,
            efi: true,
        },
    )
    .await
    .unwrap();
    let param = ipmitool(&sim, &["chassis", "bootparam", "get", "5"]).unwrap();
    assert!(param.contains("Force PXE"), "{param}");
    // And the other way round: ipmitool sets, we read.
    ipmitool(&sim, &["chassis", "bootdev", "disk"]).unwrap();
    assert_eq!(
        bmc.boot_override().await.unwrap().unwrap().0,
        BootDevice::Disk
    );
    ipmitool(&sim, &["chassis", "power", "off"]).unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_authentication_error_and_not_retried() {
    let Some(sim) = ipmi_sim() else { return };
    let bmc = Resilient::new(
        controller(sim.port, "not-the-password"),
        RetryPolicy::fast(),
    );
    let start = std::time::Instant::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("ipmi://127.0.0.1:{}", sim.port)),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "retried: {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_that_does_not_answer_is_unreachable_after_retries() {
    // Nothing listens on this port: every attempt times out.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = RetryPolicy {
        attempts: 2,
        backoff: BackoffConfig::new(Duration::from_millis(10), Duration::from_millis(50)),
        ..RetryPolicy::fast()
    };
    let bmc = Resilient::new(
        controller(port, PASSWORD).with_timeout(Duration::from_millis(200)),
        policy,
    );
    let err = bmc.power_state().await.unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    assert!(tinker_core::Retryable::is_retryable(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_builds_an_ipmi_controller_from_a_url() {
    let Some(sim) = ipmi_sim() else { return };
    let endpoint = BmcEndpoint::parse(&format!("ipmi://{USER}@127.0.0.1:{}", sim.port)).unwrap();
    let bmc = endpoint
        .build(Secret::new(PASSWORD), RetryPolicy::fast())
        .unwrap();
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
}
