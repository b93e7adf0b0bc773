//! `slipwayd run`: the supervision loop, one tokio task. It pulls what each channel names (the
//! Linux nodes', and the Windows nodes' when host.toml has one) into the store (signature,
//! digests, channel and OS checked before any disk is made), keeps every
//! configured node VM running on the image its record names, and listens to the nodes'
//! beacons. It wakes on events (a beacon, a signal, a D-Bus call, a pull or a stop that
//! ended) and on a timer: every few seconds it looks for silence, dead VMs and an edited
//! host.toml; every minute it runs a whole reconcile pass.
//!
//! The VMs are detached from slipwayd: stopping or killing it leaves them running, and the next
//! `slipwayd run` re-attaches (the driver finds them; the beacon socket reconnects) without
//! rebooting or duplicating one.

mod admin;
mod channel;
mod fleet;
mod health;
mod lock;
mod nodes;
mod rollout;
mod signals;
mod staging;
#[cfg(test)]
mod testing;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use images::store::Store;
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::api::{
    self, Counters, NodeInfo, RolloutControl, RolloutInfo, Shared, Snapshot, unix_now,
};
use crate::beacon::Heard;
use crate::config::{HostConfig, Hypervisor, NodeOs};
use crate::driver::hyperv::driver::HyperV;
#[cfg(unix)]
use crate::driver::qemu::Qemu;
use crate::driver::{AnyDriver, Driver};
use crate::metrics;
use crate::model::{Backoff, Deadlines, Digest, NodeName};
use crate::records::{self, NodeRecord};
use crate::swap::journal::Journal;
use crate::swap::plan::Decision;
pub use admin::{down, purge};
use channel::Channels;
pub use lock::HostLock;
use nodes::Node;

/// How often a whole reconcile pass runs when nothing else asks for one.
const PASS_INTERVAL: Duration = Duration::from_secs(60);
/// How often silence, dead VMs and an edited host.toml are looked for.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

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

/// What wakes the loop besides its timers and signals.
enum Event {
    Heard(String, Heard),
    /// A stop ended: how, or why the VM still runs.
    Stopped(String, Result<crate::driver::Stopped, String>),
    Purge(String),
    /// A pull of the channel of an OS's nodes ended.
    Pulled(NodeOs, Box<channel::Outcome>),
    Reload,
    /// An operator's rollout pause, resume or abort.
    Control(RolloutControl),
    /// Bringing an image to the hypervisor ended (see `staging`).
    Staged(Digest, Result<(), String>),
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The supervision state.
struct Daemon<D: Driver> {
    path: PathBuf,
    config: HostConfig,
    stamp: Option<SystemTime>,
    /// Why host.toml as it is now is not in force; cleared when it loads again.
    config_problem: String,
    /// Why some configured nodes have no record (and so do not boot); cleared by a pass that
    /// records them.
    records_problem: String,
    driver: Arc<D>,
    store: Store,
    /// The channel each node OS follows.
    channels: Channels,
    /// Every node record on the disk, configured or not (removed nodes keep theirs, and their
    /// addresses, until a purge).
    records: BTreeMap<String, NodeRecord>,
    /// The node that initialises each cluster, once recorded.
    initialisers: BTreeMap<String, NodeName>,
    nodes: BTreeMap<String, Node>,
    counters: Counters,
    events: UnboundedSender<Event>,
    deadlines: Deadlines,
    backoff: Backoff,
    /// The rollout journal: swaps in flight, failed images, pause.
    journal: Journal,
    /// Why the journal cannot be written; cleared by the next write.
    rollout_problem: String,
    /// What the executor keeps in memory of each swap in flight.
    progress: BTreeMap<String, rollout::Progress>,
    /// Finished swaps, for the metrics.
    swap_stats: rollout::SwapStats,
    /// The last rollout decision of each cluster.
    decisions: BTreeMap<String, Decision>,
    /// `NAME VERSION` of the images met so far.
    labels: BTreeMap<Digest, String>,
    /// Stray VMs being stopped (one in a generation directory that neither its node's record
    /// nor a surge in flight names), by `NODE/DIR`.
    strays: BTreeSet<String>,
    /// When the leftovers of each generation directory no VM runs in were last removed, or
    /// tried (see `sweep_leftovers`), by directory.
    swept: BTreeMap<PathBuf, Instant>,
    /// Images being brought to the hypervisor, or brought.
    stages: staging::Stages,
    /// What `slipwayd rollout status` shows.
    rollouts: Vec<RolloutInfo>,
    /// The fleet lock: slots held, and this host's nodes published beside them.
    fleet: fleet::Fleet,
    /// The swaps' work with the clusters' Kubernetes API servers: clients, drains and
    /// uncordons under way, the nodes' Ready conditions last listed.
    kube: crate::kube::ops::Tasks,
}

impl<D: Driver> Daemon<D> {
    fn new(
        path: &Path,
        config: HostConfig,
        driver: D,
        events: UnboundedSender<Event>,
    ) -> anyhow::Result<Daemon<D>> {
        let store = Store::open(&config.state_dir.join("store"))?;
        let channels = Channels::load(&config.state_dir, &config.source, &store)?;
        let records = records::load_all(&config.state_dir)?;
        let journal = Journal::load(&config.state_dir)?;
        if !journal.swaps.is_empty() {
            tracing::info!(swaps = ?journal.swaps.keys().collect::<Vec<_>>(), "resuming the swaps the rollout journal holds");
        }
        let fleet = fleet::Fleet::start(
            crate::fleet::open(&config.name, &config.fleet),
            &config.name,
            &config.fleet,
        );
        let mut daemon = Daemon {
            fleet,
            path: path.to_owned(),
            stamp: modified(path),
            config,
            config_problem: String::new(),
            records_problem: String::new(),
            driver: Arc::new(driver),
            store,
            channels,
            records,
            initialisers: BTreeMap::new(),
            nodes: BTreeMap::new(),
            counters: Counters::default(),
            events,
            deadlines: Deadlines::default(),
            backoff: Backoff::default(),
            journal,
            rollout_problem: String::new(),
            progress: BTreeMap::new(),
            swap_stats: rollout::SwapStats::default(),
            decisions: BTreeMap::new(),
            labels: BTreeMap::new(),
            strays: BTreeSet::new(),
            swept: BTreeMap::new(),
            stages: staging::Stages::new(),
            rollouts: Vec::new(),
            kube: crate::kube::ops::Tasks::default(),
        };
        daemon.load_initialisers()?;
        Ok(daemon)
    }

    fn load_initialisers(&mut self) -> anyhow::Result<()> {
        self.initialisers = records::initialisers(&self.config.state_dir, &self.config)?;
        Ok(())
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
            Ok(config)
                if config.hypervisor != self.config.hypervisor
                    || config.vm_user != self.config.vm_user
                    || config.fleet != self.config.fleet
                    || config.name != self.config.name =>
            {
                self.config_problem = format!(
                    "{}: the host name, [hypervisor] or [fleet] changed: restart slipwayd to use it (the previous config stays in force)",
                    self.path.display(),
                );
                tracing::error!("{}", self.config_problem);
            }
            Ok(config) => {
                tracing::info!(config = %self.path.display(), "host config reloaded");
                self.config = config;
                self.driver.configure(&self.config);
                self.config_problem.clear();
                if let Err(e) = self.channels.configure(
                    &self.config.state_dir,
                    &self.config.source,
                    &self.store,
                ) {
                    tracing::error!("cannot read the channel state: {e:#}");
                    self.config_problem = format!("cannot read the channel state: {e:#}");
                }
                if let Err(e) = self.load_initialisers() {
                    tracing::error!("{e:#}");
                }
            }
            Err(e) => {
                let e = anyhow::Error::from(e);
                tracing::error!("{e:#}: keeping the previous config");
                self.config_problem = format!("{e:#} (the previous config stays in force)");
            }
        }
    }

    /// The run directory of the VM tracked as `name`: a node's, of its record's generation, or
    /// a surge's replacement's (`NAME/next`: the next generation's).
    fn node_dir(&self, name: &str) -> PathBuf {
        let (node, generation) = match crate::swap::replaced(name) {
            Some(node) => {
                let surge = self.journal.swaps.get(node).and_then(|s| s.surge.as_ref());
                let current = self.records.get(node).map_or(0, |r| r.generation);
                (node, surge.map_or(current + 1, |r| r.generation))
            }
            None => (name, self.records.get(name).map_or(0, |r| r.generation)),
        };
        records::run_dir(&self.config.state_dir, node, generation)
    }

    /// Starts a pull of what each channel names, unless one runs: one task pulls them one
    /// after the other (they share the store). The store is collected first, keeping every
    /// image a node record or a channel names; then the hypervisor gives back the images the
    /// store no longer keeps ([`Driver::prune_images`]), before the pull's outcome is sent: a
    /// newly pulled image, not in the kept set, is staged only after the daemon hears of it.
    fn start_pull(&mut self) {
        if self.channels.iter().any(|c| c.pulling) {
            return;
        }
        let wanted: Vec<(NodeOs, String)> = self
            .channels
            .iter()
            .map(|c| (c.os, c.name.clone()))
            .collect();
        for (os, _) in &wanted {
            if let Some(channel) = self.channels.get_mut(*os) {
                channel.pulling = true;
            }
        }
        let keep = keep(&self.records, &self.channels, &self.journal);
        // An image the store lets go may be pruned from the hypervisor too: asked again.
        self.stages.retain(|image, _| keep.contains(image));
        let (source, state_dir) = (self.config.source.clone(), self.config.state_dir.clone());
        let events = self.events.clone();
        let driver = self.driver.clone();
        let now = u64::try_from(unix_now()).unwrap_or(0);
        tokio::spawn(async move {
            let oses: Vec<NodeOs> = wanted.iter().map(|(os, _)| *os).collect();
            let kept = keep.clone();
            let outcomes = tokio::task::spawn_blocking(move || {
                channel::collect_and_pull(&source, &state_dir, &kept, &wanted, now)
            })
            .await
            .unwrap_or_else(|e| {
                oses.into_iter()
                    .map(|os| (os, Err(anyhow::anyhow!("the pull task failed: {e}"))))
                    .collect()
            });
            // Only disk space is at stake: a failure is said, and the pull goes on.
            if let Err(e) = driver.prune_images(&keep).await {
                tracing::warn!(
                    "cannot remove the images the store no longer keeps from the hypervisor: {e:#}"
                );
            }
            for (os, outcome) in outcomes {
                let _ = events.send(Event::Pulled(os, Box::new(outcome)));
            }
        });
    }

    /// A pull of `os`'s channel ended: a new verified target, or why the channel is not fresh.
    async fn pulled(&mut self, os: NodeOs, outcome: channel::Outcome) {
        let Some(channel) = self.channels.get_mut(os) else {
            // Its channel left host.toml while it was pulled.
            return;
        };
        match channel.pulled(outcome, unix_now()) {
            Ok(true) => {
                if let Some(image) = &channel.target {
                    tracing::info!(
                        channel = %channel.name,
                        %os,
                        image = %image.manifest.name,
                        version = %image.manifest.version,
                        digest = %image.digest,
                        "the channel's image is verified and in the store: new nodes of its OS boot it"
                    );
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(channel = %channel.name, "cannot keep the channel state: {e:#}")
            }
        }
        if !channel.reason.is_empty() {
            if matches!(
                channel.freshness,
                channel::Freshness::Refused | channel::Freshness::Expired
            ) {
                self.counters.refusals += 1;
            }
            tracing::error!(
                channel = %channel.name,
                state = channel.freshness.as_str(),
                "{}",
                channel.reason
            );
        }
        self.reconcile().await;
    }

    fn snapshot(&self, metrics: &str) -> Snapshot {
        let label = |c: Option<&channel::Channel>| {
            c.and_then(|c| c.target.as_ref())
                .map_or_else(String::new, |i| {
                    format!("{} {} {}", i.manifest.name, i.manifest.version, i.digest)
                })
        };
        let linux = &self.channels.linux;
        let windows = self.channels.windows.as_ref();
        // Only the Windows channel's problem names its OS: the Linux one reads as before.
        let problems = self
            .channels
            .iter()
            .filter(|c| !c.reason.is_empty())
            .map(|c| {
                let which = match c.os {
                    NodeOs::Linux => "channel".to_owned(),
                    NodeOs::Windows => format!("windows-channel {}", c.name),
                };
                format!("{which} {}: {}", c.freshness.as_str(), c.reason)
            });
        let problems: Vec<String> = problems.collect();
        Snapshot {
            host: self.config.name.clone(),
            image: label(Some(linux)),
            channel: linux.freshness.as_str().to_owned(),
            channel_verified: linux.verified,
            windows_image: label(windows),
            windows_channel: windows.map_or_else(String::new, |c| c.freshness.as_str().to_owned()),
            windows_channel_verified: windows.map_or(0, |c| c.verified),
            problem: [
                self.config_problem.as_str(),
                self.records_problem.as_str(),
                self.rollout_problem.as_str(),
                self.fleet.problem.as_str(),
            ]
            .into_iter()
            .chain(problems.iter().map(String::as_str))
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
            metrics: metrics.to_owned(),
            nodes: self
                .nodes
                .iter()
                .map(|(n, t)| (n.clone(), t.info()))
                .collect(),
            counters: self.counters.clone(),
            rollouts: self.rollouts.clone(),
            rollout_paused: self.journal.paused,
            swap_durations: self.swap_stats.durations.clone(),
            swap_results: self.swap_stats.results.clone(),
            downtime: self.swap_stats.downtime.clone(),
        }
    }
}

/// The images the store must keep: every node record's (removed nodes' too, until a purge),
/// each channel's verified image and the one before it, and both images of every swap in
/// flight (its way back).
fn keep(
    records: &BTreeMap<String, NodeRecord>,
    channels: &Channels,
    journal: &Journal,
) -> BTreeSet<Digest> {
    records
        .values()
        .filter_map(|r| r.image.clone())
        .chain(channels.keeps())
        .chain(journal.images().cloned())
        .collect()
}

/// Publishes the supervisor's view; returns the nodes whose state or reason changed, and the
/// rollouts whose state or reason did.
fn publish<D: Driver>(
    daemon: &Daemon<D>,
    shared: &Shared,
    metrics: &str,
) -> (Vec<NodeInfo>, Vec<RolloutInfo>) {
    let fresh = daemon.snapshot(metrics);
    let mut snapshot = shared.lock();
    let rollouts = fresh
        .rollouts
        .iter()
        .filter(|r| {
            !snapshot.rollouts.iter().any(|old| {
                (&old.cluster, &old.state, &old.reason) == (&r.cluster, &r.state, &r.reason)
            })
        })
        .cloned()
        .collect::<Vec<_>>();
    for rollout in &rollouts {
        tracing::info!(cluster = %rollout.cluster, state = %rollout.state, reason = %rollout.reason, target = %rollout.target, "rollout");
    }
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
    (changed, rollouts)
}

/// The driver a host config names.
pub async fn driver(config: &HostConfig) -> anyhow::Result<AnyDriver> {
    let driver = match &config.hypervisor {
        #[cfg(unix)]
        Hypervisor::Qemu(accel) => {
            let qemu = Qemu::open(&config.state_dir, *accel, &config.vm_user).await?;
            tracing::debug!(accel = ?qemu.accel(), user = %qemu.user().name, "QEMU driver ready");
            AnyDriver::Qemu(qemu)
        }
        // The QEMU driver (VDE switches, taps, unix sockets, /proc) is compiled on Unix alone.
        #[cfg(not(unix))]
        Hypervisor::Qemu(_) => anyhow::bail!(
            "cannot open the hypervisor of host {}: [hypervisor] kind = \"qemu\" is not \
             available on Windows; set kind = \"hyperv\" in its host.toml, or run it on a Linux host",
            config.name
        ),
        Hypervisor::HyperV(host) => {
            tracing::debug!(switch = %host.switch, root = %host.root, "Hyper-V driver ready");
            AnyDriver::HyperV(HyperV::open(host, &config.state_dir))
        }
    };
    driver.configure(config);
    Ok(driver)
}

/// Runs `slipwayd run` until SIGTERM or SIGINT (Ctrl+C or Ctrl+Break on Windows).
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let config = HostConfig::load(&options.config)?;
    let _lock = HostLock::take(&config.state_dir, "run")?;
    let driver = driver(&config).await?;
    let (events, mut inbox) = mpsc::unbounded_channel();
    let mut daemon = Daemon::new(&options.config, config, driver, events.clone())?;
    let shared = Shared::default();
    let metrics = metrics::serve(options.metrics, shared.clone())
        .await?
        .to_string();
    let (reload, purge, control) = (events.clone(), events.clone(), events.clone());
    let service = api::Service::start(
        options.bus.as_deref(),
        shared.clone(),
        Box::new(move || reload.send(Event::Reload).is_ok()),
        Box::new(move |name: &str| purge.send(Event::Purge(name.to_owned())).is_ok()),
        Box::new(move |c: RolloutControl| control.send(Event::Control(c)).is_ok()),
    )
    .await?;
    let mut signals = signals::Signals::install()?;
    tracing::info!(
        host = %daemon.config.name,
        config = %options.config.display(),
        metrics = %format!("http://{metrics}/metrics"),
        bus = %options.bus.as_deref().unwrap_or("system"),
        "supervising"
    );

    // Records first (a host from before records gets its nodes' images from image.json), so
    // the store's collection before the first pull keeps every image a node runs.
    daemon.reconcile().await;
    daemon.roll(true).await;
    daemon.start_pull();
    let mut next_pass = Instant::now() + PASS_INTERVAL;
    let mut next_check = Instant::now() + CHECK_INTERVAL;
    loop {
        let (nodes, rollouts) = publish(&daemon, &shared, &metrics);
        for node in nodes {
            service.node_changed(&node).await;
        }
        for rollout in rollouts {
            service.rollout_changed(&rollout).await;
        }
        // A node waiting out its crash backoff starts on time, not at the next check (and a
        // start that cannot happen is not retried more than once a second).
        let restart = daemon
            .next_start()
            .map(|t| t.max(Instant::now() + Duration::from_secs(1)));
        let wake = next_check.min(next_pass).min(restart.unwrap_or(next_pass));
        let wake = tokio::time::Instant::from_std(wake);
        let mut pass_due = false;
        let mut probe = false;
        tokio::select! {
            asked = signals.next() => match asked {
                signals::Asked::Stop => break,
                signals::Asked::Reload => {
                    daemon.reload();
                    pass_due = true;
                }
            },
            event = inbox.recv() => match event {
                None => break,
                Some(Event::Reload) => {
                    daemon.reload();
                    pass_due = true;
                }
                Some(Event::Heard(name, heard)) => {
                    if daemon.heard(&name, heard) {
                        pass_due |= daemon.check().await;
                    }
                }
                Some(Event::Stopped(name, result)) => daemon.stopped(&name, result),
                Some(Event::Purge(name)) => daemon.purge(&name).await,
                Some(Event::Pulled(os, outcome)) => daemon.pulled(os, *outcome).await,
                Some(Event::Control(control)) => daemon.control(control).await,
                Some(Event::Staged(image, result)) => {
                    daemon.stage_ended(image, result);
                    pass_due = true;
                }
            },
            () = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= next_check {
            pass_due |= daemon.check().await;
            next_check = Instant::now() + CHECK_INTERVAL;
            probe = true;
        }
        pass_due |= restart.is_some_and(|t| Instant::now() >= t);
        if pass_due || Instant::now() >= next_pass {
            daemon.start_pull();
            daemon.reconcile().await;
            next_pass = Instant::now() + PASS_INTERVAL;
            probe = true;
        }
        // Swaps move on every wake: a beacon may end a soak, a stop may have ended.
        daemon.roll(probe).await;
    }
    daemon.detach();
    tracing::info!(
        "stopping: the node VMs keep running (`slipwayd run` re-attaches, `slipwayd down` stops them)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_store_keeps_every_recorded_image_and_each_channels_target_and_previous() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = Store::open(&root).unwrap();
        let digest = Digest::repeated;
        let source = crate::config::Source {
            reference: "oci:/srv/nodes".into(),
            channel: "stable".into(),
            windows_channel: Some("stable-windows".into()),
            keys: Vec::new(),
            plain_http: false,
        };
        let mut channels = Channels::load(dir.path(), &source, &store).unwrap();
        channels.linux.previous = Some(digest('f'));
        let windows = testing::put(&root, &digest('9'), images::manifest::Os::Windows, "1");
        let windows_channel = channels.windows.as_mut().unwrap();
        assert!(windows_channel.pulled(Ok(windows), 100).unwrap());
        windows_channel.previous = Some(digest('8'));
        let record = |name: &str, image: Option<Digest>| NodeRecord {
            name: name.parse().unwrap(),
            cluster: "lab".into(),
            image,
            address: "10.44.0.10".parse().unwrap(),
            mac: "52:54:00:00:00:01".into(),
            initialises: false,
            generation: 0,
        };
        let records = BTreeMap::from([
            ("cp-1".to_owned(), record("cp-1", Some(digest('a')))),
            ("old".to_owned(), record("old", Some(digest('b')))),
            ("new".to_owned(), record("new", None)),
        ]);
        let mut journal = Journal::default();
        journal.swaps.insert(
            "w-1".into(),
            crate::swap::Swap::plan("w-1", "lab", digest('c'), digest('d'), 0),
        );
        let kept = keep(&records, &channels, &journal);
        assert_eq!(
            kept,
            BTreeSet::from([
                digest('a'),
                digest('b'),
                digest('c'),
                digest('d'),
                digest('f'),
                digest('8'),
                digest('9'),
            ])
        );
        // Without the Windows channel, its images are no longer kept.
        channels.windows = None;
        assert!(!keep(&records, &channels, &journal).contains(&digest('9')));
    }

    /// A pull's task collects the store, then has the driver give back what the store no longer
    /// keeps, with the set the store kept; a pull that fails (here: no signing key) changes
    /// nothing of that.
    #[tokio::test]
    async fn after_the_store_is_collected_the_driver_prunes_what_it_no_longer_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let text = testing::hyperv_config(&state, &[("cp-1", "control-plane", "linux")], 1);
        let mut daemon = testing::daemon(dir.path(), &text);
        let digest = Digest::repeated;
        let root = state.join("store");
        testing::put(&root, &digest('a'), images::manifest::Os::Linux, "1");
        testing::put(&root, &digest('b'), images::manifest::Os::Linux, "2");
        daemon.records.insert(
            "cp-1".to_owned(),
            NodeRecord {
                name: "cp-1".parse().unwrap(),
                cluster: "lab".into(),
                image: Some(digest('a')),
                address: "10.44.0.10".parse().unwrap(),
                mac: "52:54:00:00:00:01".into(),
                initialises: false,
                generation: 0,
            },
        );
        daemon.start_pull();
        let started = Instant::now();
        let pruned = loop {
            if let Some(kept) = daemon.driver.pruned.lock().unwrap().first().cloned() {
                break kept;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the driver was never asked to prune"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(pruned, BTreeSet::from([digest('a')]));
        let store = Store::open(&root).unwrap();
        assert!(store.get(digest('a').as_str()).unwrap().is_some());
        assert!(
            store.get(digest('b').as_str()).unwrap().is_none(),
            "the store was collected"
        );
    }
}
