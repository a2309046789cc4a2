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

/// Drives one BMC; the password is read from `TINKER_BMC_PASSWORD`.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct Args {
    /// The BMC: `ipmi://USER@HOST:PORT`, `redfish://...` or `redfishs://...`.
    #[arg(long)]
    bmc: String,
    /// Make a boot-device choice persistent.
    #[arg(long)]
    persistent: bool,
    /// Boot in EFI mode.
    #[arg(long)]
    efi: bool,
    /// What to do.
    #[arg(value_enum)]
    command: Command,
}

/// What to ask the BMC.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Command {
    /// Print the power state.
    Status,
    /// Power on.
    On,
    /// Power off.
    Off,
    /// Soft power off (ACPI).
    Soft,
    /// Power cycle.
    Cycle,
    /// Hard reset.
    Reset,
    /// Boot from the network next.
    Pxe,
    /// Boot from disk next.
    Disk,
    /// Boot into the firmware setup next.
    Bios,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Args {
        bmc: url,
        persistent,
        efi,
        command,
    } = <Args as clap::Parser>::parse();
    let Ok(password) = std::env::var("TINKER_BMC_PASSWORD") else {
        eprintln!("set TINKER_BMC_PASSWORD to the BMC's password");
        return ExitCode::from(2);
    };
    let options = BootOptions { persistent, efi };
    let result = async {
        let endpoint = BmcEndpoint::parse(&url)?;
        let bmc = endpoint.build(Secret::new(password), RetryPolicy::default())?;
        let done = match command {
            Command::Status => {
                return Ok(format!("{:?}", bmc.power_state().await?).to_lowercase());
            }
            Command::On => bmc.power(PowerAction::On).await,
            Command::Off => bmc.power(PowerAction::Off).await,
            Command::Soft => bmc.power(PowerAction::SoftOff).await,
            Command::Cycle => bmc.power(PowerAction::Cycle).await,
            Command::Reset => bmc.power(PowerAction::Reset).await,
            Command::Pxe => bmc.set_boot_device(BootDevice::Pxe, options).await,
            Command::Disk => bmc.set_boot_device(BootDevice::Disk, options).await,
            Command::Bios => bmc.set_boot_device(BootDevice::BiosSetup, options).await,
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
