//! The operator's page and API: the token as a header or a browser session,
//! never in a URL; a worker's token is not the operator's; a management
//! listener serves the operator and nothing for machines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tinker_boot::credentials::{operator_token, worker_token};
use tinker_boot::http::{HttpConfig, HttpServer, OperatorApi, SESSION_LIFETIME, client};
use tinker_core::clock::ManualClock;
use tinker_core::model::Hardware;
use tinker_core::store::Precondition;
use tinker_core::{Secret, WorkflowStore};
use tinker_store::MemoryStore;

const SECRET: &str = "operator-test-secret";

async fn serve(serves_machines: bool) -> (SocketAddr, Arc<ManualClock>) {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let addr = serve_store(store, clock.clone(), serves_machines).await;
    (addr, clock)
}

/// The operator API over `store` (with its machine `m1` added), on a port of
/// its own.
async fn serve_store(
    store: Arc<dyn WorkflowStore>,
    clock: Arc<ManualClock>,
    serves_machines: bool,
) -> SocketAddr {
    let mac = tinker_core::testing::mac(1);
    store
        .put(
            Hardware::new("m1", mac, [127, 0, 0, 1].into(), "255.0.0.0").into(),
            Precondition::Any,
        )
        .await
        .unwrap();
    let operator =
        OperatorApi::new(store.clone(), operator_token(&Secret::new(SECRET))).with_clock(clock);
    let mut config = HttpConfig::new(store);
    config.extra = Some(Arc::new(operator));
    config.serves_machines = serves_machines;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(HttpServer::new(config).serve(listener, std::future::pending()));
    addr
}

async fn call(
    addr: SocketAddr,
    method: client::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> client::ClientResponse {
    client::request(addr, None, method, path, headers, body.to_string())
        .await
        .unwrap()
}

/// Signs in as a browser does; the session cookie as a `Cookie` header value.
async fn sign_in(addr: SocketAddr) -> String {
    let token = operator_token(&Secret::new(SECRET));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let body = format!("token={}", token.expose());
    let signed_in = call(addr, client::Method::POST, "/login", &form, &body).await;
    assert_eq!(signed_in.status, 303);
    let cookie = signed_in.headers["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

/// The status of a GET with these headers.
async fn status(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    call(addr, client::Method::GET, path, headers, "")
        .await
        .status
}

#[tokio::test]
async fn the_token_opens_the_api_as_a_header_never_in_a_url() {
    let (addr, _) = serve(true).await;
    let token = operator_token(&Secret::new(SECRET));
    let bearer = format!("Bearer {}", token.expose());
    let get = |path: String, auth: Option<String>| async move {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        call(addr, client::Method::GET, &path, &headers, "").await
    };
    assert_eq!(get("/api/v1/hardware".into(), None).await.status, 401);
    let ok = get("/api/v1/hardware".into(), Some(bearer.clone())).await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("m1"));
    // In a URL, the token opens nothing: not the API, not the page.
    let in_url = format!("/api/v1/hardware?token={}", token.expose());
    assert_eq!(get(in_url, None).await.status, 401);
    // The page holds no data of its own: it sends a browser without a
    // session to the sign-in form.
    let page = get(format!("/status?token={}", token.expose()), None).await;
    assert!(!page.text().contains("m1"), "{}", page.text());
    assert!(page.text().contains("/login"));
    let form = get("/login".into(), None).await;
    assert!(form.text().contains("name=\"token\""), "the sign-in form");
    // A worker whose id is "operator" does not hold the operator's token.
    let worker = worker_token(&Secret::new(SECRET), "operator", "");
    let as_worker = format!("Bearer {}", worker.expose());
    assert_eq!(
        get("/api/v1/hardware".into(), Some(as_worker)).await.status,
        401
    );
}

#[tokio::test]
async fn a_browser_signs_in_once_and_holds_a_strict_http_only_cookie() {
    let (addr, clock) = serve(true).await;
    let token = operator_token(&Secret::new(SECRET));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = call(addr, client::Method::POST, "/login", &form, "token=nope").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    let signed_in = call(
        addr,
        client::Method::POST,
        "/login",
        &form,
        &format!("token={}", token.expose()),
    )
    .await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.headers["location"], "/status");
    let cookie = signed_in.headers["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains(token.expose()),
        "the cookie is not the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = [("cookie", session.as_str())];
    let api = call(
        addr,
        client::Method::GET,
        "/api/v1/workflows",
        &with_cookie,
        "",
    )
    .await;
    assert_eq!(api.status, 200);
    let page = call(addr, client::Method::GET, "/status", &with_cookie, "").await;
    assert!(page.text().contains("id=\"workflows\""), "{}", page.text());
    assert_eq!(page.headers["x-frame-options"], "DENY");
    // A made-up session opens nothing.
    let forged = [("cookie", "tinker_session=00ff")];
    assert_eq!(
        call(addr, client::Method::GET, "/api/v1/workflows", &forged, "")
            .await
            .status,
        401
    );
    // Sessions end.
    clock.advance(SESSION_LIFETIME + Duration::from_secs(1));
    assert_eq!(status(addr, "/api/v1/workflows", &with_cookie).await, 401);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let (addr, _) = serve(true).await;
    let session = sign_in(addr).await;
    let with_cookie = [("cookie", session.as_str())];
    assert_eq!(status(addr, "/api/v1/workflows", &with_cookie).await, 200);
    let out = call(addr, client::Method::POST, "/logout", &with_cookie, "").await;
    assert_eq!(out.status, 303);
    assert_eq!(status(addr, "/api/v1/workflows", &with_cookie).await, 401);
}

#[tokio::test]
async fn a_management_listener_serves_the_operator_and_nothing_for_machines() {
    let (addr, _) = serve(false).await;
    let token = operator_token(&Secret::new(SECRET));
    let bearer = format!("Bearer {}", token.expose());
    let auth = [("authorization", bearer.as_str())];
    assert_eq!(
        call(addr, client::Method::GET, "/api/v1/hardware", &auth, "")
            .await
            .status,
        200
    );
    let mac = tinker_core::testing::mac(1);
    for path in [
        format!("/ipxe/{mac}/auto.ipxe"),
        "/auto.ipxe".to_string(),
        "/2009-04-04/meta-data/instance-id".to_string(),
        "/metadata".to_string(),
    ] {
        assert_eq!(
            call(addr, client::Method::GET, &path, &[], "").await.status,
            404,
            "{path}"
        );
    }
    assert_eq!(
        call(addr, client::Method::GET, "/metrics", &[], "")
            .await
            .status,
        200
    );
}

/// A Hardware document to apply.
const APPLY: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: m2, namespace: default}\nspec: {interfaces: [{dhcp: {mac: \"02:00:00:00:16:02\", ip: {address: 127.0.0.2, netmask: 255.0.0.0}}}]}\n";

#[tokio::test]
async fn a_session_changes_nothing_without_its_csrf_token_a_bearer_token_needs_none() {
    let (addr, _) = serve(true).await;
    let session = sign_in(addr).await;
    let json = ("content-type", "application/json");
    let cookie = ("cookie", session.as_str());
    // A cross-site form can make the browser send the cookie, but no header:
    // refused, and nothing written.
    for headers in [
        vec![cookie],
        vec![cookie, json],
        vec![cookie, json, ("x-csrf-token", "")],
        vec![cookie, json, ("x-csrf-token", "0123abcd")],
    ] {
        let refused = call(addr, client::Method::POST, "/api/v1/apply", &headers, APPLY).await;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.text());
        assert!(refused.text().contains("CSRF"), "{}", refused.text());
    }
    let hardware = call(addr, client::Method::GET, "/api/v1/hardware", &[cookie], "").await;
    assert!(!hardware.text().contains("\"m2\""), "nothing was applied");
    // A DELETE is state-changing too.
    let delete = call(
        addr,
        client::Method::DELETE,
        "/api/v1/hardware/default/m1",
        &[cookie],
        "",
    )
    .await;
    assert_eq!(delete.status, 403);
    // The page reads its session's token, and then may.
    let answer = call(addr, client::Method::GET, "/api/v1/session", &[cookie], "").await;
    assert_eq!(answer.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let csrf = v["csrfToken"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 64);
    let with_token = [cookie, json, ("x-csrf-token", csrf.as_str())];
    let applied = call(
        addr,
        client::Method::POST,
        "/api/v1/apply",
        &with_token,
        APPLY,
    )
    .await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    // Another session's token is not this one's.
    let other = sign_in(addr).await;
    let crossed = [
        ("cookie", other.as_str()),
        json,
        ("x-csrf-token", csrf.as_str()),
    ];
    let refused = call(addr, client::Method::POST, "/api/v1/apply", &crossed, APPLY).await;
    assert_eq!(refused.status, 403);
    // The operator token as a header needs no CSRF token, and has none.
    let token = operator_token(&Secret::new(SECRET));
    let bearer = format!("Bearer {}", token.expose());
    let auth = [("authorization", bearer.as_str())];
    let applied = call(addr, client::Method::POST, "/api/v1/apply", &auth, APPLY).await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    let answer = call(addr, client::Method::GET, "/api/v1/session", &auth, "").await;
    assert_eq!(answer.text(), r#"{"csrfToken":null}"#);
    // Without any credential, a token alone opens nothing.
    let alone = [json, ("x-csrf-token", csrf.as_str())];
    let refused = call(addr, client::Method::POST, "/api/v1/apply", &alone, APPLY).await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn pages_per_workflow_and_machine_run_only_their_own_scripts() {
    let (addr, _) = serve(true).await;
    for path in [
        "/status",
        "/status/workflows/default/wf1",
        "/status/machines/default/m1",
        "/login",
    ] {
        let page = call(addr, client::Method::GET, path, &[], "").await;
        assert_eq!(page.status, 200, "{path}");
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(page.text().contains("src=\"/status/assets/"), "{path}");
    }
    for (asset, kind) in [
        ("workflow.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let a = call(
            addr,
            client::Method::GET,
            &format!("/status/assets/{asset}"),
            &[],
            "",
        )
        .await;
        assert_eq!((a.status, a.header("content-type")), (200, Some(kind)));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(status(addr, "/status/assets/nope.js", &[]).await, 404);
    // Signing in from a workflow's page goes back to it; never to another site.
    let token = operator_token(&Secret::new(SECRET));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for (next, back) in [
        (
            "%2Fstatus%2Fworkflows%2Fdefault%2Fwf1",
            "/status/workflows/default/wf1",
        ),
        ("https%3A%2F%2Fevil.example%2F", "/status"),
        ("%2F%2Fevil.example", "/status"),
    ] {
        let body = format!("token={}&next={next}", token.expose());
        let signed_in = call(addr, client::Method::POST, "/login", &form, &body).await;
        assert_eq!(signed_in.status, 303);
        assert_eq!(signed_in.header("location"), Some(back));
    }
}

#[tokio::test]
async fn the_timeline_route_answers_for_a_workflow_and_says_where_it_waits() {
    use tinker_core::model::Workflow;
    use tinker_core::store::{EventKind, EventSource, MachineEvent};
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mac = tinker_core::testing::mac(1);
    let mut wf = Workflow::new("wf1", "tpl", "m1", mac);
    wf.status = Some(
        serde_json::from_value(serde_json::json!({
            "state": "PENDING",
            "tasks": [{"name": "os", "agentID": "", "actions": [
                {"id": "", "name": "stream", "image": "x", "state": "PENDING"}]}],
            "machine": {"phase": "ready", "noBmc": true},
        }))
        .unwrap(),
    );
    store.put(wf.into(), Precondition::Any).await.unwrap();
    let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    store
        .append_event(
            MachineEvent::new(
                t0,
                "default/m1",
                EventSource::Engine,
                EventKind::Rendered { actions: 1 },
            )
            .for_workflow("default/wf1"),
        )
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(t0 + Duration::from_secs(12)));
    let addr = serve_store(store, clock, true).await;
    let session = sign_in(addr).await;
    let cookie = [("cookie", session.as_str())];
    let answer = call(
        addr,
        client::Method::GET,
        "/api/v1/workflows/default/wf1/timeline",
        &cookie,
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let tl = &v["timeline"];
    assert_eq!(tl["workflow"], "default/wf1");
    assert_eq!(tl["machine"], "default/m1");
    let stopped = &tl["spans"][tl["stoppedAt"].as_u64().unwrap() as usize];
    assert_eq!(stopped["step"], "dhcp");
    assert_eq!(stopped["outcome"], "pending");
    assert_eq!(v["diagnosis"]["waitingFor"]["stage"], "dhcp");
    assert!(
        v["diagnosis"]["explanation"]
            .as_str()
            .unwrap()
            .contains("12 s ago"),
        "{v}"
    );
    assert_eq!(
        status(addr, "/api/v1/workflows/default/nope/timeline", &cookie).await,
        404
    );
    assert_eq!(
        status(addr, "/api/v1/workflows/default/wf1/timeline", &[]).await,
        401
    );
}

/// Named operators from a tokens file open the API beside the generated token,
/// and [`OperatorApi::caller`] names each, through a bearer header or the
/// session it signed in to.
#[tokio::test]
async fn named_operator_tokens_say_who_calls() {
    use tinker_boot::operators::{OperatorTokens, token_hash_text};
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let file = format!(
        "# the lab's operators\nalice {}\nbob   {}   # on call\n",
        token_hash_text(&Secret::new("alice-token")),
        token_hash_text(&Secret::new("bob-token")),
    );
    let named = OperatorTokens::parse(std::path::Path::new("operators.txt"), &file).unwrap();
    let api = OperatorApi::new(store.clone(), operator_token(&Secret::new(SECRET)))
        .with_operators(&named);
    let mut config = HttpConfig::new(store);
    config.extra = Some(Arc::new(api.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(HttpServer::new(config).serve(listener, std::future::pending()));

    let generated = operator_token(&Secret::new(SECRET)).expose().to_string();
    for (token, who) in [
        ("alice-token", Some("alice")),
        ("bob-token", Some("bob")),
        (generated.as_str(), Some("operator")),
        ("carol-token", None),
    ] {
        let bearer = format!("Bearer {token}");
        let code = status(addr, "/api/v1/hardware", &[("authorization", &bearer)]).await;
        assert_eq!(code, if who.is_some() { 200 } else { 401 }, "{who:?}");
        let req = hyper::Request::builder()
            .header("authorization", &bearer)
            .body(())
            .unwrap();
        assert_eq!(api.caller(&req).map(|n| n.to_string()).as_deref(), who);
    }

    // A browser session carries the name of whoever signed in.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let signed_in = call(
        addr,
        client::Method::POST,
        "/login",
        &form,
        "token=bob-token",
    )
    .await;
    assert_eq!(signed_in.status, 303);
    let cookie = signed_in.headers["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let req = hyper::Request::builder()
        .header("cookie", &cookie)
        .body(())
        .unwrap();
    assert_eq!(api.caller(&req).unwrap().as_str(), "bob");
    let wrong = call(
        addr,
        client::Method::POST,
        "/login",
        &form,
        "token=carol-token",
    )
    .await;
    assert_eq!(wrong.status, 401);
}

/// `GET /api/v1/{kind}?watch=TOKEN` is a long poll: the list at once when it
/// differs from TOKEN's, as soon as a change comes, and as it is once
/// WATCH_WAIT has passed on the API's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_answers_on_a_change_or_at_its_deadline() {
    use tinker_boot::http::WATCH_WAIT;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let api = OperatorApi::new(store.clone(), operator_token(&Secret::new(SECRET)))
        .with_clock(clock.clone());
    let mut config = HttpConfig::new(store.clone());
    config.extra = Some(Arc::new(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(HttpServer::new(config).serve(listener, std::future::pending()));
    let bearer = format!("Bearer {}", operator_token(&Secret::new(SECRET)).expose());
    let watch = |token: String| {
        let bearer = bearer.clone();
        async move {
            let r = call(
                addr,
                client::Method::GET,
                &format!("/api/v1/hardware?watch={token}"),
                &[("authorization", &bearer)],
                "",
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
        }
    };
    let first = watch(String::new()).await;
    let token = first["token"].as_str().unwrap().to_string();
    assert_eq!(first["items"].as_array().unwrap().len(), 0);

    // Nothing changes: the same list once the clock passes the deadline.
    let mut waiting = tokio::spawn(watch(token.clone()));
    let same = loop {
        tokio::select! {
            r = &mut waiting => break r.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(20)) => clock.advance(WATCH_WAIT),
        }
    };
    assert_eq!(same["token"], first["token"]);

    // A change while it waits: answered with the new list.
    let waiting = tokio::spawn(watch(token.clone()));
    store
        .put(
            Hardware::new(
                "m9",
                tinker_core::testing::mac(9),
                [127, 0, 0, 9].into(),
                "255.0.0.0",
            )
            .into(),
            Precondition::Any,
        )
        .await
        .unwrap();
    let changed = waiting.await.unwrap();
    assert_ne!(changed["token"], first["token"]);
    assert_eq!(changed["items"][0]["value"]["metadata"]["name"], "m9");
}

/// Guessing is bounded per address: after 20 wrong tokens (on the form or as
/// a bearer header) the address is answered 429, the right token included,
/// until its budget refills on the API's clock. Before, guesses were unlimited.
#[tokio::test]
async fn wrong_tokens_from_an_address_are_bounded() {
    let (addr, clock) = serve(true).await;
    let token = operator_token(&Secret::new(SECRET));
    let right = format!("Bearer {}", token.expose());
    let form = [("content-type", "application/x-www-form-urlencoded")];
    for i in 0..20 {
        let guess = if i % 2 == 0 {
            call(addr, client::Method::POST, "/login", &form, "token=guess")
                .await
                .status
        } else {
            status(
                addr,
                "/api/v1/hardware",
                &[("authorization", "Bearer guess")],
            )
            .await
        };
        assert_ne!(guess, 429, "guess {i} is within the budget");
    }
    let blocked = status(addr, "/api/v1/hardware", &[("authorization", &right)]).await;
    assert_eq!(blocked, 429, "the right token too: nothing is checked");
    let form_blocked = call(addr, client::Method::POST, "/login", &form, "token=x").await;
    assert_eq!(form_blocked.status, 429);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        status(addr, "/api/v1/hardware", &[("authorization", &right)]).await,
        200,
        "one more try after 10 s, and it is right"
    );
}
