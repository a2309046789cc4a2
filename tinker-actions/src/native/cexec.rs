//! `cexec`: run a command in a partition (`BLOCK_DEVICE`, `FS_TYPE`, `CMD_LINE`,
//! `DEFAULT_INTERPRETER`), chrooted into it with `/dev`, `/proc` and `/sys`
//! bound in when `CHROOT=y`.

use super::env::{flag, need};
use super::mount::mounted;
use super::{Builtin, Ctx, Entry, no_final_step};
use crate::process;
use futures_util::future::BoxFuture;
use std::path::Path;
use tinker_core::Result;
use tinker_core::runtime::ActionOutcome;
use tokio::process::Command;

/// The registration of `cexec`.
pub(super) const ENTRY: Entry = Entry {
    builtin: Builtin::Cexec,
    name: "cexec",
    start,
    final_step: no_final_step,
};

fn start<'a>(cx: &'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>> {
    Box::pin(run(cx))
}

async fn run(cx: &Ctx<'_>) -> Result<ActionOutcome> {
    let env = &cx.spec.environment;
    let dev = need(env, "BLOCK_DEVICE")?;
    let fs = need(env, "FS_TYPE")?;
    let cmd_line = need(env, "CMD_LINE")?;
    let chroot = flag(env, "CHROOT", &["y", "true"]);
    let interpreter: Vec<String> = env
        .get("DEFAULT_INTERPRETER")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    mounted(&cx.runtime.work_dir, dev, fs, async |root: &Path| {
        let binds = if chroot {
            bind_system_dirs(root).await?
        } else {
            Vec::new()
        };
        let mut cmd = if chroot {
            let mut c = Command::new("chroot");
            c.arg(root).args(&interpreter);
            c
        } else {
            let mut c = Command::new(&interpreter[0]);
            c.args(&interpreter[1..]).current_dir(root);
            c
        };
        cmd.arg(cmd_line);
        let outcome = process::run(
            cmd,
            "cexec",
            cx.out,
            cx.spec.timeout,
            cx.cancel,
            cx.runtime.clock.as_ref(),
        )
        .await;
        for b in binds.iter().rev() {
            let _ = process::helper("umount", &["-l", &b.to_string_lossy()]).await;
        }
        outcome
    })
    .await
}

/// Binds the host's `/dev`, `/proc` and `/sys` into the chroot, as the hub
/// action does; returns what to unmount.
async fn bind_system_dirs(root: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut binds = Vec::new();
    for d in ["dev", "proc", "sys"] {
        let target = root.join(d);
        let _ = std::fs::create_dir_all(&target);
        process::helper(
            "mount",
            &["--bind", &format!("/{d}"), &target.to_string_lossy()],
        )
        .await?;
        binds.push(target);
    }
    Ok(binds)
}
