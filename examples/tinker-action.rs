//! One built-in action as a program, for machines or images without the agent:
//!
//! ```text
//! IMG_URL=... DEST_DISK=/dev/sda COMPRESSED=true tinker-action image2disk
//! ```
//!
//! The action reads its Tinkerbell contract from the environment, prints its
//! output, and exits 0 on success, 1 on failure, 2 on timeout or bad usage
//! (`--help` lists the actions). Wrapped
//! in an image (`docker import` of this binary, its libraries and a busybox), the
//! Docker runtime runs the built-ins too, as hub action images.

use std::process::ExitCode;
use tinker::actions::NativeRuntime;
use tinker::core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};

/// Runs one built-in action; its contract (`IMG_URL`, `DEST_DISK`, ...) comes from
/// the environment.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The built-in action to run.
    #[arg(value_enum)]
    action: Action,
}

/// The built-in actions, by their hub image names.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Action {
    /// Stream an image to a disk.
    #[value(name = "image2disk")]
    Image2disk,
    /// Write a file into a partition.
    #[value(name = "writefile")]
    Writefile,
    /// Run a command in a partition, chrooted.
    #[value(name = "cexec")]
    Cexec,
    /// Load the installed kernel and jump into it.
    #[value(name = "kexec")]
    Kexec,
    /// Reboot the machine.
    #[value(name = "reboot")]
    Reboot,
    /// Run the action's command on the machine itself.
    #[value(name = "exec")]
    Exec,
}

impl Action {
    /// The image name the runtime knows the action by.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("no action is hidden")
            .get_name()
            .to_string()
    }
}

/// Prints the action's output lines to this program's stdout and stderr.
#[derive(Debug)]
struct Print;

impl OutputSink for Print {
    fn line(&self, stream: Stream, line: &str) {
        match stream {
            Stream::Stdout => println!("{line}"),
            Stream::Stderr => eprintln!("{line}"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Bad usage exits 2 (clap's code for it), as a timeout does.
    let name = <Args as clap::Parser>::parse().action.name();
    let runtime = NativeRuntime::new();
    if runtime.builtin(&name).is_none() {
        eprintln!("tinker-action: {name:?} is not a built-in action");
        return ExitCode::from(2);
    }
    let spec = ActionSpec {
        workflow: std::env::var("WORKFLOW_ID").unwrap_or_default(),
        name: name.clone(),
        image: name,
        command: vec![],
        environment: std::env::vars().collect(),
        volumes: vec![],
        pid: None,
        timeout: None,
    };
    match runtime.run(&spec, &Print, &CancelToken::new()).await {
        Ok(ActionOutcome::Success) => ExitCode::SUCCESS,
        Ok(ActionOutcome::Failed { message, .. }) => {
            eprintln!("tinker-action: {message}");
            ExitCode::FAILURE
        }
        Ok(ActionOutcome::Timeout { message }) => {
            eprintln!("tinker-action: {message}");
            ExitCode::from(2)
        }
        // An outcome added after this program was written is not a success.
        Ok(other) => {
            eprintln!("tinker-action: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tinker-action: {e}");
            ExitCode::FAILURE
        }
    }
}
