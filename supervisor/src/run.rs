//! `slipwayd run`: the supervision loop. It pulls what the channel names into the store
//! (signature, digests and channel checked before any disk is made), keeps every configured
//! node VM running from it, and listens to the nodes' beacons. It wakes on events (a beacon, a
//! signal, a D-Bus `Reload`, a VM that stopped) and on a timer: every few seconds it looks for
//! silence, dead VMs and an edited host.toml; every minute it runs a whole reconcile pass.
//!
//! The VMs are detached from slipwayd: stopping or killing it leaves them running, and the next
//! `slipwayd run` re-attaches (pid file, QMP, beacon socket) without rebooting or duplicating one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use images::oci::{self, Reference};
use images::sign::PublicKey;
use images::store::{Store, StoredImage};
use serde::{Deserialize, Serialize};

use crate::api::{self, Counters, NodeInfo, Shared, Snapshot};
use crate::beacon::{Beacon, Heard, Listener};
use crate::config::{self, HostConfig, Hypervisor};
use crate::driver::network::Switch;
use crate::driver::qemu::{self, Accel, Spec};
use crate::reconcile::{self, Action, Observed};
use crate::{metrics, seed};

/// How often a whole reconcile pass runs when nothing else asks for one.
const PASS_INTERVAL: Duration = Duration::from_secs(60);
/// How often silence, dead VMs and an edited host.toml are looked for.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// A node that was heard and has been quiet this long is `silent` (beacons come every 5 s).
const SILENCE: Duration = Duration::from_secs(20);
/// How long a node may take from start to its first beacon before it is reported `silent`
/// (TCG boots take about 15 s each; several share two cores).
const BOOT_DEADLINE: Duration = Duration::from_secs(300);
/// The least time between two starts of one node's VM (one that dies at once is not restarted
/// on every check).
const RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// How long an ACPI power-down may take before QEMU is told to quit.
const POWERDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// What `slipwayd run` is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host config.
    pub config: PathBuf,
    /// The D-Bus address (the system bus when `None`).
    pub bus: Option<String>,
    /// Where to serve metrics (loopback).
    pub metrics: SocketAddr,
}

/// What wakes the loop.
enum Event {
    Heard(String, Heard),
    Stopped(String),
    Purge(String),
    /// A pull ended: the verified image, or why it was refused.
    Pulled(Box<Result<StoredImage, String>>),
    Reload,
    Quit,
}

/// The image a VM was started from, recorded in its directory (`image.json`) so a restarted
/// slipwayd knows what each running VM should report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Booted {
    digest: String,
    name: String,
    version: String,
    root_hash: String,
}

/// What the loop knows of a node beyond what it shows.
#[derive(Debug, Default)]
struct Tracked {
    info: NodeInfo,
    /// sha256 of the kubeadm documents its seed carries.
    documents: String,
    /// The image it was started from.
    booted: Option<Booted>,
    heard: Option<Instant>,
    since: Option<Instant>,
    /// When this slipwayd last started its VM.
    started: Option<Instant>,
    listener: Option<Listener>,
}

impl Tracked {
    fn set(&mut self, state: &str, reason: impl Into<String>) {
        self.info.state = state.to_owned();
        self.info.reason = reason.into();
    }

    fn is_leaving(&self) -> bool {
        matches!(self.info.state.as_str(), "stopping" | "removed")
    }
}

/// Whether a beacon shows the node as it was started: its image's root, its own documents,
/// and its cluster's endpoint reachable. Returns the state and, when not ready, why.
fn judge(beacon: &Beacon, booted: Option<&Booted>, documents: &str) -> (&'static str, String) {
    if let Some(booted) = booted
        && beacon.root_hash != booted.root_hash
    {
        return (
            "mismatch",
            format!(
                "it booted root {} ({} {}), not the root of {} {} it was started from",
                beacon.root_hash, beacon.image, beacon.version, booted.name, booted.version
            ),
        );
    }
    if beacon.kubeadm_sha256 != documents {
        return (
            "mismatch",
            format!(
                "it received kubeadm documents with sha256 {}; it was sent {documents}",
                beacon.kubeadm_sha256
            ),
        );
    }
    if beacon.event != "ready" {
        return ("starting", format!("it says {}", beacon.event));
    }
    if beacon.endpoint != "reachable" {
        return (
            "unreachable",
            "it cannot reach its cluster's control-plane endpoint".into(),
        );
    }
    if beacon.host == "unreachable" {
        return (
            "unreachable",
            "it cannot reach the host at its gateway address".into(),
        );
    }
    ("ready", String::new())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The supervision state.
struct Supervisor {
    path: PathBuf,
    config: HostConfig,
    stamp: Option<SystemTime>,
    accel: Option<Accel>,
    image: Option<StoredImage>,
    /// Whether a pull runs (in its own thread: a large one must not hold the loop).
    pulling: bool,
    /// Why the last pull was refused; cleared by the next one that succeeds.
    problem: String,
    /// Why host.toml as it is now is not in force; cleared when it loads again.
    config_problem: String,
    nodes: BTreeMap<String, Tracked>,
    counters: Counters,
    events: Sender<Event>,
}

impl Supervisor {
    fn new(path: &Path, events: Sender<Event>) -> anyhow::Result<Supervisor> {
        let stamp = modified(path);
        let config = HostConfig::load(path)?;
        Ok(Supervisor {
            path: path.to_owned(),
            config,
            stamp,
            accel: None,
            image: None,
            pulling: false,
            problem: String::new(),
            config_problem: String::new(),
            nodes: BTreeMap::new(),
            counters: Counters::default(),
            events,
        })
    }

    /// Re-reads host.toml; a config that does not load is reported and the previous one kept.
    fn reload(&mut self) {
        self.stamp = modified(&self.path);
        match HostConfig::load(&self.path) {
            Ok(config) if config.state_dir != self.config.state_dir => {
                self.config_problem = format!(
                    "{}: state-dir changed from {} to {}: restart slipwayd to move a host (the previous config stays in force)",
                    self.path.display(),
                    self.config.state_dir.display(),
                    config.state_dir.display()
                );
                tracing::error!("{}", self.config_problem);
            }
            Ok(config) => {
                tracing::info!(config = %self.path.display(), "host config reloaded");
                self.config = config;
                self.accel = None;
                self.config_problem.clear();
            }
            Err(e) => {
                let e = anyhow::Error::from(e);
                tracing::error!("{e:#}: keeping the previous config");
                self.config_problem = format!("{e:#} (the previous config stays in force)");
            }
        }
    }

    fn accel(&mut self) -> anyhow::Result<Accel> {
        if let Some(accel) = self.accel {
            return Ok(accel);
        }
        let accel = match self.config.hypervisor {
            Hypervisor::HyperV => {
                bail!("hypervisor hyperv: the Hyper-V driver is not implemented yet")
            }
            Hypervisor::Qemu(config::Accel::Kvm) => Accel::Kvm,
            Hypervisor::Qemu(config::Accel::Tcg) => Accel::Tcg,
            Hypervisor::Qemu(config::Accel::Auto) => {
                let ovmf = firmware::find_default_ovmf()?;
                if qemu::probe("kvm", &ovmf.code, &ovmf.vars, qemu::PROBE_DEADLINE) {
                    tracing::info!("accel auto: the KVM probe ran a guest: using KVM");
                    Accel::Kvm
                } else {
                    tracing::info!(
                        deadline_s = qemu::PROBE_DEADLINE.as_secs(),
                        "accel auto: the KVM probe failed or hung past its deadline: using TCG"
                    );
                    Accel::Tcg
                }
            }
        };
        self.accel = Some(accel);
        Ok(accel)
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.config.state_dir.join("nodes").join(name)
    }

    /// One pass: a pull of what the channel names starts (unless one runs), and the nodes are
    /// reconciled with the image verified so far; the pull's end reconciles again.
    fn pass(&mut self) {
        if !self.pulling {
            self.pulling = true;
            let (source, state_dir) = (self.config.source.clone(), self.config.state_dir.clone());
            let events = self.events.clone();
            std::thread::spawn(move || {
                let result = pull(&source, &state_dir).map_err(|e| format!("{e:#}"));
                let _ = events.send(Event::Pulled(Box::new(result)));
            });
        }
        self.reconcile();
    }

    /// A pull ended: the image to boot from, or why there is none.
    fn pulled(&mut self, result: Result<StoredImage, String>) {
        self.pulling = false;
        match result {
            Ok(image) => {
                if self.image.as_ref().map(|i| &i.digest) != Some(&image.digest) {
                    tracing::info!(
                        image = %image.manifest.name,
                        version = %image.manifest.version,
                        digest = %image.digest,
                        "the channel's image is verified and in the store"
                    );
                }
                self.image = Some(image);
                self.problem.clear();
            }
            Err(e) => {
                self.counters.refusals += 1;
                tracing::error!("{e}");
                self.problem = e;
                self.image = None;
            }
        }
        self.reconcile();
    }

    /// Brings the VMs to the config: start, keep, stop.
    fn reconcile(&mut self) {
        self.counters.passes += 1;
        let wanted: BTreeSet<String> = self.config.nodes.keys().cloned().collect();
        let observed = observe(&self.config);
        for action in reconcile::decide(&wanted, &observed) {
            match action {
                Action::Stop(name) => self.stop(&name),
                Action::Start(name) => self.start(&name),
                Action::Keep(name) => self.keep(&name),
            }
        }
        // Left behind: not configured, not running. Their disks stay until a purge.
        for (name, seen) in &observed {
            if !wanted.contains(name) && *seen == Observed::Stopped {
                let tracked = self.nodes.entry(name.clone()).or_default();
                tracked.info.name.clone_from(name);
                if tracked.info.state != "removed" {
                    if let Some(l) = tracked.listener.take() {
                        l.stop();
                    }
                    tracked.info.pid = 0;
                    tracked.info.role.clear();
                    tracked.info.cluster.clear();
                    tracked.set("removed", removed_reason());
                }
            }
        }
        // Purged: gone from the disk and the config.
        self.nodes
            .retain(|name, _| wanted.contains(name) || observed.contains_key(name));
    }

    /// The tracked entry of configured node `name`, its facts refreshed from the config.
    fn tracked(&mut self, name: &str) -> Option<(config::Node, &mut Tracked)> {
        let node = self.config.nodes.get(name)?.clone();
        let tracked = self.nodes.entry(name.to_owned()).or_default();
        tracked.info.name.clone_from(&node.name);
        tracked.info.cluster.clone_from(&node.cluster);
        tracked.info.role = node.role.to_string();
        if tracked.info.address.is_empty() || tracked.info.last_beacon == 0 {
            tracked.info.address = node.address.to_string();
        }
        Some((node, tracked))
    }

    fn start(&mut self, name: &str) {
        let Some(image) = self.image.clone() else {
            let reason = if self.problem.is_empty() {
                "not booted: no verified image yet".to_owned()
            } else {
                format!("not booted: {}", self.problem)
            };
            if let Some((_, tracked)) = self.tracked(name) {
                tracked.set("waiting", reason);
            }
            return;
        };
        if let Some((_, tracked)) = self.tracked(name)
            && tracked
                .started
                .is_some_and(|t| t.elapsed() < RESTART_BACKOFF)
        {
            if tracked.info.state != "exited" {
                tracked.set(
                    "exited",
                    "its VM stopped; it is started again at most once a minute",
                );
            }
            return;
        }
        let result = self.boot(name, &image);
        let events = self.events.clone();
        let dir = self.node_dir(name);
        let Some((_, tracked)) = self.tracked(name) else {
            return;
        };
        match result {
            Ok((booted, documents, pid)) => {
                tracing::info!(node = %name, image = %booted.name, version = %booted.version, pid, "node VM started");
                tracked.info.image = format!("{} {}", booted.name, booted.version);
                tracked.info.digest.clone_from(&booted.digest);
                tracked.info.pid = pid;
                tracked.booted = Some(booted);
                tracked.documents = documents;
                tracked.heard = None;
                tracked.since = Some(Instant::now());
                tracked.started = Some(Instant::now());
                tracked.set("starting", "booting; waiting for its first beacon");
                listen(tracked, name, &dir, events);
                self.counters.starts += 1;
            }
            Err(e) => {
                tracing::error!(node = %name, "cannot start the node VM: {e:#}");
                tracked.info.pid = 0;
                tracked.set("failed", format!("cannot start its VM: {e:#}"));
            }
        }
    }

    /// Seeds, disks and QEMU for node `name` from `image`: the booted record, the digest of
    /// the documents sent, the pid.
    fn boot(&mut self, name: &str, image: &StoredImage) -> anyhow::Result<(Booted, String, u32)> {
        let accel = self.accel()?;
        let node = self
            .config
            .nodes
            .get(name)
            .with_context(|| format!("node {name} is not configured"))?;
        // The cluster's switch comes up with its first VM (and stays: it outlives slipwayd).
        let cluster = self
            .config
            .clusters
            .get(&node.cluster)
            .with_context(|| format!("cluster {} is not configured", node.cluster))?;
        Switch::new(&self.config.state_dir, &node.cluster)
            .ensure(cluster.gateway, cluster.network.prefix)?;
        let seed = seed::for_node(&self.config, node)?;
        let spec = spec(&self.config, node, &image.vhdx, &seed.mac, accel)?;
        qemu::private_dir(&spec.dir)
            .with_context(|| format!("cannot create {}", spec.dir.display()))?;
        seed::write_image(&seed, &spec.seed)?;
        qemu::prepare(&spec)?;
        let booted = Booted {
            digest: image.digest.clone(),
            name: image.manifest.name.clone(),
            version: image.manifest.version.clone(),
            root_hash: image.manifest.disk.verity.root_hash.clone(),
        };
        let record = spec.dir.join("image.json");
        images::atomic::write(&record, &serde_json::to_vec_pretty(&booted)?, 0o644)
            .with_context(|| format!("cannot write {}", record.display()))?;
        qemu::start(&spec)?;
        let pid = qemu::running(&spec).unwrap_or(0);
        Ok((booted, seed.kubeadm_sha256, pid))
    }

    /// A configured node whose VM runs: re-attach (after a restart) and refresh what it must
    /// report.
    fn keep(&mut self, name: &str) {
        let dir = self.node_dir(name);
        let documents = self
            .config
            .nodes
            .get(name)
            .map(|node| seed::for_node(&self.config, node).map(|s| s.kubeadm_sha256));
        let events = self.events.clone();
        let Some((_, tracked)) = self.tracked(name) else {
            return;
        };
        match documents {
            Some(Ok(documents)) => tracked.documents = documents,
            Some(Err(e)) => {
                tracked.set("failed", format!("cannot render its seed: {e:#}"));
                return;
            }
            None => {}
        }
        if tracked.booted.is_none() {
            let record = dir.join("image.json");
            if let Ok(booted) = std::fs::read(&record)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<Booted>(&b)?))
            {
                tracked.info.image = format!("{} {}", booted.name, booted.version);
                tracked.info.digest.clone_from(&booted.digest);
                tracked.booted = Some(booted);
            }
        }
        tracked.info.pid = qemu::pid_in(&dir).unwrap_or(0);
        // QEMU can run and its guest not: a KVM or TCG internal error pauses the VM.
        // A short timeout: a hung QEMU must not hold the loop.
        let qmp = qemu::Qmp::connect_path(name, &dir.join("qmp.sock"), Duration::from_secs(2));
        match qmp.and_then(|mut q| q.status()) {
            Ok(status) if status == "running" => {}
            Ok(status) => {
                tracked.set("failed", format!("QEMU runs but its VM is {status}"));
                return;
            }
            Err(e) => tracing::warn!(node = %name, "QMP: {e}"),
        }
        // Configured again while it was being stopped, or after: it is ours again.
        if tracked.is_leaving()
            || matches!(
                tracked.info.state.as_str(),
                "" | "exited" | "failed" | "waiting"
            )
        {
            tracked.since = Some(Instant::now());
            tracked.set(
                "starting",
                format!(
                    "its VM runs (pid {}); waiting for its next beacon",
                    tracked.info.pid
                ),
            );
        }
        listen(tracked, name, &dir, events);
    }

    /// A node no longer configured whose VM runs: power it down in the background.
    fn stop(&mut self, name: &str) {
        let dir = self.node_dir(name);
        let tracked = self.nodes.entry(name.to_owned()).or_default();
        tracked.info.name = name.to_owned();
        if tracked.info.state == "stopping" {
            return;
        }
        // No longer configured: no role (status and metrics count configured nodes by it).
        tracked.info.role.clear();
        tracked.info.cluster.clear();
        if let Some(l) = tracked.listener.take() {
            l.stop();
        }
        tracked.set(
            "stopping",
            "no longer in host.toml: powering down (its disks stay)",
        );
        tracing::info!(node = %name, "no longer configured: stopping its VM; its state disk stays");
        let events = self.events.clone();
        let name = name.to_owned();
        std::thread::spawn(move || {
            if let Err(e) = qemu::stop_dir(&name, &dir, POWERDOWN_DEADLINE) {
                tracing::error!(node = %name, "{e}");
            }
            let _ = events.send(Event::Stopped(name));
        });
    }

    fn stopped(&mut self, name: &str) {
        // Configured again meanwhile: the next pass starts it; it is not removed.
        if self.config.nodes.contains_key(name) {
            return;
        }
        if let Some(tracked) = self.nodes.get_mut(name) {
            tracked.info.pid = 0;
            tracked.set("removed", removed_reason());
        }
    }

    /// A purge asked over D-Bus: done here, between passes, with the config in force.
    fn purge(&mut self, name: &str) {
        match purge_node(&self.config, name) {
            Ok(()) => {
                tracing::info!(node = %name, "purged: its disks, seed and logs are deleted");
                if let Some(l) = self.nodes.remove(name).and_then(|t| t.listener) {
                    l.stop();
                }
            }
            Err(e) => {
                tracing::error!(node = %name, "purge refused: {e:#}");
                if let Some(tracked) = self.nodes.get_mut(name) {
                    let state = tracked.info.state.clone();
                    tracked.set(&state, format!("purge refused: {e:#}"));
                }
            }
        }
    }

    fn heard(&mut self, name: &str, heard: Heard) {
        let Some(tracked) = self.nodes.get_mut(name) else {
            return;
        };
        let Heard::Beacon(beacon) = heard else {
            tracing::debug!(node = %name, "beacon port closed");
            return;
        };
        self.counters.beacons += 1;
        tracked.heard = Some(Instant::now());
        tracked.info.last_beacon = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        // Float to integer casts saturate: a silly uptime cannot wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let uptime = beacon.uptime as u64;
        tracked.info.uptime = uptime;
        if !beacon.address.is_empty() {
            tracked.info.address.clone_from(&beacon.address);
        }
        if tracked.is_leaving() {
            return;
        }
        let (state, reason) = judge(&beacon, tracked.booted.as_ref(), &tracked.documents);
        if state == "mismatch" {
            self.counters.mismatches += 1;
        }
        tracked.set(state, reason);
    }

    /// Looks for dead VMs, silent nodes and an edited host.toml; true when a pass is due.
    fn check(&mut self) -> bool {
        let mut due = false;
        if modified(&self.path) != self.stamp {
            self.reload();
            due = true;
        }
        let root = self.config.state_dir.join("nodes");
        for (name, tracked) in &mut self.nodes {
            if tracked.is_leaving() || matches!(tracked.info.state.as_str(), "waiting" | "failed") {
                continue;
            }
            let dir = root.join(name);
            if qemu::pid_in(&dir).is_none() {
                if tracked.info.state != "exited" {
                    tracing::warn!(node = %name, "its QEMU is gone: it will be started again");
                    tracked.info.pid = 0;
                    tracked.set(
                        "exited",
                        format!(
                            "its VM stopped (see {}); it is started again on the next pass",
                            dir.join("console.log").display()
                        ),
                    );
                }
                due = true;
                continue;
            }
            let quiet = tracked.heard.or(tracked.since).map(|t| t.elapsed());
            let limit = if tracked.heard.is_some() {
                SILENCE
            } else {
                BOOT_DEADLINE
            };
            if let Some(quiet) = quiet
                && quiet > limit
            {
                tracked.set(
                    "silent",
                    format!(
                        "no beacon for over {} s (see {})",
                        limit.as_secs(),
                        dir.join("console.log").display()
                    ),
                );
            }
        }
        due
    }

    fn snapshot(&self, metrics: &str) -> Snapshot {
        Snapshot {
            host: self.config.name.clone(),
            image: self.image.as_ref().map_or_else(String::new, |i| {
                format!("{} {} {}", i.manifest.name, i.manifest.version, i.digest)
            }),
            problem: [self.config_problem.as_str(), self.problem.as_str()]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
            metrics: metrics.to_owned(),
            nodes: self
                .nodes
                .iter()
                .map(|(n, t)| (n.clone(), t.info.clone()))
                .collect(),
            counters: self.counters.clone(),
        }
    }
}

/// The image the channel names, pulled into the store and verified.
fn pull(source: &config::Source, state_dir: &Path) -> anyhow::Result<StoredImage> {
    let keys = source
        .keys
        .iter()
        .map(|k| PublicKey::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    let reference: Reference = source.reference.parse().map_err(anyhow::Error::msg)?;
    let store = Store::open(&state_dir.join("store"))?;
    let mut repo = oci::open(&reference, false, source.plain_http)?;
    // The QEMU driver boots x86_64 Linux node VMs (OVMF x64): a channel naming another image
    // is refused before anything is fetched.
    let expect = oci::channel::Expect {
        name: None,
        os: Some("linux".into()),
        arch: Some("x86_64".into()),
    };
    let consumer = oci::channel::Consumer {
        trust: oci::signature::Trust::keys(&keys),
        expect: &expect,
        now: unix_now(),
    };
    let image = store
        .pull_channel(
            repo.as_mut(),
            &reference,
            &source.channel,
            &consumer,
            &mut |_| {},
        )
        .with_context(|| {
            format!(
                "the image channel {} of {} names was refused",
                source.channel, source.reference
            )
        })?;
    Ok(image)
}

fn removed_reason() -> String {
    "no longer in host.toml; its disks stay until `slipwayd purge`".into()
}

/// Starts the beacon listener of a node unless it has one.
fn listen(tracked: &mut Tracked, name: &str, dir: &Path, events: Sender<Event>) {
    if tracked.listener.is_none() {
        tracked.listener = Some(Listener::start(
            name,
            dir.join("beacon.sock"),
            events,
            Event::Heard,
        ));
    }
}

fn spec(
    config: &HostConfig,
    node: &config::Node,
    base: &Path,
    seed_mac: &str,
    accel: Accel,
) -> anyhow::Result<Spec> {
    let ovmf = firmware::find_default_ovmf()?;
    let dir = config.state_dir.join("nodes").join(&node.name);
    Ok(Spec {
        name: node.name.clone(),
        seed: seed::image_path(config, node),
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

/// What the state directory holds: every node VM directory, running or not.
fn observe(config: &HostConfig) -> BTreeMap<String, Observed> {
    let dir = config.state_dir.join("nodes");
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        let running = qemu::pid_in(&path).is_some();
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

/// The lock one supervisor holds on a state directory (released when it exits, even by
/// `kill -9`); it holds the supervisor's pid for the message another one gives.
struct HostLock {
    _file: File,
}

impl HostLock {
    fn take(state_dir: &Path, what: &str) -> anyhow::Result<HostLock> {
        match HostLock::try_take(state_dir)? {
            Some(lock) => Ok(lock),
            None => {
                let path = state_dir.join("slipwayd.lock");
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "cannot {what}: slipwayd run (pid {}) supervises {}; stop it first (SIGTERM leaves the VMs running)",
                    holder.trim(),
                    state_dir.display()
                )
            }
        }
    }

    /// The lock, or None when a supervisor holds it.
    fn try_take(state_dir: &Path) -> anyhow::Result<Option<HostLock>> {
        qemu::private_dir(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join("slipwayd.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock().is_err() {
            return Ok(None);
        }
        file.set_len(0)
            .and_then(|()| std::fs::write(&path, std::process::id().to_string()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(HostLock { _file: file }))
    }
}

/// Publishes the supervisor's view; returns the nodes whose state or reason changed.
fn publish(supervisor: &Supervisor, shared: &Shared, metrics: &str) -> Vec<NodeInfo> {
    let fresh = supervisor.snapshot(metrics);
    let mut snapshot = shared.lock();
    let changed = fresh
        .nodes
        .values()
        .filter(|n| {
            snapshot
                .nodes
                .get(&n.name)
                .is_none_or(|old| (&old.state, &old.reason) != (&n.state, &n.reason))
        })
        .cloned()
        .collect::<Vec<_>>();
    for node in &changed {
        tracing::info!(node = %node.name, state = %node.state, reason = %node.reason, "node state");
    }
    *snapshot = fresh;
    changed
}

/// Runs `slipwayd run` until SIGTERM or SIGINT.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let (events, inbox) = mpsc::channel();
    let mut supervisor = Supervisor::new(&options.config, events.clone())?;
    let _lock = HostLock::take(&supervisor.config.state_dir, "run")?;
    let shared = Shared::default();
    let metrics = metrics::serve(options.metrics, shared.clone())?.to_string();
    let reload = events.clone();
    let purge = events.clone();
    let service = api::Service::start(
        options.bus.as_deref(),
        shared.clone(),
        Box::new(move || reload.send(Event::Reload).is_ok()),
        Box::new(move |name: &str| purge.send(Event::Purge(name.to_owned())).is_ok()),
    )?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot handle signals")?;
    let signalled = events.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let event = if signal == signal_hook::consts::SIGHUP {
                Event::Reload
            } else {
                Event::Quit
            };
            if signalled.send(event).is_err() {
                return;
            }
        }
    });
    tracing::info!(
        host = %supervisor.config.name,
        config = %options.config.display(),
        metrics = %format!("http://{metrics}/metrics"),
        bus = %options.bus.as_deref().unwrap_or("system"),
        "supervising"
    );

    supervisor.pass();
    let mut next_pass = Instant::now() + PASS_INTERVAL;
    let mut next_check = Instant::now() + CHECK_INTERVAL;
    loop {
        for node in publish(&supervisor, &shared, &metrics) {
            service.node_changed(&node);
        }
        let wait = next_check
            .min(next_pass)
            .saturating_duration_since(Instant::now());
        let mut pass_due = false;
        match inbox.recv_timeout(wait) {
            Ok(Event::Quit) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Event::Reload) => {
                supervisor.reload();
                pass_due = true;
            }
            Ok(Event::Heard(name, heard)) => supervisor.heard(&name, heard),
            Ok(Event::Stopped(name)) => supervisor.stopped(&name),
            Ok(Event::Purge(name)) => supervisor.purge(&name),
            Ok(Event::Pulled(result)) => supervisor.pulled(*result),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_check {
            pass_due |= supervisor.check();
            next_check = Instant::now() + CHECK_INTERVAL;
        }
        if pass_due || Instant::now() >= next_pass {
            supervisor.pass();
            next_pass = Instant::now() + PASS_INTERVAL;
        }
    }
    tracing::info!(
        "stopping: the node VMs keep running (`slipwayd run` re-attaches, `slipwayd down` stops them)"
    );
    Ok(())
}

/// Runs `slipwayd down`: stops every node VM of the config (their state disks stay).
pub fn down(path: &Path) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    let _lock = HostLock::take(&config.state_dir, "stop the node VMs")?;
    // All at once: each VM gets the whole deadline to power down.
    let mut stopping = Vec::new();
    for node in config.nodes.values() {
        let dir = config.state_dir.join("nodes").join(&node.name);
        let name = node.name.clone();
        stopping.push(std::thread::spawn(move || {
            let result = qemu::stop_dir(&name, &dir, POWERDOWN_DEADLINE);
            (name, result)
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

/// Deletes the disks, seed and logs of node `name` of `config`, which must no longer be
/// configured and whose VM must not run.
fn purge_node(config: &HostConfig, name: &str) -> anyhow::Result<()> {
    if config.nodes.contains_key(name) {
        bail!(
            "node {name} is still in the host config: remove it there first (its VM is stopped, then it can be purged)"
        );
    }
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        bail!("{name:?} is not a node name");
    }
    let dir = config.state_dir.join("nodes").join(name);
    if !dir.is_dir() {
        bail!("no node {name} in {}", config.state_dir.display());
    }
    if let Some(pid) = qemu::pid_in(&dir) {
        bail!("the VM of node {name} still runs (pid {pid}): wait for slipwayd to stop it");
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))?;
    Ok(())
}

/// Runs `slipwayd purge NODE`: deletes the disks of a node that is no longer configured and
/// whose VM does not run. With a supervisor running on the host it is asked to do it (over
/// D-Bus at `bus`), so the purge cannot race its passes; otherwise it is done here, under the
/// host's lock.
pub fn purge(path: &Path, name: &str, bus: Option<&str>) -> anyhow::Result<()> {
    let config = HostConfig::load(path)?;
    if HostLock::try_take(&config.state_dir)?.is_some() {
        purge_node(&config, name)?;
    } else {
        let client = api::Client::connect(bus)?;
        client.purge(name)?;
        // The supervisor purges on its next turn: wait until the node is gone, or says why not.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = client.status()?;
            match status.nodes.iter().find(|n| n.name == name) {
                None => break,
                Some(n) if n.reason.starts_with("purge refused") => bail!("{}", n.reason),
                Some(_) if Instant::now() > deadline => {
                    bail!("slipwayd did not purge node {name} within 30 s")
                }
                Some(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    println!("{name}: its disks, seed and logs are deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon() -> Beacon {
        Beacon {
            event: "ready".into(),
            image: "tiny-linux".into(),
            version: "2026.11.0".into(),
            root_hash: "aa".into(),
            kubeadm_sha256: "dd".into(),
            address: "10.44.0.10/24".into(),
            endpoint: "reachable".into(),
            host: "reachable".into(),
            uptime: 30.0,
        }
    }

    fn booted() -> Booted {
        Booted {
            digest: "sha256:11".into(),
            name: "tiny-linux".into(),
            version: "2026.11.0".into(),
            root_hash: "aa".into(),
        }
    }

    #[test]
    fn a_beacon_is_ready_only_with_its_own_root_documents_and_endpoint() {
        assert_eq!(judge(&beacon(), Some(&booted()), "dd").0, "ready");
        let other_root = Beacon {
            root_hash: "bb".into(),
            ..beacon()
        };
        let (state, reason) = judge(&other_root, Some(&booted()), "dd");
        assert_eq!(state, "mismatch");
        assert!(reason.contains("root bb"), "{reason}");
        let (state, reason) = judge(&beacon(), Some(&booted()), "ee");
        assert_eq!(state, "mismatch");
        assert!(reason.contains("sha256 dd; it was sent ee"), "{reason}");
        let cut_off = Beacon {
            endpoint: "unreachable".into(),
            ..beacon()
        };
        assert_eq!(judge(&cut_off, Some(&booted()), "dd").0, "unreachable");
        let no_host = Beacon {
            host: "unreachable".into(),
            ..beacon()
        };
        let (state, reason) = judge(&no_host, Some(&booted()), "dd");
        assert_eq!(state, "unreachable");
        assert!(reason.contains("host"), "{reason}");
    }
}
