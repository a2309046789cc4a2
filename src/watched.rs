//! A watched directory of Tinkerbell YAML files (the homelab's objects
//! directory): each file's objects are validated and written to the store, and
//! the directory is scanned again for changes.
//!
//! Each object has one owner ([`Owner`]): what this directory writes is marked
//! as coming from its file, so the operator API refuses to change it; and an
//! object the API wrote is left alone here, with a message that says so.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tinker_core::model::{Document, Object, ObjectKey, Owner, parse_documents};
use tinker_core::{Precondition, WorkflowStore};

/// The YAML files of a directory and their modification times: compare two
/// scans to see whether anything changed.
pub fn scan(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|d| d.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .filter_map(|p| Some((p.clone(), p.metadata().ok()?.modified().ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// What became of one file or object in [`load`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The object was written (it was new, or its file changed).
    Stored {
        /// The object.
        key: ObjectKey,
        /// Its new version.
        version: u64,
    },
    /// The object was applied through the operator API, which owns it now.
    OwnedByApi {
        /// The object.
        key: ObjectKey,
        /// The file that also holds it.
        file: PathBuf,
    },
    /// The file cannot be read or parsed; none of it was written.
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file has findings; none of it was written.
    Invalid {
        /// The file.
        file: PathBuf,
        /// The findings, as the validate example prints them.
        findings: Vec<String>,
    },
    /// The store refused or failed to write the object.
    NotStored {
        /// The object.
        key: ObjectKey,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Stored { key, version } => write!(f, "loaded {key} (version {version})"),
            Outcome::OwnedByApi { key, file } => write!(
                f,
                "skipped {key} of {}: it was applied through the API, which owns it now (delete it there to manage it from this file)",
                file.display()
            ),
            Outcome::Unreadable { reason, .. } => write!(f, "skipped: {reason}"),
            Outcome::Invalid { findings, .. } => write!(f, "skipped: {}", findings.join("; ")),
            Outcome::NotStored { key, reason } => write!(f, "could not store {key}: {reason}"),
        }
    }
}

/// What [`load`] read and did.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every document of the files that were valid (Rufio Machines included).
    pub documents: Vec<Document>,
    /// What happened to each object written or refused, and each file skipped.
    pub outcomes: Vec<Outcome>,
}

/// Reads every file, validates it, and writes what changed to the store, each
/// object marked as owned by its file. Invalid files are reported and skipped;
/// objects the API owns are left alone; the rest is written.
pub async fn load(store: &dyn WorkflowStore, files: &BTreeMap<PathBuf, SystemTime>) -> Loaded {
    let mut loaded = Loaded::default();
    for path in files.keys() {
        let name = path.display().to_string();
        let docs = match std::fs::read_to_string(path)
            .map_err(|e| format!("{name}: {e}"))
            .and_then(|t| parse_documents(&name, &t).map_err(|e| e.to_string()))
        {
            Ok(d) => d,
            Err(reason) => {
                loaded.outcomes.push(Outcome::Unreadable {
                    file: path.clone(),
                    reason,
                });
                continue;
            }
        };
        let findings = tinker_core::validate::documents(&name, &docs);
        let bad: Vec<String> = findings
            .0
            .iter()
            .filter(|f| f.is_error())
            .map(|f| f.to_string())
            .collect();
        if !bad.is_empty() {
            loaded.outcomes.push(Outcome::Invalid {
                file: path.clone(),
                findings: bad,
            });
            continue;
        }
        for d in &docs {
            if let Document::Object(o) = d {
                let mut o = o.clone();
                o.set_owner(&Owner::File(name.clone()));
                let stored = match store.get(&o.key()).await {
                    Ok(stored) => stored,
                    Err(e) => {
                        // Not "absent": writing then could overwrite an
                        // object the API owns.
                        loaded.outcomes.push(Outcome::NotStored {
                            key: o.key(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                };
                if let Some(s) = &stored {
                    if s.value.owner() == Some(Owner::Api) {
                        loaded.outcomes.push(Outcome::OwnedByApi {
                            key: o.key(),
                            file: path.clone(),
                        });
                        continue;
                    }
                    if same_spec(&s.value, &o) {
                        continue;
                    }
                }
                let key = o.key();
                // Written against what was read, so an object the API took
                // over meanwhile is not overwritten (the next scan says so).
                let precondition = match &stored {
                    Some(s) => Precondition::Version(s.version),
                    None => Precondition::Absent,
                };
                loaded
                    .outcomes
                    .push(match store.put(o, precondition).await {
                        Ok(version) => Outcome::Stored { key, version },
                        Err(e) => Outcome::NotStored {
                            key,
                            reason: e.to_string(),
                        },
                    });
            }
        }
        loaded.documents.extend(docs);
    }
    loaded
}

/// Whether the stored object already has this file's content (a workflow's
/// status and a machine's netboot switch belong to the control plane, not the file).
fn same_spec(stored: &Object, file: &Object) -> bool {
    match (stored, file) {
        // Only the spec: rewriting a workflow starts it again.
        (Object::Workflow(a), Object::Workflow(b)) => a.spec == b.spec,
        (Object::Hardware(a), Object::Hardware(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.set_allow_pxe(false);
            b.set_allow_pxe(false);
            a == b
        }
        (a, b) => a == b,
    }
}
