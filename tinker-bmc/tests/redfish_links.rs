//! A BMC does not decide where we connect: links it sends (`@odata.id`, an
//! action's `target`) that lead to another host are refused before any request
//! (and so any credential) goes there; an answer's body has a size limit.
//! In-process HTTP services: sushy-tools cannot be made to send such links.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinker_bmc::{RedfishAuth, RedfishPower, Secret, TlsVerification};
use tinker_core::{Error, PowerAction, PowerController, PowerState};

/// An HTTP service answering fixed bodies by path, recording every request.
#[derive(Clone)]
struct Fake {
    base: String,
    answers: Arc<Mutex<HashMap<String, Bytes>>>,
    /// Every request: method, path, whether it carried credentials.
    seen: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            base: format!("http://{}", listener.local_addr().unwrap()),
            answers: Arc::default(),
            seen: Arc::default(),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let f = f.clone();
                        async move { Ok::<_, std::convert::Infallible>(f.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        fake
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let _ = body.collect().await;
        let path = parts.uri.path().to_string();
        self.seen.lock().unwrap().push((
            parts.method.to_string(),
            path.clone(),
            parts.headers.contains_key("authorization"),
        ));
        let answer = self.answers.lock().unwrap().get(&path).cloned();
        let (status, body) = match answer {
            Some(b) => (200, b),
            None if parts.method == "POST" => (204, Bytes::new()),
            None => (404, Bytes::from_static(b"{}")),
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap()
    }

    fn answer(&self, path: &str, body: Value) {
        self.answer_bytes(path, Bytes::from(body.to_string()));
    }

    fn answer_bytes(&self, path: &str, body: Bytes) {
        self.answers.lock().unwrap().insert(path.into(), body);
    }

    fn seen(&self) -> Vec<(String, String, bool)> {
        self.seen.lock().unwrap().clone()
    }

    fn controller(&self) -> RedfishPower {
        RedfishPower::new(
            &self.base,
            "admin",
            Secret::new("pw"),
            RedfishAuth::Basic,
            TlsVerification::WebPki,
        )
        .unwrap()
    }
}

fn system(reset_target: &str) -> Value {
    json!({"PowerState": "Off", "Boot": {},
           "Actions": {"#ComputerSystem.Reset": {"target": reset_target,
                        "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]}}})
}

#[tokio::test]
async fn an_odata_id_on_another_host_is_refused_and_never_requested() {
    let elsewhere = Fake::start().await;
    elsewhere.answer("/redfish/v1/Systems/1", system("/reset"));
    let other = elsewhere.base.trim_start_matches("http:");
    for link in [
        format!("{}/redfish/v1/Systems/1", elsewhere.base),
        format!("{other}/redfish/v1/Systems/1"),
        format!("https:{other}/redfish/v1/Systems/1"),
    ] {
        let bmc = Fake::start().await;
        bmc.answer(
            "/redfish/v1/Systems",
            json!({"Members": [{"@odata.id": link}]}),
        );
        let err = bmc.controller().power_state().await.unwrap_err();
        assert!(matches!(err, Error::Insecure { .. }), "{link}: {err:?}");
        assert!(!tinker_core::Retryable::is_retryable(&err));
        assert!(err.to_string().contains("another host"), "{err}");
    }
    assert_eq!(elsewhere.seen(), [], "a request reached the other host");
}

#[tokio::test]
async fn a_reset_target_on_another_host_is_refused_and_never_posted() {
    let elsewhere = Fake::start().await;
    let bmc = Fake::start().await;
    bmc.answer(
        "/redfish/v1/Systems",
        json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}),
    );
    let target = format!("{}/redfish/v1/Systems/1/Reset", elsewhere.base);
    bmc.answer("/redfish/v1/Systems/1", system(&target));
    let err = bmc.controller().power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err, Error::Insecure { .. }), "{err:?}");
    assert_eq!(elsewhere.seen(), []);
    assert!(bmc.seen().iter().all(|(method, ..)| method == "GET"));
}

#[tokio::test]
async fn links_on_the_bmc_itself_are_followed_whole_or_as_paths() {
    let bmc = Fake::start().await;
    // A whole URL on the BMC's own address, and a target relative to the base.
    bmc.answer(
        "/redfish/v1/Systems",
        json!({"Members": [{"@odata.id": format!("{}/redfish/v1/Systems/1", bmc.base)}]}),
    );
    bmc.answer(
        "/redfish/v1/Systems/1",
        system("redfish/v1/Systems/1/Reset"),
    );
    let power = bmc.controller();
    assert_eq!(power.power_state().await.unwrap(), PowerState::Off);
    power.power(PowerAction::On).await.unwrap();
    let seen = bmc.seen();
    assert!(
        seen.contains(&("POST".into(), "/redfish/v1/Systems/1/Reset".into(), true)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_answer_over_the_body_limit_is_an_error_not_held() {
    let bmc = Fake::start().await;
    // Valid JSON that is too big: 8 MiB of padding after the members.
    let pad = "x".repeat(8 << 20);
    let body =
        format!(r#"{{"Members": [{{"@odata.id": "/redfish/v1/Systems/1"}}], "Pad": "{pad}"}}"#);
    bmc.answer_bytes("/redfish/v1/Systems", Bytes::from(body));
    bmc.answer("/redfish/v1/Systems/1", system("/reset"));
    let err = bmc.controller().power_state().await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("larger than 4 MiB")),
        "{err:?}"
    );
}
