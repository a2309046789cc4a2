//! `reboot`: nothing to prepare; the agent reboots the machine (`reboot -f`)
//! once this action's success is reported.

use super::{Builtin, Ctx, Entry, FinalStep, NativeRuntime};
use futures_util::future::BoxFuture;
use tinker_core::Result;
use tinker_core::runtime::{ActionOutcome, Stream};

/// The registration of `reboot`.
pub(super) const ENTRY: Entry = Entry {
    builtin: Builtin::Reboot,
    name: "reboot",
    start,
    final_step,
};

fn start<'a>(cx: &'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>> {
    cx.out.line(
        Stream::Stdout,
        "reboot: the machine reboots once this success is reported",
    );
    Box::pin(std::future::ready(Ok(ActionOutcome::Success)))
}

fn final_step(rt: &NativeRuntime) -> Option<FinalStep> {
    Some(FinalStep::Reboot(rt.reboot.clone()))
}
