//! `slipwayd up` and `down`: one pass of what the supervision loop will do continuously. Pull
//! what the channel names into the store (signature, digests, channel checked), write every
//! node's seed, start the VMs that are not running (a running one is left alone), and wait for
//! each node's beacon, checking that it booted this image's root and received exactly its own
//! kubeadm documents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use images::oci::{self, Reference};
use images::sign::PublicKey;
use images::store::Store;

use crate::config::{self, HostConfig, Hypervisor};
use crate::driver::network::Switch;
use crate::driver::qemu::{self, Accel, Spec};
use crate::reconcile::{self, Action, Observed};
use crate::seed;

/// How long a node may take to send its beacon (TCG boots take about 15 s each; several
/// share two cores).
const BEACON_DEADLINE: Duration = Duration::from_secs(300);
/// How long an ACPI power-down may take before QEMU is told to quit.
const POWERDOWN_DEADLINE: Duration = Duration::from_secs(30);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn accel(config: &HostConfig) -> anyhow::Result<Accel> {
    match config.hypervisor {
        Hypervisor::HyperV => {
            bail!("hypervisor hyperv: the Hyper-V driver is not implemented yet (issue 6)")
        }
        Hypervisor::Qemu(config::Accel::Kvm) => Ok(Accel::Kvm),
        Hypervisor::Qemu(config::Accel::Tcg) => Ok(Accel::Tcg),
        Hypervisor::Qemu(config::Accel::Auto) => {
            let dirs: Vec<&Path> = firmware::DEFAULT_SEARCH_DIRS
                .iter()
                .map(Path::new)
                .collect();
            let ovmf = firmware::find_ovmf(&dirs)?;
            if qemu::probe("kvm", &ovmf.code, &ovmf.vars, qemu::PROBE_DEADLINE) {
                tracing::info!("accel auto: the KVM probe ran a guest: using KVM");
                Ok(Accel::Kvm)
            } else {
                tracing::info!(
                    deadline_s = qemu::PROBE_DEADLINE.as_secs(),
                    "accel auto: the KVM probe failed or hung past its deadline: using TCG"
                );
                Ok(Accel::Tcg)
            }
        }
    }
}

fn spec(
    config: &HostConfig,
    node: &config::Node,
    base: &Path,
    seed_mac: &str,
    accel: Accel,
) -> anyhow::Result<Spec> {
    let dirs: Vec<&Path> = firmware::DEFAULT_SEARCH_DIRS
        .iter()
        .map(Path::new)
        .collect();
    let ovmf = firmware::find_ovmf(&dirs)?;
    let dir = config.state_dir.join("nodes").join(&node.name);
    Ok(Spec {
        name: node.name.clone(),
        seed: dir.join("seed.img"),
        dir,
        base: base.to_owned(),
        state_disk: node.state_disk,
        cpus: node.cpus,
        memory: node.memory,
        mac: seed_mac.to_owned(),
        network: Switch::new(&config.state_dir, &node.cluster).socket(),
        ovmf_code: ovmf.code,
        ovmf_vars: ovmf.vars,
        accel,
    })
}

/// Runs `slipwayd up`.
pub fn up(path: &Path) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    let accel = accel(&config)?;
    let keys = config
        .source
        .keys
        .iter()
        .map(|k| PublicKey::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    let reference: Reference = config
        .source
        .reference
        .parse()
        .map_err(anyhow::Error::msg)?;
    let store = Store::open(&config.state_dir.join("store"))?;
    let mut repo = oci::open(&reference, false, config.source.plain_http)?;
    let image = store
        .pull_channel(
            repo.as_mut(),
            &reference,
            &config.source.channel,
            &keys,
            now(),
            &mut |_| {},
        )
        .with_context(|| {
            format!(
                "cannot get the image channel {} names",
                config.source.channel
            )
        })?;
    println!(
        "image {} {} ({})",
        image.manifest.name, image.manifest.version, image.digest
    );

    for cluster in config.clusters.values() {
        if config.nodes.values().any(|n| n.cluster == cluster.name) {
            Switch::new(&config.state_dir, &cluster.name).ensure()?;
        }
    }
    // Wanted (the config) against seen (VM directories, running or not): what to do.
    let wanted: BTreeSet<String> = config.nodes.keys().cloned().collect();
    let actions = reconcile::decide(&wanted, &observe(&config));
    for action in &actions {
        if let Action::Stop(name) = action {
            let dir = config.state_dir.join("nodes").join(name);
            qemu::stop_dir(name, &dir, POWERDOWN_DEADLINE)?;
            println!("{name:<16} stopped: no longer in the config (its state disk stays)");
        }
    }
    let mut waiting = Vec::new();
    for node in config.nodes.values() {
        let seed = seed::for_node(&config, node)?;
        let spec = spec(&config, node, &image.vhdx, &seed.mac, accel)?;
        let keep = actions.contains(&Action::Keep(node.name.clone()));
        if let (true, Some(pid)) = (keep, qemu::running(&spec)) {
            let status = qemu::Qmp::connect(&spec).and_then(|mut q| q.status());
            let status = status.unwrap_or_else(|e| format!("QMP unreachable: {e}"));
            println!(
                "{:<16} already running (pid {pid}, {status}): left alone",
                node.name
            );
        } else {
            std::fs::create_dir_all(&spec.dir)
                .with_context(|| format!("cannot create {}", spec.dir.display()))?;
            seed::write_image(&seed, &spec.seed)?;
            qemu::prepare(&spec)?;
            qemu::start(&spec)?;
            println!("{:<16} started ({:?})", node.name, accel);
        }
        let expected = seed.kubeadm_sha256.clone();
        let node = node.clone();
        waiting.push(std::thread::spawn(move || {
            (
                node,
                expected,
                qemu::wait_beacon(&spec, BEACON_DEADLINE, |b| b.endpoint == "reachable"),
            )
        }));
    }
    let mut failures = 0;
    println!(
        "{:<16} {:<14} {:<15} {:<24} kubeadm documents",
        "NODE", "ROLE", "ADDRESS", "IMAGE"
    );
    for handle in waiting {
        let Ok((node, expected, beacon)) = handle.join() else {
            bail!("a beacon waiter panicked");
        };
        match beacon {
            Ok(b) => {
                let root_ok = b.root_hash == image.manifest.disk.verity.root_hash;
                let docs_ok = b.kubeadm_sha256 == expected;
                let reach_ok = b.endpoint == "reachable";
                if !(root_ok && docs_ok && reach_ok) {
                    failures += 1;
                }
                println!(
                    "{:<16} {:<14} {:<15} {:<24} {}",
                    node.name,
                    node.role.to_string(),
                    node.address.to_string(),
                    format!(
                        "{} {}{}",
                        b.image,
                        b.version,
                        if root_ok { "" } else { " (OTHER ROOT)" }
                    ),
                    match (docs_ok, reach_ok) {
                        (true, true) => "ready: digest matches, endpoint reachable",
                        (true, false) => "digest matches, ENDPOINT UNREACHABLE",
                        (false, _) => "MISMATCH",
                    }
                );
            }
            Err(e) => {
                failures += 1;
                println!("{:<16} {}", node.name, e);
            }
        }
    }
    if failures > 0 {
        bail!("{failures} node(s) did not report ready with the expected image and documents");
    }
    Ok(())
}

/// What the state directory holds: every node VM directory, running or not.
fn observe(config: &HostConfig) -> BTreeMap<String, Observed> {
    let dir = config.state_dir.join("nodes");
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        let running =
            crate::driver::live_pid(&path.join("qemu.pid"), "qemu-system", &path).is_some();
        seen.insert(
            name,
            if running {
                Observed::Running
            } else {
                Observed::Stopped
            },
        );
    }
    seen
}

/// Runs `slipwayd down`: stops every node VM (their state disks stay).
pub fn down(path: &Path) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    let accel = accel(&config)?;
    // All at once: each VM gets the whole deadline to power down.
    let mut stopping = Vec::new();
    for node in config.nodes.values() {
        let spec = spec(&config, node, Path::new(""), "", accel)?;
        stopping.push(std::thread::spawn(move || {
            (spec.name.clone(), qemu::stop(&spec, POWERDOWN_DEADLINE))
        }));
    }
    for handle in stopping {
        let Ok((name, result)) = handle.join() else {
            bail!("a stopping thread panicked");
        };
        result?;
        println!("{name:<16} stopped");
    }
    for cluster in config.clusters.values() {
        Switch::new(&config.state_dir, &cluster.name).stop();
    }
    Ok(())
}
