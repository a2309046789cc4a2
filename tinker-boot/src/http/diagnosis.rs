//! `GET /api/v1/workflows/{namespace}/{name}/diagnosis`: "why is it pending?"
//! for one workflow, as JSON: the [`tinker_core::diagnose::Diagnosis`], or
//! `{"diagnosis": null}` when it is running fine or has finished. The operator
//! API authorizes the request before it gets here.

use super::Body;
use super::body::full;
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use tinker_core::WorkflowStore;
use tinker_core::diagnose::{Diagnosis, why_pending};
use tinker_core::model::{Kind, Object, ObjectKey};

/// The machine's newest events read for a diagnosis: enough to reach back to
/// the workflow's rendering past a few hundred lines of action output, bounded
/// so one request costs a fixed amount.
const EVENTS_READ: usize = 1000;

/// The workflow a diagnosis path names (`rest` is the path after `/api/v1/`),
/// percent-decoded.
pub(super) fn route(rest: &str) -> Option<(String, String)> {
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

/// The answer to a diagnosis path (see [`route`]) at `now`.
pub(super) async fn answer(
    store: &dyn WorkflowStore,
    rest: &str,
    now: jiff::Timestamp,
) -> Response<Body> {
    let Some((namespace, name)) = route(rest) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    match diagnose(store, &namespace, &name, now).await {
        Ok(Some(diagnosis)) => json(&DiagnosisAnswer { diagnosis }),
        Ok(None) => text(StatusCode::NOT_FOUND, "no such workflow\n"),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}

/// The JSON body: `{"diagnosis": ...}`, `null` when there is nothing to explain.
#[derive(serde::Serialize)]
struct DiagnosisAnswer {
    diagnosis: Option<Diagnosis>,
}

/// The workflow's diagnosis (`None`: no such workflow), from the store.
async fn diagnose(
    store: &dyn WorkflowStore,
    namespace: &str,
    name: &str,
    now: jiff::Timestamp,
) -> tinker_core::Result<Option<Option<Diagnosis>>> {
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
    Ok(Some(why_pending(
        &workflow,
        hardware.as_ref(),
        &events,
        now,
    )))
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
    use super::route;

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
    }
}
