//! cloud-init's own EC2 datasource (Debian's package, unpacked and unchanged:
//! `DataSourceEc2` and `cloudinit.sources.helpers.ec2`) reads a machine's
//! metadata from a control plane as Cluster API Provider Tinkerbell points it:
//! at Hegel's port 50061, and at Tootles' `/tootles/instanceID/<id>` tree. Each
//! run's connections leave from one loopback address: the machine's gets its
//! own metadata; another machine naming its id, and an address no machine has,
//! get nothing.

#[path = "support/common.rs"]
mod common;

use common::require_real;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::model::Hardware;
use tinker::core::{MacAddr, Precondition, Secret, WorkflowStore};
use tinker::store::MemoryStore;

/// The control plane's address: a loopback address of its own, so Hegel's
/// fixed port cannot collide with another test's listener.
const PLANE: Ipv4Addr = Ipv4Addr::new(127, 0, 14, 1);
const A: Ipv4Addr = Ipv4Addr::new(127, 0, 14, 10);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 14, 11);
const NOBODY: Ipv4Addr = Ipv4Addr::new(127, 0, 14, 12);

/// The Python with cloud-init's dependencies, and the unpacked package (both
/// installed by `.ci/run`), or `None` when they are missing.
fn cloud_init() -> Option<(PathBuf, PathBuf)> {
    let venv = std::env::var("TINKER_SUSHY_VENV").unwrap_or_else(|_| "/opt/tinker-venv".into());
    let root =
        std::env::var("TINKER_CLOUD_INIT").unwrap_or_else(|_| "/opt/tinker-cloud-init".into());
    let python = PathBuf::from(venv).join("bin/python");
    let packages = PathBuf::from(root).join("usr/lib/python3/dist-packages");
    (python.exists() && packages.join("cloudinit/sources/DataSourceEc2.py").exists())
        .then_some((python, packages))
}

fn machine(name: &str, n: u8, address: Ipv4Addr) -> Hardware {
    let mut hw = Hardware::new(name, MacAddr([2, 0, 0, 0, 14, n]), address, "255.0.0.0");
    hw.spec.metadata = Some(
        serde_json::from_value(serde_json::json!({
            "facility": {"plan_slug": "c3.small.x86", "facility_code": "onprem"},
            "instance": {
                "id": format!("i-{name}"),
                "hostname": format!("{name}.lab"),
                "ssh_keys": [format!("ssh-ed25519 AAAAC3Nz {name}@lab"), format!("ssh-rsa AAAAB3Nz {name}@backup")],
                "tags": ["rack-1", "gpu"],
                "ips": [
                    {"address": "192.0.2.10", "family": 4, "public": true},
                    {"address": address.to_string(), "family": 4, "public": false},
                    {"address": "2001:db8::10", "family": 6, "public": true}
                ],
                "operating_system": {"slug": "ubuntu_22_04", "distro": "ubuntu", "version": "22.04", "image_tag": "jammy"}
            }
        }))
        .unwrap(),
    );
    hw.spec.user_data = Some(format!("#cloud-config\nhostname: {name}\n"));
    hw
}

struct Plane {
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn plane() -> Plane {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    for hw in [machine("a", 1, A), machine("b", 2, B)] {
        store.put(hw.into(), Precondition::Absent).await.unwrap();
    }
    let mut listeners = Listeners::bind(PLANE, 0, 0, 0).await.unwrap();
    listeners.hegel = Some(tokio::net::TcpListener::bind((PLANE, 50061)).await.unwrap());
    let http = listeners.http_addr().unwrap();
    let mut plane = ControlPlane::new(
        store,
        Arc::new(tinker::bmc::MockConnector::new()),
        PLANE,
        Secret::new("cloud-init-test"),
    );
    plane.tootles_instance_endpoint = true;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(plane.serve(listeners, async {
        let _ = stopped.await;
    }));
    Plane {
        http,
        stop: Some(stop),
    }
}

/// Runs cloud-init's datasource from `source` against `url`.
async fn read(ci: &(PathBuf, PathBuf), source: Ipv4Addr, url: String) -> serde_json::Value {
    let (python, packages) = ci.clone();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/cloud_init_ec2.py"
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new(python)
            .arg(script)
            .args(["--source", &source.to_string(), "--url", &url])
            // Nothing to wait for when nothing answers: the metadata service
            // is up before the first run.
            .args(["--max-wait", "2"])
            .env("PYTHONPATH", packages)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cloud-init from {source} at {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
        })
    })
    .await
    .unwrap()
}

/// What cloud-init must have read for machine `a`.
fn assert_is_a(got: &serde_json::Value, url: &str) {
    assert_eq!(got["get_data"], true, "{url}: {got}");
    assert_eq!(got["instance_id"], "i-a", "{url}");
    assert_eq!(got["hostname"], "a.lab", "{url}");
    assert_eq!(
        got["public_keys"],
        serde_json::json!(["ssh-ed25519 AAAAC3Nz a@lab", "ssh-rsa AAAAB3Nz a@backup"]),
        "{url}"
    );
    assert_eq!(got["userdata"], "#cloud-config\nhostname: a\n", "{url}");
    assert_eq!(got["api_version"], "2009-04-04", "{url}");
    let expected = serde_json::json!({
        "instance-id": "i-a",
        "hostname": "a.lab",
        "local-hostname": "a.lab",
        "iqn": "",
        "plan": "c3.small.x86",
        "facility": "onprem",
        "tags": ["rack-1", "gpu"],
        "public-ipv4": "192.0.2.10",
        "public-ipv6": "2001:db8::10",
        "local-ipv4": A.to_string(),
        "public-keys": ["ssh-ed25519 AAAAC3Nz a@lab", "ssh-rsa AAAAB3Nz a@backup"],
        "operating-system": {
            "slug": "ubuntu_22_04",
            "distro": "ubuntu",
            "version": "22.04",
            "image_tag": "jammy",
            "license_activation": {"state": ""}
        }
    });
    assert_eq!(got["metadata"], expected, "{url}: the datasource's crawl");
    assert_eq!(got["helper_metadata"], expected, "{url}: the helper");
    assert_eq!(
        got["helper_userdata"], "#cloud-config\nhostname: a\n",
        "{url}"
    );
}

/// What cloud-init must have read when it gets nothing.
fn assert_nothing(got: &serde_json::Value, who: &str) {
    assert_eq!(got["get_data"], false, "{who}: {got}");
    assert_eq!(got["helper_metadata"], serde_json::json!({}), "{who}");
    assert_eq!(got["helper_userdata"], "", "{who}");
    assert!(!got.to_string().contains("a.lab"), "{who}: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_reads_its_own_metadata_at_hegels_port_and_the_tootles_tree() {
    let Some(ci) = cloud_init() else {
        assert!(
            !require_real(),
            "cloud-init (unpacked from Debian's package) and its Python are required: see .ci/run"
        );
        eprintln!("skipped: cloud-init is not unpacked at /opt/tinker-cloud-init");
        return;
    };
    let plane = plane().await;
    let hegel = format!("http://{PLANE}:50061");
    let tootles = format!("{hegel}/tootles/instanceID/i-a");
    let http = format!("http://{}", plane.http);
    for url in [&hegel, &tootles, &http] {
        assert_is_a(&read(&ci, A, url.clone()).await, url);
    }
    // b is a machine too, but a's id is not its own.
    assert_nothing(&read(&ci, B, tootles.clone()).await, "b by a's id");
    // b at Hegel's port reads its own, not a's.
    let b = read(&ci, B, hegel.clone()).await;
    assert_eq!(b["instance_id"], "i-b", "{b}");
    assert_eq!(b["metadata"]["local-ipv4"], B.to_string());
    // An address no machine has: nothing, on either tree.
    for url in [&hegel, &tootles] {
        assert_nothing(&read(&ci, NOBODY, url.clone()).await, url);
    }
}
