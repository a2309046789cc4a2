//! One built-in action as a program, for machines or images without the agent:
//!
//! ```text
//! IMG_URL=... DEST_DISK=/dev/sda COMPRESSED=true tinker-action image2disk
//! ```
//!
//! The action reads its Tinkerbell contract from the environment, prints its
//! output, and exits 0 on success, 1 on failure, 2 on timeout or bad usage. Wrapped
//! in an image (`docker import` of this binary, its libraries and a busybox), the
//! Docker runtime runs the built-ins too, as hub action images.

use std::process::ExitCode;
use tinker::actions::NativeRuntime;
use tinker::core::runtime::{
    ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink, Stream,
};

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
    let Some(name) = std::env::args().nth(1) else {
        eprintln!(
            "usage: tinker-action image2disk|writefile|cexec|kexec|reboot  (the contract comes from the environment)"
        );
        return ExitCode::from(2);
    };
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
        Err(e) => {
            eprintln!("tinker-action: {e}");
            ExitCode::FAILURE
        }
    }
}
