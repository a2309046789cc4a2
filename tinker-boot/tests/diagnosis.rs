//! "Why is it pending?" through the operator API: the real engine prepares a
//! workflow for a machine without a BMC, the machine never PXE-boots, and the
//! API says so; once the machine fetches its iPXE script from the real HTTP
//! server, the answer moves on to the worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tinker_boot::credentials::operator_token;
use tinker_boot::http::{HttpConfig, HttpServer, OperatorApi, client};
use tinker_core::clock::ManualClock;
use tinker_core::engine::{Engine, EngineConfig};
use tinker_core::model::{Disk, Hardware, Kind, ObjectKey, Workflow};
use tinker_core::store::Precondition;
use tinker_core::testing::{mac, template};
use tinker_core::{PowerConnector, PowerController, Secret, WorkflowStore};
use tinker_store::MemoryStore;

const SECRET: &str = "diagnosis-test-secret";

/// No machine has a BMC.
#[derive(Debug)]
struct NoBmcs;

#[async_trait::async_trait]
impl PowerConnector for NoBmcs {
    async fn connect(&self, _: &Hardware) -> tinker_core::Result<Option<Arc<dyn PowerController>>> {
        Ok(None)
    }
}

struct Rig {
    addr: SocketAddr,
    clock: Arc<ManualClock>,
    bearer: String,
}

/// A store with machine `m1` (at 127.0.0.1, so this test's requests come from
/// it) and workflow `wf1` for it, prepared by the real engine, served with the
/// operator API.
async fn rig() -> Rig {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let mut hw = Hardware::new("m1", mac(1), [127, 0, 0, 1].into(), "255.0.0.0");
    // The template writes to the first disk.
    hw.spec.disks.push(Disk {
        device: "/dev/sda".into(),
        extra: Default::default(),
    });
    store.put(hw.into(), Precondition::Absent).await.unwrap();
    store
        .put(template("tpl", 2, 60).into(), Precondition::Absent)
        .await
        .unwrap();
    let wf = Workflow::new("wf1", "tpl", "m1", mac(1));
    store.put(wf.into(), Precondition::Absent).await.unwrap();
    let engine = Engine::new(store.clone(), Arc::new(NoBmcs), EngineConfig::default())
        .with_clock(clock.clone());
    let key = ObjectKey::new(Kind::Workflow, "default", "wf1");
    // Render, enable netboot, find there is no BMC: until nothing is due.
    for _ in 0..10 {
        if engine.reconcile(&key).await.unwrap().is_none() {
            break;
        }
    }
    let Some(tinker_core::model::Object::Workflow(wf)) =
        store.get(&key).await.unwrap().map(|v| v.value)
    else {
        panic!("the workflow is stored")
    };
    let status = wf.status.expect("rendered");
    assert_eq!(status.state, tinker_core::state::WorkflowState::Pending);
    assert!(
        status.machine.no_bmc && !status.machine.is_preparing(),
        "{:?}",
        status.machine
    );
    let token = operator_token(&Secret::new(SECRET));
    let operator = OperatorApi::new(store.clone(), token.clone()).with_clock(clock.clone());
    let mut config = HttpConfig::new(store);
    config.extra = Some(Arc::new(operator));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(config).with_clock(clock.clone());
    tokio::spawn(server.serve(listener, std::future::pending()));
    Rig {
        addr,
        clock,
        bearer: format!("Bearer {}", token.expose()),
    }
}

async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> client::ClientResponse {
    let headers: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
    client::request(
        addr,
        None,
        client::Method::GET,
        path,
        &headers,
        String::new(),
    )
    .await
    .unwrap()
}

async fn diagnosis(r: &Rig) -> serde_json::Value {
    let answer = get(
        r.addr,
        "/api/v1/workflows/default/wf1/diagnosis",
        Some(&r.bearer),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json: serde_json::Value = serde_json::from_str(&answer.text()).unwrap();
    json["diagnosis"].clone()
}

#[tokio::test]
async fn a_machine_that_never_pxe_booted_gets_the_reason() {
    let r = rig().await;
    r.clock.advance(Duration::from_secs(12));
    let d = diagnosis(&r).await;
    assert_eq!(d["waitingFor"]["stage"], "dhcp", "{d}");
    assert_eq!(d["cause"]["cause"], "noBmc", "{d}");
    assert_eq!(d["waitedSeconds"], 12, "{d}");
    assert_eq!(
        d["explanation"],
        "no DHCP request from 02:00:00:00:00:01 since the workflow was created 12 s ago: no BMC is configured for it, so power it on and make sure it boots from the network"
    );

    // The machine (this test, from its address) fetches its script: the
    // server records it, and the answer moves on to the in-memory OS.
    let script = get(r.addr, "/ipxe/02:00:00:00:00:01/auto.ipxe", None).await;
    assert_eq!(script.status, 200);
    r.clock.advance(Duration::from_secs(180));
    // The event is written in the background; ask until it is in.
    let mut d = diagnosis(&r).await;
    for _ in 0..200 {
        if d["waitingFor"]["stage"] != "dhcp" {
            break;
        }
        tokio::task::yield_now().await;
        d = diagnosis(&r).await;
    }
    assert_eq!(d["waitingFor"]["stage"], "worker", "{d}");
    assert_eq!(d["cause"]["cause"], "noWorkerAfterScript", "{d}");
    assert!(
        d["explanation"]
            .as_str()
            .unwrap()
            .starts_with("iPXE script served 3 min ago but no worker call"),
        "{d}"
    );
}

#[tokio::test]
async fn the_diagnosis_is_the_operator_s_alone_and_names_one_workflow() {
    let r = rig().await;
    let path = "/api/v1/workflows/default/wf1/diagnosis";
    assert_eq!(get(r.addr, path, None).await.status, 401);
    assert_eq!(get(r.addr, path, Some("Bearer wrong")).await.status, 401);
    let missing = get(
        r.addr,
        "/api/v1/workflows/default/nope/diagnosis",
        Some(&r.bearer),
    )
    .await;
    assert_eq!(missing.status, 404);
}
