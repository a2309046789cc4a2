//! Time is an input: a whole rack provisioned under a [`ManualClock`], over
//! in-memory transports (no sockets, no timers: the runtime has neither an I/O
//! nor a time driver, so anything that reads the wall clock or sleeps by itself
//! would stop the test), on a current-thread runtime, time advanced by hand.
//!
//! Each machine powers on when the engine tells its mock BMC, runs the PXE DORA
//! exchange through the one DHCP client against the control plane's DHCP server,
//! fetches iPXE through the sans-IO TFTP transfer, gets its iPXE script over
//! HTTP (hyper over an in-memory pipe), runs the real worker agent whose
//! transport is that same pipe, waits for the engine to reboot it to its disk,
//! and reads its metadata. Run twice from scratch, each machine's own sequence
//! of events (what, from which service, at which simulated instant) is the same.

use async_trait::async_trait;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tinker::actions::agent::{Agent, AgentConfig, Reply, Request, Transport, decode, encode};
use tinker::bmc::{MockBmc, StaticConnector};
use tinker::boot::dhcp::DhcpServer;
use tinker::boot::dhcp::client::{self as dhcp_client, Dora, Link, PxeClient};
use tinker::boot::http::{HttpServer, client};
use tinker::boot::tftp::packet::Packet;
use tinker::boot::tftp::{FileSource, MAX_BLKSIZE_NO_FRAG, Transfer};
use tinker::control_plane::{ControlPlane, Services};
use tinker::core::clock::{ManualClock, SharedClock};
use tinker::core::model::{Hardware, MachinePhase, Template, Workflow};
use tinker::core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};
use tinker::core::state::WorkflowState;
use tinker::core::store::{EventKind, EventSource};
use tinker::core::{MacAddr, Precondition, Secret, WorkflowStore, WorkflowStoreExt};
use tinker::store::MemoryStore;

const MACHINES: u8 = 4;
/// One simulated tick; the whole run is a few minutes of simulated time.
const TICK: Duration = Duration::from_millis(100);
const MAX_TICKS: usize = 20_000;
/// Scheduler rounds after each tick, so every task that can run has run before
/// time moves again (in-memory hops take a few rounds each).
const ROUNDS_PER_TICK: usize = 400;

const TEMPLATE: &str = r#"version: "0.1"
name: sim-install
global_timeout: 3600
tasks:
  - name: install
    worker: "{{.device_1}}"
    actions:
      - {name: stream-image, image: tinker/sim, timeout: 600}
      - {name: write-config, image: tinker/sim, timeout: 600}
"#;

/// What the test compares between runs: per machine, each event's simulated
/// time, source and kind, in the order the store recorded them.
type Timeline = BTreeMap<String, Vec<(jiff::Timestamp, EventSource, EventKind)>>;

#[test]
fn a_rack_under_a_manual_clock_repeats_itself_event_for_event() {
    let first = simulate();
    let second = simulate();
    assert_eq!(first.len(), 2 * MACHINES as usize, "{first:#?}");
    for (machine, events) in &first {
        assert!(!events.is_empty(), "{machine} recorded nothing");
    }
    for i in 1..=MACHINES {
        let hw = &first[&format!("default/node{i:02}")];
        let kinds: Vec<&EventKind> = hw.iter().map(|(_, _, k)| k).collect();
        assert!(
            kinds
                .iter()
                .any(|k| matches!(k, EventKind::BootDecision { .. })),
            "{kinds:#?}"
        );
        assert!(
            kinds.iter().any(|k| **k
                == EventKind::StepDone {
                    step: tinker::core::model::MachineStep::Reboot
                }),
            "{kinds:#?}"
        );
        let worker = &first[&mac(i).to_string()];
        assert!(
            worker.iter().any(|(_, source, kind)| *source == EventSource::Worker
                && matches!(kind, EventKind::ActionOutput { line, .. } if line == "write-config done")),
            "{worker:#?}"
        );
    }
    if std::env::var_os("SIM_DUMP").is_some() {
        eprintln!("{first:#?}");
    }
    assert_eq!(first, second, "the same inputs give the same run");
}

/// Runs the rack from scratch; returns each machine's timeline.
fn simulate() -> Timeline {
    // No I/O driver and no time driver: nothing may use a socket or a tokio timer.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let clock = Arc::new(ManualClock::new(
            jiff::Timestamp::from_second(1_900_000_000).unwrap(),
        ));
        let rack = Rack::new(clock.clone()).await;
        let mut machines = Vec::new();
        for i in 1..=MACHINES {
            machines.push(tokio::spawn(rack.machine(i)));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let engine = rack.engine.clone();
        let engine = tokio::spawn(async move {
            engine
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        for _ in 0..MAX_TICKS {
            for _ in 0..ROUNDS_PER_TICK {
                tokio::task::yield_now().await;
            }
            if machines.iter().all(|m| m.is_finished()) {
                break;
            }
            clock.advance(TICK);
        }
        for (i, m) in machines.into_iter().enumerate() {
            assert!(m.is_finished(), "node{:02} did not finish", i + 1);
            let instance = m.await.expect("the machine task").expect("provisioned");
            assert_eq!(instance, format!("i-node{:02}", i + 1));
        }
        let _ = stop.send(());
        engine.await.expect("the engine task").expect("the engine");
        rack.timeline().await
    })
}

fn mac(i: u8) -> MacAddr {
    MacAddr([0x02, 0x00, 0x00, 0x5e, 0x00, i])
}

fn address(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + i)
}

const RELAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// The control plane's services, wired by `ControlPlane::services` exactly as a
/// replica wires them, and the mock BMCs.
#[derive(Clone)]
struct Rack {
    clock: SharedClock,
    store: Arc<dyn WorkflowStore>,
    dhcp: DhcpServer,
    http: HttpServer,
    engine: Arc<tinker::core::engine::Engine>,
    tftp_files: FileSource,
    bmcs: Arc<BTreeMap<u8, MockBmc>>,
}

impl Rack {
    async fn new(clock: Arc<ManualClock>) -> Rack {
        let shared: SharedClock = clock;
        let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
        store
            .put(
                Template::new("sim-install", TEMPLATE).into(),
                Precondition::Absent,
            )
            .await
            .unwrap();
        let power = Arc::new(StaticConnector::new());
        let mut bmcs = BTreeMap::new();
        for i in 1..=MACHINES {
            let name = format!("node{i:02}");
            let mut hw = Hardware::new(&name, mac(i), address(i), "255.0.0.0");
            hw.set_allow_pxe(false);
            if let Some(d) = hw.spec.interfaces[0].dhcp.as_mut() {
                d.arch = Some("x86_64".into());
            }
            hw.spec.metadata = Some(
                serde_json::from_value(
                    serde_json::json!({"instance": {"id": format!("i-{name}")}}),
                )
                .unwrap(),
            );
            store.put(hw.into(), Precondition::Absent).await.unwrap();
            let bmc = MockBmc::new(&name).with_clock(shared.clone());
            power.insert(&name, Arc::new(bmc.clone()));
            bmcs.insert(i, bmc);
            let wf = Workflow::new(&format!("{name}-install"), "sim-install", &name, mac(i));
            store.put(wf.into(), Precondition::Absent).await.unwrap();
        }
        let tftp_files = FileSource::empty().with_file("undionly.kpxe", vec![0x55u8; 70_000]);
        let mut plane = ControlPlane::new(
            store.clone(),
            power,
            Ipv4Addr::new(10, 0, 0, 2),
            Secret::new("simulated rack"),
        );
        plane.tftp_files = tftp_files.clone();
        plane.heartbeat_seconds = 2;
        plane.engine.replica = "sim".into();
        plane.clock = shared.clone();
        let Services {
            dhcp, http, engine, ..
        } = plane.services(SocketAddr::from(([10, 0, 0, 2], 80)));
        Rack {
            clock: shared,
            store,
            dhcp,
            http,
            engine: Arc::new(engine.with_jitter_seed(7)),
            tftp_files,
            bmcs: Arc::new(bmcs),
        }
    }

    /// One machine, from power-on to its installed OS reading its instance id.
    fn machine(&self, i: u8) -> impl Future<Output = Result<String, String>> + 'static {
        let rack = self.clone();
        async move {
            let bmc = rack.bmcs[&i].clone();
            let clock = rack.clock.clone();
            while !bmc.is_on() {
                clock.sleep(TICK).await;
            }
            // PXE ROM: DHCP through the rack's relay, then iPXE over TFTP.
            let client = PxeClient::new(mac(i), 0).relayed(RELAY);
            let mut dora = Dora::new(client, 0x5100_0000 + u32::from(i));
            let mut link = SimLink {
                dhcp: rack.dhcp.clone(),
                inbox: VecDeque::new(),
            };
            let ack = dhcp_client::run(&mut dora, &mut link, clock.as_ref())
                .await
                .map_err(|e| format!("DHCP: {e}"))?;
            if ack.address != address(i) {
                return Err(format!("DHCP gave {}, not {}", ack.address, address(i)));
            }
            let file = ack.boot_file.clone().ok_or("no boot file")?;
            let ipxe = rack.tftp_fetch(&file).await?;
            if ipxe.len() != 70_000 {
                return Err(format!("TFTP gave {} bytes", ipxe.len()));
            }
            // iPXE: its script carries the worker's token.
            let peer = SocketAddr::from((address(i), 40_000));
            let (status, script) = rack
                .http_call(
                    peer,
                    "GET",
                    &format!("/ipxe/{}/auto.ipxe", mac(i)),
                    None,
                    Vec::new(),
                )
                .await?;
            let script = String::from_utf8_lossy(&script).to_string();
            let token = script
                .split_whitespace()
                .find_map(|w| w.strip_prefix("tinker_token="))
                .ok_or(format!("{status}: no token in {script}"))?
                .to_string();
            // The in-memory OS: the real agent, over the same in-memory HTTP.
            let config = AgentConfig::new("http://10.0.0.2", mac(i).to_string(), token.clone())
                .with_max_actions(2)
                .with_jitter_seed(u64::from(i));
            let transport = SimTransport {
                rack: rack.clone(),
                peer,
                token: Secret::new(token),
            };
            Agent::new(
                config,
                Arc::new(SimActions {
                    clock: clock.clone(),
                }),
                None,
            )
            .with_clock(clock.clone())
            .with_transport(Arc::new(transport))
            .with_instance(format!("sim-{i}"))
            .run(std::future::pending())
            .await
            .map_err(|e| format!("agent: {e}"))?;
            // The engine turns netboot off, sets disk boot and reboots it.
            loop {
                let wf = rack
                    .store
                    .workflow("default", &format!("node{i:02}-install"))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the workflow is gone")?;
                let status = wf.value.status.ok_or("no status")?;
                if status.state == WorkflowState::Success
                    && status.machine.phase == MachinePhase::Rebooted
                {
                    break;
                }
                clock.sleep(TICK).await;
            }
            // The installed OS reads its metadata from its own address.
            let (_, id) = rack
                .http_call(
                    peer,
                    "GET",
                    "/2009-04-04/meta-data/instance-id",
                    None,
                    Vec::new(),
                )
                .await?;
            Ok(String::from_utf8_lossy(&id).to_string())
        }
    }

    /// Fetches a file through the sans-IO TFTP transfer, acknowledging each
    /// block as a PXE ROM does.
    async fn tftp_fetch(&self, file: &str) -> Result<Vec<u8>, String> {
        let data = self.tftp_files.get(file).map_err(|e| format!("{e:?}"))?;
        let options = [("blksize".to_string(), "1428".to_string())];
        let (mut transfer, mut out) =
            Transfer::start(data, &options, MAX_BLKSIZE_NO_FRAG, self.clock.now());
        let mut got = Vec::new();
        while !transfer.is_complete() {
            if transfer.is_failed() {
                return Err("the TFTP transfer failed".into());
            }
            let Some(packet) = out.pop() else {
                return Err("the TFTP transfer went quiet".into());
            };
            let ack = match Packet::decode(&packet) {
                Some(Packet::Oack { .. }) => Packet::Ack { block: 0 },
                Some(Packet::Data { block, data }) => {
                    got.extend_from_slice(&data);
                    Packet::Ack { block }
                }
                other => return Err(format!("unexpected TFTP packet {other:?}")),
            };
            out = transfer.on_packet(&ack.encode(), self.clock.now());
        }
        Ok(got)
    }

    /// One HTTP request over an in-memory pipe into the control plane's HTTP
    /// server, as if from `peer`.
    async fn http_call(
        &self,
        peer: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&Secret>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let (near, far) = tokio::io::duplex(256 * 1024);
        let http = self.http.clone();
        tokio::spawn(async move {
            let _ = http.serve_connection(far, peer).await;
        });
        let auth = token.map(|t| format!("Bearer {}", t.expose()));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let method: client::Method = method.parse().map_err(|e| format!("{e}"))?;
        let resp = client::HttpConnection::over(near)
            .await
            .map_err(|e| e.to_string())?
            .send(method, path, &headers, body)
            .await
            .map_err(|e| e.to_string())?;
        Ok((resp.status, resp.body.to_vec()))
    }

    /// Every machine's events: its Hardware's (DHCP, engine) and its worker's.
    async fn timeline(&self) -> Timeline {
        let mut t = Timeline::new();
        for i in 1..=MACHINES {
            for machine in [format!("default/node{i:02}"), mac(i).to_string()] {
                let events = self.store.events(&machine, 10_000).await.unwrap();
                t.insert(
                    machine,
                    events
                        .into_iter()
                        .map(|e| (e.at, e.source, e.kind))
                        .collect(),
                );
            }
        }
        t
    }
}

/// The DHCP server as the relay reaches it: a datagram in, the answer queued.
struct SimLink {
    dhcp: DhcpServer,
    inbox: VecDeque<Vec<u8>>,
}

#[async_trait]
impl Link for SimLink {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let relay = SocketAddr::from((RELAY, 67));
        if let Some(out) = self.dhcp.handle(bytes, relay, false).await {
            self.inbox.push_back(out.bytes);
        }
        Ok(())
    }

    async fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        match self.inbox.pop_front() {
            Some(bytes) => Ok(bytes),
            // Nothing more will come until the client sends again.
            None => std::future::pending().await,
        }
    }
}

/// The agent's transport: the worker API's HTTP codec over the in-memory pipe.
#[derive(Clone)]
struct SimTransport {
    rack: Rack,
    peer: SocketAddr,
    token: Secret,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTransport")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for SimTransport {
    async fn send(&self, replica: &str, request: &Request) -> tinker::core::Result<Reply> {
        let (path, body) = encode(request)?;
        let (status, bytes) = self
            .rack
            .http_call(self.peer, "POST", &path, Some(&self.token), body)
            .await
            .map_err(|reason| tinker::core::Error::Unreachable {
                target: replica.to_string(),
                reason,
            })?;
        decode(request, replica, status, &bytes)
    }
}

/// Actions that take five simulated seconds each (long enough for the agent's
/// heartbeats) and say when they are done.
#[derive(Debug)]
struct SimActions {
    clock: SharedClock,
}

#[async_trait]
impl ActionRuntime for SimActions {
    async fn run(
        &self,
        spec: &ActionSpec,
        output: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> tinker::core::Result<ActionOutcome> {
        tokio::select! {
            () = self.clock.sleep(Duration::from_secs(5)) => {}
            () = cancel.cancelled() => return Ok(ActionOutcome::Failed {
                exit_code: None,
                message: "cancelled".into(),
            }),
        }
        output.line(Stream::Stdout, &format!("{} done", spec.name));
        Ok(ActionOutcome::Success)
    }
}
