//! Tinker's domain model, traits and engine: the ground every other Tinker crate
//! builds on (Tinker is a Rust SDK for provisioning bare-metal servers).
//!
//! It holds:
//!
//! - the domain model, read and written as Tinkerbell's `tinkerbell.org/v1alpha1`
//!   Hardware, Template and Workflow YAML ([`model`], [`validate`]);
//! - Go-template rendering of Tinkerbell templates ([`render`], [`gotmpl`]);
//! - the workflow state machine, pure code ([`state`]);
//! - the five traits every backend implements: [`BootResponder`],
//!   [`PowerController`], [`WorkflowStore`], [`ActionRuntime`], [`MetadataSource`];
//! - the worker API's messages ([`worker_api`]);
//! - the one [`clock`], the one [`retry`] policy and the one [`Secret`] type that
//!   every crate uses;
//! - the [`engine`] that drives a machine's lifecycle through those traits alone.
//!
//! It does no I/O of its own: sockets, files and processes live behind the traits,
//! in `tinker-store`, `tinker-boot`, `tinker-bmc` and `tinker-actions`.
//!
//! ```
//! use tinker_core::model::{parse_documents, Document, Object};
//!
//! let yaml = r#"
//! apiVersion: tinkerbell.org/v1alpha1
//! kind: Hardware
//! metadata: { name: sm01 }
//! spec:
//!   interfaces:
//!     - dhcp: { mac: "3c:ec:ef:4c:4f:54", ip: { address: 172.16.10.100, netmask: 255.255.255.0 } }
//! "#;
//! let docs = parse_documents("sm01.yaml", yaml).unwrap();
//! let Document::Object(Object::Hardware(hw)) = &docs[0] else { panic!() };
//! assert_eq!(hw.macs()[0].to_string(), "3c:ec:ef:4c:4f:54");
//! assert!(tinker_core::validate::documents("sm01.yaml", &docs).0.is_empty());
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

pub mod boot;
pub mod clock;
pub mod diagnose;
pub mod engine;
mod error;
pub mod gotmpl;
mod mac;
pub mod metadata;
pub mod model;
pub mod power;
pub mod render;
pub mod retry;
pub mod runtime;
mod secret;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timeline;
pub mod validate;
pub mod worker_api;

pub use boot::BootResponder;
pub use error::{Error, FindingKind, Result, ValidationError, ValidationErrors, panic_message};
pub use mac::{MacAddr, MacParseError};
pub use metadata::{InstanceMetadata, MetadataSource, OperatingSystem};
pub use power::{
    BootDevice, BootOptions, PowerAction, PowerConnector, PowerController, PowerState,
};
pub use retry::Retryable;
pub use runtime::ActionRuntime;
pub use secret::Secret;
pub use store::{Precondition, Versioned, WorkflowStore, WorkflowStoreExt};
