//! Fleet lock slots: at most `max-unavailable` nodes of a cluster down at once across every
//! host that runs its nodes.
//!
//! A host takes a slot for a node before it stops the node, checks it still holds the slot
//! before each swap step (the fencing check), and releases it once the node is back. Each host
//! also publishes its nodes' health beside the slots. A slot is necessary, not sufficient:
//! before taking one, a host counts every node of the cluster that holds a slot, is reported
//! down or not ready, or that no live host vouches for, and takes a slot only if that count,
//! with the node it means to stop, stays within max-unavailable ([`decide`]). So a holder that
//! died mid-swap frees its slot when its lease expires, but its node, down and now unreported,
//! still counts, and no second node goes down in its place.
//!
//! Backends: [`LocalSlots`] (`none`: one host alone, in memory) and [`EtcdSlots`] (an etcd
//! cluster shared by the hosts). The API is blocking: from async code call it inside
//! `tokio::task::spawn_blocking` (an etcd call may wait for its request timeout on each
//! endpoint).

mod decide;
mod etcd;
mod local;
#[cfg(test)]
mod testing;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use decide::{Refusal, Verdict, decide};
pub use etcd::{EtcdSlots, Options as EtcdOptions};
pub use local::LocalSlots;

/// A fleet lock error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No member of the lock store answered.
    #[error(
        "the fleet lock store (etcd at {endpoints}) is unreachable, so no new swap starts; \
         check that a quorum of its members is up and reachable from this host"
    )]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What each one did.
        #[source]
        source: etcd::GatewayError,
    },
    /// The store refused or garbled a request.
    #[error("the fleet lock store refused to {action}")]
    Store {
        /// What we asked for.
        action: String,
        /// Its answer.
        #[source]
        source: etcd::GatewayError,
    },
    /// Other hosts kept changing the cluster's keys while we tried to take a slot.
    #[error(
        "could not take a slot for node {node} of cluster {cluster}: the cluster's keys changed \
         under {attempts} attempts in a row; the next reconcile tries again"
    )]
    Contended {
        /// The cluster.
        cluster: String,
        /// The node.
        node: String,
        /// How many times we tried.
        attempts: u32,
    },
    /// A cluster or node name that would not make a single key segment.
    #[error("{what} name {name:?} cannot be a fleet key: expected a DNS label")]
    InvalidName {
        /// "cluster" or "node".
        what: &'static str,
        /// The name.
        name: String,
    },
}

/// A node's health as its host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Running and ready.
    Ready,
    /// Running but not ready.
    NotReady,
    /// Stopped (swapping, crashed, or not started).
    Down,
}

/// What a host reports about one of its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The node.
    pub node: String,
    /// Its health.
    pub health: Health,
    /// The image its record names (a digest; empty: none yet).
    pub image: String,
    /// Whether it is a control plane (workers wait for every control plane to be on the
    /// target first).
    pub control_plane: bool,
}

/// A node's published status, as any host reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The host that reported it.
    pub host: String,
    /// The health reported.
    pub health: Health,
    /// Since when it has been in this health (Unix seconds, the host's clock).
    pub since: i64,
    /// The image its record names (a digest; empty when none, or from an older slipwayd).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Whether it is a control plane.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control_plane: bool,
}

/// Who holds a slot, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The slot's number, from 0.
    pub index: u32,
    /// The host holding it.
    pub host: String,
    /// The node it is held for.
    pub node: String,
    /// When it was taken (Unix seconds, the holder's clock).
    pub since: i64,
}

/// Everything the store knows about one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Slots held, by number.
    pub slots: BTreeMap<u32, Holder>,
    /// Every node any host has ever reported, and its host (kept when the host dies).
    pub members: BTreeMap<String, String>,
    /// The nodes known to be control planes (from their member records and statuses, so a
    /// dead host's control plane is still known as one).
    pub control_planes: BTreeSet<String>,
    /// Live statuses (gone with the reporting host's lease).
    pub statuses: BTreeMap<String, NodeStatus>,
}

impl ClusterView {
    /// Nodes that count against max-unavailable: holding a slot, reported down or not ready,
    /// or known but vouched for by no live host.
    pub fn unavailable(&self) -> BTreeSet<String> {
        let holding = self.slots.values().map(|h| h.node.clone());
        let unhealthy = self
            .statuses
            .iter()
            .filter(|(_, s)| s.health != Health::Ready)
            .map(|(n, _)| n.clone());
        let unvouched = self
            .members
            .keys()
            .filter(|n| !self.statuses.contains_key(*n))
            .cloned();
        holding.chain(unhealthy).chain(unvouched).collect()
    }
}

/// A slot held: what the fencing check and the release compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The cluster.
    pub cluster: String,
    /// The node it is held for.
    pub node: String,
    /// The slot's number.
    pub index: u32,
    /// The lease the slot's key is bound to (etcd; 0 for `none`).
    pub lease: i64,
    /// The revision that created the slot's key: a slot freed and taken again (by anyone)
    /// has another one, so a stale holder cannot mistake it for its own.
    pub revision: i64,
}

/// The outcome of asking for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// Taken (or already held by this host for this node).
    Taken(Slot),
    /// Not now: the budget is spent.
    Refused(Refusal),
}

/// The fencing check's answer.
#[derive(Debug)]
pub enum Holding {
    /// Still ours: go on with the next step.
    Held,
    /// Gone (its lease expired or someone deleted it): stop acting as its holder.
    Lost {
        /// Why we think so.
        reason: String,
    },
    /// The store did not answer (no quorum, no member reachable, or an answer we could not
    /// use): we cannot know. A swap in progress may finish or roll back, and release later;
    /// no new step that needs the slot should start.
    Unreachable(Error),
}

/// A lock store for fleet slots. Blocking: call from `tokio::task::spawn_blocking`.
pub trait Slots: Send + Sync + std::fmt::Debug {
    /// Takes a slot for `node` of `cluster` if [`decide`] allows it under `max_unavailable`,
    /// counting every host's nodes. Returns the slot already held if this host holds one for
    /// the node. Errors if the store is unreachable: then no new swap starts.
    fn take(&self, cluster: &str, node: &str, max_unavailable: u32) -> Result<Take, Error>;

    /// The fencing check: whether `slot` is still held by us, asked of the store.
    fn check(&self, slot: &Slot) -> Holding;

    /// Gives `slot` back. Releasing a slot no longer held is not an error.
    fn release(&self, slot: &Slot) -> Result<(), Error>;

    /// What the store knows about `cluster`: who holds which slot since when, and every
    /// node's status.
    fn view(&self, cluster: &str) -> Result<ClusterView, Error>;

    /// Publishes this host's nodes of `cluster`. Writes only what changed since the last call,
    /// so call it every reconcile loop (it also writes again what a lost lease took away).
    fn publish(&self, cluster: &str, reports: &[NodeReport]) -> Result<(), Error>;

    /// Forgets `node` of `cluster` (its member record and status), for a node removed from
    /// host.toml or purged: otherwise, reported by nobody, it would count as down for ever.
    fn retire(&self, cluster: &str, node: &str) -> Result<(), Error>;
}

/// Refuses names that would not make one key segment (config already requires DNS labels).
fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The lock store `[fleet]` in host.toml names, for `host`. Contacts nothing yet.
pub fn open(host: &str, fleet: &crate::config::Fleet) -> std::sync::Arc<dyn Slots> {
    match fleet {
        crate::config::Fleet::None => std::sync::Arc::new(LocalSlots::new(host)),
        crate::config::Fleet::Etcd {
            endpoints,
            ttl,
            request_timeout,
            prefix,
        } => std::sync::Arc::new(EtcdSlots::new(
            host,
            &EtcdOptions {
                endpoints: endpoints.clone(),
                ttl: *ttl,
                request_timeout: *request_timeout,
                prefix: prefix.clone(),
            },
        )),
    }
}
