//! `cexec`: run a command in a partition (`BLOCK_DEVICE`, `FS_TYPE`, `CMD_LINE`,
//! `DEFAULT_INTERPRETER`), chrooted into it with `/dev`, `/proc` and `/sys`
//! bound in when `CHROOT=y`. The partition and the binds are released on every
//! path out, a stop included (see [`Mount`]).

use super::env::{flag, need};
use super::mount::Mount;
use super::{Builtin, Ctx, Entry, no_final_step};
use crate::process;
use futures_util::future::BoxFuture;
use tinker_core::runtime::ActionOutcome;
use tinker_core::{Error, Result};
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

/// The interpreter `CMD_LINE` is given to (`/bin/sh -c` when unset); a set but
/// empty one is a contract error, found before anything is mounted.
fn interpreter(value: Option<&String>) -> Result<Vec<String>> {
    let Some(v) = value else {
        return Ok(vec!["/bin/sh".into(), "-c".into()]);
    };
    let words: Vec<String> = v.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return Err(Error::Unsupported {
            target: "cexec".into(),
            operation: format!(
                "DEFAULT_INTERPRETER={v:?} (empty: name a program, such as \"/bin/sh -c\", or leave it unset)"
            ),
        });
    }
    Ok(words)
}

async fn run(cx: &Ctx<'_>) -> Result<ActionOutcome> {
    let env = &cx.spec.environment;
    let dev = need(env, "BLOCK_DEVICE")?;
    let fs = need(env, "FS_TYPE")?;
    let cmd_line = need(env, "CMD_LINE")?;
    let chroot = flag(env, "CHROOT", &["y", "true"]);
    let interpreter = interpreter(env.get("DEFAULT_INTERPRETER"))?;
    let mut mount = Mount::new(&cx.runtime.work_dir, dev, fs, &cx.cleanup).await?;
    let outcome = async {
        if chroot {
            // The host's /dev, /proc and /sys, as the hub action binds them.
            for d in ["dev", "proc", "sys"] {
                let inside = mount.root().join(d);
                mount.bind(&format!("/{d}"), &inside).await?;
            }
        }
        let root = mount.root();
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
        process::run(cmd, "cexec", cx.out, &cx.supervision()).await
    }
    .await;
    let released = mount.release().await;
    let outcome = outcome?;
    released?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_interpreter_is_a_contract_error() {
        assert_eq!(interpreter(None).unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(
            interpreter(Some(&"/bin/bash -ec".into())).unwrap(),
            ["/bin/bash", "-ec"]
        );
        for empty in ["", "   "] {
            let e = interpreter(Some(&empty.into())).unwrap_err().to_string();
            assert!(e.contains("DEFAULT_INTERPRETER"), "{e}");
        }
    }
}
