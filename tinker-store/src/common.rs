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
        "Machine" => Kind::Machine,
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

/// One step of a store's schema, from version `to - 1` to `to`. The steps of a
/// backend are listed in order from `to: 1`; the last one's `to` is the schema
/// version the code writes.
#[cfg(any(feature = "redb", feature = "postgres"))]
#[derive(Clone, Copy)]
pub(crate) struct Migration<S> {
    /// The version this step reaches.
    pub to: u32,
    /// What it does, for errors and logs.
    pub what: &'static str,
    /// The backend's step: a function over a write transaction, or SQL.
    pub step: S,
}

/// The steps to run on a store found at version `found`, in order; a store newer
/// than the code is refused before anything is touched.
#[cfg(any(feature = "redb", feature = "postgres"))]
pub(crate) fn pending_migrations<'a, S>(
    store: &str,
    found: u32,
    steps: &'a [Migration<S>],
) -> std::result::Result<&'a [Migration<S>], crate::StoreError> {
    debug_assert!(
        steps
            .iter()
            .enumerate()
            .all(|(i, m)| m.to as usize == i + 1),
        "migrations are numbered 1, 2, ... in order"
    );
    let supported = steps.len() as u32;
    if found > supported {
        return Err(crate::StoreError::SchemaTooNew {
            store: store.to_string(),
            found,
            supported,
        });
    }
    Ok(&steps[found as usize..])
}

#[cfg(all(test, any(feature = "redb", feature = "postgres")))]
mod tests {
    use super::*;

    const STEPS: &[Migration<()>] = &[
        Migration {
            to: 1,
            what: "a",
            step: (),
        },
        Migration {
            to: 2,
            what: "b",
            step: (),
        },
    ];

    #[test]
    fn pending_migrations_start_after_the_found_version() {
        let whats = |found| {
            pending_migrations("s", found, STEPS)
                .unwrap()
                .iter()
                .map(|m| m.what)
                .collect::<Vec<_>>()
        };
        assert_eq!(whats(0), ["a", "b"]);
        assert_eq!(whats(1), ["b"]);
        assert!(whats(2).is_empty());
    }

    #[test]
    fn a_store_newer_than_the_code_is_refused() {
        let Err(crate::StoreError::SchemaTooNew {
            found, supported, ..
        }) = pending_migrations("s", 3, STEPS)
        else {
            panic!("a version-3 store must be refused");
        };
        assert_eq!((found, supported), (3, 2));
    }
}
