//! The worker agent and its action runtimes: what runs on a machine, in its
//! in-memory OS, while Tinker provisions it.
//!
//! - [`agent`]: the worker agent, a sans-IO core ([`agent::AgentCore`]) driven by
//!   a thin tokio driver ([`agent::Agent`]) over a [`agent::Transport`] (HTTP by
//!   default);
//! - [`NativeRuntime`]: the Tinkerbell hub actions built in (`image2disk`,
//!   `writefile`, `cexec`, `kexec`, `reboot`) plus a plain `exec`, so existing
//!   templates run without a registry and without Docker on the machine;
//! - `DockerRuntime` (feature `docker`, on by default): any action image as a
//!   container, the way tink-worker runs it (privileged, `/dev` and the worker's
//!   volumes mounted, output streamed line by line, time limit enforced,
//!   container removed in every case);
//! - [`RuntimeRouter`]: built-ins natively, everything else in containers.
//!
//! Actions that end the in-memory OS (`kexec`, `reboot`) do their preparation in
//! `run` and leave the irreversible step to a [`FinalStep`] the worker agent takes
//! only after the control plane has its success report.
//!
//! A cancelled or timed-out action is stopped as a protocol: SIGTERM to its
//! process group (or container), a grace on the clock, SIGKILL, removal of its
//! container, unmounting of what it mounted; a [`CleanupReport`] says what was
//! cleaned, in the log and in the action's final message.
//!
//! Every time limit and sleep reads an injected
//! [`Clock`](tinker_core::clock::Clock) (`with_clock` on each runtime and on the
//! agent), so the whole crate runs under a simulated clock.

#![deny(rustdoc::broken_intra_doc_links)]

pub mod agent;
mod cleanup;
#[cfg(feature = "docker")]
mod docker;
mod native;
mod process;
mod router;

pub use cleanup::{CleanupReport, DEFAULT_GRACE};
#[cfg(feature = "docker")]
pub use docker::DockerRuntime;
pub use native::{Builtin, FinalStep, NativeRuntime};
pub use router::RuntimeRouter;
