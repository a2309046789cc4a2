//! `exec`: the action's command on this machine, with its environment; volumes
//! are bind-mounted in a private mount namespace, as a container would see them.
//! The volumes reach the binding shell as arguments, never as script text, so a
//! path holding quotes or `$(...)` is a path, not a command.

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

/// Binds each volume given as three arguments (host, inside, `ro` or `rw`)
/// after their count, then execs the rest of its arguments. Constant: nothing
/// from the action is ever part of it.
const BIND_SCRIPT: &str = r#"set -e
n=$1; shift
while [ "$n" -gt 0 ]; do
  mkdir -p -- "$2"
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3; n=$((n - 1))
done
exec "$@"
"#;

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
        let binds = match bind_args(&spec.volumes) {
            Ok(b) => b,
            Err(outcome) => return Ok(outcome),
        };
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            BIND_SCRIPT,
            "exec",
        ])
        .args(binds)
        .arg(program)
        .args(args);
        c
    };
    cmd.envs(&spec.environment);
    process::run(cmd, &format!("exec {program}"), cx.out, &cx.supervision()).await
}

/// The arguments [`BIND_SCRIPT`] reads: the count, then host, inside and
/// `ro`/`rw` per `host:path[:ro]` volume. Both paths must be absolute (so
/// neither can pass for an option of `mount`); a malformed volume fails the
/// action.
fn bind_args(volumes: &[String]) -> std::result::Result<Vec<String>, ActionOutcome> {
    let mut args = vec![volumes.len().to_string()];
    for v in volumes {
        let mut parts = v.splitn(3, ':');
        let (host, inside, opts) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if !host.starts_with('/') || !inside.starts_with('/') {
            return Err(failed(format!(
                "volume {v:?} is not host:path[:ro] with absolute paths"
            )));
        }
        let ro = opts.split(',').any(|o| o == "ro");
        args.extend([
            host.to_string(),
            inside.to_string(),
            if ro { "ro" } else { "rw" }.to_string(),
        ]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_become_arguments_and_a_bad_one_fails() {
        let a = bind_args(&["/a:/b:ro".into(), "/c'$(x):/d".into()]).unwrap();
        assert_eq!(a, ["2", "/a", "/b", "ro", "/c'$(x)", "/d", "rw"]);
        assert!(!BIND_SCRIPT.contains("/c"));
        for bad in ["nocolon", "relative:/x", "/x:-o"] {
            assert!(
                matches!(
                    bind_args(&[bad.into()]),
                    Err(ActionOutcome::Failed { message, .. }) if message.contains(bad)
                ),
                "{bad}"
            );
        }
    }
}
