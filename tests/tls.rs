//! The worker API over HTTPS: a control plane with a certificate puts its HTTPS
//! URL and the certificate's fingerprint on the machine's kernel line, serves
//! the worker API over HTTPS only, and the agent that pins the fingerprint runs
//! the machine's workflow; an agent pinning another certificate gets nothing.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tinker::actions::agent::{Agent, AgentConfig, HttpTransport, Request, ServerTrust, Transport};
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::model::{Hardware, Template, Workflow};
use tinker::core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink};
use tinker::core::state::WorkflowState;
use tinker::core::worker_api::NextActionRequest;
use tinker::core::{MacAddr, Precondition, Secret, WorkflowStore, WorkflowStoreExt};
use tinker::store::MemoryStore;

const TEMPLATE: &str = r#"version: "0.1"
name: over-tls
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - {name: stream-image, image: tinker/test, timeout: 60}
"#;

/// Runs every action successfully.
#[derive(Debug)]
struct Succeeds;

#[async_trait::async_trait]
impl ActionRuntime for Succeeds {
    async fn run(
        &self,
        _: &ActionSpec,
        _: &dyn OutputSink,
        _: &CancelToken,
    ) -> tinker::core::Result<ActionOutcome> {
        Ok(ActionOutcome::Success)
    }
}

fn word<'a>(script: &'a str, key: &str) -> &'a str {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} on the kernel line: {script}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_pins_the_control_planes_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let identity = tinker::boot::http::tls::TlsIdentity::from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mac = MacAddr([0x02, 0, 0, 0x7e, 0, 1]);
    let me = Ipv4Addr::new(127, 0, 7, 1);
    store
        .put(
            Hardware::new("tls1", mac, me, "255.0.0.0").into(),
            Precondition::Any,
        )
        .await
        .unwrap();
    store
        .put(
            Template::new("over-tls", TEMPLATE).into(),
            Precondition::Any,
        )
        .await
        .unwrap();
    store
        .put(
            Workflow::new("tls1-install", "over-tls", "tls1", mac).into(),
            Precondition::Any,
        )
        .await
        .unwrap();

    let mut listeners = Listeners::bind(Ipv4Addr::LOCALHOST, 0, 0, 0).await.unwrap();
    listeners.https = Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let http = listeners.http_addr().unwrap();
    let mut plane = ControlPlane::new(
        store.clone(),
        Arc::new(tinker::bmc::MockConnector::new()),
        Ipv4Addr::LOCALHOST,
        Secret::new("tls-test-secret"),
    );
    plane.tls = Some(identity.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(plane.serve(listeners, async {
        let _ = stopped.await;
    }));

    // The machine's script, fetched from its own address, over plain HTTP as
    // iPXE does: the HTTPS URL, the fingerprint and the token.
    let script = loop {
        let r = tinker::boot::http::client::request(
            http,
            Some(IpAddr::V4(me)),
            tinker::boot::http::client::Method::GET,
            &format!("/ipxe/{mac}/auto.ipxe"),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
        let text = r.text();
        // Until the engine has turned netboot on, the script boots the disk.
        if text.contains("tinker_token=") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let server = word(&script, "tinker_server=").to_string();
    assert!(server.starts_with("https://"), "{server}");
    let fingerprint = word(&script, "tinker_tls_fingerprint=").to_string();
    assert_eq!(
        fingerprint,
        tinker::boot::http::tls::fingerprint_text(&identity.fingerprint())
    );
    let token = word(&script, "tinker_token=").to_string();

    // The worker API is not on plain HTTP, where the token would travel in
    // the clear.
    let plain = tinker::boot::http::client::request(
        http,
        Some(IpAddr::V4(me)),
        tinker::boot::http::client::Method::POST,
        &format!("/v1/workers/{mac}/next-action"),
        &[("authorization", &format!("Bearer {token}"))],
        format!("{{\"worker_id\":\"{mac}\"}}"),
    )
    .await
    .unwrap();
    // (the plain server takes only GET and HEAD: scripts, assets, metadata).
    assert_eq!(plain.status, 405, "{}", plain.text());

    // An agent pinning another certificate learns nothing and sends nothing.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let wrong =
        tinker::boot::http::tls::certificate_fingerprint(other.cert.pem().as_bytes()).unwrap();
    let impostor = HttpTransport::new(Secret::new(token.clone()))
        .with_local_address(IpAddr::V4(me))
        .with_tls(ServerTrust::Fingerprint(wrong))
        .unwrap();
    let ask = Request::NextAction(NextActionRequest {
        worker_id: mac.to_string(),
        request_id: None,
    });
    assert!(impostor.send(&server, &ask).await.is_err());

    // The agent that pins the right one runs the workflow.
    let transport = HttpTransport::new(Secret::new(token.clone()))
        .with_local_address(IpAddr::V4(me))
        .with_tls(ServerTrust::parse_fingerprint(&fingerprint).unwrap())
        .unwrap();
    let agent = Agent::new(
        AgentConfig::new(server, mac.to_string(), token)
            .with_max_backoff(Duration::from_millis(300))
            .with_max_actions(1),
        Arc::new(Succeeds),
        None,
    )
    .with_transport(Arc::new(transport));
    let summary = tokio::time::timeout(Duration::from_secs(60), agent.run(std::future::pending()))
        .await
        .expect("the agent finishes")
        .unwrap();
    assert_eq!(summary.ran.len(), 1, "{:?}", summary.ran);
    let wf = store
        .workflow("default", "tls1-install")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(wf.state(), Some(WorkflowState::Success));
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
