//! `etcd`: slots as keys in an etcd cluster the hosts share, through its JSON gateway.
//!
//! Key layout under the prefix (default `/slipway`), one directory per cluster:
//! - `clusters/CLUSTER/slots/N`: a slot held, JSON [`Holder`], bound to the holder's lease.
//!   Slots are numbered `0..max-unavailable`: a counting semaphore of keys.
//! - `clusters/CLUSTER/nodes/NODE`: a node's status, JSON [`NodeStatus`], bound to its host's
//!   lease, so a dead host's reports go away with it.
//! - `clusters/CLUSTER/members/NODE`: `{"host": ...}`, no lease: that the node exists. A member
//!   whose status has gone is vouched for by nobody and counts as down: its host died, maybe
//!   mid-swap, and nothing says the node is up. It counts until a host reports it again.
//!
//! One lease per [`EtcdSlots`] (per slipwayd), granted when first needed and kept alive by a
//! thread every TTL/3. Dropping the `EtcdSlots` stops the keep-alives without revoking (as a
//! killed slipwayd would): its slots and statuses vanish when the TTL runs out. [`EtcdSlots::
//! revoke`] lets go at once.
//!
//! Taking a slot is one transaction: every key of the cluster unchanged since we read them
//! (so nobody took a slot or reported a node down in between), and the slot's key absent; then
//! put it under our lease. The fencing check is a transaction comparing the slot key's create
//! revision and lease with what we took.

mod gateway;

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use gateway::GatewayError;
use gateway::{Compare, Gateway, Op};

use super::{
    ClusterView, Error, Health, Holder, Holding, NodeReport, NodeStatus, Slot, Slots, Take,
    Verdict, check_name, decide, unix_now,
};

/// How many times a take is tried when other hosts change the cluster's keys meanwhile.
const TAKE_ATTEMPTS: u32 = 8;
/// The first wait between two such tries; doubled each time, with jitter.
const TAKE_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two such tries.
const TAKE_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The shortest keep-alive period (etcd's own minimum TTL is about 1.5 s).
const MIN_KEEP_ALIVE: Duration = Duration::from_millis(300);

/// How to reach the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Client URLs of the members (`http://HOST:PORT`), tried in turn.
    pub endpoints: Vec<String>,
    /// The lease's time to live: how long a dead host's slots outlive it.
    pub ttl: Duration,
    /// How long one request to one member may take.
    pub request_timeout: Duration,
    /// Where the keys live (no trailing `/`).
    pub prefix: String,
}

/// Fleet slots in etcd, for one host.
#[derive(Debug)]
pub struct EtcdSlots {
    inner: Arc<Inner>,
    /// Dropped with us: the keep-alive thread sees the channel close and ends, no revoke.
    _stop: mpsc::Sender<()>,
}

#[derive(Debug)]
struct Inner {
    gateway: Gateway,
    host: String,
    ttl: i64,
    prefix: String,
    /// Our lease, once granted and until etcd says it expired.
    lease: Mutex<Option<i64>>,
    /// What we last published, by (cluster, node).
    published: Mutex<BTreeMap<(String, String), Published>>,
}

/// A status as we last wrote it.
#[derive(Debug, Clone)]
struct Published {
    health: Health,
    image: String,
    control_plane: bool,
    since: i64,
    /// The lease it was bound to: under a new lease it must be written again.
    lease: i64,
}

/// A cluster's keys as read at one revision.
struct Read {
    view: ClusterView,
    /// Each slot's key: (lease, create revision), by number.
    keys: BTreeMap<u32, (i64, i64)>,
    /// The store's revision at the read.
    revision: i64,
}

#[derive(Serialize, Deserialize)]
struct Member {
    host: String,
    /// Kept with the member (no lease): a dead host's control plane is still known as one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    control_plane: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one read or one assignment: no state to break by a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EtcdSlots {
    /// Slots for `host` in the store `options` names. Contacts nothing yet: a store down at
    /// start-up shows as errors from [`Slots::take`], not here.
    pub fn new(host: &str, options: &Options) -> EtcdSlots {
        let ttl = i64::try_from(options.ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let inner = Arc::new(Inner {
            gateway: Gateway::new(&options.endpoints, options.request_timeout),
            host: host.to_owned(),
            ttl,
            prefix: options.prefix.trim_end_matches('/').to_owned(),
            lease: Mutex::new(None),
            published: Mutex::new(BTreeMap::new()),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let period = (options.ttl / 3).max(MIN_KEEP_ALIVE);
        let keeper = Arc::clone(&inner);
        std::thread::spawn(move || {
            // Ends when the sender is dropped (or, never, sends).
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                keeper.keep_alive();
            }
        });
        EtcdSlots { inner, _stop: stop }
    }

    /// Revokes our lease: every slot and status of this host goes at once. For a host that
    /// leaves the fleet for good; a plain stop lets the TTL run out instead.
    #[cfg(test)]
    pub fn revoke(&self) -> Result<(), Error> {
        let lease = locked(&self.inner.lease).take();
        if let Some(lease) = lease {
            self.inner
                .gateway
                .revoke(lease)
                .map_err(|e| self.inner.error("revoke this host's lease", e))?;
        }
        locked(&self.inner.published).clear();
        Ok(())
    }
}

impl Inner {
    fn cluster_prefix(&self, cluster: &str) -> String {
        format!("{}/clusters/{cluster}/", self.prefix)
    }

    fn slot_key(&self, cluster: &str, index: u32) -> String {
        format!("{}slots/{index}", self.cluster_prefix(cluster))
    }

    fn error(&self, action: &str, source: GatewayError) -> Error {
        match source {
            GatewayError::Unreachable { .. } => Error::Unreachable {
                endpoints: self.gateway.endpoints().join(", "),
                source,
            },
            other => Error::Store {
                action: action.to_owned(),
                source: other,
            },
        }
    }

    /// Our lease, granted now if we have none.
    fn lease(&self) -> Result<i64, Error> {
        let mut lease = locked(&self.lease);
        if let Some(id) = *lease {
            return Ok(id);
        }
        let id = self
            .gateway
            .grant(self.ttl)
            .map_err(|e| self.error("grant a lease", e))?;
        tracing::info!(
            lease = format!("{id:x}"),
            ttl = self.ttl,
            "fleet lease granted"
        );
        *lease = Some(id);
        Ok(id)
    }

    /// Forgets `lease` (etcd says it is gone): the next call grants another.
    fn forget(&self, lease: i64) {
        let mut current = locked(&self.lease);
        if *current == Some(lease) {
            tracing::warn!(lease = format!("{lease:x}"), "fleet lease expired");
            *current = None;
        }
    }

    fn keep_alive(&self) {
        let Some(lease) = *locked(&self.lease) else {
            return;
        };
        match self.gateway.keep_alive(lease) {
            Ok(0) => self.forget(lease),
            Ok(_) => {}
            // Logged, not acted on: the fencing check is what stops a swap step.
            Err(e) => tracing::warn!(error = %e, "fleet lease keep-alive failed"),
        }
    }

    /// The cluster's keys.
    fn read(&self, cluster: &str) -> Result<Read, Error> {
        let prefix = self.cluster_prefix(cluster);
        let (kvs, revision) = self
            .gateway
            .range_prefix(&prefix)
            .map_err(|e| self.error("read the cluster's slots", e))?;
        let mut view = ClusterView::default();
        let mut meta = BTreeMap::new();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(index) = rest.strip_prefix("slots/") {
                let Ok(index) = index.parse::<u32>() else {
                    continue;
                };
                // A slot we cannot read still counts: its node is unknown, not free.
                let holder = serde_json::from_slice::<Holder>(&kv.value).unwrap_or(Holder {
                    index,
                    host: "?".into(),
                    node: format!("(unreadable slot {index})"),
                    since: 0,
                });
                view.slots.insert(index, Holder { index, ..holder });
                meta.insert(index, (kv.lease, kv.create_revision));
            } else if let Some(node) = rest.strip_prefix("nodes/") {
                // An unreadable status vouches for nothing: the member counts as down.
                if let Ok(status) = serde_json::from_slice::<NodeStatus>(&kv.value) {
                    if status.control_plane {
                        view.control_planes.insert(node.to_owned());
                    }
                    view.statuses.insert(node.to_owned(), status);
                }
            } else if let Some(node) = rest.strip_prefix("members/") {
                let (host, control_plane) = serde_json::from_slice::<Member>(&kv.value)
                    .map_or_else(|_| ("?".to_owned(), false), |m| (m.host, m.control_plane));
                if control_plane {
                    view.control_planes.insert(node.to_owned());
                }
                view.members.insert(node.to_owned(), host);
            }
        }
        Ok(Read {
            view,
            keys: meta,
            revision,
        })
    }
}

fn lease_not_found(e: &GatewayError) -> bool {
    matches!(e, GatewayError::Rejected { message, .. } if message.contains("lease not found"))
}

impl Slots for EtcdSlots {
    #[tracing::instrument(skip(self), err)]
    fn take(&self, cluster: &str, node: &str, max_unavailable: u32) -> Result<Take, Error> {
        check_name("cluster", cluster)?;
        check_name("node", node)?;
        let inner = &*self.inner;
        let prefix = inner.cluster_prefix(cluster);
        let mut wait = TAKE_BACKOFF;
        for _ in 0..TAKE_ATTEMPTS {
            let lease = inner.lease()?;
            let Read {
                view,
                keys: meta,
                revision,
            } = inner.read(cluster)?;
            let ours = view
                .slots
                .values()
                .find(|h| h.node == node)
                .and_then(|h| Some((h.index, meta.get(&h.index)?)))
                .filter(|(_, (held_by, _))| *held_by == lease);
            if let Some((index, (_, created))) = ours {
                return Ok(Take::Taken(Slot {
                    cluster: cluster.to_owned(),
                    node: node.to_owned(),
                    index,
                    lease,
                    revision: *created,
                }));
            }
            let index = match decide(&view, node, max_unavailable) {
                Verdict::Refuse(refusal) => return Ok(Take::Refused(refusal)),
                Verdict::Take(index) => index,
            };
            let key = inner.slot_key(cluster, index);
            let holder = Holder {
                index,
                host: inner.host.clone(),
                node: node.to_owned(),
                since: unix_now(),
            };
            let value = serde_json::to_vec(&holder).unwrap_or_default();
            let compare = [
                Compare::ModifiedBefore(&prefix, revision.saturating_add(1)),
                Compare::CreateRevision(&key, 0),
            ];
            match inner.gateway.txn(&compare, &[Op::Put(&key, &value, lease)]) {
                Ok(r) if r.succeeded => {
                    tracing::info!(index, "fleet slot taken");
                    return Ok(Take::Taken(Slot {
                        cluster: cluster.to_owned(),
                        node: node.to_owned(),
                        index,
                        lease,
                        revision: r.revision,
                    }));
                }
                // Someone changed the cluster's keys since we read them: read again.
                Ok(_) => {}
                Err(e) if lease_not_found(&e) => inner.forget(lease),
                Err(e) => return Err(inner.error("take a slot", e)),
            }
            std::thread::sleep(wait.mul_f64(0.5 + crate::model::jitter()));
            wait = (wait * 2).min(TAKE_BACKOFF_MAX);
        }
        Err(Error::Contended {
            cluster: cluster.to_owned(),
            node: node.to_owned(),
            attempts: TAKE_ATTEMPTS,
        })
    }

    fn check(&self, slot: &Slot) -> Holding {
        let key = self.inner.slot_key(&slot.cluster, slot.index);
        let compare = [
            Compare::CreateRevision(&key, slot.revision),
            Compare::Lease(&key, slot.lease),
        ];
        // The read makes etcd answer through the quorum, not from one member's copy.
        match self.inner.gateway.txn(&compare, &[Op::Read(&key)]) {
            Ok(r) if r.succeeded => Holding::Held,
            Ok(_) => Holding::Lost {
                reason: format!(
                    "slot {} of cluster {} is no longer held for node {} under lease {:x} \
                     (the lease expired or the key was deleted)",
                    slot.index, slot.cluster, slot.node, slot.lease
                ),
            },
            Err(e) => Holding::Unreachable(self.inner.error("check a slot", e)),
        }
    }

    fn release(&self, slot: &Slot) -> Result<(), Error> {
        let key = self.inner.slot_key(&slot.cluster, slot.index);
        let compare = [
            Compare::CreateRevision(&key, slot.revision),
            Compare::Lease(&key, slot.lease),
        ];
        // Not held any more (expired, taken by another): nothing to give back.
        self.inner
            .gateway
            .txn(&compare, &[Op::Delete(&key)])
            .map(|_| ())
            .map_err(|e| self.inner.error("release a slot", e))
    }

    fn view(&self, cluster: &str) -> Result<ClusterView, Error> {
        check_name("cluster", cluster)?;
        self.inner.read(cluster).map(|read| read.view)
    }

    fn publish(&self, cluster: &str, reports: &[NodeReport]) -> Result<(), Error> {
        check_name("cluster", cluster)?;
        for report in reports {
            check_name("node", &report.node)?;
        }
        let inner = &*self.inner;
        // Twice at most: once more if our lease turned out to be gone.
        for _ in 0..2 {
            let lease = inner.lease()?;
            let mut changes = Vec::new();
            {
                let published = locked(&inner.published);
                for report in reports {
                    let cached = published.get(&(cluster.to_owned(), report.node.clone()));
                    let same = |p: &Published| {
                        (p.health, &p.image, p.control_plane)
                            == (report.health, &report.image, report.control_plane)
                    };
                    let since = match cached {
                        Some(p) if same(p) && p.lease == lease => continue,
                        Some(p) if p.health == report.health => p.since,
                        _ => unix_now(),
                    };
                    changes.push((report, since));
                }
            }
            if changes.is_empty() {
                return Ok(());
            }
            let prefix = inner.cluster_prefix(cluster);
            let mut keys_values = Vec::new();
            for (report, since) in &changes {
                let member = serde_json::to_vec(&Member {
                    host: inner.host.clone(),
                    control_plane: report.control_plane,
                })
                .unwrap_or_default();
                let status = NodeStatus {
                    host: inner.host.clone(),
                    health: report.health,
                    since: *since,
                    image: report.image.clone(),
                    control_plane: report.control_plane,
                };
                keys_values.push((format!("{prefix}members/{}", report.node), member, 0));
                keys_values.push((
                    format!("{prefix}nodes/{}", report.node),
                    serde_json::to_vec(&status).unwrap_or_default(),
                    lease,
                ));
            }
            let ops: Vec<Op<'_>> = keys_values
                .iter()
                .map(|(k, v, l)| Op::Put(k, v, *l))
                .collect();
            match inner.gateway.txn(&[], &ops) {
                Ok(_) => {
                    let mut published = locked(&inner.published);
                    for (report, since) in changes {
                        published.insert(
                            (cluster.to_owned(), report.node.clone()),
                            Published {
                                health: report.health,
                                image: report.image.clone(),
                                control_plane: report.control_plane,
                                since,
                                lease,
                            },
                        );
                    }
                    return Ok(());
                }
                Err(e) if lease_not_found(&e) => inner.forget(lease),
                Err(e) => return Err(inner.error("publish node status", e)),
            }
        }
        Err(Error::Store {
            action: "publish node status".into(),
            source: GatewayError::Unreachable {
                attempts: vec!["the lease granted just now was gone at once".into()],
            },
        })
    }

    fn retire(&self, cluster: &str, node: &str) -> Result<(), Error> {
        check_name("cluster", cluster)?;
        check_name("node", node)?;
        let inner = &*self.inner;
        let prefix = inner.cluster_prefix(cluster);
        let member = format!("{prefix}members/{node}");
        let status = format!("{prefix}nodes/{node}");
        inner
            .gateway
            .txn(&[], &[Op::Delete(&member), Op::Delete(&status)])
            .map_err(|e| inner.error("retire a node", e))?;
        locked(&inner.published).remove(&(cluster.to_owned(), node.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
