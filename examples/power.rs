//! Drives one BMC from the command line:
//!
//! ```text
//! TINKER_BMC_PASSWORD=... cargo run --example power -- --bmc ipmi://USER@HOST:PORT status|on|off|soft|cycle|reset|pxe|disk|bios
//! ```
//!
//! `--bmc` also takes `redfish://USER@HOST:PORT` and `redfishs://USER@HOST:PORT`
//! (add `?insecure=true` for a BMC with a self-signed certificate, `&system=ID`,
//! `&auth=session`), and `mock://NAME` for an in-process mock BMC (no hardware
//! needed). The password comes from `TINKER_BMC_PASSWORD`, never from
//! the command line. `pxe`, `disk` and `bios` set the next boot device once; add
//! `--persistent` and/or `--efi`.

use std::process::ExitCode;
use tinker::bmc::{BmcEndpoint, RetryPolicy, Secret};
use tinker::core::{BootDevice, BootOptions, PowerAction};

const USAGE: &str = "usage: power --bmc ipmi://USER@HOST:PORT [--persistent] [--efi] status|on|off|soft|cycle|reset|pxe|disk|bios
       (or redfish:// / redfishs://; the password is read from TINKER_BMC_PASSWORD)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (mut bmc, mut command, mut options) = (None, None, BootOptions::default());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bmc" => bmc = args.next(),
            "--persistent" => options.persistent = true,
            "--efi" => options.efi = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other if command.is_none() => command = Some(other.to_string()),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(url), Some(command)) = (bmc, command) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Ok(password) = std::env::var("TINKER_BMC_PASSWORD") else {
        eprintln!("set TINKER_BMC_PASSWORD to the BMC's password");
        return ExitCode::from(2);
    };
    let result = async {
        let endpoint = BmcEndpoint::parse(&url)?;
        let bmc = endpoint.build(Secret::new(password), RetryPolicy::default())?;
        let done = match command.as_str() {
            "status" => return Ok(format!("{:?}", bmc.power_state().await?).to_lowercase()),
            "on" => bmc.power(PowerAction::On).await,
            "off" => bmc.power(PowerAction::Off).await,
            "soft" => bmc.power(PowerAction::SoftOff).await,
            "cycle" => bmc.power(PowerAction::Cycle).await,
            "reset" => bmc.power(PowerAction::Reset).await,
            "pxe" => bmc.set_boot_device(BootDevice::Pxe, options).await,
            "disk" => bmc.set_boot_device(BootDevice::Disk, options).await,
            "bios" => bmc.set_boot_device(BootDevice::BiosSetup, options).await,
            other => {
                return Err(tinker::core::Error::Unsupported {
                    target: endpoint.url(),
                    operation: format!("command {other:?}"),
                });
            }
        };
        done.map(|_| "ok".to_string())
    }
    .await;
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
