//! # tinker-actions
//!
//! What runs on the machine while it is in its in-memory OS:
//!
//! - [`NativeRuntime`]: the Tinkerbell hub actions built in (`image2disk`,
//!   `writefile`, `cexec`, `kexec`, `reboot`) plus a plain `exec`, so existing
//!   templates run without a registry and without Docker on the machine;
//! - [`DockerRuntime`]: any action image as a container, the way tink-worker runs
//!   it (privileged, `/dev` and the worker's volumes mounted, output streamed line
//!   by line, time limit enforced, container removed in every case).
//!
//! Actions that end the in-memory OS (`kexec`, `reboot`) do their preparation in
//! `run` and leave the irreversible step to a [`FinalStep`] the worker agent takes
//! only after the control plane has its success report.

#![deny(rustdoc::broken_intra_doc_links)]

pub mod agent;
mod docker;
mod native;
mod process;

pub use docker::DockerRuntime;
pub use native::{Builtin, FinalStep, NativeRuntime};
