//! The `tinker` command line against a control plane's operator API: Tinkerbell's
//! own fixtures applied, listed as a table and as JSON (the same as the API
//! answers), a stale update refused, invalid YAML answered with field paths, a
//! delete.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::Arc;
use tinker::boot::credentials::operator_token;
use tinker::boot::operators::{OperatorTokens, token_hash_text};
use tinker::control_plane::{ControlPlane, Listeners};
use tinker::core::{Secret, WorkflowStore};
use tinker::store::MemoryStore;

const SECRET: &str = "cli-test-secret";

struct Plane {
    server: String,
    store: Arc<dyn WorkflowStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn plane() -> Plane {
    plane_with(OperatorTokens::new()).await
}

/// A control plane that also knows these named operators.
async fn plane_with(operators: OperatorTokens) -> Plane {
    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let listeners = Listeners::bind(Ipv4Addr::LOCALHOST, 0, 0, 0).await.unwrap();
    let server = format!("http://{}", listeners.http_addr().unwrap());
    let mut plane = ControlPlane::new(
        store.clone(),
        Arc::new(tinker::bmc::MockConnector::new()),
        Ipv4Addr::LOCALHOST,
        Secret::new(SECRET),
    );
    plane.operator_tokens = operators;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(plane.serve(listeners, async {
        let _ = stopped.await;
    }));
    Plane {
        server,
        store,
        stop: Some(stop),
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Runs `tinker ARGS` (off the test's runtime threads) with the server and
/// token in the environment, as an operator would.
async fn tinker(server: &str, args: &[&str]) -> Output {
    let token = operator_token(&Secret::new(SECRET)).expose().to_string();
    tinker_as(server, &token, args).await
}

/// Runs `tinker ARGS` with this token.
async fn tinker_as(server: &str, token: &str, args: &[&str]) -> Output {
    let token = token.to_string();
    let server = server.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tinker"))
            .args(&args)
            .env("TINKER_SERVER", server)
            .env("TINKER_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_applies_lists_refuses_and_deletes() {
    let p = plane().await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tinkerbell/v1alpha1");
    let hw = format!("{fixtures}/backend-file-hardware-list.yaml");
    // Tinkerbell's file holds one Hardware with a bad address: that one is
    // refused with its field path, the others are applied.
    let applied = tinker(&p.server, &["apply", "-f", &hw]).await;
    assert!(!applied.status.success());
    assert!(
        out(&applied).contains("Hardware default/pxe-virtualbox applied"),
        "{}",
        out(&applied)
    );
    assert!(
        err(&applied).contains("Hardware default/bad-data: spec.interfaces[0].dhcp.ip.address"),
        "{}",
        err(&applied)
    );
    let workflow = format!("{fixtures}/grpc_workflow.yaml");
    let template = format!("{fixtures}/grpc_template.yaml");
    let both = tinker(&p.server, &["apply", "-f", &template, "-f", &workflow]).await;
    assert!(both.status.success(), "{}", err(&both));

    // The table, and JSON that is what the API answers.
    let table = tinker(&p.server, &["get", "hw"]).await;
    assert!(table.status.success(), "{}", err(&table));
    let t = out(&table);
    assert!(t.starts_with("NAMESPACE  NAME"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.contains("pxe-virtualbox") && l.contains("08:00:27:29:4e:67")),
        "{t}"
    );
    let json = tinker(&p.server, &["get", "hardware", "-o", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&out(&json)).unwrap();
    let addr: std::net::SocketAddr = p.server.trim_start_matches("http://").parse().unwrap();
    let token = operator_token(&Secret::new(SECRET));
    let auth = format!("Bearer {}", token.expose());
    let api = tinker::boot::http::client::request(
        addr,
        None,
        tinker::boot::http::client::Method::GET,
        "/api/v1/hardware",
        &[("authorization", auth.as_str())],
        Vec::new(),
    )
    .await
    .unwrap();
    let from_api: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(listed, from_api, "the CLI's JSON is the API's");

    // An update from what `get -o yaml` printed lands once; sent again, its
    // version is stale and it is refused.
    let dir = tempfile::tempdir().unwrap();
    let yaml = tinker(
        &p.server,
        &["get", "hardware", "pxe-virtualbox", "-o", "yaml"],
    )
    .await;
    assert!(yaml.status.success(), "{}", err(&yaml));
    assert!(out(&yaml).contains("resourceVersion"), "{}", out(&yaml));
    let edited = dir.path().join("edited.yaml");
    std::fs::write(
        &edited,
        out(&yaml).replace("hostname: pxe-virtualbox", "hostname: renamed"),
    )
    .unwrap();
    let first = tinker(&p.server, &["apply", "-f", edited.to_str().unwrap()]).await;
    assert!(first.status.success(), "{}", err(&first));
    let renamed = tinker(
        &p.server,
        &["get", "hardware", "pxe-virtualbox", "-o", "yaml"],
    )
    .await;
    assert!(
        out(&renamed).contains("hostname: renamed"),
        "{}",
        out(&renamed)
    );
    let again = tinker(&p.server, &["apply", "-f", edited.to_str().unwrap()]).await;
    assert!(!again.status.success());
    assert!(
        err(&again).contains("stale resourceVersion"),
        "{}",
        err(&again)
    );

    // Invalid YAML: the file, the object, the field path and the reason.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: broken}\nspec: {interfaces: [{dhcp: {mac: \"not-a-mac\"}}]}\n",
    )
    .unwrap();
    let refused = tinker(&p.server, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!refused.status.success());
    let e = err(&refused);
    assert!(e.contains("bad.yaml"), "{e}");
    assert!(e.contains("spec.interfaces[0].dhcp.mac"), "{e}");
    let none = tinker(&p.server, &["get", "hardware", "broken"]).await;
    assert!(!none.status.success(), "nothing of it was stored");

    // Delete, singular or plural.
    let deleted = tinker(&p.server, &["delete", "Hardware", "pxe-virtualbox"]).await;
    assert!(deleted.status.success(), "{}", err(&deleted));
    let gone = tinker(&p.server, &["get", "hardware", "pxe-virtualbox"]).await;
    assert!(!gone.status.success());
    assert!(err(&gone).contains("not found"), "{}", err(&gone));

    // Without the token, a clear refusal.
    let anonymous = tokio::task::spawn_blocking({
        let server = p.server.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_tinker"))
                .args(["get", "workflows"])
                .env("TINKER_SERVER", server)
                .env("TINKER_TOKEN", "wrong")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!anonymous.status.success());
    assert!(
        err(&anonymous).contains("refused the token"),
        "{}",
        err(&anonymous)
    );
}

const MACHINE: &str = r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata: {name: m1}
spec:
  interfaces:
    - dhcp: {mac: "02:00:00:00:c1:01", ip: {address: 127.0.9.1, netmask: 255.0.0.0}}
      netboot: {allowPXE: false, allowWorkflow: true}
---
apiVersion: tinkerbell.org/v1alpha1
kind: Template
metadata: {name: t1}
spec:
  data: |
    version: "0.1"
    name: t1
    tasks:
      - name: install
        worker: "{{.device_1}}"
        actions:
          - {name: stream-image, image: tinker/test, timeout: 60}
          - {name: write-config, image: tinker/test, timeout: 60}
---
apiVersion: tinkerbell.org/v1alpha1
kind: Workflow
metadata: {name: wf1}
spec:
  templateRef: t1
  hardwareRef: m1
  hardwareMap: {device_1: "02:00:00:00:c1:01"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_logs_show_each_actions_state_and_output() {
    use tinker::core::WorkflowStoreExt;
    use tinker::core::store::{EventKind, EventSource, MachineEvent};
    let p = plane().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m1.yaml");
    std::fs::write(&file, MACHINE).unwrap();
    let applied = tinker(&p.server, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(applied.status.success(), "{}", err(&applied));
    // The engine renders the workflow.
    for _ in 0..200 {
        let wf = p.store.workflow("default", "wf1").await.unwrap().unwrap();
        if wf.value.status.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A worker's output is logged under the worker's id (here its MAC, the
    // task's `worker`), the rest under the machine's name.
    for (log, i, line) in [
        ("default/m1", 0, "wrote 8 MiB"),
        ("02:00:00:00:c1:01", 0, "synced"),
        ("default/m1", 1, "config written"),
    ] {
        p.store
            .append_event(
                MachineEvent::new(
                    jiff::Timestamp::now(),
                    log,
                    EventSource::Worker,
                    EventKind::ActionOutput {
                        action_index: i,
                        stream: tinker::core::runtime::Stream::Stdout,
                        line: line.into(),
                    },
                )
                .for_workflow("default/wf1"),
            )
            .await
            .unwrap();
    }
    let described = tinker(&p.server, &["describe", "workflow", "wf1"]).await;
    assert!(described.status.success(), "{}", err(&described));
    let d = out(&described);
    assert!(d.contains("Machine:   m1"), "{d}");
    assert!(d.contains("0. stream-image"), "{d}");
    assert!(d.contains("1. write-config"), "{d}");
    assert!(d.contains("| synced"), "{d}");
    // The machine never booted (no BMC, no DHCP): describe says so.
    assert!(
        d.contains("Waiting:   no DHCP request from 02:00:00:00:c1:01"),
        "{d}"
    );
    // The timeline: netboot turned on, then the run stopped waiting for DHCP.
    assert!(d.contains("Timeline:"), "{d}");
    let stopped: Vec<&str> = d
        .lines()
        .filter(|l| l.ends_with("<- stopped here"))
        .collect();
    assert_eq!(stopped.len(), 1, "{d}");
    assert!(
        stopped[0].contains("DHCP") && stopped[0].contains("pending"),
        "{d}"
    );
    let logs = tinker(&p.server, &["logs", "wf1", "stream-image"]).await;
    assert_eq!(out(&logs), "wrote 8 MiB\nsynced\n", "{}", err(&logs));
    let all = tinker(&p.server, &["logs", "wf1"]).await;
    assert_eq!(out(&all).lines().count(), 3);
    // --follow prints what comes while it runs.
    let follow = {
        let token = operator_token(&Secret::new(SECRET)).expose().to_string();
        Command::new(env!("CARGO_BIN_EXE_tinker"))
            .args(["logs", "wf1", "--follow"])
            .env("TINKER_SERVER", &p.server)
            .env("TINKER_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut follow = Kill(follow);
    let stdout = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first: Vec<String> = (0..3)
        .map(|_| rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap())
        .collect();
    assert_eq!(first, ["wrote 8 MiB", "synced", "config written"]);
    p.store
        .append_event(
            MachineEvent::new(
                jiff::Timestamp::now(),
                "default/m1",
                EventSource::Worker,
                EventKind::ActionOutput {
                    action_index: 1,
                    stream: tinker::core::runtime::Stream::Stdout,
                    line: "a new line".into(),
                },
            )
            .for_workflow("default/wf1"),
        )
        .await
        .unwrap();
    let next =
        tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(next.as_deref(), Ok("a new line"), "followed, once");
    drop(follow);
    let completions = tinker(&p.server, &["completions", "bash"]).await;
    assert!(
        out(&completions).contains("tinker"),
        "{}",
        err(&completions)
    );
}

/// Two named operators change objects; the change log and the machine's own
/// log say who did what, and when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_records_who_made_it() {
    let file = format!(
        "alice {}\nbob {}\n",
        token_hash_text(&Secret::new("alice-token")),
        token_hash_text(&Secret::new("bob-token"))
    );
    let operators = OperatorTokens::parse(std::path::Path::new("ops"), &file).unwrap();
    let p = plane_with(operators).await;
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, MACHINE).unwrap();
    let objects = objects.to_str().unwrap();
    let applied = tinker_as(&p.server, "alice-token", &["apply", "-f", objects]).await;
    assert!(applied.status.success(), "{}", err(&applied));
    let again = tinker_as(&p.server, "bob-token", &["apply", "-f", objects]).await;
    assert!(again.status.success(), "{}", err(&again));
    // Acts on a workflow are changes too, with who made them.
    let cancelled = tinker_as(&p.server, "bob-token", &["cancel", "workflow", "wf1"]).await;
    assert!(cancelled.status.success(), "{}", err(&cancelled));
    let retried = tinker_as(&p.server, "alice-token", &["retry", "workflow", "wf1"]).await;
    assert!(retried.status.success(), "{}", err(&retried));
    let deleted = tinker_as(&p.server, "bob-token", &["delete", "wf", "wf1"]).await;
    assert!(deleted.status.success(), "{}", err(&deleted));

    let log = tinker_as(&p.server, "alice-token", &["events"]).await;
    assert!(log.status.success(), "{}", err(&log));
    let log = out(&log);
    let lines: Vec<&str> = log.lines().collect();
    let expected = [
        "alice created Hardware default/m1",
        "alice created Template default/t1",
        "alice created Workflow default/wf1",
        "bob updated Hardware default/m1",
        "bob updated Template default/t1",
        "bob updated Workflow default/wf1",
        "bob cancelled Workflow default/wf1",
        "alice retried Workflow default/wf1",
        "bob deleted Workflow default/wf1",
    ];
    assert_eq!(lines.len(), expected.len(), "{log}");
    for (line, what) in lines.iter().zip(expected) {
        assert!(line.ends_with(what), "{line:?} is not {what:?}:\n{log}");
        // When: the event's time, first.
        let at = line.split_whitespace().next().unwrap();
        assert!(at.parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert!(line.contains(" api "), "{line}");
    }
    // The machine's own log has the changes to it and to its workflow.
    let machine = out(&tinker(&p.server, &["events", "m1"]).await);
    assert!(
        machine.contains("alice created Hardware default/m1"),
        "{machine}"
    );
    assert!(
        machine.contains("workflow default/wf1: bob deleted Workflow default/wf1"),
        "{machine}"
    );
    assert!(
        machine.contains("workflow default/wf1: bob cancelled Workflow default/wf1"),
        "{machine}"
    );
    assert!(!machine.contains("Template"), "{machine}");
}

/// One owner per object, both ways, with the homelab's own watched-directory
/// code: what a file holds is refused by the API (naming the file), and what
/// the API applied is left alone by the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_has_one_owner_the_api_or_a_file() {
    use tinker::core::model::{Document, Object, Owner};
    use tinker::watched::{Outcome, load, scan};
    let p = plane().await;
    let dir = tempfile::tempdir().unwrap();
    let hardware = |name: &str, host: &str, ip: u8| {
        format!(
            "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: {name}}}\nspec:\n  metadata: {{instance: {{hostname: {host}}}}}\n  interfaces:\n    - dhcp: {{mac: \"02:00:00:00:d1:{ip:02x}\", ip: {{address: 127.0.8.{ip}, netmask: 255.0.0.0}}}}\n"
        )
    };
    let watched = dir.path().join("objects");
    std::fs::create_dir(&watched).unwrap();
    let from_file = watched.join("m1.yaml");
    std::fs::write(&from_file, hardware("m1", "from-file", 1)).unwrap();
    let loaded = load(p.store.as_ref(), &scan(&watched)).await;
    assert!(
        matches!(loaded.outcomes.as_slice(), [Outcome::Stored { .. }]),
        "{:?}",
        loaded.outcomes
    );

    // The API refuses to change or delete what the file owns, and says which file.
    let edit = dir.path().join("m1-edit.yaml");
    std::fs::write(&edit, hardware("m1", "from-api", 1)).unwrap();
    let refused = tinker(&p.server, &["apply", "-f", edit.to_str().unwrap()]).await;
    assert!(!refused.status.success());
    let e = err(&refused);
    assert!(
        e.contains(&format!(
            "Hardware default/m1 comes from the file {} of the watched directory",
            from_file.display()
        )),
        "{e}"
    );
    let not_deleted = tinker(&p.server, &["delete", "hw", "m1"]).await;
    assert!(!not_deleted.status.success());
    assert!(
        err(&not_deleted).contains("HTTP 409"),
        "{}",
        err(&not_deleted)
    );
    assert!(
        err(&not_deleted).contains("m1.yaml"),
        "{}",
        err(&not_deleted)
    );
    let host = |o: &Object| match o {
        Object::Hardware(h) => {
            serde_json::to_value(&h.spec.metadata).unwrap()["instance"]["hostname"].clone()
        }
        _ => unreachable!(),
    };
    let key =
        tinker::core::model::ObjectKey::new(tinker::core::model::Kind::Hardware, "default", "m1");
    let m1 = p.store.get(&key).await.unwrap().unwrap().value;
    assert_eq!(host(&m1), "from-file");
    assert_eq!(
        m1.owner(),
        Some(Owner::File(from_file.display().to_string()))
    );

    // What the API applied, the directory leaves alone, and says why.
    let api_file = dir.path().join("m2.yaml");
    std::fs::write(&api_file, hardware("m2", "from-api", 2)).unwrap();
    let applied = tinker(&p.server, &["apply", "-f", api_file.to_str().unwrap()]).await;
    assert!(applied.status.success(), "{}", err(&applied));
    std::fs::write(watched.join("m2.yaml"), hardware("m2", "from-file", 2)).unwrap();
    let loaded = load(p.store.as_ref(), &scan(&watched)).await;
    let skipped: Vec<String> = loaded
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::OwnedByApi { .. }))
        .map(|o| o.to_string())
        .collect();
    assert_eq!(skipped.len(), 1, "{:?}", loaded.outcomes);
    assert!(
        skipped[0].contains("Hardware default/m2") && skipped[0].contains("through the API"),
        "{}",
        skipped[0]
    );
    assert!(
        loaded
            .documents
            .iter()
            .any(|d| matches!(d, Document::Object(_)))
    );
    let key2 =
        tinker::core::model::ObjectKey::new(tinker::core::model::Kind::Hardware, "default", "m2");
    let m2 = p.store.get(&key2).await.unwrap().unwrap().value;
    assert_eq!(host(&m2), "from-api");
    assert_eq!(m2.owner(), Some(Owner::Api));
}

/// The CLI over HTTPS against the control plane's HTTPS listener: trusting
/// the CA that signed its certificate, or the certificate's fingerprint; a
/// server that is not the one trusted gets nothing, not even the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_https_trusting_a_ca_or_a_fingerprint() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let identity = tinker::boot::http::tls::TlsIdentity::from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let fingerprint = tinker::boot::http::tls::fingerprint_text(&identity.fingerprint());

    let store: Arc<dyn WorkflowStore> = Arc::new(MemoryStore::new());
    let mut listeners = Listeners::bind(Ipv4Addr::LOCALHOST, 0, 0, 0).await.unwrap();
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("https://{}", https.local_addr().unwrap());
    listeners.https = Some(https);
    let mut plane = ControlPlane::new(
        store.clone(),
        Arc::new(tinker::bmc::MockConnector::new()),
        Ipv4Addr::LOCALHOST,
        Secret::new(SECRET),
    );
    plane.tls = Some(identity);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(plane.serve(listeners, async {
        let _ = stopped.await;
    }));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, MACHINE).unwrap();

    let applied = tinker(
        &server,
        &[
            "--ca-file",
            ca_file.to_str().unwrap(),
            "apply",
            "-f",
            objects.to_str().unwrap(),
        ],
    )
    .await;
    assert!(applied.status.success(), "{}", err(&applied));
    let listed = tinker(&server, &["--tls-fingerprint", &fingerprint, "get", "wf"]).await;
    assert!(listed.status.success(), "{}", err(&listed));
    assert!(out(&listed).contains("wf1"), "{}", out(&listed));

    // Another certificate's fingerprint, or another CA: refused in the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let wrong = tinker::boot::http::tls::fingerprint_text(
        &tinker::boot::http::tls::certificate_fingerprint(other.cert.pem().as_bytes()).unwrap(),
    );
    let refused = tinker(&server, &["--tls-fingerprint", &wrong, "get", "wf"]).await;
    assert!(!refused.status.success());
    assert!(err(&refused).contains("TLS with"), "{}", err(&refused));
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let refused = tinker(
        &server,
        &["--ca-file", other_ca.to_str().unwrap(), "get", "wf"],
    )
    .await;
    assert!(!refused.status.success());
    assert!(err(&refused).contains("TLS with"), "{}", err(&refused));
    // HTTPS without a trust: a clear error, nothing sent.
    let none = tinker(&server, &["get", "wf"]).await;
    assert!(!none.status.success());
    assert!(err(&none).contains("--ca-file"), "{}", err(&none));
    let _ = stop.send(());
}

/// The control plane writes the operator token to `<data dir>/operator-token`
/// (beside its secret file, mode 0600) and prints that path on its `ready`
/// line, never the token,
/// so `TINKER_TOKEN=$(cat data/operator-token) tinker ...` works.
#[test]
fn the_control_plane_writes_the_operator_token_file_and_prints_its_path() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/control-plane");
    assert!(
        example.exists(),
        "{} is not built (cargo test builds examples)",
        example.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut child = Command::new(&example)
        .arg("--store")
        .arg(format!("redb:{}", data.join("tinker.redb").display()))
        .arg("--secret-file")
        .arg(data.join("worker-secret"))
        .args(["--dhcp-port", "0", "--tftp-port", "0", "--http-port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first line: `ready ...`, with the token file's path.
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let path = data.join("operator-token");
    assert!(ready.starts_with("ready "), "{ready}");
    assert!(
        ready
            .split_whitespace()
            .any(|w| w == format!("operator-token={}", path.display())),
        "{ready}"
    );
    let secret = tinker::boot::credentials::read_secret_file(&data.join("worker-secret")).unwrap();
    let token = operator_token(&secret);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        token.expose()
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!ready.contains(token.expose()), "{ready}");
}

/// `tinker get workflows --watch` prints the table, then a row for each change
/// made while it watches: a new workflow, one deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_prints_rows_as_they_change() {
    use std::io::{BufRead, BufReader};
    let p = plane().await;
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, MACHINE).unwrap();
    let applied = tinker(&p.server, &["apply", "-f", objects.to_str().unwrap()]).await;
    assert!(applied.status.success(), "{}", err(&applied));

    struct Watching(std::process::Child);
    impl Drop for Watching {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut watching = Watching(
        Command::new(env!("CARGO_BIN_EXE_tinker"))
            .args(["get", "workflows", "--watch"])
            .env("TINKER_SERVER", &p.server)
            .env(
                "TINKER_TOKEN",
                operator_token(&Secret::new(SECRET)).expose(),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = watching.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || tokio::task::block_in_place(|| rx.recv().expect("tinker get --watch ended"));
    let header = next();
    assert!(header.starts_with("NAMESPACE  NAME"), "{header}");
    let first = next();
    assert!(first.contains("wf1"), "{first}");

    // A workflow created while it watches: its row comes.
    let wf2 = dir.path().join("wf2.yaml");
    std::fs::write(
        &wf2,
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: wf2}\nspec: {templateRef: t1, hardwareRef: m1, hardwareMap: {device_1: \"02:00:00:00:c1:01\"}}\n",
    )
    .unwrap();
    let applied = tinker(&p.server, &["apply", "-f", wf2.to_str().unwrap()]).await;
    assert!(applied.status.success(), "{}", err(&applied));
    let created = loop {
        let line = next();
        if line.contains("wf2") {
            break line;
        }
    };
    assert!(created.starts_with("default"), "{created}");
    assert!(!created.contains("DELETED"), "{created}");

    // Deleted while it watches: its last row, marked.
    let deleted = tinker(&p.server, &["delete", "workflow", "wf2"]).await;
    assert!(deleted.status.success(), "{}", err(&deleted));
    let gone = loop {
        let line = next();
        if line.contains("wf2") && line.contains("DELETED") {
            break line;
        }
    };
    assert!(gone.ends_with("DELETED"), "{gone}");
}

/// Rufio Machines through the API and the CLI: applied, listed as a table,
/// refused with the validate example's findings, deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rufio_machines_are_applied_listed_refused_and_deleted() {
    let p = plane().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("bmc.yaml");
    std::fs::write(
        &good,
        "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: nuc1-bmc}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {name: bmc-creds, namespace: default}\n    insecureTLS: true\n    providerOptions:\n      redfish: {port: 8443}\n",
    )
    .unwrap();
    let applied = tinker(&p.server, &["apply", "-f", good.to_str().unwrap()]).await;
    assert!(applied.status.success(), "{}", err(&applied));
    assert!(
        out(&applied).contains("Machine default/nuc1-bmc applied"),
        "{}",
        out(&applied)
    );
    let table = out(&tinker(&p.server, &["get", "machines"]).await);
    assert!(table.starts_with("NAMESPACE  NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("nuc1-bmc") && l.contains("10.0.0.5") && l.contains("bmc-creds")),
        "{table}"
    );
    // What the file held is kept (provider options, TLS).
    let yaml = out(&tinker(&p.server, &["get", "machine", "nuc1-bmc", "-o", "yaml"]).await);
    assert!(
        yaml.contains("insecureTLS: true") && yaml.contains("8443"),
        "{yaml}"
    );

    // Refused with the field path, as the validate example says it.
    let bad = dir.path().join("bad-bmc.yaml");
    std::fs::write(
        &bad,
        "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: amt}\nspec:\n  connection:\n    host: 10.0.0.6\n    providerOptions:\n      intelAMT: {port: 16992}\n",
    )
    .unwrap();
    let refused = tinker(&p.server, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!refused.status.success());
    let e = err(&refused);
    assert!(
        e.contains("Machine default/amt: spec.connection.authSecretRef.name"),
        "{e}"
    );
    assert!(
        e.contains("spec.connection.providerOptions") && e.contains("intelAMT"),
        "{e}"
    );
    let none = tinker(&p.server, &["get", "bmc", "amt"]).await;
    assert!(!none.status.success());

    let deleted = tinker(&p.server, &["delete", "machine", "nuc1-bmc"]).await;
    assert!(deleted.status.success(), "{}", err(&deleted));
    let table = out(&tinker(&p.server, &["get", "machines"]).await);
    assert!(!table.contains("nuc1-bmc"), "{table}");
}
