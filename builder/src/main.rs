//! `slipway`: builds, signs and publishes Kubernetes node images.
//!
//! Exit codes: 0 success, 1 failure (one sentence and its causes on stderr), 2 usage error.

mod commands;
mod progress;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use images::terminal::{self, LogFormat};

/// Build, inspect and publish Slipway node images.
///
/// Node images are VHDX disks that Hyper-V and QEMU hosts boot as Kubernetes nodes.
#[derive(Debug, Parser)]
#[command(name = "slipway", version, propagate_version = true)]
struct Cli {
    /// Log line format on stderr: human or json.
    #[arg(long, global = true, default_value = "human", value_name = "FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read, write, check and convert VHDX disk images.
    #[command(subcommand)]
    Vhdx(commands::vhdx::VhdxCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    terminal::init_logging(cli.log_format, "info");
    let result = match cli.command {
        Command::Vhdx(command) => commands::vhdx::run(command),
    };
    terminal::finish("slipway", result)
}
