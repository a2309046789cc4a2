//! The operator's view: a status page (machines, workflows, per-action progress,
//! recent events; it refreshes itself) and a read-only JSON API for hardware,
//! templates, workflows and events. Both need the operator token: the API as
//! `Authorization: Bearer <token>`, the page as `?token=<token>` (passed on to its
//! API calls).
//!
//! | path | what |
//! |---|---|
//! | `/status?token=T` | the status page |
//! | `/api/v1/hardware`, `/api/v1/templates`, `/api/v1/workflows` | JSON lists |
//! | `/api/v1/events/{machine}` | the machine's last 50 events |

use super::{Body, ExtraRoutes, body::full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use std::net::IpAddr;
use std::sync::Arc;
use tinker_core::model::Kind;
use tinker_core::{Secret, WorkflowStore};

/// The status page and the operator API.
#[derive(Clone)]
pub struct OperatorApi {
    store: Arc<dyn WorkflowStore>,
    token: Secret,
}

impl std::fmt::Debug for OperatorApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorApi").finish_non_exhaustive()
    }
}

impl OperatorApi {
    /// The routes over `store`, opened by `token`.
    pub fn new(store: Arc<dyn WorkflowStore>, token: Secret) -> Self {
        OperatorApi { store, token }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let bearer = crate::worker_api::bearer_token(req);
        if let Some(token) = bearer {
            return self.token.matches(token.as_bytes());
        }
        let query = req.uri().query().unwrap_or_default();
        let given = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(|t| percent_decode_str(t).collect::<Vec<u8>>())
            .unwrap_or_default();
        self.token.matches(&given)
    }
}

fn respond(
    code: StatusCode,
    kind: &'static str,
    body: impl Into<hyper::body::Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body.into()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", kind.parse().expect("static header"));
    r.headers_mut()
        .insert("cache-control", "no-store".parse().expect("static header"));
    r
}

#[async_trait::async_trait]
impl ExtraRoutes for OperatorApi {
    async fn handle(
        &self,
        req: Request<Incoming>,
        _peer: IpAddr,
    ) -> Result<Response<Body>, Request<Incoming>> {
        let path = req.uri().path().to_string();
        if path != "/status" && !path.starts_with("/api/v1/") {
            return Err(req);
        }
        if !self.authorized(&req) {
            return Ok(respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "the operator token is missing or wrong\n",
            ));
        }
        if path == "/status" {
            return Ok(respond(StatusCode::OK, "text/html; charset=utf-8", PAGE));
        }
        let kind = match path.trim_start_matches("/api/v1/") {
            "hardware" => Kind::Hardware,
            "templates" => Kind::Template,
            "workflows" => Kind::Workflow,
            rest => {
                if let Some(machine) = rest.strip_prefix("events/") {
                    let machine = percent_decode_str(machine).decode_utf8_lossy();
                    return Ok(match self.store.events(&machine, 50).await {
                        Ok(ev) => respond(
                            StatusCode::OK,
                            "application/json",
                            serde_json::to_vec(&ev).unwrap_or_default(),
                        ),
                        Err(_) => respond(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            "store unavailable\n",
                        ),
                    });
                }
                return Ok(respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"));
            }
        };
        Ok(match self.store.list(kind).await {
            Ok(items) => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&items).unwrap_or_default(),
            ),
            Err(_) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "store unavailable\n",
            ),
        })
    }
}

/// Several route sets, tried in order.
#[derive(Debug, Clone)]
pub struct RouteChain(pub Vec<Arc<dyn ExtraRoutes>>);

#[async_trait::async_trait]
impl ExtraRoutes for RouteChain {
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, Request<Incoming>> {
        for r in &self.0 {
            match r.handle(req, peer).await {
                Ok(resp) => return Ok(resp),
                Err(back) => req = back,
            }
        }
        Err(req)
    }
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Tinker status</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left;vertical-align:top}
.s{display:inline-block;padding:0 .4em;margin:0 .1em;border-radius:3px;font-size:.85em}
.PENDING{background:#eee}.RUNNING{background:#ffe08a}.SUCCESS{background:#9fe2a4}.FAILED{background:#f5a3a3}.TIMEOUT{background:#f7c08a}
.ev{font-size:.8em;color:#555}
</style></head>
<body><h1>Tinker</h1><p id="updated">loading...</p>
<h2>Workflows</h2><table id="workflows"><tr><th>workflow</th><th>machine</th><th>state</th><th>actions</th><th>reason</th></tr></table>
<h2>Machines</h2><table id="machines"><tr><th>machine</th><th>MAC</th><th>address</th><th>netboot</th><th>recent events</th></tr></table>
<script>
const token = new URLSearchParams(location.search).get("token") || "";
const h = {headers: {"Authorization": "Bearer " + token}};
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c]));
async function j(p) { const r = await fetch(p, h); if (!r.ok) throw new Error(p + ": " + r.status); return r.json(); }
async function load() {
  try {
    const [wfs, hws] = await Promise.all([j("/api/v1/workflows"), j("/api/v1/hardware")]);
    let rows = "<tr><th>workflow</th><th>machine</th><th>state</th><th>actions</th><th>reason</th></tr>";
    for (const w of wfs) {
      const o = w.value, s = o.status || {};
      const acts = (s.tasks || []).flatMap(t => t.actions).map(a => `<span class="s ${a.state}" title="${esc(a.message)}">${esc(a.name)}: ${a.state}</span>`).join(" ");
      rows += `<tr class="wf"><td>${esc(o.metadata.name)}</td><td>${esc(o.spec.hardwareRef)}</td><td><span class="s ${s.state}">${esc(s.state || "NEW")}</span></td><td>${acts}</td><td>${esc(s.reason)}</td></tr>`;
    }
    document.getElementById("workflows").innerHTML = rows;
    let mrows = "<tr><th>machine</th><th>MAC</th><th>address</th><th>netboot</th><th>recent events</th></tr>";
    for (const m of hws) {
      const hw = m.value, i = (hw.spec.interfaces || [])[0] || {}, d = i.dhcp || {};
      const name = (hw.metadata.namespace || "default") + "/" + hw.metadata.name;
      let ev = [];
      try { ev = await j("/api/v1/events/" + encodeURIComponent(name)); } catch (e) {}
      const last = ev.slice(-3).map(e => `<div class="ev">${esc(e.source)}: ${esc(e.message)}</div>`).join("");
      mrows += `<tr class="machine"><td>${esc(hw.metadata.name)}</td><td>${esc(d.mac)}</td><td>${esc((d.ip || {}).address)}</td><td>${(i.netboot || {}).allowPXE ? "on" : "off"}</td><td>${last}</td></tr>`;
    }
    document.getElementById("machines").innerHTML = mrows;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString() + " · " + wfs.length + " workflows, " + hws.length + " machines";
  } catch (e) { document.getElementById("updated").textContent = "error: " + e.message; }
}
load(); setInterval(load, 1000);
</script></body></html>
"#;
