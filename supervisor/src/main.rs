//! `slipwayd`: runs Kubernetes node VMs from signed Slipway images on a hyperconverged host.
//!
//! Exit codes: 0 success, 1 failure (one sentence and its causes on stderr), 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};
use images::terminal::{self, LogFormat};

mod api;
mod beacon;
mod config;
mod daemon;
mod driver;
mod fleet;
mod kube;
mod metrics;
mod model;
mod persist;
mod pki;
mod reconcile;
mod records;
mod rollout_cli;
mod seed;
mod swap;

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
    /// Supervise the node VMs of a host config until SIGTERM: pull and verify the image the
    /// channel names, keep every configured node running from it, listen to their beacons,
    /// serve the D-Bus API and the metrics. The VMs outlive slipwayd; a new `run` re-attaches.
    Run {
        /// The host config (host.toml); SIGHUP or an edit re-reads it.
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
        /// D-Bus address to serve org.slipway.Supervisor1 on (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
        /// Loopback address and port for Prometheus metrics (port 0: any free port; the
        /// MetricsAddress property says which).
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9756")]
        metrics: std::net::SocketAddr,
    },
    /// Show the nodes of a running supervisor (asks it over D-Bus).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// D-Bus address of the supervisor (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
        /// Wait up to SECONDS until every configured node is ready (exit 1 if not), then show.
        #[arg(long, value_name = "SECONDS")]
        wait_ready: Option<u64>,
    },
    /// Ask a running supervisor to re-read its host config and reconcile now (as SIGHUP does).
    Reload {
        /// D-Bus address of the supervisor (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
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
    /// Stop every node VM of a host config (ACPI power-down, then quit); state disks stay.
    /// Refused while `slipwayd run` supervises the host (it would start them again).
    Down {
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
    },
    /// Delete the disks, seed and logs of a node that is no longer in the host config and
    /// whose VM has stopped. Nothing else ever deletes a state disk.
    Purge {
        /// The node.
        node: String,
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
        /// D-Bus address of the running supervisor, which does the purge when there is one
        /// (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
    },
    /// Write an admin kubeconfig for a cluster, minted from the cluster CA slipwayd made (the
    /// counterpart of AKS-HCI's Get-AksHciCredential): a client certificate for
    /// `slipway-admin` in `system:masters`, the CA and the control-plane endpoint, in one file
    /// written 0600. Needs read access to the cluster's CA key (root).
    Kubeconfig {
        /// The cluster.
        cluster: String,
        /// The host config (host.toml).
        #[arg(long, short, default_value = "/etc/slipway/host.toml")]
        config: PathBuf,
        /// Where to write it (`-`: standard output) [default: ./CLUSTER.kubeconfig].
        #[arg(long, short, value_name = "PATH")]
        out: Option<PathBuf>,
        /// How long the certificate is valid, in hours (at most a year: it cannot be revoked).
        #[arg(long, value_name = "HOURS", default_value_t = kube::cli::DEFAULT_VALID_HOURS)]
        valid_for: u32,
    },
    /// Show the UEFI firmware node VMs would boot with.
    Firmware,
    /// Follow, pause, resume or abort the rolling image swaps of a running supervisor.
    ///
    /// When the channel names a newer verified image, slipwayd moves the nodes of each cluster
    /// on this host to it one swap at a time: drain, stop, switch disks, boot, verify, commit;
    /// a node that fails verification is rolled back to its previous image and the rollout
    /// stops.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
}

/// What `slipwayd rollout` does.
#[derive(Debug, Subcommand)]
enum RolloutAction {
    /// Show each cluster's rollout: its state and target, then every node's image and swap
    /// step.
    ///
    /// States: done (every node runs the target), rolling (a swap runs), waiting (for the
    /// maintenance window, or for nodes that are not ready), paused (by `slipwayd rollout
    /// pause`, or after a host failure; the reason says which), failed (a node was rolled
    /// back; the target is not rolled further on this host), aborted (by `slipwayd rollout
    /// abort`), idle (no target image yet).
    ///
    /// With --follow, prints a line stamped HH:MM:SS (UTC) per change and ends when every
    /// cluster's rollout has ended: exit 0 when done (or paused, without --target), exit 1
    /// when one failed or was aborted, or when --timeout passes first.
    Status {
        /// Print JSON instead of tables (with --follow: one JSON line per change).
        #[arg(long)]
        json: bool,
        /// Keep watching (every 500 ms) and print each change until every rollout has ended.
        #[arg(long)]
        follow: bool,
        /// Follow until every cluster's rollout targets VERSION and has ended (a paused
        /// rollout does not count as ended). Implies --follow.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Give up after SECONDS (exit 1). Implies --follow.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// D-Bus address of the supervisor (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
    },
    /// Pause the rollouts on this host: no new swap starts; a swap in flight finishes.
    ///
    /// The pause persists across restarts of slipwayd until `slipwayd rollout resume`.
    Pause {
        /// D-Bus address of the supervisor (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
    },
    /// Resume paused rollouts: swaps start again where they stopped.
    Resume {
        /// D-Bus address of the supervisor (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
    },
    /// Abort a rollout: the swap in flight is rolled back, and the target image (that digest)
    /// is not rolled further in the cluster; promoting a different image starts a new rollout.
    ///
    /// Nodes already moved keep the target image. The abort persists across restarts of
    /// slipwayd.
    Abort {
        /// The cluster whose rollout to abort (default: every cluster on this host).
        cluster: Option<String>,
        /// D-Bus address of the supervisor (default: the system bus).
        #[arg(long, value_name = "ADDRESS")]
        bus: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    terminal::init_logging(cli.log_format, "info");
    // One thread runs the loop, the listeners, D-Bus and the metrics; blocking work (pulls,
    // the KVM probe) goes to tokio's blocking pool.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let result = runtime.block_on(command(cli.command));
            // A pull on the blocking pool is not waited for: SIGTERM ends slipwayd now, and
            // the next run pulls again (a pull stages, and the store admits it whole or not).
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        });
    terminal::finish("slipwayd", result)
}

async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            bus,
            metrics,
        } => {
            daemon::run(&daemon::Options {
                config,
                bus,
                metrics,
            })
            .await
        }
        Command::Status {
            json,
            bus,
            wait_ready,
        } => status(bus.as_deref(), json, wait_ready).await,
        Command::Reload { bus } => api::Client::connect(bus.as_deref()).await?.reload().await,
        Command::CheckConfig { config } => check_config(&config),
        Command::Seed { config } => write_seeds(&config),
        Command::Down { config } => daemon::down(&config).await,
        Command::Purge { node, config, bus } => daemon::purge(&config, &node, bus.as_deref()).await,
        Command::Kubeconfig {
            cluster,
            config,
            out,
            valid_for,
        } => kube::cli::kubeconfig(&config, &cluster, out.as_deref(), valid_for),
        Command::Firmware => firmware(),
        Command::Rollout { action } => rollout(action).await,
    }
}

async fn status(bus: Option<&str>, json: bool, wait_ready: Option<u64>) -> anyhow::Result<()> {
    use std::time::{Duration, Instant};
    let all_ready = |s: &api::Status| {
        s.nodes
            .iter()
            .filter(|n| !n.role.is_empty())
            .all(|n| n.state == model::NodeState::Ready.as_str())
            && s.nodes.iter().any(|n| !n.role.is_empty())
    };
    let ask = async || api::Client::connect(bus).await?.status().await;
    // Waiting also covers a supervisor that has not reached the bus yet.
    let deadline = wait_ready.map(|s| Instant::now() + Duration::from_secs(s));
    let status = loop {
        let answer = ask().await;
        let waiting = deadline.is_some_and(|d| Instant::now() < d);
        match answer {
            Ok(status) if !waiting || all_ready(&status) => break status,
            Err(e) if !waiting => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", api::table(&status));
    }
    if let Some(seconds) = wait_ready
        && !all_ready(&status)
    {
        bail!("not every node is ready after {seconds} s");
    }
    Ok(())
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
    if let Some(windows) = &config.source.windows_channel {
        println!("windows nodes' images from channel {windows}");
    }
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
    // Never beside a running supervisor: it rewrites seeds and may be making the cluster PKI.
    let _lock = daemon::HostLock::take(&config.state_dir, "write the seeds")?;
    // The seeds `run` would write: addresses and initialisers from the node records, and for
    // nodes without one, what `run` would record (nothing is recorded here).
    let mut records = records::load_all(&config.state_dir)?;
    let initialisers = records::initialisers(&config.state_dir, &config)?;
    let journal = swap::journal::Journal::load(&config.state_dir)?;
    let plan = records::plan(&config, &records, &initialisers, &journal.reserved())?;
    for record in plan.records {
        records.insert(record.name.to_string(), record);
    }
    for node in config.nodes.values() {
        let Some(record) = records.get(&node.name) else {
            continue;
        };
        let init = record.initialises;
        let placed = record.placed(node);
        let seed = seed::for_node(&config, &placed, init)?;
        let dir = records::run_dir(&config.state_dir, &node.name, record.generation);
        let image = seed::image_path(&dir);
        // The node's directory, private as `run` makes it (it keeps an existing one's mode).
        if let Some(dir) = image.parent() {
            persist::private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        seed::write_image(&seed, &image)?;
        println!(
            "{:<16} {:<14} {:<15} mac {} {} kubeadm sha256 {}",
            node.name,
            node.role.to_string(),
            record.address.to_string(),
            record.mac,
            image.display(),
            seed.kubeadm_sha256
        );
    }
    Ok(())
}

fn firmware() -> anyhow::Result<()> {
    let ovmf = firmware::find_default_ovmf()?;
    println!("code  {}", ovmf.code.display());
    println!("vars  {}", ovmf.vars.display());
    Ok(())
}

async fn rollout(action: RolloutAction) -> anyhow::Result<()> {
    match action {
        RolloutAction::Status {
            json,
            follow,
            target,
            timeout,
            bus,
        } => {
            let follow = follow || target.is_some() || timeout.is_some();
            rollout_cli::status(bus.as_deref(), json, follow, target.as_deref(), timeout).await
        }
        RolloutAction::Pause { bus } => {
            api::Client::connect(bus.as_deref()).await?.pause().await?;
            println!(
                "rollouts paused: no new swap starts; a swap in flight finishes (slipwayd rollout resume to go on)"
            );
            Ok(())
        }
        RolloutAction::Resume { bus } => {
            api::Client::connect(bus.as_deref()).await?.resume().await?;
            println!("rollouts resumed");
            Ok(())
        }
        RolloutAction::Abort { cluster, bus } => {
            let cluster = cluster.unwrap_or_default();
            api::Client::connect(bus.as_deref())
                .await?
                .abort(&cluster)
                .await?;
            let which = if cluster.is_empty() {
                "every rollout on this host".to_owned()
            } else {
                format!("the rollout of {cluster}")
            };
            println!(
                "aborting {which}: a swap in flight is rolled back; the target image is not rolled further here; promoting a different image starts a new rollout"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_rollout_commands_parse() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["slipwayd", "rollout", "abort", "lab", "--bus", "unix:x"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollout {
                action: RolloutAction::Abort { cluster: Some(c), bus: Some(b) }
            } if c == "lab" && b == "unix:x"
        ));
        let cli = Cli::try_parse_from([
            "slipwayd",
            "rollout",
            "status",
            "--target",
            "2026.12.0",
            "--timeout",
            "600",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Rollout {
                action: RolloutAction::Status {
                    follow: false,
                    target: Some(_),
                    timeout: Some(600),
                    ..
                }
            }
        ));
        assert!(Cli::try_parse_from(["slipwayd", "rollout", "pause", "lab"]).is_err());
    }
}
