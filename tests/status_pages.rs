//! The status pages in headless Chromium, driven over the DevTools protocol as
//! an operator's browser: sign in, open the page of a workflow the simulated
//! rack ran, see its timeline bars and its actions' output, press a button
//! (its request carries the session's CSRF token; one without it is refused),
//! see a pending workflow's "why" and where it stopped, and a machine's page.
//! Screenshots are saved under `target/tmp/status-pages/`.

#[path = "support/common.rs"]
mod common;
#[path = "support/netlab.rs"]
mod netlab;

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A process killed however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How often a condition on the page is checked before the test gives up,
/// and the pause between checks: a bound on the wait, not a measurement.
const CHECKS: usize = 120;
const PAUSE: Duration = Duration::from_millis(250);

/// One page of a headless Chromium, spoken to over the DevTools protocol.
struct Browser {
    _process: Running,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    fn start(chromium: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let process = Running(
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--allow-file-access-from-files",
                    "--hide-scrollbars",
                    "--window-size=1100,1000",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Chromium writes the port it took into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port = (0..CHECKS)
            .find_map(|_| {
                let port = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|s| s.lines().next().map(str::to_string))
                    .filter(|p| !p.is_empty());
                if port.is_none() {
                    std::thread::sleep(PAUSE);
                }
                port
            })
            .expect("chromium opened its DevTools port");
        // Its list of pages, once it serves it.
        let url = (0..CHECKS)
            .find_map(|_| {
                let list = curl(&[&format!("http://127.0.0.1:{port}/json/list")]);
                let page = serde_json::from_str::<Value>(&list)
                    .ok()
                    .and_then(|targets| {
                        targets
                            .as_array()?
                            .iter()
                            .find(|t| t["type"] == "page")
                            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                            .map(str::to_string)
                    });
                if page.is_none() {
                    std::thread::sleep(PAUSE);
                }
                page
            })
            .expect("a page to drive");
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        // A browser that stops answering fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).unwrap();
        Browser {
            _process: process,
            _profile: profile,
            ws,
            next_id: 1,
        }
    }

    /// Calls a DevTools method; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let v = self.call_raw(method, params);
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// Calls a DevTools method; the whole answer (its result or its error).
    fn call_raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                return v;
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value,
    /// `null` when it threw or the page was between two documents.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call_raw(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; panics with `what` and
    /// the page's text if it never is.
    fn wait_for(&mut self, expression: &str, what: &str) {
        for _ in 0..CHECKS {
            if self.eval(&format!("!!({expression})")) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(PAUSE);
        }
        let text =
            self.eval("location.href + '\\n' + (document.body ? document.body.innerText : '')");
        panic!(
            "{what}: never true ({expression})\npage:\n{}",
            text.as_str().unwrap_or_default()
        );
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Saves a PNG of the page under `dir`.
    fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn curl(args: &[&str]) -> String {
    let o = Command::new("curl").arg("-s").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The inventory a tink-agent reported for the ghost (as tinker-grpc keeps
/// it), with a disk model that is markup: the page must show it as text.
const GHOST_INVENTORY: &str = r#"{"cpu":{"totalCores":16,"totalThreads":32,"processors":[{"vendor":"AMD","model":"EPYC 7302P"}]},"memory":{"total":"64GiB","usable":"62GiB"},"blockDevices":[{"name":"nvme0n1","size":"960GB","driveType":"SSD","model":"<img src=x onerror=document.title='owned'>","serialNumber":"S4EW"}],"networkInterfaces":[{"name":"eno1","mac":"02:00:00:00:16:99","speed":"25Gb/s"}],"bios":{"vendor":"AMI","version":"2.1","releaseDate":"2025-01-01"},"baseboard":{"vendor":"Supermicro","product":"H12SSL-i"},"product":{"name":"AS-1014S","vendor":"Supermicro","serialNumber":"PX1"}}"#;

/// A Hardware that never boots (no simulated machine answers for it), with
/// the inventory its agent reported, and a workflow for it, on the rack's
/// template.
fn ghost(template: &str) -> String {
    let inventory = serde_json::to_string(GHOST_INVENTORY).unwrap();
    format!(
        r#"apiVersion: tinkerbell.org/v1alpha1
kind: Hardware
metadata:
  name: ghost
  namespace: default
  annotations: {{"tinkerbell.org/agent-attributes": {inventory}}}
spec:
  interfaces:
    - dhcp: {{mac: "02:00:00:00:16:99", ip: {{address: 127.77.9.99, netmask: 255.0.0.0}}}}
      netboot: {{allowPXE: true, allowWorkflow: true}}
---
apiVersion: tinkerbell.org/v1alpha1
kind: Workflow
metadata: {{name: ghost-install, namespace: default}}
spec:
  templateRef: {template}
  hardwareRef: ghost
  hardwareMap: {{device_1: "02:00:00:00:16:99", disk: /dev/null, image_url: "http://127.0.0.1:1/none"}}
"#
    )
}

#[test]
fn an_operator_sees_a_workflows_timeline_and_output_and_acts_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            !common::require_real(),
            "chromium is required (TINKER_REQUIRE_REAL=1)"
        );
        eprintln!("skipped: no chromium");
        return;
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-pages");
    std::fs::create_dir_all(&shots).unwrap();
    // A real run: the simulated rack provisions two machines, then keeps
    // serving its pages.
    let data = tempfile::tempdir().unwrap();
    let mut rack = Running(
        Command::new(netlab::example("homelab"))
            .args(["--machines", "2", "--hold", "300", "--data"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut url = None;
    let mut lines = BufReader::new(rack.0.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("status page: ") {
            url = u.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("provisioned") {
            assert!(line.contains("2/2"), "{line}");
            break;
        }
    }
    // Keep reading: a closed pipe would end the rack while it holds.
    std::thread::spawn(move || lines.for_each(drop));
    let base = url
        .expect("the status page's address is printed")
        .trim_end_matches("/status")
        .to_string();
    let token = std::fs::read_to_string(data.path().join("operator-token"))
        .unwrap()
        .trim()
        .to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let workflows: Value =
        serde_json::from_str(&curl(&["-H", &bearer, &format!("{base}/api/v1/workflows")])).unwrap();
    let node01 = workflows
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["value"])
        .find(|w| w["spec"]["hardwareRef"] == "node01")
        .expect("node01's workflow");
    let name = node01["metadata"]["name"].as_str().unwrap().to_string();
    let template = node01["spec"]["templateRef"].as_str().unwrap().to_string();
    // A workflow whose machine never boots: pending, with a reason.
    let applied = curl(&[
        "-H",
        &bearer,
        "--data-binary",
        &ghost(&template),
        &format!("{base}/api/v1/apply"),
    ]);
    assert!(applied.contains("ghost-install"), "{applied}");

    let mut b = Browser::start(chromium);
    // Sign in as an operator does, on the form, coming from the workflow's
    // page: the form sends the browser back to it.
    let page_dir = tempfile::tempdir().unwrap();
    let login = page_dir.path().join("login.html");
    std::fs::write(
        &login,
        format!(
            "<!doctype html><form method=post action=\"{base}/login\"><input name=token value=\"{token}\"><input name=next value=\"/status/workflows/default/{name}\"></form><script>document.forms[0].submit()</script>"
        ),
    )
    .unwrap();
    b.navigate(&format!("file://{}", login.display()));
    b.wait_for(
        &format!("location.pathname === '/status/workflows/default/{name}'"),
        "signed in, back on the workflow's page",
    );
    // The timeline: a bar per step the run went through, each done (TFTP and
    // the installed OS's metadata read from the machine's event log).
    b.wait_for(
        "document.querySelectorAll('#timeline rect.bar.done').length >= 11",
        "the timeline's bars",
    );
    let rows = b.eval(
        "[...document.querySelectorAll('#timeline g.row')].map(g => g.dataset.step + ':' + g.dataset.outcome)",
    );
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "netbootOn:done",
            "powerOn:done",
            "dhcp:done",
            "tftp:done",
            "ipxeScript:done",
            "inMemoryOs:done",
            "action:done",
            "action:done",
            "netbootOff:done",
            "diskBoot:done",
            "metadata:done",
        ]
    );
    // Bars sit on one time axis: each action starts where the one before ended
    // or later.
    let xs = b.eval(
        "[...document.querySelectorAll('#timeline g.row[data-step=action] rect.bar')].map(r => [+r.getAttribute('x'), +r.getAttribute('width')])",
    );
    let xs: Vec<(f64, f64)> = xs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(xs.len(), 2);
    assert!(xs[1].0 >= xs[0].0 + xs[0].1 - 0.5, "{xs:?}");
    // The actions' output, as the worker sent it.
    b.wait_for(
        "document.querySelector('pre.out[data-action=check-disk]')?.textContent.includes('the disk holds 8388608 bytes')",
        "check-disk's output",
    );
    let stream = b.eval("document.querySelector('pre.out[data-action=stream-image]').textContent");
    assert!(
        stream.as_str().unwrap().contains("image2disk: done"),
        "{stream}"
    );
    assert_eq!(b.eval("document.getElementById('diagnosis').hidden"), true);
    let shot = b.screenshot(&shots, "workflow.png");
    eprintln!("screenshot: {}", shot.display());

    // A button: the request carries the session's CSRF token, so whatever the
    // server answers, it is not a refusal for want of one; the answer is shown.
    b.eval("document.getElementById('cancel').click()");
    b.wait_for(
        "/^cancel: (done|refused)/.test(document.getElementById('answer').textContent)",
        "the answer to cancel",
    );
    let answer = b.eval("document.getElementById('answer').textContent");
    let answer = answer.as_str().unwrap();
    assert!(
        !answer.contains("HTTP 403") && !answer.contains("HTTP 401"),
        "{answer}"
    );
    // The same session without the token: refused, in a real browser too.
    let status = b.eval(
        "fetch('/api/v1/apply', {method: 'POST', credentials: 'same-origin', headers: {'content-type': 'application/json'}, body: '{}'}).then(r => r.status)",
    );
    assert_eq!(status, 403);

    // The pending workflow: why, and where it stopped.
    b.navigate(&format!("{base}/status/workflows/default/ghost-install"));
    b.wait_for(
        "document.getElementById('diagnosis').textContent.includes('no DHCP request from 02:00:00:00:16:99')",
        "why it is pending",
    );
    b.wait_for(
        "document.querySelector('#timeline g.row[data-step=dhcp] rect.row-stopped') && document.querySelector('#timeline g.row[data-step=dhcp] rect.bar.waiting')",
        "the timeline marks where it waits",
    );
    // No BMC: the power-on is the operator's, and said so.
    assert_eq!(
        b.eval("document.querySelector('#timeline g.row[data-step=powerOn]').dataset.outcome"),
        "skipped"
    );
    b.screenshot(&shots, "pending.png");

    // The machine's page: its Hardware, its workflow linked, its events.
    b.navigate(&format!("{base}/status/machines/default/node01"));
    b.wait_for(
        &format!(
            "document.querySelector('#workflows a[href=\"/status/workflows/default/{name}\"]')"
        ),
        "the machine's workflow, linked",
    );
    b.wait_for(
        "[...document.querySelectorAll('#events tr.event')].some(r => r.textContent.includes('Reboot: done'))",
        "the machine's events",
    );
    b.screenshot(&shots, "machine.png");
    b.wait_for(
        "document.querySelector('#inventory tr.none')",
        "a machine without a reported inventory says so",
    );

    // A machine whose agent reported its inventory shows it, as text.
    b.navigate(&format!("{base}/status/machines/default/ghost"));
    b.wait_for(
        "document.querySelectorAll('#inventory tr.part').length >= 7",
        "the ghost's inventory",
    );
    let rows = b.eval(
        "[...document.querySelectorAll('#inventory tr.part')].map(r => r.textContent).join('\\n')",
    );
    let rows = rows.as_str().unwrap();
    for expected in [
        "productSupermicro · AS-1014S · serial PX1",
        "baseboardSupermicro · H12SSL-i",
        "BIOSAMI · 2.1 · 2025-01-01",
        "CPU16 cores · 32 threads · AMD · EPYC 7302P",
        "memory64GiB · 62GiB usable",
        "disknvme0n1 · 960GB · SSD · <img src=x onerror=document.title='owned'> · serial S4EW",
        "NICeno1 · 02:00:00:00:16:99 · 25Gb/s",
    ] {
        assert!(
            rows.lines().any(|l| l == expected),
            "{expected:?} in {rows}"
        );
    }
    assert_eq!(
        b.eval("document.querySelectorAll('#inventory img').length"),
        0,
        "a reported model is text, never markup"
    );
    b.screenshot(&shots, "inventory.png");

    // The overview links each workflow and machine to its page.
    b.navigate(&format!("{base}/status"));
    b.wait_for(
        "document.querySelector('#workflows a[href=\"/status/workflows/default/ghost-install\"]') && document.querySelector('#machines a[href=\"/status/machines/default/node02\"]')",
        "the overview's links",
    );
    b.screenshot(&shots, "overview.png");
}
