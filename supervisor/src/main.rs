//! `slipwayd`: runs Kubernetes node VMs from signed Slipway images on a hyperconverged host.
//!
//! Exit codes: 0 success, 1 failure (one sentence and its causes on stderr), 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};
use images::terminal::{self, LogFormat};

mod config;
mod driver;
mod pki;
mod reconcile;
mod seed;
mod up;

/// Supervise Kubernetes node VMs on this host: pull signed images, boot nodes, roll updates.
#[derive(Debug, Parser)]
#[command(name = "slipwayd", version, propagate_version = true)]
struct Cli {
    /// Log line format on stderr: human or json.
    #[arg(long, global = true, default_value = "human", value_name = "FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor for the nodes described in a host config.
    Run {
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
    },
    /// Show the nodes of a running supervisor.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a host config and print the plan: clusters, nodes, roles and addresses.
    CheckConfig {
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
    },
    /// Generate each cluster's PKI (once) and write every node's NoCloud seed into the state
    /// directory: the kubeadm documents for its role, its address, and the digest its beacon
    /// must echo.
    Seed {
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
    },
    /// One pass of what `run` will do continuously: pull the image the channel names, write
    /// the seeds, start the node VMs that are not running, and wait for every node's beacon.
    Up {
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
    },
    /// Stop every node VM of a host config (ACPI power-down, then quit); state disks stay.
    Down {
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
    },
    /// Show the UEFI firmware node VMs would boot with.
    Firmware,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    terminal::init_logging(cli.log_format, "info");
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Status { .. } => Err(anyhow::anyhow!(
            "no supervisor to ask: `slipwayd run` is not implemented yet (issue 6: node VMs, D-Bus API)"
        )),
        Command::CheckConfig { config } => check_config(&config),
        Command::Seed { config } => write_seeds(&config),
        Command::Up { config } => up::up(&config),
        Command::Down { config } => up::down(&config),
        Command::Firmware => firmware(),
    };
    terminal::finish("slipwayd", result)
}

fn run(config: &Path) -> anyhow::Result<()> {
    config::HostConfig::load(config)?;
    bail!(
        "cannot supervise the nodes in {}: the supervision loop is not implemented yet (issue 6); today Slipway builds and inspects images with `slipway vhdx`",
        config.display()
    )
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = config::HostConfig::load(path)?;
    println!(
        "host {} (state in {})",
        config.name,
        config.state_dir.display()
    );
    println!(
        "images from {} channel {}",
        config.source.reference, config.source.channel
    );
    for cluster in config.clusters.values() {
        println!(
            "cluster {}: Kubernetes {}, endpoint {}, nodes on {} (gateway {})",
            cluster.name,
            cluster.kubernetes,
            cluster.control_plane_endpoint,
            cluster.network,
            cluster.gateway
        );
    }
    for node in config.nodes.values() {
        println!(
            "  {:<16} {:<14} {:<15} {} cpus, {} MiB, state disk {} MiB",
            node.name,
            node.role.to_string(),
            node.address.to_string(),
            node.cpus,
            node.memory >> 20,
            node.state_disk >> 20
        );
    }
    Ok(())
}

fn write_seeds(path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = config::HostConfig::load(path)?;
    for node in config.nodes.values() {
        let seed = seed::for_node(&config, node)?;
        let image = seed::image_path(&config, node);
        if let Some(dir) = image.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        seed::write_image(&seed, &image)?;
        println!(
            "{:<16} {:<14} {:<15} mac {} {} kubeadm sha256 {}",
            node.name,
            node.role.to_string(),
            node.address.to_string(),
            seed.mac,
            image.display(),
            seed.kubeadm_sha256
        );
    }
    Ok(())
}

fn firmware() -> anyhow::Result<()> {
    let dirs: Vec<&Path> = firmware::DEFAULT_SEARCH_DIRS
        .iter()
        .map(Path::new)
        .collect();
    let ovmf = firmware::find_ovmf(&dirs)?;
    println!("code  {}", ovmf.code.display());
    println!("vars  {}", ovmf.vars.display());
    Ok(())
}
