//! `slipway`: builds, signs and publishes Kubernetes node images.
//!
//! Exit codes: 0 success, 1 failure (one sentence and its causes on stderr), 2 usage error.

mod build;
mod commands;
mod cpio;
mod diff;
mod events;
mod lock;
mod progress;
mod recipe;
mod sbom;
mod secret;
mod size;
mod sources;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Build a node image from a recipe: NAME-VERSION.vhdx, .manifest.json and .spdx.json.
    ///
    /// Stages are cached by the digest of their inputs: a rebuild with nothing changed reuses
    /// everything. Inputs are pinned in the lock file beside the recipe.
    Build(commands::build::BuildArgs),
    /// Resolve every input of a recipe again and rewrite its lock file.
    Lock(commands::build::LockArgs),
    /// Say what changed between two builds (packages, kernel, Kubernetes, files, and for
    /// Windows images registry values and services).
    Diff(commands::build::DiffArgs),
    /// List what is inside a built image, read back from its VHDX: partitions, and for a
    /// Windows image the BCD's boot entries, the services and the registry values it set.
    Inspect(commands::inspect::InspectArgs),
    /// Make a signing key pair (cosign-compatible public key; private key 0600).
    Keygen(commands::publish::KeygenArgs),
    /// Sign a built image (writes NAME-VERSION.sig.json beside it).
    Sign(commands::publish::SignArgs),
    /// Check a built image: its VHDX against its manifest, its signature against a key.
    Verify(commands::publish::VerifyArgs),
    /// Publish an image as a signed OCI artifact to oci:PATH[:TAG] or a registry.
    Push(commands::publish::PushArgs),
    /// Fetch an image, refusing it unless a trusted key signed it and every digest matches.
    Pull(commands::publish::PullArgs),
    /// Point a channel (stable, beta, ...) at a published image with a signed release index.
    Promote(commands::publish::PromoteArgs),
    /// Read, write, check and convert VHDX disk images.
    #[command(subcommand)]
    Vhdx(commands::vhdx::VhdxCommand),
}

fn main() -> ExitCode {
    // Before anything else, on every run: a build holds decrypted private keys in memory, and
    // `/proc/PID/environ` keeps a `--passphrase-env` variable; only root may read either.
    let hidden = secret::hide_process();
    // Parsing reads a passphrase given as `--passphrase-env VAR`; VAR then leaves the
    // environment at once, while this is the only thread, so no tool a command runs inherits it.
    let matches = Cli::command().get_matches();
    let scrubbed = secret::remove_from_env(&secret::variables_read(&matches));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    terminal::init_logging(cli.log_format, "info");
    if let Err(e) = hidden.and(scrubbed) {
        return terminal::finish("slipway", Err(e.into()));
    }
    let result = match cli.command {
        Command::Build(args) => commands::build::run_build(args),
        Command::Lock(args) => commands::build::run_lock(args),
        Command::Diff(args) => commands::build::run_diff(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Keygen(args) => commands::publish::keygen(args),
        Command::Sign(args) => commands::publish::sign(args),
        Command::Verify(args) => commands::publish::verify(args),
        Command::Push(args) => commands::publish::push(args),
        Command::Pull(args) => commands::publish::pull(args),
        Command::Promote(args) => commands::publish::promote(args),
        Command::Vhdx(command) => commands::vhdx::run(command),
    };
    terminal::finish("slipway", result)
}
