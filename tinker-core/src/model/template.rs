//! The `Template` object (a Go template in `spec.data`) and `TemplateData`, what
//! `spec.data` becomes once rendered: tasks, each for one worker, each a list of
//! actions (container images with command, environment and volumes).

use super::{Extra, ObjectMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A `tinkerbell.org/v1alpha1` `Template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// `tinkerbell.org/v1alpha1`.
    pub api_version: String,
    /// `Template`.
    pub kind: String,
    /// Name and namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The template text.
    #[serde(default)]
    pub spec: TemplateSpec,
    /// Status as another system wrote it; kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_norway::Value>,
    /// Unknown top-level fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `Template.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateSpec {
    /// A Go template that renders to YAML [`TemplateData`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Template {
    /// A template in the default namespace with the given data.
    pub fn new(name: &str, data: impl Into<String>) -> Self {
        Template {
            api_version: super::API_VERSION_V1ALPHA1.into(),
            kind: "Template".into(),
            metadata: ObjectMeta::named(name),
            spec: TemplateSpec {
                data: Some(data.into()),
                extra: Extra::new(),
            },
            status: None,
            extra: Extra::new(),
        }
    }
}

/// What the machine should do on failure or timeout, once the workflow has ended
/// (a Tinker extension of the template data: `failure_power: off`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FailurePower {
    /// Leave the machine as it is, so an operator can look at its console (default).
    #[default]
    Unchanged,
    /// Power it off.
    Off,
    /// Power it on (or keep it on).
    On,
}

/// A rendered template: `spec.data` after Go-template rendering, parsed.
///
/// Unknown keys are refused, not ignored: a misspelt `enviroment` must not silently
/// drop an action's environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateData {
    /// Template format version, `"0.1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Template name.
    #[serde(default)]
    pub name: String,
    /// Legacy id, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Seconds the whole workflow may take once its first action starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_timeout: Option<i64>,
    /// What to do with the machine's power if the workflow fails (Tinker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_power: Option<FailurePower>,
    /// Tasks, run in order.
    #[serde(default)]
    pub tasks: Vec<TaskTemplate>,
}

/// One task: actions for one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    /// Task name, unique in the template.
    #[serde(default)]
    pub name: String,
    /// The worker (usually a MAC, from `{{.device_1}}`).
    #[serde(default)]
    pub worker: String,
    /// Volumes for every action of the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Environment for every action of the task (an action's own value wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Actions, run in order.
    #[serde(default)]
    pub actions: Vec<ActionTemplate>,
}

/// One action: a container image to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionTemplate {
    /// Action name, unique in its task.
    #[serde(default)]
    pub name: String,
    /// The image, such as `quay.io/tinkerbell/actions/image2disk:latest`.
    #[serde(default)]
    pub image: String,
    /// Seconds the action may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Command (overrides the image's entrypoint arguments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Legacy: command run when the action times out (kept, not run).
    #[serde(default, rename = "on-timeout", skip_serializing_if = "Vec::is_empty")]
    pub on_timeout: Vec<String>,
    /// Legacy: command run when the action fails (kept, not run).
    #[serde(default, rename = "on-failure", skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// Volumes (`host:container[:ro]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Environment. Values keep their text as written (`MODE: 0600` stays `0600`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// PID namespace (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Namespaces (`network`, `pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<BTreeMap<String, String>>,
    /// How many times a failed attempt is tried again. Tinkerbell's v1alpha2
    /// puts it on an action; Tinker accepts it on v1alpha1 actions too (an
    /// extension), keeps it when the template is written back, and retries
    /// with the shared backoff. At most
    /// [`MAX_ACTION_RETRIES`](super::MAX_ACTION_RETRIES).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}
