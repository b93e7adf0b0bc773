//! `slipwayd down` and `slipwayd purge`: the commands that stop or delete node VMs outside the
//! loop, each under the host lock for its whole run (or, for a purge while a supervisor runs,
//! through that supervisor).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::lock::HostLock;
use crate::api;
use crate::config::HostConfig;
use crate::driver::{Driver, StopDeadlines, Stopped, VmStatus};
use crate::model::{Deadlines, NodeName};

/// The driver's stop deadlines from the lifecycle's.
pub(super) fn stop_deadlines(deadlines: &Deadlines) -> StopDeadlines {
    StopDeadlines {
        powerdown: deadlines.powerdown,
        quit: deadlines.quit,
        kill: deadlines.kill,
    }
}

/// Runs `slipwayd down`: stops every node VM of the config (their state disks stay). A VM is
/// reported stopped only once its process is gone; one that outlives every step fails the
/// command, naming it.
pub async fn down(path: &Path) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    let _lock = HostLock::take(&config.state_dir, "stop the node VMs")?;
    let driver = std::sync::Arc::new(super::driver(&config).await?);
    let deadlines = stop_deadlines(&Deadlines::default());
    let records = crate::records::load_all(&config.state_dir)?;
    // All at once: each VM gets the whole deadline to power down.
    let mut stopping = tokio::task::JoinSet::new();
    for node in config.nodes.values() {
        // Its own VM (of its record's generation), and a surge's replacement if one runs
        // beside it (shown as NAME/DIR).
        let own = records
            .get(&node.name)
            .map_or(0, |r: &crate::records::NodeRecord| r.generation);
        let own = crate::records::run_dir(&config.state_dir, &node.name, own);
        for dir in crate::records::vm_dirs(&config.state_dir, &node.name) {
            let name = if dir == own {
                node.name.clone()
            } else {
                let sub = dir.file_name().unwrap_or_default().to_string_lossy();
                format!("{}/{sub}", node.name)
            };
            let driver = driver.clone();
            stopping.spawn(async move {
                let result = driver.stop(&name, &dir, deadlines).await;
                (name, result)
            });
        }
    }
    let mut results: Vec<(String, anyhow::Result<Stopped>)> = stopping.join_all().await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut alive = Vec::new();
    for (name, result) in results {
        match result {
            // Of a node's other generations, only one that ran is worth a line.
            Ok(Stopped::AlreadyStopped) if name.contains('/') => {}
            Ok(Stopped::AlreadyStopped) => println!("{name:<16} not running"),
            Ok(Stopped::PoweredDown) => println!("{name:<16} stopped (powered down)"),
            Ok(Stopped::Quit) => println!("{name:<16} stopped (ignored the power-down: quit)"),
            Ok(Stopped::Killed) => println!("{name:<16} stopped (killed)"),
            Err(e) => {
                eprintln!("{name:<16} STILL RUNNING: {e:#}");
                alive.push(name);
            }
        }
    }
    if !alive.is_empty() {
        bail!("could not stop the VM of {}", alive.join(", "));
    }
    for cluster in config.clusters.values() {
        driver.stop_network(&cluster.name).await;
    }
    Ok(())
}

/// Deletes the disks, seed, logs and record of node `name` of `config`, which must no longer
/// be configured and whose VM must not run.
pub(super) async fn purge_node<D: Driver>(
    config: &HostConfig,
    driver: &D,
    name: &str,
) -> anyhow::Result<()> {
    let name: NodeName = name.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if config.nodes.contains_key(name.as_ref()) {
        bail!(
            "node {name} is still in the host config: remove it there first (its VM is stopped, then it can be purged)"
        );
    }
    let dir = config.state_dir.join("nodes").join(name.as_ref());
    if !dir.is_dir() {
        bail!("no node {name} in {}", config.state_dir.display());
    }
    // A swap in flight needs the node's disks until it ends (the next `run` abandons it, since
    // the node left host.toml).
    let journal = crate::swap::journal::Journal::load(&config.state_dir)?;
    if journal.swaps.contains_key(name.as_ref()) {
        bail!(
            "a swap of node {name} is in flight (see `slipwayd rollout status`): start `slipwayd run` to end it, then purge"
        );
    }
    for vm in crate::records::vm_dirs(&config.state_dir, name.as_ref()) {
        let status = driver.status(name.as_ref(), &vm).await;
        if let VmStatus::Paused { status: why, .. } = &status
            && status.is_unknown()
        {
            bail!(
                "cannot tell whether the VM of node {name} still runs ({why}): nothing was deleted; purge it once the hypervisor answers"
            );
        }
        if let VmStatus::Running { pid } | VmStatus::Paused { pid, .. } = status {
            bail!("the VM of node {name} still runs (pid {pid}): wait for slipwayd to stop it");
        }
    }
    // Nothing here is deleted while the hypervisor still holds any of it: a purge run again
    // finds the node as it was.
    for vm in crate::records::vm_dirs(&config.state_dir, name.as_ref()) {
        driver
            .forget(&vm)
            .await
            .with_context(|| format!("node {name} is not purged (run the purge again)"))?;
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))?;
    Ok(())
}

/// Runs `slipwayd purge NODE`: deletes the disks of a node that is no longer configured and
/// whose VM does not run. With a supervisor running on the host it is asked to do it (over
/// D-Bus at `bus`), so the purge cannot race its passes; otherwise it is done here, holding the
/// host's lock until the node is gone.
pub async fn purge(path: &Path, name: &str, bus: Option<&str>) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    if let Some(_lock) = HostLock::try_take(&config.state_dir)? {
        let driver = super::driver(&config).await?;
        purge_node(&config, &driver, name).await?;
    } else {
        let client = api::Client::connect(bus).await?;
        client.purge(name).await?;
        // The supervisor purges on its next turn: wait until the node is gone, or says why not.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = client.status().await?;
            match status.nodes.iter().find(|n| n.name == name) {
                None => break,
                Some(n) if n.reason.starts_with("purge refused") => bail!("{}", n.reason),
                Some(_) if Instant::now() > deadline => {
                    bail!("slipwayd did not purge node {name} within 30 s")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    println!("{name}: its disks, seed, logs and record are deleted");
    Ok(())
}
