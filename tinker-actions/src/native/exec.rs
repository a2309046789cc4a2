//! `exec`: the action's command on this machine, with its environment; volumes
//! are bind-mounted in a private mount namespace, as a container would see them.

use super::{Builtin, Ctx, Entry, failed, no_final_step};
use crate::process;
use futures_util::future::BoxFuture;
use tinker_core::Result;
use tinker_core::runtime::ActionOutcome;
use tokio::process::Command;

/// The registration of `exec`.
pub(super) const ENTRY: Entry = Entry {
    builtin: Builtin::Exec,
    name: "exec",
    start,
    final_step: no_final_step,
};

fn start<'a>(cx: &'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>> {
    Box::pin(run(cx))
}

async fn run(cx: &Ctx<'_>) -> Result<ActionOutcome> {
    let spec = cx.spec;
    let Some((program, args)) = spec.command.split_first() else {
        return Ok(failed("exec needs a command".into()));
    };
    let mut cmd = if spec.volumes.is_empty() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        let script = match bind_script(&spec.volumes) {
            Ok(s) => s,
            Err(outcome) => return Ok(outcome),
        };
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "exec",
        ])
        .arg(program)
        .args(args);
        c
    };
    cmd.envs(&spec.environment);
    process::run(
        cmd,
        &format!("exec {program}"),
        cx.out,
        spec.timeout,
        cx.cancel,
        cx.runtime.clock.as_ref(),
    )
    .await
}

/// The shell script that binds each `host:path[:ro]` volume, then execs the
/// command; a malformed volume fails the action.
fn bind_script(volumes: &[String]) -> std::result::Result<String, ActionOutcome> {
    let mut script = String::from("set -e\n");
    for v in volumes {
        let mut parts = v.splitn(3, ':');
        let (host, inside, opts) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if host.is_empty() || inside.is_empty() {
            return Err(failed(format!("volume {v:?} is not host:path[:ro]")));
        }
        script.push_str(&format!(
            "mkdir -p '{inside}'\nmount --bind '{host}' '{inside}'\n"
        ));
        if opts.split(',').any(|o| o == "ro") {
            script.push_str(&format!("mount -o remount,bind,ro '{inside}'\n"));
        }
    }
    script.push_str("exec \"$@\"\n");
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_become_binds_and_a_bad_one_fails() {
        let s = bind_script(&["/a:/b:ro".into()]).unwrap();
        assert!(s.contains("mount --bind '/a' '/b'"), "{s}");
        assert!(s.contains("remount,bind,ro '/b'"), "{s}");
        assert!(matches!(
            bind_script(&["nocolon".into()]),
            Err(ActionOutcome::Failed { message, .. }) if message.contains("nocolon")
        ));
    }
}
