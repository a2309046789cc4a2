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

/// An in-process BMC that answers only the RMCP ping and Get Channel
/// Authentication Capabilities, with `caps` (the answer's data after the
/// completion code), and records every other command it is sent. Nothing it
/// records can be answered: a client that goes on is a client that downgraded.
struct FakeBmc {
    port: u16,
    /// Every packet received, as (RMCP class, IPMI command or 0).
    seen: std::sync::Arc<std::sync::Mutex<Vec<(u8, u8)>>>,
}

impl FakeBmc {
    async fn start(caps: Vec<u8>) -> FakeBmc {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let p = &buf[..n];
                let class = p.get(3).copied().unwrap_or(0);
                // Session header with auth type "none": the IPMB message starts at 14.
                let cmd = if class == 0x07 && p.get(4) == Some(&0) {
                    p.get(19).copied().unwrap_or(0)
                } else {
                    0
                };
                log.lock().unwrap().push((class, cmd));
                let reply = match (class, cmd) {
                    (0x06, _) => pong(p.get(9).copied().unwrap_or(0)),
                    (0x07, 0x38) => caps_answer(p.get(18).copied().unwrap_or(0), &caps),
                    _ => continue,
                };
                let _ = socket.send_to(&reply, from).await;
            }
        });
        FakeBmc { port, seen }
    }

    fn seen(&self) -> Vec<(u8, u8)> {
        self.seen.lock().unwrap().clone()
    }
}

/// An ASF pong that says "IPMI supported".
fn pong(tag: u8) -> Vec<u8> {
    let mut p = vec![
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, tag, 0x00, 0x10,
    ];
    p.extend_from_slice(&[0, 0, 0x11, 0xbe, 0, 0, 0, 0, 0x81, 0x00, 0, 0, 0, 0, 0, 0]);
    p
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI 1.5 session-less answer to Get Channel Authentication Capabilities.
fn caps_answer(rq_seq_lun: u8, data: &[u8]) -> Vec<u8> {
    let head = [0x81, 0x07 << 2];
    let mut msg = head.to_vec();
    msg.push(checksum(&head));
    let mut tail = vec![0x20, rq_seq_lun, 0x38, 0x00];
    tail.extend_from_slice(data);
    msg.extend_from_slice(&tail);
    msg.push(checksum(&tail));
    let mut p = vec![0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    p.push(msg.len() as u8);
    p.extend_from_slice(&msg);
    p
}

/// Capabilities with IPMI 2.0's extension bit but only IPMI 1.5 connections:
/// MD5, straight password and no authentication offered.
const IPMI15_ONLY_EXTENDED: [u8; 8] = [0x01, 0x80 | 0x15, 0x00, 0x01, 0, 0, 0, 0];
/// Capabilities of an IPMI 1.5 BMC (no extension bit): straight password only.
const IPMI15_ONLY_LEGACY: [u8; 7] = [0x01, 0x10, 0x00, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_offering_only_ipmi_1_5_is_refused_before_the_password_leaves() {
    for caps in [IPMI15_ONLY_EXTENDED.to_vec(), IPMI15_ONLY_LEGACY.to_vec()] {
        let bmc = FakeBmc::start(caps.clone()).await;
        let err = controller(bmc.port, PASSWORD)
            .with_timeout(Duration::from_millis(300))
            .power_state()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Insecure { .. }), "{caps:x?}: {err:?}");
        assert!(!tinker_core::Retryable::is_retryable(&err));
        assert!(err.to_string().contains("IPMI 1.5"), "{err}");
        // The ping and the capabilities request, and nothing after them: no
        // Get Session Challenge (0x39), no Activate Session (0x3a).
        assert_eq!(bmc.seen(), [(0x06, 0), (0x07, 0x38)], "{caps:x?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_over_16_bytes_is_an_error_not_the_anonymous_user() {
    let long = "a-user-of-17-byte";
    assert_eq!(long.len(), 17);
    let err = BmcEndpoint::parse(&format!("ipmi://{long}@127.0.0.1")).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    // Built directly, the controller refuses it before sending anything.
    let bmc = FakeBmc::start(vec![0x01, 0x80 | 0x04, 0x00, 0x02, 0, 0, 0, 0]).await;
    let err = IpmiPower::new("127.0.0.1", bmc.port, long, Secret::new(PASSWORD))
        .with_timeout(Duration::from_millis(300))
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("17 bytes"), "{err}");
    assert_eq!(bmc.seen(), []);
}

/// Property-based fuzzing of the answers an IPMI BMC (or a forger) sends:
/// after a valid pong, any datagrams in answer to the capabilities request and
/// the RMCP+ exchange. The controller never panics and never succeeds on
/// garbage; it refuses with an error that says what happened. Bounded for CI;
/// `PROPTEST_CASES=5000` for a longer run by hand.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        let mut c = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.cases = 48;
        }
        c
    }

    /// A BMC that answers the ping with a pong and every later packet with the
    /// next of `replies` (then nothing).
    async fn scripted(replies: Vec<Vec<u8>>) -> u16 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let p = &buf[..n];
                let reply = if p.get(3) == Some(&0x06) {
                    pong(p.get(9).copied().unwrap_or(0))
                } else {
                    match replies.next() {
                        Some(r) => r,
                        None => continue,
                    }
                };
                let _ = socket.send_to(&reply, from).await;
            }
        });
        port
    }

    /// One datagram: random bytes, a capabilities answer with random data, or
    /// an RMCP+ (payload type 0x10-0x15) header over random bytes.
    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..12))
                .prop_map(|(seq, data)| caps_answer(seq, &data)),
            (0x10u8..0x16, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(ty, rest)| {
                let mut p = vec![0x06, 0x00, 0xff, 0x07, 0x06, ty, 0, 0, 0, 0, 0, 0, 0, 0];
                let len = rest.len() as u16;
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(&rest);
                p
            }),
        ]
    }

    /// An IPMI 2.0 capabilities answer, so the RMCP+ exchange is reached.
    fn ipmi2_caps() -> Vec<u8> {
        caps_answer(0, &[0x01, 0x80 | 0x04, 0x00, 0x02, 0, 0, 0, 0])
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_answer_is_refused_with_a_typed_error(
            ipmi2_first in any::<bool>(),
            replies in prop::collection::vec(datagram(), 0..4),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let err = rt.block_on(async {
                let mut script = Vec::new();
                if ipmi2_first {
                    script.push(ipmi2_caps());
                }
                script.extend(replies);
                let port = scripted(script).await;
                controller(port, PASSWORD)
                    .with_timeout(Duration::from_millis(40))
                    .power_state()
                    .await
                    .expect_err("garbage opened a session")
            });
            prop_assert!(
                matches!(
                    err,
                    Error::Unreachable { .. }
                        | Error::Remote { .. }
                        | Error::Insecure { .. }
                        | Error::Unsupported { .. }
                        | Error::AuthenticationFailed { .. }
                ),
                "{:?}",
                err
            );
        }
    }
}

/// A session kept past the idle limit is replaced before use, not tried: a BMC
/// that has dropped it would let the call wait out every retry of the answer
/// timeout first (9.4 s per call in the VM test before this rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_past_the_limit_is_replaced_before_use() {
    use std::sync::Arc;
    use tinker_bmc::IpmiSessionStats;
    use tinker_core::clock::ManualClock;
    let Some(sim) = ipmi_sim() else { return };
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let bmc = controller(sim.port, PASSWORD)
        .with_idle_limit(Duration::from_secs(20))
        .with_clock(clock.clone());
    bmc.power_state().await.unwrap();
    clock.advance(Duration::from_secs(19));
    bmc.power_state().await.unwrap();
    assert_eq!(
        bmc.session_stats(),
        IpmiSessionStats {
            opened: 1,
            idle_replaced: 0,
            stale_failures: 0
        },
        "a session used within the limit is kept"
    );
    // The idle time counts from the last answer, not from the opening.
    clock.advance(Duration::from_secs(19));
    bmc.power_state().await.unwrap();
    assert_eq!(bmc.session_stats().opened, 1);
    clock.advance(Duration::from_secs(20));
    bmc.power_state().await.unwrap();
    assert_eq!(
        bmc.session_stats(),
        IpmiSessionStats {
            opened: 2,
            idle_replaced: 1,
            stale_failures: 0
        }
    );
}
