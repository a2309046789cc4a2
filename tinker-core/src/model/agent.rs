//! Actions in the format of the Tinkerbell agent's file transport (the
//! `cmd/agent/example` files of tinkerbell/tinkerbell): a plain list of actions.

use super::Extra;
use serde::{Deserialize, Serialize};

/// One action of an agent action list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentAction {
    /// Action id (a number or a string in the wild).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_norway::Value>,
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Seconds the action may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Environment as a list of key/value pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<AgentEnvVar>,
    /// Namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<AgentNamespaces>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One `env` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEnvVar {
    /// Name.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentNamespaces {
    /// PID namespace (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Network namespace (`host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}
