//! A Go `text/template` engine, enough of it to render Tinkerbell templates the way
//! Tinkerbell does: actions `{{ }}` with trim markers, pipelines, parenthesised
//! commands with field chains (`(index .Hardware.Interfaces 0).DHCP.Arch`),
//! variables, `if`/`else if`/`else`, `range`, `with`, the Go builtins, the hermetic
//! Sprig functions templates use, and Tinkerbell's own `formatPartition` and
//! `netmaskToPrefixLength`. Missing keys are errors (`missingkey=error`, as
//! Tinkerbell sets it), and what a template may spend is bounded by [`RenderLimits`].
//!
//! The data model is [`serde_json::Value`]: Go structs become objects whose keys are
//! the Go field names.

mod exec;
mod funcs;
mod lex;
mod parse;

use serde_json::Value;

/// Rendered output larger than this is an error, as in Tinkerbell (256 KiB); the
/// default of [`RenderLimits::max_output`].
pub const MAX_OUTPUT: usize = 256 * 1024;

/// How much one template may ask of the renderer. A template is outside input (an
/// operator's typo, or a hostile author), and rendering runs inside the engine, so
/// every way a template can spend memory, time or stack is bounded here, where it
/// is spent: a range over a huge integer is counted step by step, never allocated;
/// a function that grows a string checks the result's size before it allocates;
/// nesting is refused at parse time. Exceeding a limit is a [`TemplateError`] with
/// the [`Limit`] named, never a panic or an abort.
///
/// The defaults are far above what a provisioning template needs (Tinkerbell's
/// own templates nest 3 deep, loop over a handful of disks and render a few KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenderLimits {
    /// Bytes of rendered text (default 256 KiB, Tinkerbell's cap).
    pub max_output: usize,
    /// Steps of one render: range iterations, function calls and actions
    /// (default 1,000,000). A `{{ range N }}` beyond what is left is refused
    /// before its first iteration.
    pub max_steps: u64,
    /// Bytes of the largest value a function may produce or a command may be
    /// given (a string, or a list or map counted with 32 bytes per element;
    /// default 1 MiB).
    pub max_value: usize,
    /// Bytes produced and copied in one render, all values together (default
    /// 64 MiB): bounds the time a loop of large values can take.
    pub max_work: usize,
    /// Nesting of blocks (`if`, `range`, `with`), parentheses and values built
    /// from values (`list (list ..)`), default 64.
    pub max_depth: usize,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            max_output: MAX_OUTPUT,
            max_steps: 1_000_000,
            max_value: 1024 * 1024,
            max_work: 64 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Which of the [`RenderLimits`] a template went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`RenderLimits::max_output`].
    Output,
    /// [`RenderLimits::max_steps`].
    Steps,
    /// [`RenderLimits::max_value`].
    Value,
    /// [`RenderLimits::max_work`].
    Work,
    /// [`RenderLimits::max_depth`].
    Depth,
}

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name}, line {line}{}: {reason}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct TemplateError {
    /// The template's name (used in messages).
    pub name: String,
    /// 1-based line of the action at fault.
    pub line: usize,
    /// 1-based column (in characters) of the action at fault, where known.
    pub column: Option<usize>,
    /// What went wrong.
    pub reason: String,
    /// For a missing key: the key's path, such as `.artifact_server_ip_port`.
    pub missing_key: Option<String>,
    /// The limit the template went past, if that is why it failed.
    pub limit: Option<Limit>,
}

impl TemplateError {
    pub(crate) fn new(name: &str, pos: Pos, reason: impl Into<String>) -> Self {
        TemplateError {
            name: name.to_string(),
            line: pos.line,
            column: pos.column,
            reason: reason.into(),
            missing_key: None,
            limit: None,
        }
    }
}

/// Where an action starts in the template text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: Option<usize>,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    name: String,
    nodes: Vec<parse::Node>,
    limits: RenderLimits,
}

impl GoTemplate {
    /// Parses `text` with the default [`RenderLimits`]; `name` appears in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(name, text, RenderLimits::default())
    }

    /// Parses `text`; nesting deeper than `limits.max_depth` is refused, and the
    /// limits are kept for [`GoTemplate::render`].
    pub fn parse_with(name: &str, text: &str, limits: RenderLimits) -> Result<Self, TemplateError> {
        let err = |(pos, reason, limit): parse::ParseError| {
            let mut e = TemplateError::new(name, pos, reason);
            e.limit = limit;
            e
        };
        let items = lex::split(text).map_err(|(pos, reason)| err((pos, reason, None)))?;
        let nodes = parse::parse(items, limits.max_depth).map_err(err)?;
        Ok(GoTemplate {
            name: name.to_string(),
            nodes,
            limits,
        })
    }

    /// Renders with `data` as the dot, within the limits it was parsed with.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        exec::render(&self.name, &self.nodes, data, &self.limits, false)
    }

    /// Renders for a check of the template on its own, before the Hardware it
    /// will run on is known: `data` holds placeholders with one element in each
    /// list, and an index past the end of a list gives its last element rather
    /// than an error (`{{ index .Hardware.Disks 1 }}` is valid for a machine
    /// with two disks). Everything else, limits included, is as in
    /// [`GoTemplate::render`]; a workflow is checked with `render` against its
    /// real Hardware.
    pub fn render_placeholder(&self, data: &Value) -> Result<String, TemplateError> {
        exec::render(&self.name, &self.nodes, data, &self.limits, true)
    }
}

#[cfg(test)]
mod tests;
