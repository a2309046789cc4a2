//! Tinkerbell's `tinkerbell.org/v1alpha1` objects (Hardware, Template, Workflow) read
//! and written as Tinkerbell users write them, plus the loader that turns a YAML file
//! (one object, a list of objects, or several `---` documents) into typed documents.
//!
//! Fields Tinker does not use are kept, not dropped: every object level that
//! Kubernetes or Tinkerbell may extend has an `extra` map, so a file read and written
//! back loses nothing. The rendered template data (`spec.data` after rendering) is
//! the exception: there unknown keys are rejected, because a misspelt key such as
//! `enviroment` would otherwise silently change what a machine runs.

mod agent;
mod hardware;
mod machine;
mod owner;
mod template;
mod workflow;

pub use agent::{AgentAction, AgentEnvVar, AgentNamespaces};
pub use hardware::{
    Dhcp, Disk, Hardware, HardwareMetadata, HardwareSpec, Instance, Interface, IpConfig, Ipxe,
    METADATA_TOKEN_SHA256, NETBOOT_SINCE, Netboot, ObjectReference, Osie,
};
pub use machine::{Machine, MachineConnection, MachineSpec, RUFIO_API_VERSION, SecretReference};
pub use owner::{OWNER_ANNOTATION, Owner};
pub use template::{
    ActionTemplate, FailurePower, TaskTemplate, Template, TemplateData, TemplateSpec,
};
pub use workflow::{
    ActionRecord, ActionStatus, AttemptRecord, BootOptions, Cancellation, CurrentState,
    ExecutionRecord, GaveUp, MAX_ACTION_RETRIES, MAX_EXECUTIONS_KEPT, MachinePhase, MachineStep,
    MachineSteps, ParkReason, Parked, Restart, TaskStatus, Workflow, WorkflowSpec, WorkflowStatus,
};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Unknown fields kept as they were read.
pub type Extra = BTreeMap<String, serde_norway::Value>;

/// The API group and version Tinker reads natively.
pub const API_VERSION_V1ALPHA1: &str = "tinkerbell.org/v1alpha1";

/// The namespace of an object whose `metadata.namespace` is absent, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Kubernetes object metadata: name and namespace, labels and annotations; the rest
/// (uid, resourceVersion, managedFields, ...) is kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The object's name, unique per kind and namespace.
    #[serde(default)]
    pub name: String,
    /// The namespace; [`DEFAULT_NAMESPACE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields Tinker does not interpret, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ObjectMeta {
    /// Metadata with a name in the default namespace.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The namespace, defaulted.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// The kinds of object Tinker stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A machine.
    Hardware,
    /// A list of tasks and actions, as a Go template.
    Template,
    /// A template applied to a machine.
    Workflow,
    /// A machine's BMC (Rufio's `bmc.tinkerbell.org/v1alpha1` Machine).
    Machine,
}

impl Kind {
    /// All kinds, in dependency order (a workflow refers to the other two).
    pub const ALL: [Kind; 4] = [
        Kind::Machine,
        Kind::Hardware,
        Kind::Template,
        Kind::Workflow,
    ];

    /// The kind's name as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hardware => "Hardware",
            Kind::Template => "Template",
            Kind::Workflow => "Workflow",
            Kind::Machine => "Machine",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a stored object: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A key in the given namespace.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A key in the default namespace.
    pub fn default_ns(kind: Kind, name: impl Into<String>) -> Self {
        Self::new(kind, DEFAULT_NAMESPACE, name)
    }

    /// `namespace/name`, the form Tinkerbell's worker API uses as workflow id.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A Hardware, Template or Workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A machine.
    Hardware(Hardware),
    /// A template.
    Template(Template),
    /// A workflow.
    Workflow(Workflow),
    /// A Rufio Machine (a BMC).
    Machine(Machine),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Hardware(_) => Kind::Hardware,
            Object::Template(_) => Kind::Template,
            Object::Workflow(_) => Kind::Workflow,
            Object::Machine(_) => Kind::Machine,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Hardware(o) => &o.metadata,
            Object::Template(o) => &o.metadata,
            Object::Workflow(o) => &o.metadata,
            Object::Machine(o) => &o.metadata,
        }
    }

    /// The object's metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Hardware(o) => &mut o.metadata,
            Object::Template(o) => &mut o.metadata,
            Object::Workflow(o) => &mut o.metadata,
            Object::Machine(o) => &mut o.metadata,
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let m = self.metadata();
        ObjectKey::new(self.kind(), m.namespace(), m.name.clone())
    }
}

impl<'de> Deserialize<'de> for Object {
    /// Dispatches on `kind`: the three kinds share enough optional fields that
    /// trying each in turn would read a Template as a Hardware.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_norway::Value::deserialize(d)?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let object = match kind {
            "Hardware" => {
                Object::Hardware(serde_norway::from_value(value).map_err(D::Error::custom)?)
            }
            "Template" => {
                Object::Template(serde_norway::from_value(value).map_err(D::Error::custom)?)
            }
            "Workflow" => {
                Object::Workflow(serde_norway::from_value(value).map_err(D::Error::custom)?)
            }
            "Machine" => {
                Object::Machine(serde_norway::from_value(value).map_err(D::Error::custom)?)
            }
            other => return Err(D::Error::custom(format!("unknown kind {other:?}"))),
        };
        Ok(object)
    }
}

impl From<Hardware> for Object {
    fn from(o: Hardware) -> Self {
        Object::Hardware(o)
    }
}
impl From<Template> for Object {
    fn from(o: Template) -> Self {
        Object::Template(o)
    }
}
impl From<Workflow> for Object {
    fn from(o: Workflow) -> Self {
        Object::Workflow(o)
    }
}
impl From<Machine> for Object {
    fn from(o: Machine) -> Self {
        Object::Machine(o)
    }
}

/// One document read from a Tinkerbell YAML file.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // read once per file; boxing would only add noise
pub enum Document {
    /// A `tinkerbell.org/v1alpha1` Hardware, Template or Workflow.
    Object(Object),
    /// A list of actions in the format of the Tinkerbell agent's file transport
    /// (`cmd/agent/example`): `id`, `name`, `image`, `cmd`, `args`, `env`, ...
    AgentActions(Vec<AgentAction>),
    /// A document of an API version or kind that Tinker reads but does not yet
    /// interpret (for example `tinkerbell.org/v1alpha2`, `bmc.tinkerbell.org`): kept
    /// verbatim so that it can be written back unchanged.
    Unsupported {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
        /// The whole document.
        value: serde_norway::Value,
    },
}

impl Document {
    /// A short description for messages: `Hardware default/sm01`.
    pub fn describe(&self) -> String {
        match self {
            Document::Object(o) => o.key().to_string(),
            Document::AgentActions(a) => format!("agent action list ({} actions)", a.len()),
            Document::Unsupported {
                api_version, kind, ..
            } => format!("{kind} ({api_version})"),
        }
    }

    /// The document as a YAML value, for writing back.
    pub fn to_value(&self) -> Result<serde_norway::Value> {
        let v = match self {
            Document::Object(o) => serde_norway::to_value(o),
            Document::AgentActions(a) => serde_norway::to_value(a),
            Document::Unsupported { value, .. } => Ok(value.clone()),
        };
        v.map_err(|e| Error::backend("yaml", e))
    }
}

/// Reads every document of a YAML file: `---`-separated documents, each either one
/// object or a list of objects (Tinkerbell's file backend writes lists).
///
/// `file` names the source in errors. Errors name the document and the field path,
/// for example `hw.yaml: document 1, item 3: spec.interfaces[0].dhcp.lease_time:
/// invalid type: string "x", expected i64`.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    for (doc_index, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(de).map_err(|e| Error::Parse {
            file: file.to_string(),
            path: format!("document {}", doc_index + 1),
            reason: e.to_string(),
        })?;
        let here = |item: Option<usize>| match item {
            Some(i) => format!("{file}: document {}, item {}", doc_index + 1, i + 1),
            None => format!("{file}: document {}", doc_index + 1),
        };
        match value {
            serde_norway::Value::Null => {} // an empty document, such as a leading `---`
            serde_norway::Value::Sequence(items) => {
                if !items.is_empty() && items.iter().all(is_agent_action) {
                    out.push(Document::AgentActions(typed(
                        &here(None),
                        items_value(items),
                    )?));
                } else {
                    for (i, item) in items.into_iter().enumerate() {
                        out.push(document_from_value(&here(Some(i)), item)?);
                    }
                }
            }
            other => out.push(document_from_value(&here(None), other)?),
        }
    }
    Ok(out)
}

fn items_value(items: Vec<serde_norway::Value>) -> serde_norway::Value {
    serde_norway::Value::Sequence(items)
}

fn is_agent_action(v: &serde_norway::Value) -> bool {
    v.get("apiVersion").is_none() && v.get("image").is_some() && v.get("name").is_some()
}

fn document_from_value(here: &str, value: serde_norway::Value) -> Result<Document> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err(Error::Parse {
            file: here.to_string(),
            path: "apiVersion/kind".into(),
            reason: "not a Kubernetes-style object: `apiVersion` and `kind` must be strings".into(),
        });
    };
    if api_version == RUFIO_API_VERSION && kind == "Machine" {
        return Ok(Document::Object(Object::Machine(typed(here, value)?)));
    }
    if api_version != API_VERSION_V1ALPHA1 {
        return Ok(Document::Unsupported {
            api_version,
            kind,
            value,
        });
    }
    let object = match kind.as_str() {
        "Hardware" => Object::Hardware(typed(here, value)?),
        "Template" => Object::Template(typed(here, value)?),
        "Workflow" => Object::Workflow(typed(here, value)?),
        _ => {
            return Ok(Document::Unsupported {
                api_version,
                kind,
                value,
            });
        }
    };
    Ok(Document::Object(object))
}

/// Deserializes with the failing field's path in the error.
fn typed<T: serde::de::DeserializeOwned>(here: &str, value: serde_norway::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Error::Parse {
            file: here.to_string(),
            path: if path == "." {
                "(document)".into()
            } else {
                path
            },
            reason: e.into_inner().to_string(),
        }
    })
}

/// Writes documents back as a YAML stream (`---` between documents).
pub fn to_yaml(documents: &[Document]) -> Result<String> {
    let mut out = String::new();
    for d in documents {
        out.push_str("---\n");
        let text =
            serde_norway::to_string(&d.to_value()?).map_err(|e| Error::backend("yaml", e))?;
        out.push_str(&text);
    }
    Ok(out)
}
