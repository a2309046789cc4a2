//! The operator's acts on a workflow: cancel, re-run, retry. The operator API
//! authorizes the request before it gets here.
//!
//! | request | body | what |
//! |---|---|---|
//! | `POST /api/v1/workflows/{ns}/{name}/cancel` | `{}` or none | FAILED with the reason `cancelled by NAME`; our agent stops the running action at its next heartbeat |
//! | `POST /api/v1/workflows/{ns}/{name}/rerun` | `{}` or none | a finished workflow starts a fresh execution (netboot on, every action pending) |
//! | `POST /api/v1/workflows/{ns}/{name}/retry` | `{}`, or `{"action": "NAME"}` | a finished workflow starts again from its first action that did not succeed (or from the named one), keeping the successes before it |
//!
//! Each answers `200` with the workflow as `GET /api/v1/workflows` lists it
//! (`{"version": N, "value": {...}}`); `409` with a problem document when the
//! workflow's state does not allow it (the title says why); `404` for no such
//! workflow or action.
//!
//! The request must say `Content-Type: application/json`. A browser sends that
//! across sites only after a CORS preflight, which this API never grants, so a
//! page on another site cannot make a signed-in operator's browser cancel or
//! re-run anything with a plain form or image (CSRF), whatever its cookies.

use super::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tinker_core::model::{Kind, ObjectKey};
use tinker_core::state::WorkflowEvent;
use tinker_core::store::ObjectChange;
use tinker_core::{Error, WorkflowStore, WorkflowStoreExt};

/// The largest body read (`{"action": "..."}`).
const MAX_BODY: usize = 4096;

/// What an operator does to a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    /// `.../cancel`.
    Cancel,
    /// `.../rerun`.
    Rerun,
    /// `.../retry`.
    Retry,
}

impl Act {
    /// The act as a recorded change.
    fn change(self) -> ObjectChange {
        match self {
            Act::Cancel => ObjectChange::Cancelled,
            Act::Rerun => ObjectChange::Rerun,
            Act::Retry => ObjectChange::Retried,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Act::Cancel => "cancelled",
            Act::Rerun => "re-ran",
            Act::Retry => "retried",
        }
    }
}

/// The workflow and the act a path names (`rest` is the path after `/api/v1/`).
pub(super) fn route(rest: &str) -> Option<(String, String, Act)> {
    [
        ("/cancel", Act::Cancel),
        ("/rerun", Act::Rerun),
        ("/retry", Act::Retry),
    ]
    .into_iter()
    .find_map(|(suffix, act)| {
        super::diagnosis::workflow_route(rest, suffix).map(|(ns, name)| (ns, name, act))
    })
}

/// The body of `.../retry`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// The action to start from, by name; none: the first that did not succeed.
    #[serde(default)]
    action: Option<String>,
}

/// Carries out `act` on the workflow `namespace/name` at `now`, as the operator
/// named `by` (the reason of a cancel says who).
pub(super) async fn answer(
    store: &dyn WorkflowStore,
    (namespace, name, act): (String, String, Act),
    req: Request<Incoming>,
    by: String,
    now: jiff::Timestamp,
) -> Response<Body> {
    let json_sent = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_sent {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json (a cross-site form cannot)",
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"),
    };
    let body: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return problem(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")),
        }
    };
    if body.action.is_some() && act != Act::Retry {
        return problem(StatusCode::BAD_REQUEST, "only a retry names an action");
    }
    let key = ObjectKey::new(Kind::Workflow, namespace.as_str(), name.as_str());
    let workflow = match store.workflow(&namespace, &name).await {
        Ok(Some(w)) => w.value,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such workflow"),
        Err(_) => return problem(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    };
    let event = match act {
        Act::Cancel => WorkflowEvent::Cancel { by: by.clone() },
        Act::Rerun => WorkflowEvent::Rerun { by: by.clone() },
        Act::Retry => {
            let from = match &body.action {
                None => None,
                Some(action) => {
                    let found = workflow
                        .status
                        .as_ref()
                        .and_then(|s| s.actions().position(|(_, a)| &a.name == action));
                    match found {
                        Some(i) => Some(i),
                        None => {
                            return problem(
                                StatusCode::NOT_FOUND,
                                &format!("the workflow has no action {action:?}"),
                            );
                        }
                    }
                }
            };
            WorkflowEvent::Retry {
                by: by.clone(),
                from,
            }
        }
    };
    match store.apply_event(&key, &event, now).await {
        Ok(applied) => {
            tracing::info!(workflow = %key.qualified_name(), by, act = act.verb(), "operator acted on a workflow");
            let machine = format!("{namespace}/{}", workflow.spec.hardware_ref);
            super::operator::record_change(store, now, &by, &key, act.change(), Some(machine))
                .await;
            super::operator::respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&applied.workflow).unwrap_or_default(),
            )
        }
        Err(Error::Transition { reason, .. }) => problem(StatusCode::CONFLICT, &reason.to_string()),
        Err(Error::NotFound { .. }) => problem(StatusCode::NOT_FOUND, "no such workflow"),
        Err(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    }
}

/// A problem document (RFC 9457) with `title`.
fn problem(code: StatusCode, title: &str) -> Response<Body> {
    super::operator::problem(code, title, serde_json::Value::Null)
}
