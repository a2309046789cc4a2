//! `kexec`: load the installed kernel (`BLOCK_DEVICE`, `FS_TYPE`, `KERNEL_PATH`,
//! `INITRD_PATH`, `CMD_LINE`) with `kexec -l`; the jump (`kexec -e`) is the
//! agent's final step, taken once this action's success is reported.

use super::env::need;
use super::inroot::{Root, inside};
use super::mount::mounted;
use super::{Builtin, Ctx, Entry, FinalStep, NativeRuntime};
use crate::process;
use futures_util::future::BoxFuture;
use std::path::Path;
use tinker_core::Result;
use tinker_core::runtime::{ActionOutcome, Stream};

/// The registration of `kexec`.
pub(super) const ENTRY: Entry = Entry {
    builtin: Builtin::Kexec,
    name: "kexec",
    start,
    final_step,
};

fn start<'a>(cx: &'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>> {
    Box::pin(run(cx))
}

fn final_step(rt: &NativeRuntime) -> Option<FinalStep> {
    Some(FinalStep::KexecExecute(rt.kexec.clone()))
}

async fn run(cx: &Ctx<'_>) -> Result<ActionOutcome> {
    let env = &cx.spec.environment;
    let dev = need(env, "BLOCK_DEVICE")?;
    let fs = need(env, "FS_TYPE")?;
    let kernel = need(env, "KERNEL_PATH")?;
    let kernel_in = inside("KERNEL_PATH", kernel)?;
    let initrd = env.get("INITRD_PATH").filter(|i| !i.is_empty());
    let initrd_in = initrd.map(|i| inside("INITRD_PATH", i)).transpose()?;
    let cmd_line = env.get("CMD_LINE").cloned().unwrap_or_default();
    let kexec = cx.runtime.kexec.to_string_lossy().to_string();
    mounted(
        &cx.runtime.work_dir,
        dev,
        fs,
        &cx.cleanup,
        async |root: &Path| {
            // Resolved inside the image: a /boot/vmlinuz that links to /vmlinuz-6.1
            // means the image's file, not the in-memory OS's.
            let root = Root::open(root)?;
            let k = root.real_path(kernel_in)?;
            let mut args = vec![
                "-l".to_string(),
                k.to_string_lossy().to_string(),
                format!("--command-line={cmd_line}"),
            ];
            if let Some(i) = initrd_in {
                args.push(format!("--initrd={}", root.real_path(i)?.display()));
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            process::helper(&kexec, &refs).await
        },
    )
    .await?;
    cx.out.line(
        Stream::Stdout,
        &format!("kexec: loaded {kernel} from {dev}; it starts once this success is reported"),
    );
    Ok(ActionOutcome::Success)
}
