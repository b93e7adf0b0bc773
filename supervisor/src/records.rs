//! Node records: what slipwayd has decided about each node, kept for as long as its disks.
//!
//! A node's record (`STATE/nodes/NAME/record`, a [`persist`] record of kind `node`) holds the
//! image it runs, its address and MAC, and whether it initialised its cluster. Addresses are
//! sticky: once recorded, a node's address never changes, whatever happens to the config
//! around it; a node removed from the config keeps holding its address until it is purged (the
//! purge deletes its directory, record included). Each cluster's initialiser (the one node
//! that runs `kubeadm init`) is recorded once, at `STATE/clusters/CLUSTER/init` (kind
//! `cluster-init`), and never changes afterwards, even when that node is removed.
//!
//! [`plan`] is pure: from the config, the records and the recorded initialisers it decides
//! the records of new nodes; the caller writes them (node records first, then initialisers: a
//! crash between the two leaves records from which the same initialiser is chosen again).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Cluster, HostConfig, Node, Role};
use crate::model::{self, Digest, NodeName};
use crate::persist;

/// Persist kind of a node record.
pub const NODE_KIND: &str = "node";
/// Version of the node record this build writes and reads.
pub const NODE_VERSION: u32 = 1;
/// Persist kind of a cluster's initialiser record.
pub const INIT_KIND: &str = "cluster-init";
/// Version of the initialiser record this build writes and reads.
pub const INIT_VERSION: u32 = 1;

/// A records error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record could not be read or written (the error names its file).
    #[error(transparent)]
    Persist(#[from] persist::Error),
    /// The nodes directory could not be listed.
    #[error("cannot list the node directories in {path}")]
    ListNodes {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record's directory could not be made.
    #[error("cannot create {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A node record sits in another node's directory.
    #[error(
        "{path} is the record of node {found}, not of the node its directory names: restore the right record or move it back"
    )]
    MatchName {
        /// The record.
        path: PathBuf,
        /// The name it holds.
        found: NodeName,
    },
    /// An initialiser record names another cluster.
    #[error(
        "{path} names the initialiser of cluster {found}, not of the cluster its directory names"
    )]
    MatchCluster {
        /// The record.
        path: PathBuf,
        /// The cluster it names.
        found: String,
    },
    /// A cluster's initialiser is recorded and would change.
    #[error(
        "cluster {cluster} was initialised by node {recorded}; node {node} cannot initialise it again"
    )]
    ChangeInitialiser {
        /// The cluster.
        cluster: String,
        /// The recorded initialiser.
        recorded: NodeName,
        /// The node that was to be recorded.
        node: NodeName,
    },
    /// A configured node's record belongs to another cluster.
    #[error(
        "node {node} is configured in cluster {configured} but its disks belong to cluster {recorded}: to move it, remove it from host.toml, let it stop, `slipwayd purge {node}`, then add it again"
    )]
    MoveCluster {
        /// The node.
        node: NodeName,
        /// The cluster of its record.
        recorded: String,
        /// The cluster the config gives it.
        configured: String,
    },
    /// A cluster's pool has no address left for a new node.
    #[error(
        "cluster {cluster}'s pool {pool} has no address left for node {node}: every address is held by a node's record (removed nodes hold theirs until `slipwayd purge`); widen the pool or purge removed nodes"
    )]
    ExhaustPool {
        /// The cluster.
        cluster: String,
        /// Its pool.
        pool: String,
        /// The node without an address.
        node: NodeName,
    },
    /// A configured name is not a node name.
    #[error(transparent)]
    Name(#[from] model::Error),
}

/// What slipwayd has decided about one node (its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// The node.
    pub name: NodeName,
    /// Its cluster.
    pub cluster: String,
    /// The image it runs (None until its first boot). Only the rolling swap changes it after that.
    pub image: Option<Digest>,
    /// Its address on the cluster's network: never changes once recorded, except by a surge
    /// swap's handover (the replacement's address becomes the node's).
    pub address: Ipv4Addr,
    /// Its MAC address ([`crate::seed::mac_address`] of its hostname).
    pub mac: String,
    /// Whether this node initialised its cluster (kubeadm init).
    pub initialises: bool,
    /// How many surge swaps replaced its VM: each one a fresh VM with its own disks in
    /// [`run_dir`], hostname ([`hostname`]), MAC and address.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
}

/// Generation 0 is not written, so a record an older slipwayd wrote and one it reads look alike.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NodeRecord {
    /// `node` as its seed renders it: the hostname and address this record holds.
    pub fn placed(&self, node: &Node) -> Node {
        Node {
            name: hostname(self.name.as_str(), self.generation),
            address: self.address,
            ..node.clone()
        }
    }
}

/// The hostname (and Kubernetes node name) of generation `generation` of node `name`: the
/// name itself, then `NAME-gN` (a surge's replacement runs beside the node it replaces, and
/// two kubelets must not register one Node).
pub fn hostname(name: &str, generation: u32) -> String {
    match generation {
        0 => name.to_owned(),
        n => format!("{name}-g{n}"),
    }
}

/// The run directory of generation `generation` of node `name`: `STATE/nodes/NAME`, then
/// `STATE/nodes/NAME/gen-N` (the record stays at `STATE/nodes/NAME/record`).
pub fn run_dir(state_dir: &Path, name: &str, generation: u32) -> PathBuf {
    let root = state_dir.join("nodes").join(name);
    match generation {
        0 => root,
        n => root.join(format!("gen-{n}")),
    }
}

/// The generation whose run directory `entry` (a name in `STATE/nodes/NAME`) is, if it is one.
pub fn generation_dir(entry: &str) -> Option<u32> {
    entry
        .strip_prefix("gen-")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
}

/// The first address of `cluster`'s pool that is neither its gateway nor in `held`.
pub fn free_address(cluster: &Cluster, held: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (0..=u32::MAX)
        .map_while(|i| cluster.pool.nth(i))
        .find(|a| *a != cluster.gateway && !held.contains(a))
}

/// Every run directory of node `name` that exists: its own and any generation's (a surge's
/// replacement, or its leftovers).
pub fn vm_dirs(state_dir: &Path, name: &str) -> Vec<PathBuf> {
    let root = state_dir.join("nodes").join(name);
    let mut dirs = vec![root.clone()];
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if let Some(generation) = entry.file_name().to_str().and_then(generation_dir) {
            dirs.push(run_dir(state_dir, name, generation));
        }
    }
    dirs
}

/// The payload of a cluster's initialiser record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterInit {
    cluster: String,
    node: NodeName,
}

/// Where node `name`'s record lives: `STATE/nodes/NAME/record`.
pub fn record_path(state_dir: &Path, name: &NodeName) -> PathBuf {
    state_dir.join("nodes").join(name.as_str()).join("record")
}

/// Where cluster `cluster`'s initialiser is recorded: `STATE/clusters/CLUSTER/init`.
pub fn initialiser_path(state_dir: &Path, cluster: &str) -> PathBuf {
    state_dir.join("clusters").join(cluster).join("init")
}

/// Every node record in `state_dir` (`nodes/*/record`), by node name. A node directory
/// without a record (made before records existed) is skipped; a damaged record is an error
/// naming its file, and is left as it is: the caller decides.
pub fn load_all(state_dir: &Path) -> Result<BTreeMap<String, NodeRecord>, Error> {
    let dir = state_dir.join("nodes");
    let list_error = |source| Error::ListNodes {
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(list_error(e)),
    };
    let mut records = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(list_error)?;
        // Not a node's directory: nothing slipwayd made there.
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| NodeName::new(n).ok())
        else {
            continue;
        };
        if !entry.file_type().map_err(list_error)?.is_dir() {
            continue;
        }
        let path = record_path(state_dir, &name);
        let Some(record) = persist::read::<NodeRecord>(&path, NODE_KIND, NODE_VERSION)? else {
            continue;
        };
        if record.name != name {
            return Err(Error::MatchName {
                path,
                found: record.name,
            });
        }
        records.insert(name.to_string(), record);
    }
    Ok(records)
}

/// Makes `dir` (and its missing parents) private to slipwayd; an existing one keeps its mode.
fn private_dir(dir: &Path) -> Result<(), Error> {
    crate::persist::private_dir(dir).map_err(|source| Error::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Writes `record` to `STATE/nodes/NAME/record` (the directory is made 0700 if missing).
pub fn save(state_dir: &Path, record: &NodeRecord) -> Result<(), Error> {
    let path = record_path(state_dir, &record.name);
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    persist::write(&path, NODE_KIND, NODE_VERSION, record)?;
    Ok(())
}

/// The node of `cluster` that initialises it, if one is recorded.
pub fn initialiser(state_dir: &Path, cluster: &str) -> Result<Option<NodeName>, Error> {
    let path = initialiser_path(state_dir, cluster);
    let Some(init) = persist::read::<ClusterInit>(&path, INIT_KIND, INIT_VERSION)? else {
        return Ok(None);
    };
    if init.cluster != cluster {
        return Err(Error::MatchCluster {
            path,
            found: init.cluster,
        });
    }
    Ok(Some(init.node))
}

/// The recorded initialiser of every configured cluster that has one.
pub fn initialisers(
    state_dir: &Path,
    config: &HostConfig,
) -> Result<BTreeMap<String, NodeName>, Error> {
    let mut found = BTreeMap::new();
    for cluster in config.clusters.keys() {
        if let Some(node) = initialiser(state_dir, cluster)? {
            found.insert(cluster.clone(), node);
        }
    }
    Ok(found)
}

/// Records `node` as the initialiser of `cluster`. Recording the same node again is a no-op;
/// another node is refused: the initialiser never changes.
pub fn record_initialiser(state_dir: &Path, cluster: &str, node: &NodeName) -> Result<(), Error> {
    match initialiser(state_dir, cluster)? {
        Some(recorded) if &recorded == node => Ok(()),
        Some(recorded) => Err(Error::ChangeInitialiser {
            cluster: cluster.to_owned(),
            recorded,
            node: node.clone(),
        }),
        None => {
            let path = initialiser_path(state_dir, cluster);
            if let Some(dir) = path.parent() {
                private_dir(dir)?;
            }
            let init = ClusterInit {
                cluster: cluster.to_owned(),
                node: node.clone(),
            };
            persist::write(&path, INIT_KIND, INIT_VERSION, &init)?;
            Ok(())
        }
    }
}

/// What [`plan`] decided; the caller writes it: records first, then initialisers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Records to write, by name: every configured node that had none, and any existing
    /// record whose `initialises` flag disagrees with its cluster's initialiser.
    pub records: Vec<NodeRecord>,
    /// Initialisers to record: the clusters that got one in this plan.
    pub initialisers: BTreeMap<String, NodeName>,
}

impl Plan {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.initialisers.is_empty()
    }
}

/// Decides the records of every configured node that has none (pure).
///
/// Addresses: a node keeps its record's address forever. A new node takes its planned address
/// (the config's `node.address`, in declaration order, so a fresh host is numbered as the
/// config says) when no record of its cluster holds it, else the lowest address of the
/// cluster's pool that no record holds (a removed node's record holds its address until a
/// purge) and that is not the gateway. MAC: [`crate::seed::mac_address`].
///
/// Initialiser of a cluster: the recorded one, forever. When none is recorded: in a fresh
/// cluster (no record of any of its nodes), the first control-plane node by name among the
/// configured ones; in a cluster with records (a host upgraded from before initialiser
/// records), the first control-plane node by name among the configured nodes that have a
/// record (those booted), so a later `cp-0` never runs `kubeadm init`.
pub fn plan(
    config: &HostConfig,
    records: &BTreeMap<String, NodeRecord>,
    initialisers: &BTreeMap<String, NodeName>,
    reserved: &BTreeSet<Ipv4Addr>,
) -> Result<Plan, Error> {
    for node in config.nodes.values() {
        if let Some(record) = records.get(&node.name)
            && record.cluster != node.cluster
        {
            return Err(Error::MoveCluster {
                node: record.name.clone(),
                recorded: record.cluster.clone(),
                configured: node.cluster.clone(),
            });
        }
    }
    let mut plan = Plan::default();
    for (name, cluster) in &config.clusters {
        let recorded: Vec<&NodeRecord> = records.values().filter(|r| &r.cluster == name).collect();
        // By name: config.nodes is ordered by name.
        let configured: Vec<&Node> = config
            .nodes
            .values()
            .filter(|n| &n.cluster == name)
            .collect();
        let initialiser = match initialisers.get(name) {
            Some(node) => Some(node.clone()),
            None => {
                let control_planes = || configured.iter().filter(|n| n.role == Role::ControlPlane);
                let booted = control_planes().find(|n| records.contains_key(&n.name));
                let chosen = if recorded.is_empty() {
                    control_planes().next()
                } else {
                    booted.or_else(|| control_planes().next())
                };
                match chosen {
                    Some(node) => {
                        let node = NodeName::new(node.name.as_str())?;
                        plan.initialisers.insert(name.clone(), node.clone());
                        Some(node)
                    }
                    None => None,
                }
            }
        };
        let initialises = |node: &str| initialiser.as_ref().is_some_and(|i| i.as_str() == node);
        // A node initialises only a cluster whose initialiser is chosen now: once one is
        // recorded, the cluster exists, and a node without a record (its initialiser purged
        // and configured again included) joins it.
        let fresh = !initialisers.contains_key(name);
        for record in &recorded {
            // Corrected only where it is safe: a flag may always be cleared, but set only while
            // the initialiser is chosen now (a host from before records). Once the cluster's
            // initialiser is recorded, a record without the flag is a node that joined (that
            // initialiser purged and configured again included): it never inits.
            let wanted = initialises(record.name.as_str());
            if record.initialises != wanted && (fresh || record.initialises) {
                plan.records.push(NodeRecord {
                    initialises: !record.initialises,
                    ..(*record).clone()
                });
            }
        }

        // Held by a record, or by a surge's replacement (its address becomes its node's).
        let mut held: BTreeSet<Ipv4Addr> = recorded
            .iter()
            .map(|r| r.address)
            .chain(reserved.iter().copied())
            .collect();
        let mut new: Vec<&Node> = configured
            .iter()
            .filter(|n| !records.contains_key(&n.name))
            .copied()
            .collect();
        new.sort_by_key(|n| n.address);
        // First every new node whose planned address is free, so a node that must move
        // never takes the planned address of one that need not.
        let mut addressed: Vec<(&Node, Ipv4Addr)> = Vec::new();
        let mut homeless: Vec<&Node> = Vec::new();
        for node in new {
            if held.insert(node.address) {
                addressed.push((node, node.address));
            } else {
                homeless.push(node);
            }
        }
        for node in homeless {
            let Some(free) = free_address(cluster, &held) else {
                return Err(Error::ExhaustPool {
                    cluster: name.clone(),
                    pool: cluster.pool.to_string(),
                    node: NodeName::new(node.name.as_str())?,
                });
            };
            held.insert(free);
            addressed.push((node, free));
        }
        for (node, address) in addressed {
            plan.records.push(NodeRecord {
                name: NodeName::new(node.name.as_str())?,
                cluster: name.clone(),
                image: None,
                address,
                mac: crate::seed::mac_address(name, &node.name),
                initialises: fresh && initialises(&node.name),
                generation: 0,
            });
        }
    }
    plan.records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plan)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A host with clusters `lab` (10.44.0.0/24, gateway .1, pool `lab_pool`) and `dev`
    /// (10.45.0.0/24), and `nodes` in declaration order, each `NAME[@CLUSTER]` (`lab` unless
    /// named), a control-plane node when its name holds `cp`, else a worker.
    fn host(state: &Path, lab_pool: &str, nodes: &str) -> HostConfig {
        let mut text = format!(
            "format = 1\n[host]\nname = \"hci-01\"\nstate-dir = \"{}\"\n\
             [source]\nreference = \"oci:/srv/nodes\"\nchannel = \"stable\"\nkeys = [\"/k.pub\"]\n\
             [hypervisor]\nkind = \"qemu\"\n",
            state.display()
        );
        for (name, net, pool) in [
            ("lab", "44", lab_pool),
            ("dev", "45", "10.45.0.10-10.45.0.20"),
        ] {
            text.push_str(&format!(
                "[[clusters]]\nname = \"{name}\"\nkubernetes = \"1.32.10\"\n\
                 control-plane-endpoint = \"10.{net}.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
                 service-cidr = \"10.96.0.0/12\"\n\
                 network = {{ cidr = \"10.{net}.0.0/24\", gateway = \"10.{net}.0.1\", pool = \"{pool}\" }}\n"
            ));
        }
        for node in nodes.split_whitespace() {
            let (name, cluster) = node.split_once('@').unwrap_or((node, "lab"));
            let role = if name.contains("cp") {
                "control-plane"
            } else {
                "worker"
            };
            text.push_str(&format!(
                "[[nodes]]\nname = \"{name}\"\ncluster = \"{cluster}\"\nrole = \"{role}\"\n\
                 memory = \"1G\"\nstate-disk = \"1G\"\n"
            ));
        }
        HostConfig::parse(Path::new("host.toml"), &text).unwrap()
    }

    const POOL: &str = "10.44.0.10-10.44.0.50";

    #[test]
    fn each_generation_of_a_node_has_its_own_directory_hostname_and_mac() {
        let dir = tempfile::tempdir().unwrap();
        let config = host(dir.path(), POOL, "cp-1 worker-1");
        pass(&config).unwrap();
        let mut record = load_all(dir.path()).unwrap()["worker-1"].clone();
        assert_eq!(record.generation, 0, "a new node is generation 0");
        let own = run_dir(dir.path(), "worker-1", 0);
        assert_eq!(own, dir.path().join("nodes/worker-1"));
        let next = run_dir(dir.path(), "worker-1", 1);
        assert_eq!(next, own.join("gen-1"));
        assert_eq!(vm_dirs(dir.path(), "worker-1"), vec![own.clone()]);
        std::fs::create_dir(&next).unwrap();
        std::fs::create_dir(own.join("gen-x")).unwrap();
        assert_eq!(vm_dirs(dir.path(), "worker-1"), vec![own, next]);
        assert_eq!(generation_dir("gen-0"), None);
        // The seed of generation 1 names its own host; its MAC follows the hostname.
        record.generation = 1;
        let placed = record.placed(&config.nodes["worker-1"]);
        assert_eq!(placed.name, "worker-1-g1");
        assert_eq!(placed.address, record.address);
        assert_ne!(
            crate::seed::mac_address("lab", &placed.name),
            crate::seed::mac_address("lab", "worker-1")
        );
        // A replacement's reserved address is never given to a new node.
        let held: BTreeSet<Ipv4Addr> = ["10.44.0.10", "10.44.0.11"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let lab = &config.clusters["lab"];
        let free = free_address(lab, &held).unwrap();
        assert_eq!(free.to_string(), "10.44.0.12");
        let config = host(dir.path(), POOL, "cp-1 worker-1 worker-2");
        let records = load_all(dir.path()).unwrap();
        let init = initialisers(dir.path(), &config).unwrap();
        let plan = plan(&config, &records, &init, &BTreeSet::from([free])).unwrap();
        assert_eq!(plan.records[0].name.as_str(), "worker-2");
        assert_ne!(
            plan.records[0].address, free,
            "took a replacement's address"
        );
    }

    /// What the daemon does on each pass: load, plan, write the plan; returns the plan.
    fn pass(config: &HostConfig) -> Result<Plan, Error> {
        let state = &config.state_dir;
        let plan = plan(
            config,
            &load_all(state)?,
            &initialisers(state, config)?,
            &BTreeSet::new(),
        )?;
        // As the daemon does: the records first, so a crash between the two leaves records
        // from which the same initialiser is chosen again.
        for record in &plan.records {
            save(state, record)?;
        }
        for (cluster, node) in &plan.initialisers {
            record_initialiser(state, cluster, node)?;
        }
        Ok(plan)
    }

    fn addresses(state: &Path) -> Vec<(String, Ipv4Addr)> {
        load_all(state)
            .unwrap()
            .into_values()
            .map(|r| (r.name.to_string(), r.address))
            .collect()
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 44, 0, last)
    }

    fn name(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn three(state: &Path) -> HostConfig {
        host(state, POOL, "cp-1 worker-1 worker-2")
    }

    #[test]
    fn a_fresh_host_is_numbered_as_the_config_says() {
        let dir = tempfile::tempdir().unwrap();
        let config = three(dir.path());
        let plan = pass(&config).unwrap();
        assert_eq!(
            plan.initialisers,
            BTreeMap::from([("lab".into(), name("cp-1"))])
        );
        let records = load_all(dir.path()).unwrap();
        assert_eq!(plan.records, records.values().cloned().collect::<Vec<_>>());
        for node in config.nodes.values() {
            let record = &records[&node.name];
            assert_eq!(record.address, node.address, "{}", node.name);
            assert_eq!(record.mac, crate::seed::mac_address("lab", &node.name));
            assert_eq!(record.initialises, node.name == "cp-1");
            assert_eq!(record.image, None);
        }
        assert_eq!(initialiser(dir.path(), "lab").unwrap(), Some(name("cp-1")));
        assert_eq!(initialiser(dir.path(), "dev").unwrap(), None);
        let node_dir = dir.path().join("nodes/cp-1");
        let mode = std::fs::metadata(&node_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Idempotent: a second pass has nothing to write.
        assert!(pass(&config).unwrap().is_empty());
    }

    #[test]
    fn removing_the_middle_node_renumbers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        pass(&three(dir.path())).unwrap();
        let before = addresses(dir.path());
        let config = host(dir.path(), POOL, "cp-1 worker-2");
        // The config alone would move worker-2 into worker-1's address (the old bug).
        assert_eq!(config.nodes["worker-2"].address, ip(11));
        assert!(pass(&config).unwrap().is_empty());
        assert_eq!(addresses(dir.path()), before);
        assert_eq!(load_all(dir.path()).unwrap()["worker-2"].address, ip(12));
    }

    #[test]
    fn a_new_node_never_takes_an_address_in_use() {
        let dir = tempfile::tempdir().unwrap();
        pass(&three(dir.path())).unwrap();
        // worker-1 removed (its disks and record stay), worker-3 added: the config plans .12
        // for it (worker-2's), and .11 is still worker-1's.
        let config = host(dir.path(), POOL, "cp-1 worker-2 worker-3");
        assert_eq!(config.nodes["worker-3"].address, ip(12));
        let plan = pass(&config).unwrap();
        assert_eq!(plan.records.len(), 1);
        assert_eq!(
            (plan.records[0].name.as_str(), plan.records[0].address),
            ("worker-3", ip(13))
        );
        assert!(!plan.records[0].initialises);
        // worker-1 purged (its directory goes): its address is free for the next new node.
        std::fs::remove_dir_all(dir.path().join("nodes/worker-1")).unwrap();
        let config = host(dir.path(), POOL, "cp-1 worker-2 worker-3 worker-4");
        let plan = pass(&config).unwrap();
        assert_eq!(
            (plan.records[0].name.as_str(), plan.records[0].address),
            ("worker-4", ip(11))
        );
        let all = addresses(dir.path());
        let unique: BTreeSet<Ipv4Addr> = all.iter().map(|(_, a)| *a).collect();
        assert_eq!(unique.len(), all.len(), "one address per node: {all:?}");
    }

    #[test]
    fn a_new_node_whose_planned_address_is_free_keeps_it_even_after_one_that_moves() {
        let dir = tempfile::tempdir().unwrap();
        pass(&host(dir.path(), POOL, "cp-1 worker-1")).unwrap();
        // cp-0 declared first takes .10 in the config's plan, pushing cp-1 to .11, worker-1
        // to .12 and new worker-2 to .13; cp-0 must move, worker-2 keeps .13.
        let config = host(dir.path(), POOL, "cp-0 cp-1 worker-1 worker-2");
        pass(&config).unwrap();
        assert_eq!(
            addresses(dir.path()),
            [
                ("cp-0".to_owned(), ip(12)),
                ("cp-1".to_owned(), ip(10)),
                ("worker-1".to_owned(), ip(11)),
                ("worker-2".to_owned(), ip(13)),
            ]
        );
    }

    #[test]
    fn a_control_plane_node_added_later_never_initialises() {
        let dir = tempfile::tempdir().unwrap();
        pass(&three(dir.path())).unwrap();
        let config = host(dir.path(), POOL, "cp-0 cp-1 worker-1");
        let plan = pass(&config).unwrap();
        assert!(plan.initialisers.is_empty());
        let records = load_all(dir.path()).unwrap();
        assert!(!records["cp-0"].initialises);
        assert!(records["cp-1"].initialises);
        // Even with cp-1 removed from the config, the cluster stays initialised by it.
        let config = host(dir.path(), POOL, "cp-0");
        assert!(pass(&config).unwrap().is_empty());
        assert_eq!(initialiser(dir.path(), "lab").unwrap(), Some(name("cp-1")));
    }

    #[test]
    fn a_purged_initialiser_configured_again_joins() {
        let dir = tempfile::tempdir().unwrap();
        pass(&three(dir.path())).unwrap();
        // cp-1 leaves the config and is purged (its directory and record deleted).
        std::fs::remove_dir_all(dir.path().join("nodes/cp-1")).unwrap();
        pass(&host(dir.path(), POOL, "cp-2 worker-1")).unwrap();
        // Configured again: a fresh disk, and a JoinConfiguration, never a second init (on
        // this pass or any later one).
        let config = host(dir.path(), POOL, "cp-1 cp-2 worker-1");
        pass(&config).unwrap();
        assert!(
            pass(&config).unwrap().is_empty(),
            "a later pass rewrites a record"
        );
        let records = load_all(dir.path()).unwrap();
        assert!(!records["cp-1"].initialises, "a second kubeadm init");
        assert_eq!(initialiser(dir.path(), "lab").unwrap(), Some(name("cp-1")));
    }

    #[test]
    fn an_upgraded_host_picks_its_initialiser_among_recorded_nodes() {
        let dir = tempfile::tempdir().unwrap();
        // Records without an initialiser record: cp-1 and worker-1 booted before.
        for (n, last) in [("cp-1", 10), ("worker-1", 11)] {
            let record = NodeRecord {
                name: name(n),
                cluster: "lab".into(),
                image: None,
                address: ip(last),
                mac: crate::seed::mac_address("lab", n),
                initialises: false,
                generation: 0,
            };
            save(dir.path(), &record).unwrap();
        }
        let config = host(dir.path(), POOL, "cp-0 cp-1 worker-1");
        let plan = pass(&config).unwrap();
        assert_eq!(
            plan.initialisers,
            BTreeMap::from([("lab".into(), name("cp-1"))])
        );
        let records = load_all(dir.path()).unwrap();
        assert!(records["cp-1"].initialises, "its record is corrected");
        assert!(!records["cp-0"].initialises);
        assert_eq!(records["cp-0"].address, ip(12));
        assert!(pass(&config).unwrap().is_empty());
    }

    #[test]
    fn a_full_pool_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let pool = "10.44.0.10-10.44.0.12";
        pass(&host(dir.path(), pool, "cp-1 worker-1 worker-2")).unwrap();
        let config = host(dir.path(), pool, "cp-1 worker-2 worker-3");
        let e = pass(&config).unwrap_err();
        assert!(matches!(e, Error::ExhaustPool { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains(
                "cluster lab's pool 10.44.0.10-10.44.0.12 has no address left for node worker-3"
            ),
            "{message}"
        );
        assert!(!load_all(dir.path()).unwrap().contains_key("worker-3"));
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_file_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let config = three(dir.path());
        pass(&config).unwrap();
        let path = record_path(dir.path(), &name("worker-1"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("10.44.0.11", "10.44.0.99");
        std::fs::write(&path, &text).unwrap();
        let e = pass(&config).unwrap_err();
        assert!(
            matches!(e, Error::Persist(persist::Error::VerifyChecksum { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "not replaced"
        );
    }

    #[test]
    fn only_node_directories_with_their_own_record_count() {
        let dir = tempfile::tempdir().unwrap();
        pass(&three(dir.path())).unwrap();
        // A node directory from before records, and things that are no node's.
        std::fs::create_dir_all(dir.path().join("nodes/old-node")).unwrap();
        std::fs::create_dir_all(dir.path().join("nodes/.hidden")).unwrap();
        std::fs::write(dir.path().join("nodes/notes.txt"), "x").unwrap();
        assert_eq!(load_all(dir.path()).unwrap().len(), 3);
        // A record copied into another node's directory.
        std::fs::create_dir_all(dir.path().join("nodes/copy")).unwrap();
        std::fs::copy(
            record_path(dir.path(), &name("cp-1")),
            dir.path().join("nodes/copy/record"),
        )
        .unwrap();
        let e = load_all(dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::MatchName { found, .. } if found.as_str() == "cp-1"),
            "{e:?}"
        );
        assert!(e.to_string().contains("nodes/copy/record"), "{e}");
    }

    #[test]
    fn the_initialiser_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        record_initialiser(dir.path(), "lab", &name("cp-1")).unwrap();
        record_initialiser(dir.path(), "lab", &name("cp-1")).unwrap();
        let e = record_initialiser(dir.path(), "lab", &name("cp-0")).unwrap_err();
        assert!(matches!(e, Error::ChangeInitialiser { .. }), "{e:?}");
        assert_eq!(initialiser(dir.path(), "lab").unwrap(), Some(name("cp-1")));
        // A cluster's record copied to another cluster is refused.
        std::fs::create_dir_all(dir.path().join("clusters/dev")).unwrap();
        std::fs::copy(
            initialiser_path(dir.path(), "lab"),
            initialiser_path(dir.path(), "dev"),
        )
        .unwrap();
        let e = initialiser(dir.path(), "dev").unwrap_err();
        assert!(matches!(e, Error::MatchCluster { .. }), "{e:?}");
    }

    #[test]
    fn a_node_cannot_move_to_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        pass(&three(dir.path())).unwrap();
        let config = host(dir.path(), POOL, "cp-1 cp-9@dev worker-1@dev");
        let e = pass(&config).unwrap_err();
        assert!(matches!(e, Error::MoveCluster { .. }), "{e:?}");
        assert!(e.to_string().contains("slipwayd purge worker-1"), "{e}");
    }

    #[test]
    fn clusters_are_numbered_and_initialised_apart() {
        let dir = tempfile::tempdir().unwrap();
        let config = host(dir.path(), POOL, "cp-1 b-cp@dev a-worker@dev");
        let plan = pass(&config).unwrap();
        assert_eq!(
            plan.initialisers,
            BTreeMap::from([("dev".into(), name("b-cp")), ("lab".into(), name("cp-1"))])
        );
        let records = load_all(dir.path()).unwrap();
        assert_eq!(records["b-cp"].address, Ipv4Addr::new(10, 45, 0, 10));
        assert_eq!(records["a-worker"].address, Ipv4Addr::new(10, 45, 0, 11));
        assert_eq!(records["cp-1"].address, ip(10));
    }
}
