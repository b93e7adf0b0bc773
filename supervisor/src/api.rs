//! The supervisor's local API: the D-Bus service `org.slipway.Supervisor1` at
//! `/org/slipway/Supervisor1` (on the system bus, or a bus address given on the command line),
//! and its client, `slipwayd status`. The service reads a snapshot the supervision loop keeps
//! up to date; it never acts on the VMs itself (`Reload` only asks the loop for a pass).
//!
//! On the system bus slipwayd must be allowed to own the name: install
//! `supervisor/dbus/org.slipway.Supervisor1.conf` into `/etc/dbus-1/system.d/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Type;

/// The well-known bus name.
pub const NAME: &str = "org.slipway.Supervisor1";
/// The object path.
pub const PATH: &str = "/org/slipway/Supervisor1";

/// One node as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// `control-plane` or `worker` (empty for a node no longer configured).
    pub role: String,
    /// One of [`crate::model::NodeState`]'s names: `waiting`, `starting`, `ready`,
    /// `unreachable`, `mismatch`, `silent`, `exited`, `crashloop`, `failed`, `stopping` or
    /// `removed`.
    pub state: String,
    /// Why it is in that state, when it is not `ready`.
    pub reason: String,
    /// The image it runs: `NAME VERSION`.
    pub image: String,
    /// The image's artifact digest.
    pub digest: String,
    /// Its address (from the config; confirmed by its beacon).
    pub address: String,
    /// When its last beacon came (Unix seconds; 0: never).
    pub last_beacon: i64,
    /// The guest's uptime in that beacon, in seconds.
    pub uptime: u64,
    /// Its QEMU process (0: none).
    pub pid: u32,
}

/// One node of a rollout: the image it is on and the step of its swap, if one runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct SwapInfo {
    /// Node name.
    pub node: String,
    /// `control-plane` or `worker`.
    pub role: String,
    /// "NAME VERSION" of the image the node's record names (what it runs or restarts on).
    pub current: String,
    /// That image's artifact digest.
    pub current_digest: String,
    /// The digest it is being moved to; empty when it is on the target.
    pub target: String,
    /// The swap step (planned, drained, stopping, stopped, disks-switched, booting, verifying,
    /// committed, rolling-back, booting-previous, rolled-back), or "" when no swap runs.
    pub step: String,
    /// Why it is in that step (what it waits for, or what failed).
    pub reason: String,
    /// When the step was entered (Unix seconds; 0: none).
    pub since: i64,
}

/// The rollout of one cluster on this host: where it stands and each node's swap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct RolloutInfo {
    /// The cluster.
    pub cluster: String,
    /// done | rolling | waiting | paused | failed | aborted | refused | idle
    pub state: String,
    /// "NAME VERSION DIGEST" of the image the rollout moves nodes to (the Linux nodes', from
    /// `[source] channel`); empty when none.
    pub target: String,
    /// "NAME VERSION DIGEST" of the image the rollout moves the Windows nodes to (from
    /// `[source] windows-channel`); empty when none or when the host follows no such channel.
    /// Each node's own target is its [`SwapInfo::target`].
    #[serde(default)]
    pub windows_target: String,
    /// Why it is in that state (what it waits for, what failed, who paused it).
    pub reason: String,
    /// Its nodes on this host.
    pub nodes: Vec<SwapInfo>,
    /// The fleet's lock slots of the cluster, as last read (every host's holders).
    pub slots: Vec<SlotInfo>,
    /// Why the fleet's slots could not be read; empty when they could.
    pub fleet_problem: String,
}

/// A fleet lock slot held: by which host, for which node, since when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SlotInfo {
    /// The slot's number, from 0.
    pub index: u32,
    /// The host holding it.
    pub host: String,
    /// The node it is held for.
    pub node: String,
    /// When it was taken (Unix seconds, the holder's clock).
    pub since: i64,
}

/// Every rollout state, in the order the metrics list them.
pub const ROLLOUT_STATES: [&str; 8] = [
    "done", "rolling", "waiting", "paused", "failed", "aborted", "refused", "idle",
];

/// What an operator asks of the rollouts (the `PauseRollout`, `ResumeRollout` and
/// `AbortRollout` calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutControl {
    /// Start no new swap (a swap in flight finishes); persists across restarts.
    Pause,
    /// Undo [`RolloutControl::Pause`].
    Resume,
    /// Roll back the swap in flight and roll the target image no further on this host.
    Abort {
        /// The cluster; "" for every cluster.
        cluster: String,
    },
}

/// What a rollout control call does: hands the request to the loop; false when the loop has
/// ended.
pub type Control = Box<dyn Fn(RolloutControl) -> bool + Send + Sync>;

/// What `slipwayd rollout status` shows: the `Rollout` call's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Type)]
pub struct RolloutStatus {
    /// Whether an operator paused the rollouts (no new swap starts).
    pub paused: bool,
    /// One rollout per cluster.
    pub rollouts: Vec<RolloutInfo>,
}

/// Running totals, for the metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Reconcile passes run.
    pub passes: u64,
    /// Beacons heard.
    pub beacons: u64,
    /// Beacons that did not match what the node was sent.
    pub mismatches: u64,
    /// Times the channel's image was refused.
    pub refusals: u64,
    /// VMs started.
    pub starts: u64,
}

/// What the supervisor shows: the API's and the metrics' one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Host name.
    pub host: String,
    /// The image the channel names, verified: `NAME VERSION DIGEST`; empty when none. New
    /// nodes boot it; a node that booted keeps the image its record names.
    pub image: String,
    /// How fresh that is: `fresh`, `stale` (the channel could not be read: network or
    /// registry), `refused` (the channel's newest answer failed a check), `expired` (its index
    /// expired: no new image until a fresh one is promoted) or `unknown` (not read yet).
    pub channel: String,
    /// When the channel was last read and verified (Unix seconds; 0: never).
    pub channel_verified: i64,
    /// The image the Windows nodes' channel (`[source] windows-channel`) names, verified, as
    /// [`Snapshot::image`]; empty when none or not followed.
    pub windows_image: String,
    /// How fresh that is, as [`Snapshot::channel`]; empty when the host follows no Windows
    /// channel.
    pub windows_channel: String,
    /// When the Windows channel was last read and verified (Unix seconds; 0: never).
    pub windows_channel_verified: i64,
    /// What keeps the supervisor from doing its job (an image refused, a bad config reload).
    pub problem: String,
    /// Where the metrics are served.
    pub metrics: String,
    /// Every node: configured ones and those kept for a purge.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Totals.
    pub counters: Counters,
    /// One rollout per cluster.
    pub rollouts: Vec<RolloutInfo>,
    /// Whether an operator paused the rollouts.
    pub rollout_paused: bool,
    /// How long every finished swap (committed or rolled back) took in this process, seconds.
    pub swap_durations: Vec<f64>,
    /// Finished swaps by result (`committed`, `rolled-back`, `aborted`) → count.
    pub swap_results: BTreeMap<String, u64>,
    /// Node → how long its last swap kept it down, seconds.
    pub downtime: BTreeMap<String, f64>,
}

/// The snapshot, shared between the loop, the D-Bus service and the metrics server.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<Snapshot>>);

impl Shared {
    /// The snapshot, locked (a poisoned lock still holds a usable snapshot).
    pub fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The D-Bus object.
struct Supervisor1 {
    shared: Shared,
    reload: Reload,
    purge: Purge,
    control: Control,
}

/// The answer to a control call whose request the loop did not take.
fn stopping() -> zbus::fdo::Error {
    zbus::fdo::Error::Failed("the supervisor is stopping".into())
}

/// What a `Reload` call does: asks the loop for a pass; false when the loop has ended.
pub type Reload = Box<dyn Fn() -> bool + Send + Sync>;
/// What a `Purge` call does: asks the loop to purge a node; false when the loop has ended.
pub type Purge = Box<dyn Fn(&str) -> bool + Send + Sync>;

#[zbus::interface(name = "org.slipway.Supervisor1")]
impl Supervisor1 {
    /// Host, image, problem and nodes in one consistent answer (what `slipwayd status` shows).
    fn status(&self) -> Status {
        let snapshot = self.shared.lock();
        Status {
            host: snapshot.host.clone(),
            image: snapshot.image.clone(),
            channel: snapshot.channel.clone(),
            channel_verified: snapshot.channel_verified,
            problem: snapshot.problem.clone(),
            windows_image: snapshot.windows_image.clone(),
            windows_channel: snapshot.windows_channel.clone(),
            windows_channel_verified: snapshot.windows_channel_verified,
            nodes: snapshot.nodes.values().cloned().collect(),
        }
    }

    /// Every node with its state, image, address and last beacon.
    fn nodes(&self) -> Vec<NodeInfo> {
        self.shared.lock().nodes.values().cloned().collect()
    }

    /// One node.
    fn node(&self, name: &str) -> zbus::fdo::Result<NodeInfo> {
        self.shared
            .lock()
            .nodes
            .get(name)
            .cloned()
            .ok_or_else(|| zbus::fdo::Error::InvalidArgs(format!("no node named {name}")))
    }

    /// Re-reads the host config and reconciles now (as SIGHUP does).
    fn reload(&self) -> zbus::fdo::Result<()> {
        if (self.reload)() {
            Ok(())
        } else {
            Err(zbus::fdo::Error::Failed(
                "the supervisor is stopping".into(),
            ))
        }
    }

    /// Deletes the disks of a node no longer in host.toml whose VM has stopped (state
    /// `removed`). Queued: the node leaves `Status` once done, or its reason says why not.
    fn purge(&self, name: &str) -> zbus::fdo::Result<()> {
        match self.shared.lock().nodes.get(name) {
            None => {
                return Err(zbus::fdo::Error::InvalidArgs(format!(
                    "no node named {name}"
                )));
            }
            Some(node) if node.state != crate::model::NodeState::Removed.as_str() => {
                return Err(zbus::fdo::Error::Failed(format!(
                    "node {name} is {}: only a node removed from host.toml whose VM has stopped can be purged",
                    node.state
                )));
            }
            Some(_) => {}
        }
        if (self.purge)(name) {
            Ok(())
        } else {
            Err(zbus::fdo::Error::Failed(
                "the supervisor is stopping".into(),
            ))
        }
    }

    /// Every cluster's rollout and whether rollouts are paused, in one consistent answer.
    fn rollout(&self) -> RolloutStatus {
        let snapshot = self.shared.lock();
        RolloutStatus {
            paused: snapshot.rollout_paused,
            rollouts: snapshot.rollouts.clone(),
        }
    }

    /// Starts no new swap on this host; a swap in flight finishes. Persists across restarts.
    fn pause_rollout(&self) -> zbus::fdo::Result<()> {
        if (self.control)(RolloutControl::Pause) {
            Ok(())
        } else {
            Err(stopping())
        }
    }

    /// Lets swaps start again after `PauseRollout`.
    fn resume_rollout(&self) -> zbus::fdo::Result<()> {
        if (self.control)(RolloutControl::Resume) {
            Ok(())
        } else {
            Err(stopping())
        }
    }

    /// Rolls back the swap in flight in `cluster` ("" for every cluster) and rolls its target
    /// image no further on this host until a newer one is promoted. Persists across restarts.
    fn abort_rollout(&self, cluster: &str) -> zbus::fdo::Result<()> {
        if !cluster.is_empty() {
            let snapshot = self.shared.lock();
            if !snapshot.rollouts.iter().any(|r| r.cluster == cluster) {
                let known: Vec<&str> = snapshot
                    .rollouts
                    .iter()
                    .map(|r| r.cluster.as_str())
                    .collect();
                return Err(zbus::fdo::Error::InvalidArgs(format!(
                    "no cluster named {cluster} on this host (its clusters: {}); give one of them, or none for every cluster",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        let nothing = {
            let snapshot = self.shared.lock();
            let mut chosen = snapshot
                .rollouts
                .iter()
                .filter(|r| cluster.is_empty() || r.cluster == cluster);
            chosen.all(|r| r.target.is_empty() && r.windows_target.is_empty())
        };
        if nothing {
            return Err(zbus::fdo::Error::Failed(
                "nothing to abort: the channel has no verified image yet".into(),
            ));
        }
        if (self.control)(RolloutControl::Abort {
            cluster: cluster.to_owned(),
        }) {
            Ok(())
        } else {
            Err(stopping())
        }
    }

    /// The host's name.
    #[zbus(property)]
    fn host(&self) -> String {
        self.shared.lock().host.clone()
    }

    /// The verified image the channel names (`NAME VERSION DIGEST`), empty when none.
    #[zbus(property)]
    fn image(&self) -> String {
        self.shared.lock().image.clone()
    }

    /// What keeps the supervisor from its job, empty when nothing does.
    #[zbus(property)]
    fn problem(&self) -> String {
        self.shared.lock().problem.clone()
    }

    /// The loopback address the Prometheus metrics are served on.
    #[zbus(property)]
    fn metrics_address(&self) -> String {
        self.shared.lock().metrics.clone()
    }

    /// A node changed state.
    #[zbus(signal)]
    async fn node_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        state: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// A cluster's rollout changed state or reason.
    #[zbus(signal)]
    async fn rollout_changed(
        emitter: &SignalEmitter<'_>,
        cluster: &str,
        state: &str,
        reason: &str,
    ) -> zbus::Result<()>;
}

fn describe(bus: Option<&str>) -> String {
    bus.map_or_else(
        || "the system bus".to_owned(),
        |a| format!("the bus at {a}"),
    )
}

fn builder(bus: Option<&str>) -> zbus::Result<zbus::connection::Builder<'static>> {
    match bus {
        Some(address) => zbus::connection::Builder::address(address),
        None => zbus::connection::Builder::system(),
    }
}

/// The service, connected and serving.
pub struct Service {
    connection: zbus::Connection,
}

impl Service {
    /// Connects to `bus` (the system bus when `None`), owns [`NAME`] and serves the snapshot.
    /// A `Reload` call runs `reload`, a `Purge` call `purge`, and `PauseRollout`,
    /// `ResumeRollout` and `AbortRollout` run `control`.
    pub async fn start(
        bus: Option<&str>,
        shared: Shared,
        reload: Reload,
        purge: Purge,
        control: Control,
    ) -> anyhow::Result<Service> {
        let object = Supervisor1 {
            shared,
            reload,
            purge,
            control,
        };
        let connection = async {
            builder(bus)?
                .name(NAME)?
                .serve_at(PATH, object)?
                .build()
                .await
        }
        .await
        .with_context(|| {
            format!(
                "cannot serve {NAME} on {} (on the system bus, install supervisor/dbus/{NAME}.conf; or give --bus ADDRESS)",
                describe(bus)
            )
        })?;
        Ok(Service { connection })
    }

    /// Emits `NodeChanged` for `node`.
    pub async fn node_changed(&self, node: &NodeInfo) {
        let sent = match SignalEmitter::new(&self.connection, PATH) {
            Ok(emitter) => {
                Supervisor1::node_changed(&emitter, &node.name, &node.state, &node.reason).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(node = %node.name, "cannot emit NodeChanged: {e}");
        }
    }

    /// Emits `RolloutChanged` for `r`.
    pub async fn rollout_changed(&self, r: &RolloutInfo) {
        let sent = match SignalEmitter::new(&self.connection, PATH) {
            Ok(emitter) => {
                Supervisor1::rollout_changed(&emitter, &r.cluster, &r.state, &r.reason).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(cluster = %r.cluster, "cannot emit RolloutChanged: {e}");
        }
    }
}

#[zbus::proxy(
    interface = "org.slipway.Supervisor1",
    default_service = "org.slipway.Supervisor1",
    default_path = "/org/slipway/Supervisor1",
    gen_blocking = false,
    async_name = "SupervisorProxy"
)]
trait Supervisor1 {
    fn status(&self) -> zbus::Result<Status>;
    fn reload(&self) -> zbus::Result<()>;
    fn purge(&self, name: &str) -> zbus::Result<()>;
    fn rollout(&self) -> zbus::Result<RolloutStatus>;
    fn pause_rollout(&self) -> zbus::Result<()>;
    fn resume_rollout(&self) -> zbus::Result<()>;
    fn abort_rollout(&self, cluster: &str) -> zbus::Result<()>;
}

/// What `slipwayd status` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Type)]
pub struct Status {
    /// Host name.
    pub host: String,
    /// The verified image the channel names.
    pub image: String,
    /// `fresh`, `stale`, `refused`, `expired` or `unknown` (see [`Snapshot::channel`]).
    pub channel: String,
    /// When the channel was last verified (Unix seconds; 0: never).
    pub channel_verified: i64,
    /// What keeps the supervisor from its job.
    pub problem: String,
    /// The nodes.
    pub nodes: Vec<NodeInfo>,
    /// The verified image the Windows nodes' channel names (empty when none or not followed).
    #[serde(default)]
    pub windows_image: String,
    /// Its freshness, as `channel`; empty when the host follows no Windows channel.
    #[serde(default)]
    pub windows_channel: String,
    /// When the Windows channel was last verified (Unix seconds; 0: never).
    #[serde(default)]
    pub windows_channel_verified: i64,
}

/// A client of a running supervisor.
pub struct Client {
    proxy: SupervisorProxy<'static>,
    bus: String,
}

impl Client {
    /// Connects to the supervisor on `bus` (the system bus when `None`).
    pub async fn connect(bus: Option<&str>) -> anyhow::Result<Client> {
        let connection = async { builder(bus)?.build().await }
            .await
            .with_context(|| format!("cannot connect to {}", describe(bus)))?;
        let proxy = SupervisorProxy::new(&connection)
            .await
            .with_context(|| format!("cannot make a {NAME} proxy"))?;
        Ok(Client {
            proxy,
            bus: describe(bus),
        })
    }

    /// The supervisor's view now.
    pub async fn status(&self) -> anyhow::Result<Status> {
        self.proxy
            .status()
            .await
            .with_context(|| format!("no answer from slipwayd ({NAME} on {})", self.bus))
    }

    /// Asks the supervisor to purge node `name`.
    pub async fn purge(&self, name: &str) -> anyhow::Result<()> {
        self.proxy
            .purge(name)
            .await
            .with_context(|| format!("slipwayd refused to purge node {name}"))
    }

    /// Every cluster's rollout now.
    pub async fn rollout(&self) -> anyhow::Result<RolloutStatus> {
        self.proxy
            .rollout()
            .await
            .with_context(|| format!("no answer from slipwayd ({NAME} on {})", self.bus))
    }

    /// Pauses the rollouts: no new swap starts; a swap in flight finishes.
    pub async fn pause(&self) -> anyhow::Result<()> {
        self.proxy
            .pause_rollout()
            .await
            .with_context(|| format!("slipwayd ({NAME} on {}) did not pause", self.bus))
    }

    /// Resumes paused rollouts.
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.proxy
            .resume_rollout()
            .await
            .with_context(|| format!("slipwayd ({NAME} on {}) did not resume", self.bus))
    }

    /// Aborts the rollout of `cluster` ("" for every cluster).
    pub async fn abort(&self, cluster: &str) -> anyhow::Result<()> {
        let which = if cluster.is_empty() {
            "every rollout".to_owned()
        } else {
            format!("the rollout of {cluster}")
        };
        self.proxy
            .abort_rollout(cluster)
            .await
            .with_context(|| format!("slipwayd ({NAME} on {}) did not abort {which}", self.bus))
    }

    /// Asks for a reload and a pass.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.proxy
            .reload()
            .await
            .with_context(|| format!("no answer from slipwayd ({NAME} on {})", self.bus))
    }
}

/// `status` as a table for people.
pub fn table(status: &Status) -> String {
    use std::fmt::Write;
    let now = unix_now();
    let mut out = String::new();
    let image = if status.image.is_empty() {
        "none verified"
    } else {
        &status.image
    };
    let _ = writeln!(out, "host {}: image {image}", status.host);
    let verified = |at: i64| {
        if at == 0 {
            "never verified".to_owned()
        } else {
            format!("verified {}s ago", (now - at).max(0))
        }
    };
    let _ = writeln!(
        out,
        "channel: {} ({})",
        status.channel,
        verified(status.channel_verified)
    );
    if !status.windows_channel.is_empty() {
        let image = if status.windows_image.is_empty() {
            "none verified"
        } else {
            &status.windows_image
        };
        let _ = writeln!(
            out,
            "windows nodes: image {image}\nwindows-channel: {} ({})",
            status.windows_channel,
            verified(status.windows_channel_verified)
        );
    }
    if !status.problem.is_empty() {
        let _ = writeln!(out, "problem: {}", status.problem);
    }
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:<12} {:<16} {:<22} {:>7} {:>7}  REASON",
        "NODE", "ROLE", "STATE", "ADDRESS", "IMAGE", "UPTIME", "BEACON"
    );
    for n in &status.nodes {
        let beacon = if n.last_beacon == 0 {
            "never".to_owned()
        } else {
            format!("{}s ago", (now - n.last_beacon).max(0))
        };
        let _ = writeln!(
            out,
            "{:<12} {:<14} {:<12} {:<16} {:<22} {:>6}s {:>7}  {}",
            n.name,
            if n.role.is_empty() { "-" } else { &n.role },
            n.state,
            n.address,
            n.image,
            n.uptime,
            beacon,
            n.reason
        );
    }
    out
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests;
