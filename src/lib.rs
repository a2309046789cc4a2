//! Tinker, a Rust SDK for provisioning bare-metal servers, compatible with Tinkerbell's
//! Hardware, Template and Workflow objects. This crate is a facade: it re-exports
//! the member crates, and holds the examples and benchmarks that wire them.
//!
//! - [`core`]: domain model, template rendering, state machine, the five traits, the engine.
//! - [`store`]: `WorkflowStore` implementations (in-memory, embedded file).
//! - [`boot`]: DHCP, TFTP and HTTP boot services, the default boot policy and metadata.
//! - [`actions`]: action runtimes (native built-ins, Docker) and the worker agent.
//! - [`bmc`]: `PowerController` implementations (IPMI, Redfish, mock) and the connector.
//! - [`control_plane`]: one control-plane replica wired from all of them.
//! - [`watched`]: a watched directory of YAML files, written to the store.

// The README's code is compiled and checked as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod control_plane;
pub mod watched;

pub use tinker_actions as actions;
pub use tinker_bmc as bmc;
pub use tinker_boot as boot;
pub use tinker_core as core;
pub use tinker_grpc as grpc;
pub use tinker_store as store;
