//! The operator's view: a status page (machines, workflows, per-action progress,
//! recent events; it refreshes itself) and a read-only JSON API for hardware,
//! templates, workflows and events.
//!
//! The operator's token opens them, and never travels in a URL (where browser
//! history, proxies and access logs keep it): tools send it as
//! `Authorization: Bearer <token>`; a browser signs in once on the page's form
//! (`POST /login`) and then holds a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` when served over TLS), which the page's own API calls carry.
//!
//! | path | what |
//! |---|---|
//! | `/status` | the overview page: workflows and machines (it sends a browser without a session to `/login`) |
//! | `/status/workflows/{namespace}/{name}` | a workflow's page: timeline, "why pending", output, retry/cancel/re-run |
//! | `/status/machines/{namespace}/{name}` | a machine's page: Hardware, workflows, event log |
//! | `/status/assets/{file}` | the pages' stylesheet and scripts (see [`super::pages`]) |
//! | `/login`, `POST /login`, `POST /logout` | the sign-in form (`next`: the page to go back to); open or close a browser session |
//! | `/api/v1/session` | `{"csrfToken": ...}`: the session's CSRF token (`null` for a bearer token) |
//! | `/api/v1/hardware`, `/api/v1/templates`, `/api/v1/workflows`, `/api/v1/machines` | JSON lists (Rufio Machines: BMCs) |
//! | `/api/v1/events/{machine}?limit=N` | the machine's last N events (50 by default) |
//! | `/api/v1/changes?limit=N` | the change log: who created, updated or deleted what, and when |
//! | `/api/v1/{kind}?watch=TOKEN` | a long poll: the list once it changes (see `OperatorApi::watch`) |
//! | `POST /api/v1/apply` | create or update objects (YAML or JSON) |
//! | `DELETE /api/v1/{kind}/{namespace}/{name}` | delete an object |
//! | `/api/v1/workflows/{namespace}/{name}/diagnosis` | why the workflow is pending, or `{"diagnosis": null}` |
//! | `POST /api/v1/workflows/{namespace}/{name}/cancel`, `/rerun`, `/retry` | act on a workflow (see `operate`; `Content-Type: application/json` required) |
//! | `/api/v1/workflows/{namespace}/{name}/timeline` | the run as a bar per step, and the diagnosis |
//!
//! A state-changing request (any method but `GET` and `HEAD`) under `/api/v1/`
//! that a session cookie opens must carry the session's CSRF token as
//! `X-CSRF-Token`, or it is refused with 403 (see [`super::csrf`]); one with the
//! bearer token needs none. The check sits before every such route.
//!
//! Each request that acts is made by someone: [`OperatorApi::caller`] names the
//! operator (a named token, or `operator` for the generated one), and each
//! change is recorded with that name ([`EventKind::ObjectChanged`]).

use super::csrf::{CSRF_HEADER, CsrfKey};
use super::{Body, ExtraRoutes, body::full, pages};
use crate::operators::{OperatorName, OperatorTokens};
use crate::per_address::{Rate, RateTable};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinker_core::clock::{SharedClock, SystemClock};
use tinker_core::model::{Kind, Owner};
use tinker_core::store::{CHANGE_LOG, EventKind, EventSource, MachineEvent, ObjectChange};
use tinker_core::{Secret, WorkflowStore};

/// The session cookie's name.
const COOKIE: &str = "tinker_session";

/// How long a browser session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Browser sessions held at once; signing in past it ends the oldest.
pub const MAX_SESSIONS: usize = 1024;

/// Largest sign-in form accepted.
const MAX_LOGIN_BODY: usize = 4096;

/// Failed sign-ins and wrong tokens each address may have: 20 at once, then
/// one every 10 s. Past it, the address is answered 429 without its
/// credentials being checked, so a named operator's weak token cannot be
/// guessed at network speed.
pub const AUTH_FAILURES: Rate = Rate {
    burst: 20.0,
    per_second: 0.1,
};

/// Addresses whose failures are tracked at once (the quietest are forgotten
/// first past it).
const AUTH_FAILURE_ADDRESSES: usize = 4096;

/// The status page and the operator API.
#[derive(Clone)]
pub struct OperatorApi {
    store: Arc<dyn WorkflowStore>,
    tokens: Arc<OperatorTokens>,
    sessions: Arc<Mutex<Sessions>>,
    watches: Arc<tokio::sync::Semaphore>,
    clock: SharedClock,
    secure_cookie: bool,
    csrf: CsrfKey,
    auth_failures: Arc<Mutex<RateTable<IpAddr>>>,
}

/// Open browser sessions: the SHA-256 of each session id (so a memory dump or a
/// debug print does not hand out sessions), when it ends and who signed in.
#[derive(Default)]
struct Sessions {
    by_hash: HashMap<[u8; 32], (jiff::Timestamp, OperatorName)>,
}

impl std::fmt::Debug for OperatorApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorApi").finish_non_exhaustive()
    }
}

fn session_hash(id: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes()).into()
}

impl OperatorApi {
    /// The routes over `store`, opened by `token` (the control plane's own
    /// operator token, the operator named [`OperatorName::GENERATED`]).
    pub fn new(store: Arc<dyn WorkflowStore>, token: Secret) -> Self {
        OperatorApi {
            store,
            tokens: Arc::new(OperatorTokens::new().with_token(OperatorName::generated(), &token)),
            sessions: Arc::default(),
            watches: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES)),
            clock: SystemClock::shared(),
            secure_cookie: false,
            csrf: CsrfKey::random(),
            auth_failures: Arc::new(Mutex::new(RateTable::new(
                AUTH_FAILURES,
                AUTH_FAILURE_ADDRESSES,
            ))),
        }
    }

    /// Opens the routes to these named operators too (a tokens file), beside
    /// the token given to [`OperatorApi::new`].
    pub fn with_operators(mut self, more: &OperatorTokens) -> Self {
        self.tokens = Arc::new(self.tokens.as_ref().clone().extended(more));
        self
    }

    /// Reads session times from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Marks the session cookie `Secure` (the page is served over HTTPS).
    pub fn with_secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// The session id the request's cookie names, if any.
    fn session_cookie<B>(req: &Request<B>) -> Option<String> {
        req.headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
    }

    /// Who is calling: the operator whose token the request carries as a
    /// bearer header, or who opened the session its cookie names (a session
    /// that has not ended). `None`: nobody the API knows; the request is
    /// refused. Never a token in the URL.
    ///
    /// This is the one answer to "who did it" for every route that acts
    /// (apply, delete, and the workflow actions): record its name, never the
    /// token.
    pub fn caller<B>(&self, req: &Request<B>) -> Option<OperatorName> {
        if let Some(token) = crate::worker_api::bearer_token(req) {
            return self.tokens.who(token.as_bytes()).cloned();
        }
        let id = Self::session_cookie(req)?;
        let now = self.clock.now();
        let sessions = self.sessions.lock().expect("not poisoned");
        sessions
            .by_hash
            .get(&session_hash(&id))
            .filter(|(ends, _)| *ends > now)
            .map(|(_, who)| who.clone())
    }

    /// Opens a session for `who`: a random id, kept as its hash.
    fn open_session(&self, who: OperatorName) -> Option<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = self.clock.now();
        let mut sessions = self.sessions.lock().expect("not poisoned");
        sessions.by_hash.retain(|_, (ends, _)| *ends > now);
        if sessions.by_hash.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .by_hash
                .iter()
                .min_by_key(|(_, (ends, _))| *ends)
                .map(|(k, _)| *k)
        {
            sessions.by_hash.remove(&oldest);
        }
        sessions
            .by_hash
            .insert(session_hash(&id), (now + SESSION_LIFETIME, who));
        Some(id)
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }

    /// `POST /login` with the form's `token`: a session cookie and back to the
    /// page, or the form again with the reason.
    /// Whether `peer` may try credentials now (it has not used up its failures).
    fn may_try(&self, peer: IpAddr) -> bool {
        let now = self.clock.now();
        let table = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        table.has_token(peer.to_canonical(), now)
    }

    /// Counts a failed sign-in or a wrong token from `peer`.
    fn failed(&self, peer: IpAddr) {
        let now = self.clock.now();
        let mut table = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        table.take(peer.to_canonical(), now);
    }

    async fn login(&self, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let body = match http_body_util::Limited::new(req.into_body(), MAX_LOGIN_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    "the sign-in form is too large\n",
                );
            }
        };
        let given = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| Secret::new(v.trim()))
            .unwrap_or_default();
        let next = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned());
        let Some(who) = self.tokens.who(given.expose().as_bytes()).cloned() else {
            tracing::warn!(%peer, "operator sign-in refused: wrong token");
            self.failed(peer);
            return pages::login(true);
        };
        let Some(id) = self.open_session(who.clone()) else {
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no randomness for a session id\n",
            );
        };
        tracing::info!(operator = %who, "operator signed in");
        let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "signed in\n");
        let h = r.headers_mut();
        let back = pages::after_sign_in(next.as_deref());
        h.insert(
            "location",
            back.parse()
                .unwrap_or_else(|_| "/status".parse().expect("static header")),
        );
        if let Ok(v) = self.cookie(&id, SESSION_LIFETIME.as_secs()).parse() {
            h.insert("set-cookie", v);
        }
        r
    }

    fn logout<B>(&self, req: &Request<B>) -> Response<Body> {
        if let Some(id) = Self::session_cookie(req) {
            self.sessions
                .lock()
                .expect("not poisoned")
                .by_hash
                .remove(&session_hash(&id));
        }
        let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "signed out\n");
        let h = r.headers_mut();
        h.insert("location", "/status".parse().expect("static header"));
        if let Ok(v) = self.cookie("", 0).parse() {
            h.insert("set-cookie", v);
        }
        r
    }
}

/// Most events one answer of `/api/v1/events/{machine}?limit=N` carries.
pub const MAX_EVENTS_PER_ANSWER: usize = 10_000;

/// Largest object document accepted by `POST /api/v1/apply`.
pub const MAX_APPLY_BODY: usize = 1 << 20;

/// A kind as a path or a command line names it: singular or plural, any case,
/// as kubectl takes it.
pub fn kind_named(name: &str) -> Option<Kind> {
    match name.to_ascii_lowercase().as_str() {
        "hardware" | "hardwares" | "hw" => Some(Kind::Hardware),
        "template" | "templates" | "tpl" => Some(Kind::Template),
        "workflow" | "workflows" | "wf" => Some(Kind::Workflow),
        "machine" | "machines" | "bmc" | "bmcs" => Some(Kind::Machine),
        _ => None,
    }
}

/// The machine log an object's changes also go to: a Hardware's own, a
/// Workflow's machine's.
fn machine_of(o: &tinker_core::model::Object) -> Option<String> {
    use tinker_core::model::Object;
    match o {
        Object::Hardware(h) => Some(format!("{}/{}", h.metadata.namespace(), h.metadata.name)),
        Object::Workflow(w) => Some(format!(
            "{}/{}",
            w.metadata.namespace(),
            w.spec.hardware_ref
        )),
        _ => None,
    }
}

/// The refusal of a change to an object that comes from a file of the
/// watched directory (one owner per object: see [`Owner`]).
fn owned_by_file(
    stored: &tinker_core::model::Object,
    key: &tinker_core::model::ObjectKey,
    applied: &[serde_json::Value],
) -> Option<Response<Body>> {
    let Some(Owner::File(file)) = stored.owner() else {
        return None;
    };
    let body = serde_json::json!({
        "status": 409,
        "title": format!("{key} comes from the file {file} of the watched directory; change it there (the API does not change objects a file owns)"),
        "detail": {"object": key.qualified_name(), "owner": format!("file:{file}")},
        "applied": applied,
    });
    Some(respond(
        StatusCode::CONFLICT,
        "application/problem+json",
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

/// A problem document (RFC 9457) as JSON.
pub(super) fn problem(code: StatusCode, title: &str, detail: serde_json::Value) -> Response<Body> {
    let body = serde_json::json!({
        "status": code.as_u16(),
        "title": title,
        "detail": detail,
    });
    respond(
        code,
        "application/problem+json",
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

impl OperatorApi {
    /// `POST /api/v1/apply`: YAML or JSON documents (Hardware, Template,
    /// Workflow), validated together with the same findings as the validate
    /// example, then each written; `metadata.resourceVersion`, when given, must
    /// be the stored version (a stale one is refused with 409).
    async fn apply(&self, req: Request<Incoming>, who: &OperatorName) -> Response<Body> {
        use tinker_core::model::{Document, parse_documents};
        use tinker_core::store::Precondition;
        let body = match http_body_util::Limited::new(req.into_body(), MAX_APPLY_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the documents are too large",
                    serde_json::json!(format!("at most {MAX_APPLY_BODY} bytes")),
                );
            }
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return problem(
                StatusCode::BAD_REQUEST,
                "the documents are not UTF-8",
                serde_json::Value::Null,
            );
        };
        let docs = match parse_documents("request", text) {
            Ok(d) => d,
            Err(e) => {
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the documents cannot be read",
                    serde_json::json!([{"path": "", "reason": e.to_string()}]),
                );
            }
        };
        // Each object stands alone: one with a finding is refused, the rest
        // are written.
        let findings = tinker_core::validate::documents("request", &docs);
        let refused: Vec<serde_json::Value> = findings
            .0
            .iter()
            .map(|f| serde_json::json!({"object": f.object, "path": f.path, "reason": f.reason}))
            .collect();
        // Matched by key: the finding's text is for people.
        let has_finding = |o: &tinker_core::model::Object| {
            let key = o.key();
            findings.0.iter().any(|f| f.key.as_ref() == Some(&key))
        };
        let mut applied = Vec::new();
        for doc in docs {
            let mut object = match doc {
                Document::Object(o) if has_finding(&o) => continue,
                Document::Object(o) => o,
                other => {
                    return problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "a document the API does not store",
                        serde_json::json!([{"object": other.describe(), "path": "kind", "reason": "only Hardware, Template, Workflow and Rufio Machine objects are applied here"}]),
                    );
                }
            };
            let key = object.key();
            // The version is the store's, not part of the object: taken out
            // before the object is written.
            let given = object.metadata_mut().extra.remove("resourceVersion");
            let precondition = match given.as_ref().and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            }) {
                Some(v) => match v.parse::<u64>() {
                    Ok(n) => Precondition::Version(n),
                    Err(_) => {
                        return problem(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "the documents are not valid",
                            serde_json::json!([{"object": key.qualified_name(), "path": "metadata.resourceVersion", "reason": "not a version this store wrote"}]),
                        );
                    }
                },
                None => Precondition::Any,
            };
            let stored = match self.store.get(&key).await {
                Ok(Some(v)) => {
                    if let Some(refusal) = owned_by_file(&v.value, &key, &applied) {
                        return refusal;
                    }
                    Some(v.version)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "apply: store read failed");
                    return problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the store is unavailable",
                        serde_json::json!({"applied": applied}),
                    );
                }
            };
            let existed = stored.is_some();
            // Without a version from the operator, the write is still made
            // against what was just read (its owner checked): a file's object
            // written meanwhile by the watched directory is not overwritten.
            let precondition = match (precondition, stored) {
                (Precondition::Any, Some(v)) => Precondition::Version(v),
                (Precondition::Any, None) => Precondition::Absent,
                (given, _) => given,
            };
            let machine = machine_of(&object);
            object.set_owner(&Owner::Api);
            match self.store.put(object, precondition).await {
                Ok(version) => {
                    let change = if existed {
                        ObjectChange::Updated
                    } else {
                        ObjectChange::Created
                    };
                    self.record_change(who, &key, change, machine).await;
                    applied.push(serde_json::json!({
                    "kind": key.kind.as_str(),
                    "namespace": key.namespace,
                    "name": key.name,
                    "resourceVersion": version.to_string(),
                    "change": change,
                    }));
                }
                Err(
                    tinker_core::Error::Conflict { .. } | tinker_core::Error::AlreadyExists { .. },
                ) => {
                    return problem(
                        StatusCode::CONFLICT,
                        "stale resourceVersion: the object changed since it was read",
                        serde_json::json!({"object": key.qualified_name(), "applied": applied}),
                    );
                }
                Err(tinker_core::Error::Invalid(findings)) => {
                    let detail: Vec<serde_json::Value> = findings
                        .0
                        .iter()
                        .map(|f| serde_json::json!({"object": f.object, "path": f.path, "reason": f.reason}))
                        .collect();
                    return problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "the store refused the object",
                        serde_json::Value::Array(detail),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "apply: store write failed");
                    return problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the store is unavailable",
                        serde_json::json!({"applied": applied}),
                    );
                }
            }
        }
        tracing::info!(
            operator = %who,
            applied = applied.len(),
            refused = refused.len(),
            "operator applied objects"
        );
        if !refused.is_empty() {
            let body = serde_json::json!({
                "status": 422,
                "title": "some objects are not valid; the others were applied",
                "detail": refused,
                "applied": applied,
            });
            return respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application/problem+json",
                serde_json::to_vec(&body).unwrap_or_default(),
            );
        }
        respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&applied).unwrap_or_default(),
        )
    }

    /// Records who changed what (see [`record_change`]).
    async fn record_change(
        &self,
        who: &OperatorName,
        key: &tinker_core::model::ObjectKey,
        change: ObjectChange,
        machine: Option<String>,
    ) {
        let now = self.clock.now();
        record_change(
            self.store.as_ref(),
            now,
            &who.to_string(),
            key,
            change,
            machine,
        )
        .await;
    }

    /// `DELETE /api/v1/{kind}/{namespace}/{name}`.
    async fn delete(&self, path: &str, who: &OperatorName) -> Response<Body> {
        use tinker_core::store::Precondition;
        let parts: Vec<String> = path
            .trim_start_matches("/api/v1/")
            .split('/')
            .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
            .collect();
        let [kind, namespace, name] = parts.as_slice() else {
            return problem(
                StatusCode::NOT_FOUND,
                "delete /api/v1/{kind}/{namespace}/{name}",
                serde_json::Value::Null,
            );
        };
        let Some(kind) = kind_named(kind) else {
            return problem(
                StatusCode::NOT_FOUND,
                "no such kind",
                serde_json::json!(kind),
            );
        };
        let key = tinker_core::model::ObjectKey::new(kind, namespace.as_str(), name.as_str());
        // Deleted as it was read (its owner checked): a file's object
        // written meanwhile is not deleted.
        let (machine, version) = match self.store.get(&key).await {
            Ok(Some(v)) => {
                if let Some(refusal) = owned_by_file(&v.value, &key, &[]) {
                    return refusal;
                }
                (machine_of(&v.value), v.version)
            }
            Ok(None) => {
                return problem(
                    StatusCode::NOT_FOUND,
                    "no such object",
                    serde_json::json!(key.qualified_name()),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "delete: store read failed");
                return problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable",
                    serde_json::Value::Null,
                );
            }
        };
        match self
            .store
            .delete(&key, Precondition::Version(version))
            .await
        {
            Ok(()) => {
                self.record_change(who, &key, ObjectChange::Deleted, machine)
                    .await;
                tracing::info!(operator = %who, object = %key.qualified_name(), "operator deleted an object");
                respond(StatusCode::NO_CONTENT, "text/plain", "")
            }
            Err(tinker_core::Error::NotFound { .. }) => problem(
                StatusCode::NOT_FOUND,
                "no such object",
                serde_json::json!(key.qualified_name()),
            ),
            Err(tinker_core::Error::Conflict { .. }) => problem(
                StatusCode::CONFLICT,
                "the object changed while it was deleted; read it again",
                serde_json::json!(key.qualified_name()),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "delete: store write failed");
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable",
                    serde_json::Value::Null,
                )
            }
        }
    }
}

/// Records who changed what: in the change log ([`CHANGE_LOG`]) and, for a
/// Hardware or a Workflow, in its machine's log. The change is made already;
/// a store that cannot take the event is logged, not answered as a failed
/// change. Every operator change goes through here: applies, deletes and
/// the acts on a workflow.
pub(super) async fn record_change(
    store: &dyn WorkflowStore,
    now: jiff::Timestamp,
    who: &str,
    key: &tinker_core::model::ObjectKey,
    change: ObjectChange,
    machine: Option<String>,
) {
    let kind = EventKind::ObjectChanged {
        by: who.to_string(),
        object: key.clone(),
        change,
    };
    let mut events = vec![MachineEvent::new(
        now,
        CHANGE_LOG,
        EventSource::Api,
        kind.clone(),
    )];
    if let Some(machine) = machine {
        let mut e = MachineEvent::new(now, machine, EventSource::Api, kind);
        if key.kind == Kind::Workflow {
            e = e.for_workflow(key.qualified_name());
        }
        events.push(e);
    }
    if let Err(e) = store.append_events(events).await {
        tracing::warn!(error = %e, object = %key, "the change could not be recorded");
    }
}

pub(super) fn respond(
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

impl OperatorApi {
    /// Refuses a state-changing request that a session cookie opened without
    /// the session's CSRF token (see [`super::csrf`]); `None` lets it through.
    /// Called for every request under `/api/v1/` once it is authorized, so
    /// each route added there is covered.
    fn csrf_refusal<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return None;
        }
        // The bearer token is the operator's own: no browser adds it by itself.
        if crate::worker_api::bearer_token(req).is_some() {
            return None;
        }
        let id = Self::session_cookie(req).unwrap_or_default();
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !given.is_empty() && self.csrf.matches(&id, given) {
            return None;
        }
        tracing::warn!(method = %req.method(), path = %req.uri().path(), "operator request refused: no valid CSRF token with a session cookie");
        Some(problem(
            StatusCode::FORBIDDEN,
            "a request with a session cookie must carry the session's CSRF token",
            serde_json::json!(format!(
                "send the token from GET /api/v1/session as the {CSRF_HEADER} header, or the operator token as Authorization: Bearer"
            )),
        ))
    }

    /// `GET /api/v1/session`: the session's CSRF token for the pages' scripts.
    fn session<B>(&self, req: &Request<B>) -> Response<Body> {
        let token = match crate::worker_api::bearer_token(req) {
            Some(_) => None,
            None => Self::session_cookie(req).and_then(|id| self.csrf.token(&id)),
        };
        respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&serde_json::json!({ "csrfToken": token })).unwrap_or_default(),
        )
    }
}

#[async_trait::async_trait]
impl ExtraRoutes for OperatorApi {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, Request<Incoming>> {
        let path = req.uri().path().to_string();
        // The pages themselves hold no data (their scripts fetch it with the
        // session's cookie, and show the sign-in form on a 401), so they are
        // served to anyone: after a sign-in that began on another site, a
        // `SameSite=Strict` cookie is not sent with the navigation, but is with
        // the page's own requests.
        if matches!(*req.method(), Method::GET | Method::HEAD)
            && let Some(page) = pages::get(&path)
        {
            return Ok(page);
        }
        let tries_credentials =
            path == "/login" && req.method() == Method::POST || path.starts_with("/api/v1/");
        if tries_credentials && !self.may_try(peer) {
            let mut r = respond(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain",
                "too many failed sign-ins from this address; try again later\n",
            );
            r.headers_mut()
                .insert("retry-after", "10".parse().expect("static header"));
            return Ok(r);
        }
        match (req.method(), path.as_str()) {
            (&Method::POST, "/login") => return Ok(self.login(req, peer).await),
            // Signing out needs no CSRF token: all a forged one can do is end
            // the session (and the cookie is `SameSite=Strict`).
            (&Method::POST, "/logout") => return Ok(self.logout(&req)),
            _ if path.starts_with("/api/v1/") => {}
            _ => return Err(req),
        }
        let Some(caller) = self.caller(&req) else {
            // Only a credential that was sent and is wrong counts: a page
            // asking before its sign-in is not a guess.
            if crate::worker_api::bearer_token(&req).is_some()
                || Self::session_cookie(&req).is_some()
            {
                self.failed(peer);
            }
            return Ok(respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "the operator token is missing or wrong (send it as Authorization: Bearer)\n",
            ));
        };
        if let Some(refused) = self.csrf_refusal(&req) {
            return Ok(refused);
        }
        if req.method() == Method::GET && path == "/api/v1/session" {
            return Ok(self.session(&req));
        }
        if req.method() == Method::POST && path == "/api/v1/apply" {
            return Ok(self.apply(req, &caller).await);
        }
        if req.method() == Method::POST
            && let Some(target) = super::operate::route(path.trim_start_matches("/api/v1/"))
        {
            let now = self.clock.now();
            // Who acts: the operator the token or session names.
            return Ok(super::operate::answer(
                self.store.as_ref(),
                target,
                req,
                caller.to_string(),
                now,
            )
            .await);
        }
        if req.method() == Method::DELETE {
            return Ok(self.delete(&path, &caller).await);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET, POST /api/v1/apply, POST /api/v1/workflows/{ns}/{name}/cancel|rerun|retry or DELETE\n",
            ));
        }
        let kind = match path.trim_start_matches("/api/v1/") {
            "hardware" => Kind::Hardware,
            "templates" => Kind::Template,
            "workflows" => Kind::Workflow,
            "machines" => Kind::Machine,
            rest if req.method() == Method::GET && super::diagnosis::view(rest).is_some() => {
                let now = self.clock.now();
                return Ok(super::diagnosis::answer(self.store.as_ref(), rest, now).await);
            }
            rest => {
                let log = if rest == "changes" {
                    Some(CHANGE_LOG.into())
                } else {
                    rest.strip_prefix("events/")
                        .map(|m| percent_decode_str(m).decode_utf8_lossy())
                };
                if let Some(machine) = log {
                    // `?limit=N`: the last N events (50 by default, at most
                    // MAX_EVENTS_PER_ANSWER).
                    let limit = req
                        .uri()
                        .query()
                        .unwrap_or_default()
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("limit="))
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(50)
                        .min(MAX_EVENTS_PER_ANSWER);
                    return Ok(match self.store.events(&machine, limit).await {
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
        if let Some(after) = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("watch="))
        {
            return Ok(self.watch(kind, after).await);
        }
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

/// Longest a watch waits for a change before it answers with the list as it
/// is (below the HTTP server's stall timeout, so the connection stays open).
pub const WATCH_WAIT: Duration = Duration::from_secs(20);

/// Watches held at once, all operators together; more are answered 503.
pub const MAX_WATCHES: usize = 64;

/// What a list held: each object's key and version, hashed. Two lists with
/// the same token hold the same versions of the same objects.
fn list_token(items: &[tinker_core::Versioned<tinker_core::model::Object>]) -> String {
    use sha2::Digest;
    let mut keys: Vec<(String, u64)> = items
        .iter()
        .map(|i| (i.value.key().qualified_name(), i.version))
        .collect();
    keys.sort();
    let mut h = sha2::Sha256::new();
    for (k, v) in keys {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update(v.to_be_bytes());
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl OperatorApi {
    /// `GET /api/v1/{kind}?watch=TOKEN`: a long poll on the store's change
    /// feed. The list (`{"token": ..., "items": [...]}`) as soon as it differs
    /// from the one `TOKEN` names (at once for an empty or unknown token), or
    /// as it is after [`WATCH_WAIT`]. The feed is joined before the list is
    /// read, so a change between two polls is never missed.
    async fn watch(&self, kind: Kind, after: &str) -> Response<Body> {
        let Ok(_held) = self.watches.clone().try_acquire_owned() else {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many watches at once; try again",
                serde_json::json!(MAX_WATCHES),
            );
        };
        let mut feed = self.store.watch();
        let deadline = self.clock.now() + WATCH_WAIT;
        loop {
            let items = match self.store.list(kind).await {
                Ok(items) => items,
                Err(_) => {
                    return respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "store unavailable\n",
                    );
                }
            };
            let token = list_token(&items);
            let answer = || {
                respond(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&serde_json::json!({"token": token, "items": items}))
                        .unwrap_or_default(),
                )
            };
            if token != after {
                return answer();
            }
            let changed = async {
                loop {
                    match feed.recv().await {
                        Ok(c) if c.key.kind == kind => return,
                        Ok(_) => {}
                        // Missed some: read the list again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        // No more changes will come: wait out the deadline.
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            tokio::select! {
                _ = self.clock.sleep_until(deadline) => return answer(),
                _ = changed => {}
            }
        }
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
