//! The machine-facing network services of Tinker: everything a machine talks to
//! while it boots.
//!
//! - [`dhcp`]: DHCPv4, reservation and proxyDHCP modes, relay agents, laid out
//!   by job as Tinkerbell's smee is, and [`dhcp::client`], the one (sans-IO)
//!   PXE DHCP client that simulations and tests use;
//! - [`tftp`]: read-only TFTP with blksize, tsize, timeout and windowsize;
//! - [`http`]: per-machine iPXE scripts (ours, or HookOS's as Smee writes it), boot assets with Range requests, the
//!   EC2-style metadata service (Hegel's paths) and `/metrics`;
//! - [`syslog`]: the syslog receiver that files HookOS's logs in each
//!   machine's timeline, unauthenticated;
//! - [`StoreBootResponder`] and [`StoreMetadata`]: the default `BootResponder`
//!   and `MetadataSource`, backed by a `WorkflowStore`.
//!
//! Protocol logic is pure (packet and time in, reply out); the servers are thin
//! tokio drivers that take a socket or listener and a shutdown future, never bind
//! anything themselves at construction, and read the time only from an injected
//! [`Clock`](tinker_core::clock::Clock).

#![deny(rustdoc::broken_intra_doc_links)]

pub mod cached_store;
pub mod change_waiters;
pub mod credentials;
pub mod dhcp;
pub mod event_window;
pub mod event_writer;
pub mod hardware_cache;
pub mod http;
mod metadata;
pub mod operators;
pub mod per_address;
mod responder;
pub mod syslog;
pub mod tftp;
pub mod worker_api;
pub mod worker_core;

pub use metadata::StoreMetadata;
pub use responder::{
    BOOT_EVENT_WINDOW, BootConfig, MAX_BOOT_EVENTS_PER_WINDOW, Resolved, StoreBootResponder,
    boot_file_for_arch,
};
