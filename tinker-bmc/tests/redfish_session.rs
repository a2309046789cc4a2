//! Redfish session authentication. sushy-tools' emulator has no SessionService, so
//! this runs against a small in-process Redfish service that issues tokens and
//! expires them, to check login, the token on every call, re-login after a 401,
//! and that a refused login is an authentication error.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tinker_bmc::{RedfishAuth, RedfishPower, Secret, TlsVerification};
use tinker_core::{Error, PowerAction, PowerController, PowerState};

#[derive(Default)]
struct Service {
    logins: u32,
    valid_token: Option<String>,
    on: bool,
    requests_with_basic: u32,
}

async fn handle(state: Arc<Mutex<Service>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body: Value =
        serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    if parts.headers.contains_key("authorization") {
        s.requests_with_basic += 1;
    }
    let reply = |status: StatusCode, v: Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap()
    };
    if parts.uri.path() == "/redfish/v1/SessionService/Sessions" {
        if body["UserName"] == "admin" && body["Password"] == "pw" {
            s.logins += 1;
            let token = format!("token-{}", s.logins);
            s.valid_token = Some(token.clone());
            let mut r = reply(StatusCode::CREATED, json!({}));
            r.headers_mut()
                .insert("x-auth-token", token.parse().unwrap());
            r.headers_mut().insert(
                "location",
                "/redfish/v1/SessionService/Sessions/1".parse().unwrap(),
            );
            return r;
        }
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "bad credentials"}}),
        );
    }
    let token = parts
        .headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok());
    if token.is_none() || token != s.valid_token.as_deref() {
        return reply(StatusCode::UNAUTHORIZED, json!({}));
    }
    match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/redfish/v1/Systems") => reply(
            StatusCode::OK,
            json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}),
        ),
        ("GET", "/redfish/v1/Systems/1") => reply(
            StatusCode::OK,
            json!({"PowerState": if s.on { "On" } else { "Off" }, "Boot": {},
                   "Actions": {"#ComputerSystem.Reset": {"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                                "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]}}}),
        ),
        ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
            s.on = body["ResetType"] == "On";
            reply(StatusCode::NO_CONTENT, Value::Null)
        }
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    }
}

async fn serve() -> (String, Arc<Mutex<Service>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(Mutex::new(Service::default()));
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(st, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), state)
}

#[tokio::test]
async fn session_login_token_and_relogin_after_expiry() {
    let (base, state) = serve().await;
    let bmc = RedfishPower::new(
        &base,
        "admin",
        Secret::new("pw"),
        RedfishAuth::Session,
        TlsVerification::WebPki,
    )
    .unwrap();
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    assert_eq!(
        state.lock().unwrap().logins,
        1,
        "one login for several calls"
    );
    // The BMC drops the session: the next call logs in again, once.
    state.lock().unwrap().valid_token = None;
    bmc.power(PowerAction::Off).await.unwrap();
    assert_eq!(state.lock().unwrap().logins, 2);
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(
        state.lock().unwrap().requests_with_basic,
        0,
        "the password went out on every call"
    );
    // A reset type the system does not advertise is refused before it is sent.
    let err = bmc.power(PowerAction::Cycle).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("ForceOff"),
        "lists what the system allows: {err}"
    );
}

#[tokio::test]
async fn a_refused_session_login_is_an_authentication_error() {
    let (base, _) = serve().await;
    let bmc = RedfishPower::new(
        &base,
        "admin",
        Secret::new("nope"),
        RedfishAuth::Session,
        TlsVerification::WebPki,
    )
    .unwrap();
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
}
