//! A Go `text/template` engine, enough of it to render Tinkerbell templates the way
//! Tinkerbell does: actions `{{ }}` with trim markers, pipelines, parenthesised
//! commands with field chains (`(index .Hardware.Interfaces 0).DHCP.Arch`),
//! variables, `if`/`else if`/`else`, `range`, `with`, the Go builtins, the hermetic
//! Sprig functions templates use, and Tinkerbell's own `formatPartition` and
//! `netmaskToPrefixLength`. Missing keys are errors (`missingkey=error`, as
//! Tinkerbell sets it), and output is capped at 256 KiB.
//!
//! The data model is [`serde_json::Value`]: Go structs become objects whose keys are
//! the Go field names.

mod exec;
mod funcs;
mod lex;
mod parse;

pub use exec::MAX_OUTPUT;
use serde_json::Value;

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name}: line {line}: {reason}")]
pub struct TemplateError {
    /// The template's name (used in messages).
    pub name: String,
    /// 1-based line of the action at fault.
    pub line: usize,
    /// What went wrong.
    pub reason: String,
    /// For a missing key: the key's path, such as `.artifact_server_ip_port`.
    pub missing_key: Option<String>,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    name: String,
    nodes: Vec<parse::Node>,
}

impl GoTemplate {
    /// Parses `text`; `name` appears in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, TemplateError> {
        let items = lex::split(text).map_err(|(line, reason)| TemplateError {
            name: name.to_string(),
            line,
            reason,
            missing_key: None,
        })?;
        let nodes = parse::parse(items).map_err(|(line, reason)| TemplateError {
            name: name.to_string(),
            line,
            reason,
            missing_key: None,
        })?;
        Ok(GoTemplate {
            name: name.to_string(),
            nodes,
        })
    }

    /// Renders with `data` as the dot.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        exec::render(&self.name, &self.nodes, data)
    }
}

#[cfg(test)]
mod tests;
