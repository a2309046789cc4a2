//! Property-based fuzzing of what a Redfish BMC sends back: answer bodies and
//! statuses, resources read from arbitrary JSON, and links. Nothing panics;
//! what is refused is refused with an error that says so. The case count is
//! bounded for CI and raised by hand with `PROPTEST_CASES=100000`.

use super::client::{Answer, Client, RedfishAuth, answer_error};
use super::mapping;
use super::tls::TlsVerification;
use super::wire::{Collection, ComputerSystem, ErrorResponse, Task};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use proptest::prelude::*;
use serde_json::Value;
use tinker_core::{Error, Secret};

/// The suite's case count: 256 unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

/// Arbitrary JSON, with the names Redfish resources use among the keys so the
/// decoders get past their first field.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "\\PC{0,12}",
            Just("On".to_string()),
            Just("Pxe".to_string()),
            Just("Exception".to_string()),
            Just("UEFI".to_string()),
        ]
        .prop_map(Value::String),
    ];
    let key = prop_oneof![
        Just("PowerState"),
        Just("Boot"),
        Just("Actions"),
        Just("#ComputerSystem.Reset"),
        Just("target"),
        Just("ResetType@Redfish.AllowableValues"),
        Just("Members"),
        Just("@odata.id"),
        Just("BootSourceOverrideTarget"),
        Just("BootSourceOverrideEnabled"),
        Just("BootSourceOverrideMode"),
        Just("TaskState"),
        Just("Messages"),
        Just("Message"),
        Just("error"),
        Just("@Message.ExtendedInfo"),
        Just("x"),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn client() -> Client {
    Client::new(
        "https://bmc.example:8443".into(),
        "admin".into(),
        Secret::new("pw"),
        RedfishAuth::Basic,
        &TlsVerification::WebPki,
    )
    .expect("a client")
}

proptest! {
    #![proptest_config(config())]

    /// Any status and body: success or an error naming the BMC, never a panic.
    #[test]
    fn any_answer_is_read_or_refused(status in 100u16..600, body in body()) {
        let answer = Answer {
            status: StatusCode::from_u16(status).expect("a valid status"),
            headers: HeaderMap::new(),
            body: Bytes::from(body),
        };
        match answer_error("redfish://bmc:80", &Method::GET, "/x", &answer) {
            None => prop_assert!(answer.status.is_success()),
            Some(e) => {
                prop_assert!(e.to_string().contains("redfish://bmc:80"), "{}", e);
                prop_assert!(!answer.status.is_success() || answer.status == StatusCode::ACCEPTED);
            }
        }
    }

    /// Any JSON read as each resource Tinker reads: a value or a serde error.
    #[test]
    fn any_json_is_read_as_a_resource_or_refused(v in json()) {
        if let Ok(sys) = serde_json::from_value::<ComputerSystem>(v.clone()) {
            let _ = mapping::power_state(sys.power_state.as_ref());
            let _ = mapping::boot_override(&sys.boot);
        }
        let _ = serde_json::from_value::<Collection>(v.clone());
        let _ = serde_json::from_value::<Task>(v.clone()).map(|t| t.failed());
        let _ = serde_json::from_value::<ErrorResponse>(v).map(|e| e.message().map(str::len));
    }

    /// Any link the BMC sends: followed only on the BMC's own origin, else
    /// refused as insecure (or as not a URL), never a panic.
    #[test]
    fn any_link_stays_on_the_bmc_or_is_refused(
        link in prop_oneof![
            "\\PC{0,40}",
            "(https?:)?//[a-z.]{1,12}(:[0-9]{1,5})?/[a-z/]{0,12}",
            "/redfish/v1/[A-Za-z0-9/._%?#-]{0,30}",
        ]
    ) {
        let c = client();
        match c.resolve(&link) {
            Ok(url) => {
                prop_assert_eq!(url.scheme(), "https");
                prop_assert_eq!(url.host_str(), Some("bmc.example"));
                prop_assert_eq!(url.port_or_known_default(), Some(8443));
                let path = c.link(&link).expect("resolved once, resolves again");
                prop_assert!(path.starts_with('/'), "{}", path);
            }
            Err(e) => prop_assert!(matches!(e, Error::Insecure { .. }), "{:?}", e),
        }
    }
}
