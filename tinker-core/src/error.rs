//! The one error type of `tinker-core`, shared by the five traits so that a caller
//! holding `Arc<dyn Trait>` can match on what went wrong without knowing the backend.

use std::fmt;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Tinker's core and behind its traits.
///
/// Variants say what happened; backends keep their own detail in `source`.
/// No variant ever carries a secret (BMC password, token): backends must not put
/// one in `reason` or in a `source` error's message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A YAML document could not be read into a Tinkerbell object.
    #[error("{file}: {path}: {reason}")]
    Parse {
        /// The file (or other source name) the document came from.
        file: String,
        /// The field path inside the document, such as `spec.interfaces[0].dhcp.mac`.
        path: String,
        /// Why it could not be read.
        reason: String,
    },
    /// One or more objects are well-formed YAML but not valid.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// A Go template could not be parsed or rendered.
    #[error("{0}")]
    Template(#[from] crate::gotmpl::TemplateError),
    /// The object does not exist.
    #[error("{key} not found")]
    NotFound {
        /// The missing object.
        key: String,
    },
    /// The object exists although the caller asked to create it.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The object that is already there.
        key: String,
    },
    /// Optimistic concurrency: the caller's version is stale.
    #[error(
        "{key} has version {found}, not {expected}: it was changed by someone else; read it again and retry"
    )]
    Conflict {
        /// The object that changed.
        key: String,
        /// The version the caller expected.
        expected: u64,
        /// The version in the store.
        found: u64,
    },
    /// A workflow event that the state machine refuses (for example a report for an
    /// action that is not running).
    #[error("workflow {workflow}: {reason}")]
    Transition {
        /// The workflow, `namespace/name`.
        workflow: String,
        /// Why the event is refused.
        reason: crate::state::Refusal,
    },
    /// A remote component (BMC, database, Docker engine) could not be reached.
    #[error("{target} is unreachable: {reason}")]
    Unreachable {
        /// What we tried to reach, such as `ipmi://10.0.0.5:623` (never with credentials).
        target: String,
        /// Why.
        reason: String,
    },
    /// The remote component refused our credentials. Retrying will not help.
    #[error("{target}: authentication failed")]
    AuthenticationFailed {
        /// The component that refused us.
        target: String,
    },
    /// The component does not support the operation.
    #[error("{target} does not support {operation}")]
    Unsupported {
        /// The component.
        target: String,
        /// What we asked for.
        operation: String,
    },
    /// The controller cannot do this by its nature, for any machine (Wake-on-LAN
    /// can only power a machine on): the engine skips such a step and records
    /// it. Distinct from [`Error::Unsupported`], a component that refused what
    /// it should do (a BMC without a PXE override), which fails the step.
    #[error("{target} cannot {operation}")]
    NotCapable {
        /// The component.
        target: String,
        /// What it cannot do, and what happens instead.
        operation: String,
    },
    /// The remote component answered with a failure.
    #[error("{target} reported a failure: {reason}")]
    Remote {
        /// The component.
        target: String,
        /// What it said.
        reason: String,
    },
    /// The remote component offered something Tinker refuses on principle: a
    /// weaker protocol than it accepts (IPMI 1.5 with a clear-text password or no
    /// authentication) or a link that would send our credentials to another host.
    /// Retrying will not help: the component would offer the same.
    #[error("{target}: refused as insecure: {reason}")]
    Insecure {
        /// The component (never with credentials).
        target: String,
        /// What it offered and why that is refused.
        reason: String,
    },
    /// The operation did not finish in time.
    #[error("{target}: {operation} timed out after {seconds} s")]
    Timeout {
        /// The component.
        target: String,
        /// The operation.
        operation: String,
        /// The time limit that passed.
        seconds: u64,
    },
    /// The engine took more steps for one workflow in one pass than a workflow
    /// has: each step records progress, so this is a bug, reported rather than
    /// looped on.
    #[error("workflow {workflow}: no progress after {steps} steps in one reconcile")]
    Stalled {
        /// The workflow, `namespace/name`.
        workflow: String,
        /// The steps taken.
        steps: usize,
    },
    /// Processing a workflow panicked (a bug in Tinker or a backend). The engine
    /// catches it, so one workflow's panic never takes the process down.
    #[error("workflow {workflow}: processing panicked: {message}")]
    Panicked {
        /// The workflow, `namespace/name`.
        workflow: String,
        /// The panic's message.
        message: String,
    },
    /// A storage or runtime backend failed in a way of its own.
    #[error("{backend}: {source}")]
    Backend {
        /// The backend, such as `redb` or `postgres`.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a backend's own error.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }
}

/// What sort of finding a [`ValidationError`] is: what a caller decides on (skip a
/// document, re-check across files), never the reason's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FindingKind {
    /// A field of the object itself is missing or wrong.
    #[default]
    Field,
    /// The object is kept as it is but Tinker does not act on it yet (another
    /// `apiVersion`, for example). Not an error in the object.
    Unsupported,
    /// The object clashes with another object (a MAC or IP address both claim).
    Clash,
    /// A workflow fails when rendered against its template and hardware.
    Rendered,
}

/// One finding of validation: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// What sort of finding this is.
    pub kind: FindingKind,
    /// The file (or other source name) the object came from.
    pub file: String,
    /// Which object in the file, such as `Hardware default/sm01`.
    pub object: String,
    /// The same object as a key, when the finding is about a stored kind: what
    /// a caller matches on (to refuse that object alone), never the text.
    pub key: Option<crate::model::ObjectKey>,
    /// The field path, such as `spec.interfaces[0].dhcp.mac`.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ValidationError {
    /// A [`FindingKind::Field`] finding.
    pub fn field(
        file: impl Into<String>,
        object: impl Into<String>,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ValidationError {
            kind: FindingKind::Field,
            file: file.into(),
            object: object.into(),
            key: None,
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same finding, about the object with `key`.
    pub fn with_key(mut self, key: crate::model::ObjectKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The same finding with another kind.
    pub fn with_kind(mut self, kind: FindingKind) -> Self {
        self.kind = kind;
        self
    }

    /// Whether the finding is an error in the object (everything but
    /// [`FindingKind::Unsupported`]).
    pub fn is_error(&self) -> bool {
        self.kind != FindingKind::Unsupported
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.file, self.object, self.path, self.reason
        )
    }
}

/// All findings for one or more objects; never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// Turns the findings into `Ok(())` when there are none.
    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self))
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The message of a caught panic (`catch_unwind`'s or a task's payload), so a
/// caught panic is reported with what it said.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}
