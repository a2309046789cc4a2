//! One owner per object: an object comes either from the operator API or from
//! a file of a watched directory (the homelab's objects directory), never both,
//! so neither silently overwrites the other's changes.
//!
//! The owner is recorded on the object itself, as the annotation
//! [`OWNER_ANNOTATION`] (`tinker.dev/owner`): `api`, or `file:` and the file's
//! path. It travels with the object (`tinker get -o yaml` shows it), costs no
//! store schema, and an object without it (written by earlier versions or by
//! code that embeds the store) has no owner yet: the first writer takes it.

use super::Object;
use std::fmt;

/// The annotation that names an object's owner.
pub const OWNER_ANNOTATION: &str = "tinker.dev/owner";

/// Who owns an object: who may write it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owner {
    /// The operator API (`tinker apply`): the watched directory leaves it alone.
    Api,
    /// This file of a watched directory: the API refuses to change it.
    File(String),
}

impl Owner {
    /// The owner an annotation's value names; `None` for a value this version
    /// does not know (treated as no owner).
    pub fn parse(value: &str) -> Option<Owner> {
        if value == "api" {
            Some(Owner::Api)
        } else {
            value
                .strip_prefix("file:")
                .filter(|p| !p.is_empty())
                .map(|p| Owner::File(p.to_string()))
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Api => f.write_str("api"),
            Owner::File(path) => write!(f, "file:{path}"),
        }
    }
}

impl Object {
    /// The object's owner, from its [`OWNER_ANNOTATION`].
    pub fn owner(&self) -> Option<Owner> {
        self.metadata()
            .annotations
            .as_ref()?
            .get(OWNER_ANNOTATION)
            .and_then(|v| Owner::parse(v))
    }

    /// Records `owner` as the object's owner.
    pub fn set_owner(&mut self, owner: &Owner) {
        self.metadata_mut()
            .annotations
            .get_or_insert_default()
            .insert(OWNER_ANNOTATION.to_string(), owner.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Template;

    #[test]
    fn the_owner_round_trips_through_its_annotation() {
        let mut o: Object = Template::new("t", "version: \"0.1\"").into();
        assert_eq!(o.owner(), None);
        for owner in [Owner::Api, Owner::File("/srv/objects/t.yaml".into())] {
            o.set_owner(&owner);
            assert_eq!(o.owner(), Some(owner.clone()));
            let yaml = serde_norway::to_string(&o).unwrap();
            let back: Object = serde_norway::from_str(&yaml).unwrap();
            assert_eq!(back.owner(), Some(owner));
        }
        assert_eq!(Owner::parse("file:"), None);
        assert_eq!(Owner::parse("someone"), None);
    }
}
