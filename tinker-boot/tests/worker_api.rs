//! The worker API: tokens per machine and per netboot, taken only from the
//! machine's address, and predictable shedding under overload.

use std::sync::Arc;
use std::time::Duration;
use tinker_boot::credentials::{AddressCheck, CallerCheck, worker_token};
use tinker_boot::http::{HttpConfig, HttpServer, client};
use tinker_boot::worker_api::WorkerApi;
use tinker_core::Secret;
use tinker_core::model::{Hardware, Kind, Object, ObjectKey};
use tinker_core::state::WorkflowEvent;
use tinker_core::store::{Applied, Assignment, Change, MachineEvent, Precondition, Versioned};
use tinker_core::{MacAddr, Result, WorkflowStore};
use tinker_store::MemoryStore;

/// A store whose looks at a worker's workflows and claims take a while (when
/// `slow`), to overload the API on purpose, and that counts its event-log
/// writes.
#[derive(Debug)]
struct SlowStore {
    inner: MemoryStore,
    slow: bool,
    /// Calls of `append_event` and of `append_events`.
    event_writes: std::sync::Mutex<(usize, usize)>,
    /// Calls of `hardware_by_mac`.
    mac_lookups: std::sync::atomic::AtomicUsize,
    /// Calls of `claim_next_action_for_request`.
    claims: std::sync::atomic::AtomicUsize,
}

impl SlowStore {
    fn new(slow: bool) -> Self {
        SlowStore {
            inner: MemoryStore::new(),
            slow,
            event_writes: Default::default(),
            mac_lookups: Default::default(),
            claims: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl WorkflowStore for SlowStore {
    async fn put(&self, o: Object, p: Precondition) -> Result<u64> {
        self.inner.put(o, p).await
    }
    async fn get(&self, k: &ObjectKey) -> Result<Option<Versioned<Object>>> {
        self.inner.get(k).await
    }
    async fn list(&self, k: Kind) -> Result<Vec<Versioned<Object>>> {
        self.inner.list(k).await
    }
    async fn delete(&self, k: &ObjectKey, p: Precondition) -> Result<()> {
        self.inner.delete(k, p).await
    }
    async fn hardware_by_mac(&self, m: MacAddr) -> Result<Option<Versioned<Hardware>>> {
        self.mac_lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.hardware_by_mac(m).await
    }
    async fn hardware_by_ip(&self, i: std::net::IpAddr) -> Result<Option<Versioned<Hardware>>> {
        self.inner.hardware_by_ip(i).await
    }
    async fn apply_event(
        &self,
        k: &ObjectKey,
        e: &WorkflowEvent,
        n: jiff::Timestamp,
    ) -> Result<Applied> {
        self.inner.apply_event(k, e, n).await
    }
    async fn claim_next_action_for_request(
        &self,
        w: &str,
        r: Option<&str>,
        n: jiff::Timestamp,
    ) -> Result<Option<Assignment>> {
        self.claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.inner.claim_next_action_for_request(w, r, n).await
    }
    async fn workflows_for_worker(
        &self,
        w: &str,
    ) -> Result<Vec<Versioned<tinker_core::model::Workflow>>> {
        if self.slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.inner.workflows_for_worker(w).await
    }
    async fn append_event(&self, e: MachineEvent) -> Result<()> {
        self.event_writes.lock().unwrap().0 += 1;
        self.inner.append_event(e).await
    }
    async fn append_events(&self, e: Vec<MachineEvent>) -> Result<()> {
        self.event_writes.lock().unwrap().1 += 1;
        self.inner.append_events(e).await
    }
    async fn events(&self, m: &str, l: usize) -> Result<Vec<MachineEvent>> {
        self.inner.events(m, l).await
    }
    fn watch(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.inner.watch()
    }
}

/// A worker API call through the one test client, from a blocking thread
/// (`spawn_blocking` sees the test's runtime; a plain thread gets its own);
/// the status, and the headers and body as text.
fn post(port: u16, path: &str, token: &str, body: &str) -> (u16, String) {
    post_from(None, port, path, token, body)
}

/// [`post`] from a given loopback address (a machine's own).
fn post_from(
    from: Option<std::net::IpAddr>,
    port: u16,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let call = client::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        from,
        client::Method::POST,
        path,
        &headers,
        body.to_string(),
    );
    let resp = match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(call),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(call),
    }
    .expect("an answer");
    // The headers, then the body, as the tests read the whole answer.
    let head: String = resp
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\r\n", v.to_str().unwrap_or_default()))
        .collect();
    (resp.status, format!("{head}\r\n{}", resp.text()))
}

/// Puts a Hardware for `mac` at `address` (netboot on, as `Hardware::new`
/// makes it) and returns its worker's token for the secret `secret`.
async fn machine(
    store: &dyn WorkflowStore,
    secret: &str,
    mac: MacAddr,
    address: [u8; 4],
) -> String {
    let hw = Hardware::new(
        &format!("m-{}", mac.dashed()),
        mac,
        address.into(),
        "255.0.0.0",
    );
    store.put(hw.into(), Precondition::Any).await.unwrap();
    worker_token(&Secret::new(secret), &mac.to_string(), "")
        .expose()
        .to_string()
}

async fn serve(api: WorkerApi, store: Arc<dyn WorkflowStore>) -> u16 {
    let server = HttpServer::new(HttpConfig {
        extra: Some(Arc::new(api)),
        ..HttpConfig::new(store)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.serve(listener, std::future::pending()));
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_open_only_their_own_worker() {
    use tinker_core::testing::mac;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mine = machine(store.as_ref(), "s3cret", mac(1), [127, 0, 0, 1]).await;
    machine(store.as_ref(), "s3cret", mac(2), [127, 0, 0, 2]).await;
    let port = serve(
        WorkerApi::new(store.clone(), Secret::new("s3cret"), 5),
        store,
    )
    .await;
    let (w1, w2) = (mac(1).to_string(), mac(2).to_string());
    tokio::task::spawn_blocking(move || {
        let body = format!("{{\"worker_id\":\"{w1}\"}}");
        let ask = |worker: &str, token: &str| post(port, &format!("/v1/workers/{worker}/next-action"), token, &body).0;
        assert_eq!(ask(&w1, &mine), 200);
        assert_eq!(ask(&w2, &mine), 401, "another worker's endpoint");
        assert_eq!(ask(&w1, "nonsense"), 401);
        assert_eq!(ask(&w1, worker_token(&Secret::new("other"), &w1, "").expose()), 401);
        // The token the old derivation gave (HMAC of the id alone) opens nothing.
        assert_eq!(ask("w1", worker_token(&Secret::new("s3cret"), "w1", "").expose()), 401, "a worker id that is no machine's");
        let report = format!("{{\"worker_id\":\"{w2}\",\"workflow_id\":\"default/x\",\"action_index\":0,\"attempt\":1,\"outcome\":{{\"outcome\":\"success\"}},\"started_at\":null,\"finished_at\":null}}");
        assert_eq!(post(port, &format!("/v1/workers/{w1}/report"), &mine, &report).0, 403, "a report for someone else");
        assert_eq!(post(port, &format!("/v1/workers/{w1}/report"), &mine, "{not json").0, 400);
    })
    .await
    .unwrap();
}

/// A token leaked to another host is no use there; behind NAT (a documented
/// relaxation) it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_taken_only_from_its_machines_address() {
    use tinker_core::testing::mac;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let token = machine(store.as_ref(), "k", mac(3), [127, 0, 0, 3]).await;
    let strict = serve(
        WorkerApi::new(store.clone(), Secret::new("k"), 5),
        store.clone(),
    )
    .await;
    let nat = serve(
        WorkerApi::new(store.clone(), Secret::new("k"), 5).with_caller_check(CallerCheck {
            mode: AddressCheck::BehindNat,
            ..CallerCheck::default()
        }),
        store,
    )
    .await;
    let w = mac(3).to_string();
    tokio::task::spawn_blocking(move || {
        let body = format!("{{\"worker_id\":\"{w}\"}}");
        let path = format!("/v1/workers/{w}/next-action");
        let own = Some(std::net::IpAddr::from([127, 0, 0, 3]));
        let other = Some(std::net::IpAddr::from([127, 0, 0, 99]));
        assert_eq!(post_from(own, strict, &path, &token, &body).0, 200);
        let (code, text) = post_from(other, strict, &path, &token, &body);
        assert_eq!(code, 403, "{text}");
        assert_eq!(post_from(other, nat, &path, &token, &body).0, 200);
    })
    .await
    .unwrap();
}

/// Turning netboot off voids the token; turning it on again issues a new one,
/// and the old one stays void.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_netboot_rotates_the_token() {
    use tinker_core::WorkflowStoreExt;
    use tinker_core::testing::mac;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let first = machine(store.as_ref(), "k", mac(4), [127, 0, 0, 1]).await;
    let port = serve(
        WorkerApi::new(store.clone(), Secret::new("k"), 5),
        store.clone(),
    )
    .await;
    let w = mac(4).to_string();
    let call = move |op: &'static str, token: String| {
        let w = w.clone();
        tokio::task::spawn_blocking(move || {
            let body = match op {
                "next-action" => format!("{{\"worker_id\":\"{w}\"}}"),
                _ => format!(
                    "{{\"worker_id\":\"{w}\",\"workflow_id\":\"default/x\",\"action_index\":0,\"attempt\":1}}"
                ),
            };
            post(port, &format!("/v1/workers/{w}/{op}"), &token, &body)
        })
    };
    let (code, text) = call("next-action", first.clone()).await.unwrap();
    assert_eq!(code, 200);
    assert!(text.contains("\"wait\""), "nothing waits yet: {text}");
    let toggle = |allow: bool, at: i64| {
        let store = store.clone();
        async move {
            let name = format!("m-{}", mac(4).dashed());
            let hw = store.hardware("default", &name).await.unwrap().unwrap();
            let mut value = hw.value;
            value.set_allow_pxe_at(allow, jiff::Timestamp::from_second(at).unwrap());
            store
                .put(value.clone().into(), Precondition::Version(hw.version))
                .await
                .unwrap();
            value
        }
    };
    toggle(false, 1_800_000_000).await;
    let (code, text) = call("next-action", first.clone()).await.unwrap();
    assert_eq!(code, 200);
    assert!(text.contains("netboot is off"), "told to wait: {text}");
    let (code, text) = call("heartbeat", first.clone()).await.unwrap();
    assert_eq!(code, 409, "netboot off: the token opens nothing: {text}");
    let hw = toggle(true, 1_800_000_100).await;
    let (code, _) = call("next-action", first).await.unwrap();
    assert_eq!(code, 401, "the last netboot's token is refused");
    let second = worker_token(&Secret::new("k"), &mac(4).to_string(), hw.netboot_since());
    let (code, _) = call("next-action", second.expose().to_string())
        .await
        .unwrap();
    assert_eq!(code, 200);
}

/// The script that carries a token goes with it only to the machine itself:
/// anyone else who asks by MAC gets the script without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machines_token_goes_only_to_the_machine() {
    use tinker_core::testing::mac;
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let token = machine(store.as_ref(), "k", mac(5), [127, 0, 0, 5]).await;
    let mut config = HttpConfig::new(store.clone());
    config.osie.worker_secret = Some(Secret::new("k"));
    let server = HttpServer::new(config);
    let stats = server.stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    let fetch = |from: [u8; 4]| async move {
        client::request(
            addr,
            Some(from.into()),
            client::Method::GET,
            &format!("/ipxe/{}/auto.ipxe", mac(5)),
            &[],
            Vec::new(),
        )
        .await
        .unwrap()
        .text()
    };
    let own = fetch([127, 0, 0, 5]).await;
    assert!(own.contains(&format!("tinker_token={token}")), "{own}");
    let stranger = fetch([127, 0, 0, 66]).await;
    assert!(
        stranger.contains("worker_id="),
        "the script itself: {stranger}"
    );
    assert!(!stranger.contains("tinker_token"), "{stranger}");
    assert_eq!(
        stats
            .scripts_without_token
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_retry_after() {
    let store: Arc<dyn WorkflowStore> = Arc::new(SlowStore::new(true));
    let mut tokens = Vec::new();
    for i in 0..12u8 {
        let mac = tinker_core::testing::mac(u32::from(i) + 100);
        let token = machine(store.as_ref(), "k", mac, [127, 0, 1, i + 1]).await;
        tokens.push((mac.to_string(), token));
    }
    // Addresses do not matter here: the machines are taken to sit behind NAT.
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5)
        .with_limit(2)
        .with_caller_check(CallerCheck {
            mode: AddressCheck::BehindNat,
            ..CallerCheck::default()
        });
    let port = serve(api, store).await;
    let results = tokio::task::spawn_blocking(move || {
        let handles: Vec<_> = tokens
            .into_iter()
            .map(|(w, token)| {
                std::thread::spawn(move || {
                    post(
                        port,
                        &format!("/v1/workers/{w}/next-action"),
                        &token,
                        &format!("{{\"worker_id\":\"{w}\"}}"),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let ok = results.iter().filter(|(c, _)| *c == 200).count();
    let shed: Vec<_> = results.iter().filter(|(c, _)| *c == 503).collect();
    assert!(ok >= 2, "some were served: {results:?}");
    assert!(!shed.is_empty(), "the rest were shed, not queued");
    assert!(
        shed.iter()
            .all(|(_, b)| b.to_lowercase().contains("retry-after:")),
        "with Retry-After"
    );
}

/// A memory store holding machine `n` (at 127.0.0.1, key `k`) and its
/// workflow `name` of one action: the store, its worker id and its token.
async fn one_action_machine(name: &str, n: u32) -> (Arc<dyn WorkflowStore>, String, String) {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mac = tinker_core::testing::mac(n);
    store
        .put(
            tinker_core::testing::rendered_workflow(name, mac, 1, 600).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let token = machine(store.as_ref(), "k", mac, [127, 0, 0, 1]).await;
    (store, mac.to_string(), token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_reports_and_logs_read_the_time_from_the_given_clock() {
    use tinker_core::WorkflowStoreExt;
    use tinker_core::clock::ManualClock;
    let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let (store, worker, token) = one_action_machine("timed", 7).await;
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5).with_clock(clock.clone());
    let port = serve(api, store.clone()).await;
    let w = worker.clone();
    let t = token.clone();
    let (code, _) = tokio::task::spawn_blocking(move || {
        post(
            port,
            &format!("/v1/workers/{w}/next-action"),
            &t,
            &format!("{{\"worker_id\":\"{w}\"}}"),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    clock.advance(Duration::from_secs(90));
    let w = worker.clone();
    let (code, body) = tokio::task::spawn_blocking(move || {
        let report = format!("{{\"worker_id\":\"{w}\",\"workflow_id\":\"default/timed\",\"action_index\":0,\"attempt\":1,\"outcome\":{{\"outcome\":\"success\"}},\"started_at\":null,\"finished_at\":null}}");
        post(port, &format!("/v1/workers/{w}/report"), &token, &report)
    })
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let wf = store
        .workflow("default", "timed")
        .await
        .unwrap()
        .unwrap()
        .value;
    let (_, action) = wf.status.as_ref().unwrap().actions().next().unwrap();
    assert_eq!(action.execution_start, Some(t0));
    assert_eq!(action.execution_stop, Some(t0 + Duration::from_secs(90)));
}

/// Machine A, with its own valid token, tries B's running action: reporting it,
/// keeping it alive with heartbeats, writing into its output. Each is refused
/// with the one answer a workflow that does not exist gets too (no attempt
/// number, no hint that B's workflow exists), and B's action is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_touch_another_workers_action() {
    use tinker_core::state::ActionState;
    use tinker_core::testing::{mac, rendered_workflow};
    use tinker_core::{Precondition, WorkflowStoreExt};
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let (a, b) = (mac(1).to_string(), mac(2).to_string());
    for (name, worker) in [("wf-a", mac(1)), ("wf-b", mac(2))] {
        store
            .put(
                rendered_workflow(name, worker, 1, 60).into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
    }
    let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let b_claim = store
        .claim_next_action(&b, t0)
        .await
        .unwrap()
        .expect("B's action");
    let port = serve(
        WorkerApi::new(store.clone(), Secret::new("k"), 5),
        store.clone(),
    )
    .await;
    let token = machine(store.as_ref(), "k", mac(1), [127, 0, 0, 1]).await;
    machine(store.as_ref(), "k", mac(2), [127, 0, 0, 2]).await;
    let attempt = b_claim.attempt;
    let (a2, token2) = (a.clone(), token);
    let answers = tokio::task::spawn_blocking(move || {
        let call = |op: &str, workflow: &str, extra: &str| {
            let body = format!(
                "{{\"worker_id\":\"{a2}\",\"workflow_id\":\"{workflow}\",\"action_index\":0,\"attempt\":{attempt}{extra}}}"
            );
            let (code, text) = post(port, &format!("/v1/workers/{a2}/{op}"), &token2, &body);
            // Only the answer's body: the headers carry a date.
            (code, text.rsplit("\r\n\r\n").next().unwrap_or_default().to_string())
        };
        let report = ",\"outcome\":{\"outcome\":\"success\"},\"started_at\":null,\"finished_at\":null";
        let logs = ",\"lines\":[{\"stream\":\"stdout\",\"text\":\"not mine\"}]";
        [
            ("report", call("report", "default/wf-b", report), call("report", "default/nope", report)),
            ("heartbeat", call("heartbeat", "default/wf-b", ""), call("heartbeat", "default/nope", "")),
            ("logs", call("logs", "default/wf-b", logs), call("logs", "default/nope", logs)),
        ]
    })
    .await
    .unwrap();
    for (op, on_b, on_nothing) in answers {
        assert_eq!(on_b.0, 409, "{op} on B's action: {on_b:?}");
        assert_eq!(
            on_b, on_nothing,
            "{op}: B's workflow looks like no workflow"
        );
        assert!(
            !on_b.1.contains(&attempt.to_string()),
            "{op} leaks the claim: {on_b:?}"
        );
    }
    let wf = store
        .workflow("default", "wf-b")
        .await
        .unwrap()
        .unwrap()
        .value;
    let (_, action) = wf.status.as_ref().unwrap().action(0).unwrap();
    assert_eq!(
        action.state,
        ActionState::Running,
        "B's action is untouched"
    );
    assert_eq!(action.last_heartbeat, Some(t0), "A kept nothing alive");
    assert!(
        store.events(&a, 100).await.unwrap().is_empty(),
        "A wrote no output"
    );
}

/// A batch of output lines is one store write (one transaction, one commit),
/// not one per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_batch_is_one_store_write() {
    use tinker_core::testing::{mac, rendered_workflow};
    let slow = Arc::new(SlowStore::new(false));
    let store: Arc<dyn WorkflowStore> = slow.clone();
    let worker = mac(9).to_string();
    store
        .put(
            rendered_workflow("logged", mac(9), 1, 600).into(),
            Precondition::Absent,
        )
        .await
        .unwrap();
    let claim = store
        .claim_next_action(&worker, jiff::Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let token = machine(store.as_ref(), "k", mac(9), [127, 0, 0, 1]).await;
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5);
    let port = serve(api, store.clone()).await;
    let lines: Vec<String> = (0..300)
        .map(|i| format!("{{\"stream\":\"stdout\",\"text\":\"line {i}\"}}"))
        .collect();
    let body = format!(
        "{{\"worker_id\":\"{worker}\",\"workflow_id\":\"default/logged\",\"action_index\":0,\"attempt\":{},\"lines\":[{}]}}",
        claim.attempt,
        lines.join(",")
    );
    let w = worker.clone();
    let (code, text) = tokio::task::spawn_blocking(move || {
        post(port, &format!("/v1/workers/{w}/logs"), &token, &body)
    })
    .await
    .unwrap();
    assert_eq!(code, 204, "{text}");
    assert_eq!(store.events(&worker, 1000).await.unwrap().len(), 300);
    assert_eq!(
        *slow.event_writes.lock().unwrap(),
        (0, 1),
        "one append_events for the batch, no append_event per line"
    );
}

/// The storm's lost answers: an agent whose report's answer never came sends
/// it again. The same outcome under the same claim is answered 200 with the
/// workflow's state, and writes nothing; another outcome is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_sent_again_after_a_lost_answer_is_answered_ok_and_writes_nothing() {
    use tinker_core::WorkflowStoreExt;
    let (store, worker, token) = one_action_machine("once", 8).await;
    let port = serve(
        WorkerApi::new(store.clone(), Secret::new("k"), 5),
        store.clone(),
    )
    .await;
    let call = |path: &'static str, body: String| {
        let (w, t) = (worker.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            post(port, &format!("/v1/workers/{w}/{path}"), &t, &body)
        })
    };
    let claim = call("next-action", format!("{{\"worker_id\":\"{worker}\"}}"));
    assert_eq!(claim.await.unwrap().0, 200);
    let report = |outcome: &str| {
        format!(
            "{{\"worker_id\":\"{worker}\",\"workflow_id\":\"default/once\",\"action_index\":0,\"attempt\":1,\"outcome\":{outcome},\"started_at\":null,\"finished_at\":null}}"
        )
    };
    let success = report("{\"outcome\":\"success\"}");
    let (code, body) = call("report", success.clone()).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let version = store
        .workflow("default", "once")
        .await
        .unwrap()
        .unwrap()
        .version;
    for _ in 0..2 {
        let (code, again) = call("report", success.clone()).await.unwrap();
        assert_eq!(code, 200, "the same report again: {again}");
        assert_eq!(again, body, "the same answer as the first time");
    }
    assert_eq!(
        store
            .workflow("default", "once")
            .await
            .unwrap()
            .unwrap()
            .version,
        version,
        "a repeated report is not written"
    );
    let failed = report("{\"outcome\":\"failed\",\"exit_code\":1,\"message\":\"late\"}");
    let (code, text) = call("report", failed).await.unwrap();
    assert_eq!(code, 409, "another outcome for that claim: {text}");
}

/// An agent calls several times per action, each call naming its machine by
/// MAC: the machine's Hardware is read from the store once, then again only
/// after the store announces a change to it (and the change is seen: a
/// netboot turned off answers "netboot is off" at the very next call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_hardware_is_read_once_until_it_changes() {
    use std::sync::atomic::Ordering;
    use tinker_core::WorkflowStoreExt;
    use tinker_core::testing::mac;
    let counting = Arc::new(SlowStore::new(false));
    let store: Arc<dyn WorkflowStore> = counting.clone();
    let token = machine(store.as_ref(), "k", mac(6), [127, 0, 0, 1]).await;
    let port = serve(
        WorkerApi::new(store.clone(), Secret::new("k"), 5),
        store.clone(),
    )
    .await;
    let w = mac(6).to_string();
    let ask = {
        let (w, token) = (w.clone(), token.clone());
        move || {
            let (w, token) = (w.clone(), token.clone());
            tokio::task::spawn_blocking(move || {
                post(
                    port,
                    &format!("/v1/workers/{w}/next-action"),
                    &token,
                    &format!("{{\"worker_id\":\"{w}\"}}"),
                )
            })
        }
    };
    for _ in 0..5 {
        let (code, text) = ask().await.unwrap();
        assert_eq!(code, 200, "{text}");
        assert!(text.contains("no action is waiting"), "{text}");
    }
    assert_eq!(counting.mac_lookups.load(Ordering::Relaxed), 1);
    let name = format!("m-{}", mac(6).dashed());
    let hw = store.hardware("default", &name).await.unwrap().unwrap();
    let mut value = hw.value;
    // The same netboot (the token stays good), but turned off.
    let since = value.netboot_since().to_string();
    value.set_allow_pxe(false);
    assert_eq!(value.netboot_since(), since);
    store
        .put(value.into(), Precondition::Version(hw.version))
        .await
        .unwrap();
    let (code, text) = ask().await.unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("netboot is off"),
        "the change is seen: {text}"
    );
    let (code, _) = ask().await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        counting.mac_lookups.load(Ordering::Relaxed),
        2,
        "read again once after the change"
    );
}

/// A question for work from worker `w` with `Prefer: {prefer}`.
async fn ask_for_work(port: u16, w: &str, token: &str, prefer: &str) -> client::ClientResponse {
    let auth = format!("Bearer {token}");
    client::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        None,
        client::Method::POST,
        &format!("/v1/workers/{w}/next-action"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("prefer", prefer),
        ],
        format!("{{\"worker_id\":\"{w}\"}}"),
    )
    .await
    .expect("an answer")
}

/// Long poll (`Prefer: wait=N`, RFC 7240): a worker whose workflow has no
/// action for it yet (`before`) asks once and is answered with its action as
/// soon as the workflow is ready (`ready` makes it so), not when the wait runs
/// out; meanwhile it read the worker's workflows once, not once per poll, and
/// claimed nothing: it claims once, when a look finds an action ready.
async fn a_waiting_worker_is_answered_once(
    n: u32,
    before: tinker_core::model::Workflow,
    ready: impl FnOnce(tinker_core::model::Workflow) -> tinker_core::model::Workflow,
) {
    use std::sync::atomic::Ordering;
    use tinker_core::WorkflowStoreExt;
    use tinker_core::testing::mac;
    let counting = Arc::new(SlowStore::new(false));
    let store: Arc<dyn WorkflowStore> = counting.clone();
    let name = before.metadata.name.clone();
    store
        .put(before.into(), Precondition::Absent)
        .await
        .unwrap();
    let token = machine(store.as_ref(), "k", mac(n), [127, 0, 0, 1]).await;
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5);
    let port = serve(api.clone(), store.clone()).await;
    let w = mac(n).to_string();
    let asked =
        tokio::spawn(async move { ask_for_work(port, &w, &token, "respond-async, wait=20").await });
    // Until the request waits (a guard of 2,000 turns, not a timing).
    for _ in 0..2000 {
        if api.stats().waits.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.stats().waits.load(Ordering::Relaxed), 1);
    assert_eq!(counting.claims.load(Ordering::Relaxed), 0);
    assert!(!asked.is_finished(), "nothing to run yet: it waits");
    let found = store.workflow("default", &name).await.unwrap().unwrap();
    store
        .put(
            ready(found.value).into(),
            Precondition::Version(found.version),
        )
        .await
        .unwrap();
    let resp = asked.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.text().contains("\"status\":\"action\""),
        "answered with the action: {}",
        resp.text()
    );
    assert_eq!(resp.header("preference-applied"), Some("wait=20"));
    assert_eq!(
        counting.claims.load(Ordering::Relaxed),
        1,
        "claimed only once an action was ready"
    );
    let stats = api.stats();
    assert_eq!(
        (
            stats.waits.load(Ordering::Relaxed),
            stats.woken.load(Ordering::Relaxed),
            stats.waited_out.load(Ordering::Relaxed)
        ),
        (1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_worker_gets_its_action_as_soon_as_its_machine_is_ready() {
    use tinker_core::model::MachinePhase;
    use tinker_core::testing::{mac, rendered_workflow};
    // A machine without a BMC (nothing power-cycles it): its agent is the
    // one that asked.
    let mut wf = rendered_workflow("prepared", mac(7), 1, 600);
    let machine = &mut wf.status.as_mut().unwrap().machine;
    machine.phase = MachinePhase::Preparing;
    machine.no_bmc = true;
    a_waiting_worker_is_answered_once(7, wf, |mut wf| {
        wf.status.as_mut().unwrap().machine.phase = MachinePhase::Ready;
        wf
    })
    .await;
}

/// A worker that waits while its machine is prepared through a BMC is gone
/// once the engine power-cycles the machine (its connection may not even
/// close): the question is answered "ask again now" rather than handed the
/// action, which goes to the agent of the new boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_across_a_power_cycle_hands_out_nothing() {
    use std::sync::atomic::Ordering;
    use tinker_core::WorkflowStoreExt;
    use tinker_core::model::MachinePhase;
    use tinker_core::testing::{mac, rendered_workflow};
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mut wf = rendered_workflow("cycled", mac(13), 1, 600);
    wf.status.as_mut().unwrap().machine.phase = MachinePhase::PxeBootSet;
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let token = machine(store.as_ref(), "k", mac(13), [127, 0, 0, 1]).await;
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5);
    let port = serve(api.clone(), store.clone()).await;
    let w = mac(13).to_string();
    let (w2, t2) = (w.clone(), token.clone());
    let asked = tokio::spawn(async move { ask_for_work(port, &w2, &t2, "wait=20").await });
    for _ in 0..2000 {
        if api.stats().waits.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.stats().waits.load(Ordering::Relaxed), 1);
    let found = store.workflow("default", "cycled").await.unwrap().unwrap();
    let mut cycled = found.value;
    cycled
        .status
        .as_mut()
        .unwrap()
        .machine
        .done(tinker_core::model::MachineStep::PowerCycle, false);
    store
        .put(cycled.into(), Precondition::Version(found.version))
        .await
        .unwrap();
    let resp = asked.await.unwrap();
    let answer: tinker_core::worker_api::NextActionResponse =
        serde_json::from_str(&resp.text()).unwrap();
    assert!(
        matches!(
            answer,
            tinker_core::worker_api::NextActionResponse::Wait {
                retry_after_seconds: 0,
                ..
            }
        ),
        "{answer:?}"
    );
    // The agent of the new boot asks and gets the action.
    let resp = ask_for_work(port, &w, &token, "wait=20").await;
    assert!(
        resp.text().contains("\"status\":\"action\""),
        "{}",
        resp.text()
    );
}

/// An agent that boots before the engine renders its workflow waits on it
/// too (found by its hardware map), and is answered once it is rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_workflow_is_not_rendered_yet_waits_for_it() {
    use tinker_core::testing::{mac, rendered_workflow};
    // Rendered for a machine without a BMC: nothing power-cycles it.
    let mut rendered = rendered_workflow("unrendered", mac(8), 1, 600);
    rendered.status.as_mut().unwrap().machine.no_bmc = true;
    let mut before = rendered.clone();
    before.status = None;
    a_waiting_worker_is_answered_once(8, before, move |mut wf| {
        wf.status = rendered.status;
        wf
    })
    .await;
}

/// A wait with nothing to run runs out: the answer is "no action yet", to
/// be asked again at once (the worker asked to wait; it has waited), and the
/// wait is counted as run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_says_ask_again_now() {
    use std::sync::atomic::Ordering;
    use tinker_core::model::MachinePhase;
    use tinker_core::testing::{mac, rendered_workflow};
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mut wf = rendered_workflow("slow", mac(12), 1, 600);
    wf.status.as_mut().unwrap().machine.phase = MachinePhase::Preparing;
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let token = machine(store.as_ref(), "k", mac(12), [127, 0, 0, 1]).await;
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5);
    let port = serve(api.clone(), store.clone()).await;
    let resp = ask_for_work(port, &mac(12).to_string(), &token, "wait=1").await;
    assert_eq!(resp.status, 200);
    let answer: tinker_core::worker_api::NextActionResponse =
        serde_json::from_str(&resp.text()).unwrap();
    assert!(
        matches!(
            answer,
            tinker_core::worker_api::NextActionResponse::Wait {
                retry_after_seconds: 0,
                ..
            }
        ),
        "{answer:?}"
    );
    assert_eq!(resp.header("preference-applied"), Some("wait=1"));
    let stats = api.stats();
    assert_eq!(
        (
            stats.waits.load(Ordering::Relaxed),
            stats.waited_out.load(Ordering::Relaxed)
        ),
        (1, 1)
    );
}

/// The cached Hardware that decides who a worker is, is read again after
/// `MAX_CACHED_AGE` even when the store announces no change (its feed may
/// have gone quiet: a lost LISTEN connection would otherwise keep a void
/// token good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_hardware_is_read_again_once_it_is_old() {
    use std::sync::atomic::Ordering;
    use tinker_core::clock::ManualClock;
    use tinker_core::testing::mac;
    let counting = Arc::new(SlowStore::new(false));
    let store: Arc<dyn WorkflowStore> = counting.clone();
    let token = machine(store.as_ref(), "k", mac(14), [127, 0, 0, 1]).await;
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5).with_clock(clock.clone());
    let port = serve(api, store.clone()).await;
    let w = mac(14).to_string();
    for _ in 0..3 {
        let resp = ask_for_work(port, &w, &token, "wait=0").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(counting.mac_lookups.load(Ordering::Relaxed), 1);
    clock.advance(tinker_boot::worker_core::MAX_CACHED_AGE - Duration::from_secs(1));
    ask_for_work(port, &w, &token, "wait=0").await;
    assert_eq!(
        counting.mac_lookups.load(Ordering::Relaxed),
        1,
        "still fresh"
    );
    clock.advance(Duration::from_secs(1));
    ask_for_work(port, &w, &token, "wait=0").await;
    assert_eq!(
        counting.mac_lookups.load(Ordering::Relaxed),
        2,
        "old: read again"
    );
    ask_for_work(port, &w, &token, "wait=0").await;
    assert_eq!(counting.mac_lookups.load(Ordering::Relaxed), 2);
}

/// Waiting questions are bounded: past the limit a question is answered at
/// once (ask again after the usual pause), as without `Prefer: wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_waiting_limit_a_question_is_answered_at_once() {
    use std::sync::atomic::Ordering;
    use tinker_core::model::MachinePhase;
    use tinker_core::testing::{mac, rendered_workflow};
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mut tokens = Vec::new();
    for (n, last) in [(15, 1), (16, 2)] {
        let mut wf = rendered_workflow(&format!("busy{n}"), mac(n), 1, 600);
        wf.status.as_mut().unwrap().machine.phase = MachinePhase::Preparing;
        store.put(wf.into(), Precondition::Absent).await.unwrap();
        tokens.push(machine(store.as_ref(), "k", mac(n), [127, 0, 0, last]).await);
    }
    let api = WorkerApi::new(store.clone(), Secret::new("k"), 5).with_max_waiting(1);
    let port = serve(api.clone(), store.clone()).await;
    let (w, t) = (mac(15).to_string(), tokens[0].clone());
    let first = tokio::spawn(async move { ask_for_work(port, &w, &t, "wait=20").await });
    for _ in 0..2000 {
        if api.stats().waits.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.stats().waits.load(Ordering::Relaxed), 1);
    let w = mac(16).to_string();
    let auth = format!("Bearer {}", tokens[1]);
    let second = client::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Some([127, 0, 0, 2].into()),
        client::Method::POST,
        &format!("/v1/workers/{w}/next-action"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("prefer", "wait=20"),
        ],
        format!("{{\"worker_id\":\"{w}\"}}"),
    )
    .await
    .expect("an answer");
    let answer: tinker_core::worker_api::NextActionResponse =
        serde_json::from_str(&second.text()).unwrap();
    assert!(
        matches!(
            answer,
            tinker_core::worker_api::NextActionResponse::Wait {
                retry_after_seconds: 3,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(!first.is_finished(), "the first still waits");
    first.abort();
}
