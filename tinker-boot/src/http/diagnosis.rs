//! `GET /api/v1/workflows/{namespace}/{name}/diagnosis`: "why is it pending?"
//! for one workflow, as JSON: the [`tinker_core::diagnose::Diagnosis`], or
//! `{"diagnosis": null}` when it is running fine or has finished.
//!
//! `GET /api/v1/workflows/{namespace}/{name}/timeline`: where the time went, as
//! `{"timeline": Timeline, "diagnosis": Diagnosis | null}` (see
//! [`tinker_core::timeline`]), what the workflow's status page draws.
//!
//! The operator API authorizes the request before it gets here.

use super::Body;
use super::body::full;
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use tinker_core::WorkflowStore;
use tinker_core::diagnose::{Diagnosis, why_pending};
use tinker_core::model::{Hardware, Kind, Object, ObjectKey, Workflow};
use tinker_core::store::MachineEvent;
use tinker_core::timeline::{Timeline, output_logs, timeline};

/// The machine's newest events read for a diagnosis: enough to reach back to
/// the workflow's rendering past a few hundred lines of action output, bounded
/// so one request costs a fixed amount.
const EVENTS_READ: usize = 1000;

/// What a workflow path under `/api/v1/workflows/{namespace}/{name}/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// `.../diagnosis`
    Diagnosis,
    /// `.../timeline`
    Timeline,
}

/// The view and workflow a path names (`rest` is the path after `/api/v1/`),
/// percent-decoded.
pub(super) fn view(rest: &str) -> Option<(View, String, String)> {
    if let Some((ns, name)) = workflow_route(rest, "/diagnosis") {
        return Some((View::Diagnosis, ns, name));
    }
    workflow_route(rest, "/timeline").map(|(ns, name)| (View::Timeline, ns, name))
}

/// The workflow a diagnosis path names (`rest` is the path after `/api/v1/`),
/// percent-decoded.
#[cfg(test)]
fn route(rest: &str) -> Option<(String, String)> {
    workflow_route(rest, "/diagnosis")
}

/// The workflow a path `workflows/{namespace}/{name}{suffix}` names (`rest` is
/// the path after `/api/v1/`), percent-decoded.
pub(super) fn workflow_route(rest: &str, suffix: &str) -> Option<(String, String)> {
    let rest = rest.strip_prefix("workflows/")?.strip_suffix(suffix)?;
    let (namespace, name) = rest.split_once('/')?;
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let (namespace, name) = (decode(namespace)?, decode(name)?);
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((namespace, name))
}

/// The answer to a diagnosis or timeline path (see [`view`]) at `now`.
pub(super) async fn answer(
    store: &dyn WorkflowStore,
    rest: &str,
    now: jiff::Timestamp,
) -> Response<Body> {
    let Some((view, namespace, name)) = view(rest) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let run = match load(store, &namespace, &name).await {
        Ok(Some(run)) => run,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such workflow\n"),
        Err(_) => return text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    };
    let diagnosis = why_pending(&run.workflow, run.hardware.as_ref(), &run.events, now);
    match view {
        View::Diagnosis => json(&DiagnosisAnswer { diagnosis }),
        View::Timeline => {
            let mut timeline = timeline(&run.workflow, &run.events, now);
            timeline.logs = output_logs(&run.workflow, &run.machine);
            timeline.machine = run.machine;
            json(&TimelineAnswer {
                timeline,
                diagnosis,
            })
        }
    }
}

/// The JSON body: `{"diagnosis": ...}`, `null` when there is nothing to explain.
#[derive(serde::Serialize)]
struct DiagnosisAnswer {
    diagnosis: Option<Diagnosis>,
}

/// The JSON body of a timeline: the timeline, and why it is pending.
#[derive(serde::Serialize)]
struct TimelineAnswer {
    timeline: Timeline,
    diagnosis: Option<Diagnosis>,
}

/// A workflow, its machine and the machine's newest events.
struct Run {
    workflow: Workflow,
    hardware: Option<Hardware>,
    /// The name its events are logged under.
    machine: String,
    events: Vec<MachineEvent>,
}

/// The workflow and what its answers read (`None`: no such workflow), from
/// the store.
async fn load(
    store: &dyn WorkflowStore,
    namespace: &str,
    name: &str,
) -> tinker_core::Result<Option<Run>> {
    let key = ObjectKey::new(Kind::Workflow, namespace, name);
    let Some(Object::Workflow(workflow)) = store.get(&key).await?.map(|v| v.value) else {
        return Ok(None);
    };
    let hw_key = ObjectKey::new(
        Kind::Hardware,
        namespace,
        workflow.spec.hardware_ref.clone(),
    );
    let hardware = match store.get(&hw_key).await?.map(|v| v.value) {
        Some(Object::Hardware(hw)) => Some(hw),
        _ => None,
    };
    // The engine logs under the Hardware's name, or the workflow's when it has
    // no Hardware.
    let machine = match &hardware {
        Some(_) => hw_key.qualified_name(),
        None => key.qualified_name(),
    };
    let events = store.events(&machine, EVENTS_READ).await?;
    Ok(Some(Run {
        workflow,
        hardware,
        machine,
        events,
    }))
}

fn json(body: &impl serde::Serialize) -> Response<Body> {
    let mut r = text(StatusCode::OK, serde_json::to_vec(body).unwrap_or_default());
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r
}

fn text(code: StatusCode, body: impl Into<hyper::body::Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body.into()));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert("content-type", "text/plain".parse().expect("static header"));
    h.insert("cache-control", "no-store".parse().expect("static header"));
    r
}

#[cfg(test)]
mod tests {
    use super::{View, route, view};

    #[test]
    fn the_path_names_one_workflow() {
        let some = |ns: &str, n: &str| Some((ns.to_string(), n.to_string()));
        assert_eq!(
            route("workflows/default/wf1/diagnosis"),
            some("default", "wf1")
        );
        assert_eq!(route("workflows/a%2Db/w%20x/diagnosis"), some("a-b", "w x"));
        assert_eq!(route("workflows/default/a/b/diagnosis"), None);
        assert_eq!(route("workflows//wf/diagnosis"), None);
        assert_eq!(route("workflows/default/wf1"), None);
        assert_eq!(route("workflows/default/%FF/diagnosis"), None);
        assert_eq!(
            view("workflows/default/wf1/timeline"),
            Some((View::Timeline, "default".into(), "wf1".into()))
        );
        assert_eq!(view("workflows/default/wf1/timelines"), None);
    }
}
