//! Redfish against sushy-tools' emulator, over HTTP and over HTTPS with a
//! self-signed certificate, cross-checked with plain `curl` GETs.

mod support;

use support::{PASSWORD, USER, curl_json, sushy};
use tinker_bmc::{
    BmcEndpoint, RedfishAuth, RedfishPower, Resilient, RetryPolicy, Secret, TlsVerification,
};
use tinker_core::testing::power::{Capabilities, run_all};
use tinker_core::{BootDevice, BootOptions, Error, PowerAction, PowerController};

// sushy's fake driver reads `Once` back as `Continuous`, so persistence is not checked.
const CAPS: Capabilities = Capabilities {
    reads_persistence: false,
    bios_setup: true,
    soft_off: true,
};

fn controller(base: &str, password: &str, tls: TlsVerification) -> RedfishPower {
    RedfishPower::new(base, USER, Secret::new(password), RedfishAuth::Basic, tls).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_conforms_against_sushy_over_http() {
    let Some((sim, _)) = sushy(false) else { return };
    let base = format!("http://127.0.0.1:{}", sim.port);
    run_all(&controller(&base, PASSWORD, TlsVerification::WebPki), CAPS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_conforms_over_https_with_the_bmc_ca() {
    let Some((sim, cert)) = sushy(true) else {
        return;
    };
    let base = format!("https://127.0.0.1:{}", sim.port);
    let bmc = controller(&base, PASSWORD, TlsVerification::CustomCa(cert.unwrap()));
    run_all(&bmc, CAPS).await;
    // An independent client reads the same state.
    bmc.power(PowerAction::On).await.unwrap();
    bmc.set_boot_device(
        BootDevice::Pxe,
        BootOptions {
            persistent: false,
            efi: true,
        },
    )
    .await
    .unwrap();
    let systems = curl_json(&base, "/redfish/v1/Systems");
    let path = systems["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_string();
    let sys = curl_json(&base, &path);
    assert_eq!(sys["PowerState"], "On");
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(sys["Boot"]["BootSourceOverrideMode"], "UEFI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_an_untrusted_ca_are_refused_unless_the_bmc_is_marked_insecure() {
    let Some((sim, _)) = sushy(true) else { return };
    let base = format!("https://127.0.0.1:{}", sim.port);
    let err = controller(&base, PASSWORD, TlsVerification::WebPki)
        .power_state()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // Explicitly insecure, per BMC, through the URL form.
    let endpoint = BmcEndpoint::parse(&format!(
        "redfishs://{USER}@127.0.0.1:{}?insecure=true",
        sim.port
    ))
    .unwrap();
    let bmc = endpoint
        .build(Secret::new(PASSWORD), RetryPolicy::fast())
        .unwrap();
    bmc.power(PowerAction::Off).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_authentication_error_and_not_retried() {
    let Some((sim, _)) = sushy(false) else { return };
    let base = format!("http://127.0.0.1:{}", sim.port);
    let bmc = Resilient::new(
        controller(&base, "wrong", TlsVerification::WebPki),
        RetryPolicy::fast(),
    );
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("redfish://127.0.0.1:{}", sim.port)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_types_the_system_does_not_advertise_are_unsupported_errors() {
    let Some((sim, _)) = sushy(false) else { return };
    let base = format!("http://127.0.0.1:{}", sim.port);
    let bmc = controller(&base, PASSWORD, TlsVerification::WebPki);
    // Every action maps to an advertised type on sushy; check the mapping read.
    for a in [
        PowerAction::On,
        PowerAction::Cycle,
        PowerAction::Reset,
        PowerAction::SoftOff,
        PowerAction::Off,
    ] {
        bmc.power(a).await.unwrap_or_else(|e| panic!("{a:?}: {e}"));
    }
}
