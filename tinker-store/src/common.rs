//! What both stores share: key encoding, key checks, index bookkeeping.

use std::collections::BTreeSet;
use tinker_core::model::{Kind, Object, ObjectKey};
use tinker_core::store::{IndexTerm, index_terms};
use tinker_core::{Error, Result, ValidationError, ValidationErrors};

/// Capacity of the change feed; a slower subscriber gets `Lagged` and re-lists.
pub(crate) const FEED_CAPACITY: usize = 4096;

/// `Kind/namespace/name`: sorts by kind, then namespace, then name.
pub(crate) fn encode_key(key: &ObjectKey) -> String {
    format!("{}/{}/{}", key.kind.as_str(), key.namespace, key.name)
}

pub(crate) fn decode_key(s: &str) -> Option<ObjectKey> {
    let mut parts = s.splitn(3, '/');
    let kind = match parts.next()? {
        "Hardware" => Kind::Hardware,
        "Template" => Kind::Template,
        "Workflow" => Kind::Workflow,
        _ => return None,
    };
    Some(ObjectKey::new(kind, parts.next()?, parts.next()?))
}

/// The prefix of all keys of a kind.
pub(crate) fn kind_prefix(kind: Kind) -> String {
    format!("{}/", kind.as_str())
}

/// Refuses names a key cannot hold.
pub(crate) fn check_key(key: &ObjectKey) -> Result<()> {
    let bad = |path: &str, value: &str| {
        Err(Error::Invalid(ValidationErrors(vec![
            ValidationError::field(
                "(store)",
                key.to_string(),
                path,
                format!("{value:?} cannot be stored: it must be non-empty and contain no '/'"),
            ),
        ])))
    };
    if key.name.is_empty() || key.name.contains('/') {
        return bad("metadata.name", &key.name);
    }
    if key.namespace.is_empty() || key.namespace.contains('/') {
        return bad("metadata.namespace", &key.namespace);
    }
    Ok(())
}

/// Index terms to remove and to add when `old` becomes `new`.
pub(crate) fn index_diff(
    old: Option<&Object>,
    new: Option<&Object>,
) -> (Vec<IndexTerm>, Vec<IndexTerm>) {
    let old: BTreeSet<IndexTerm> = old
        .map(index_terms)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new: BTreeSet<IndexTerm> = new
        .map(index_terms)
        .unwrap_or_default()
        .into_iter()
        .collect();
    (
        old.difference(&new).cloned().collect(),
        new.difference(&old).cloned().collect(),
    )
}

/// The error for a unique term (MAC, IP) held by another object.
pub(crate) fn taken(term: &IndexTerm, key: &ObjectKey, holder: &str) -> Error {
    let what = match term {
        IndexTerm::Mac(m) => format!("MAC {m}"),
        IndexTerm::Ip(i) => format!("IP address {i}"),
        IndexTerm::Worker(w) => format!("worker {w}"),
    };
    let holder = decode_key(holder)
        .map(|k| k.to_string())
        .unwrap_or_else(|| holder.to_string());
    Error::Invalid(ValidationErrors(vec![
        ValidationError::field(
            "(store)",
            key.to_string(),
            "spec.interfaces",
            format!("{what} already belongs to {holder}"),
        )
        .with_kind(tinker_core::FindingKind::Clash),
    ]))
}
