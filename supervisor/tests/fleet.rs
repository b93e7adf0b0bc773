//! One cluster spread over three hosts that share a real etcd cluster (Debian's etcd-server)
//! for their fleet lock slots. Each host is a network namespace with its own slipwayd, D-Bus
//! and state directory; the hosts are plugged into a "LAN" namespace (a plain bridge) by a
//! veth each, their uplink. Each host runs one node of cluster `lab` (cp-1 on hci-a,
//! worker-1 on hci-b, worker-2 on hci-c) on the cluster's bridge, joined over the uplink by
//! VXLAN 101 (this machine's kernel has no 802.1Q VLAN devices; the bridge, taps and hosts'
//! addresses are the same code either way; hci-a holds the gateway), and one etcd
//! member listens on each host's uplink address. One booted set of three VMs serves every
//! assertion:
//! - on v1, the workers reach the control plane and the gateway on other hosts (their beacons
//!   ping both), so all three are ready;
//! - v2 promoted: an observer sampling every host's status never sees more than
//!   max-unavailable (1) nodes of the cluster down, and cp-1 (hci-a) swaps before any worker
//!   on the other hosts starts;
//! - the slipwayd holding a slot is killed (SIGKILL) mid-swap: its slot frees within the
//!   lease's TTL with nobody deleting it, the other hosts start nothing while its node is
//!   unvouched for, and it resumes its node's swap when it comes back;
//! - every node is cordoned and drained through the cluster's API server before it stops (the
//!   FAKE API server of `examples/fake-apiserver.rs`, in hci-a's namespace on its uplink, with a
//!   certificate from the cluster CA: no real one can run here): a PodDisruptionBudget that
//!   allows no disruption blocks each worker's drain until its deadline, the policy (`force`)
//!   deletes the pod, DaemonSet pods are never evicted, and every node slipwayd cordoned, the
//!   killed host's too, ends uncordoned; the API's Ready condition gates each swap's commit;
//! - one etcd member is killed: the rollout goes on to the end;
//! - a second member is killed (no quorum) and v1 promoted again: no new swap starts, and
//!   every host says why.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod scenario;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use scenario::*;

const V2: &str = "2026.12.0";
/// The lease's time to live: how long a dead host's slots outlive it.
const TTL: u64 = 4;
/// How long a drain retries evictions before its policy (`force`) acts.
const DRAIN_DEADLINE: u64 = 4;
/// Where the FAKE API server listens: hci-a's uplink.
const API: &str = "192.168.77.1:6443";

/// The world the FAKE API server serves: the three nodes, Ready; on each worker a pod of a
/// ReplicaSet under a PodDisruptionBudget that allows no disruption (minAvailable 2 of 2) and
/// a DaemonSet's pod.
const WORLD: &str = r#"{
  "nodes": [{"name": "cp-1", "roles": ["control-plane"]}, {"name": "worker-1"}, {"name": "worker-2"}],
  "pods": [
    {"namespace": "shop", "name": "web-1", "node": "worker-1", "owner": ["ReplicaSet", "web"], "labels": {"app": "web"}},
    {"namespace": "shop", "name": "web-2", "node": "worker-2", "owner": ["ReplicaSet", "web"], "labels": {"app": "web"}},
    {"namespace": "kube-system", "name": "proxy-1", "node": "worker-1", "owner": ["DaemonSet", "kube-proxy"]},
    {"namespace": "kube-system", "name": "proxy-2", "node": "worker-2", "owner": ["DaemonSet", "kube-proxy"]}
  ],
  "pdbs": [{"namespace": "shop", "name": "web", "selector": {"app": "web"}, "minAvailable": 2}]
}"#;

/// `examples/fake-apiserver` (built by `cargo test` with the other targets).
fn fake_apiserver() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_slipwayd"))
        .parent()
        .unwrap()
        .join("examples/fake-apiserver");
    assert!(
        path.exists(),
        "{} is missing: cargo build -p supervisor --example fake-apiserver (cargo test builds it)",
        path.display()
    );
    path
}

/// A host: its name, its node and role, its part of the cluster's address pool, and its
/// address on the LAN.
struct HostSpec {
    name: &'static str,
    node: &'static str,
    role: &'static str,
    pool: &'static str,
    uplink: &'static str,
}

const HOSTS: [HostSpec; 3] = [
    HostSpec {
        name: "hci-a",
        node: "cp-1",
        role: "control-plane",
        pool: "10.44.0.10-10.44.0.19",
        uplink: "192.168.77.1",
    },
    HostSpec {
        name: "hci-b",
        node: "worker-1",
        role: "worker",
        pool: "10.44.0.20-10.44.0.29",
        uplink: "192.168.77.2",
    },
    HostSpec {
        name: "hci-c",
        node: "worker-2",
        role: "worker",
        pool: "10.44.0.30-10.44.0.39",
        uplink: "192.168.77.3",
    },
];

/// A host as the test runs it.
struct Host {
    spec: &'static HostSpec,
    dir: PathBuf,
    netns: tests::netns::Netns,
    bus: tests::dbus::Bus,
    supervisor: Option<Supervisor>,
    etcd: Option<Child>,
    _down: Down,
}

impl Host {
    fn bus(&self) -> &str {
        &self.bus.address
    }

    fn start(&mut self, log: &str) {
        self.supervisor = Some(Supervisor::start(
            &self.dir,
            &self.bus.address,
            log,
            Some(&self.netns),
        ));
    }

    fn status(&self) -> Option<Value> {
        status(&self.dir, self.bus())
    }

    fn rollout(&self) -> Option<Value> {
        let out = slipwayd(
            &self.dir,
            &["rollout", "status", "--json", "--bus", self.bus()],
        );
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Asks it to pull now (as a pass every minute would).
    fn hangup(&self) {
        let pid = self.supervisor.as_ref().unwrap().pid();
        ok(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .output()
            .unwrap());
    }

    fn kill_etcd(&mut self) {
        if let Some(mut child) = self.etcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_etcd();
    }
}

/// A child killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The etcd member of host `index`, on its uplink address.
fn etcd(d: &Path, host: &tests::netns::Netns, index: usize) -> Child {
    let name = |i: usize| format!("m{i}");
    let initial: Vec<String> = HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{}=http://{}:2380", name(i), h.uplink))
        .collect();
    let address = HOSTS[index].uplink;
    let log = std::fs::File::create(d.join(format!("etcd-{index}.log"))).unwrap();
    host.command("etcd")
        .args(["--name", &name(index)])
        .arg("--data-dir")
        .arg(d.join(format!("etcd-{index}")))
        .args(["--listen-client-urls", &format!("http://{address}:2379")])
        .args(["--advertise-client-urls", &format!("http://{address}:2379")])
        .args(["--listen-peer-urls", &format!("http://{address}:2380")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://{address}:2380"),
        ])
        .args(["--initial-cluster", &initial.join(",")])
        .args(["--initial-cluster-state", "new"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd runs (Debian package etcd-server; ./scripts/setup installs it)")
}

/// Host `index`'s host.toml: its node alone, the cluster bridged over its uplink, the fleet
/// in the three etcd members.
fn host_toml(index: usize, state: &Path, store: &str, key: &Path, api: &str) -> String {
    let spec = &HOSTS[index];
    let endpoints: Vec<String> = HOSTS
        .iter()
        .map(|h| format!("\"http://{}:2379\"", h.uplink))
        .collect();
    // The gateway (the cluster's router) is hci-a's; the other hosts have an address of their
    // own on the cluster's network.
    let host_address = format!("10.44.0.{}", 1 + index);
    format!(
        r#"format = 1

[host]
name = "{name}"
state-dir = "{state}"

[source]
reference = "{store}"
channel = "stable"
keys = ["{key}"]

[hypervisor]
kind = "qemu"
accel = "tcg"

[fleet]
backend = "etcd"
endpoints = [{endpoints}]
ttl = "{TTL}s"
request-timeout = "1s"

[[clusters]]
name = "lab"
kubernetes = "1.32.10"
control-plane-endpoint = "10.44.0.10:6443"
pod-cidr = "10.244.0.0/16"
service-cidr = "10.96.0.0/12"
network = {{ cidr = "10.44.0.0/24", gateway = "10.44.0.1", pool = "{pool}", uplink = "uplink", vxlan = 101, host-address = "{host_address}" }}

[clusters.rollout]
max-unavailable = 1
boot-deadline = "90s"
soak = "6s"

[clusters.kube]
api = "{api}"
drain-deadline = "{DRAIN_DEADLINE}s"
on-deadline = "force"

[[nodes]]
name = "{node}"
cluster = "lab"
role = "{role}"
memory = "512M"
state-disk = "8G"
"#,
        name = spec.name,
        state = state.display(),
        key = key.display(),
        endpoints = endpoints.join(", "),
        pool = spec.pool,
        node = spec.node,
        role = spec.role,
    )
}

/// The state of node `name` in a host's status, if it lists it.
fn state_of(status: &Value, name: &str) -> Option<String> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)?["state"]
        .as_str()
        .map(str::to_owned)
}

/// Every host's view of its own node: `Some(state)`, or None while its slipwayd is down (or
/// does not list the node yet).
fn sample(hosts: &[Host]) -> Vec<(String, Option<String>)> {
    hosts
        .iter()
        .map(|h| {
            let state = h.status().and_then(|s| state_of(&s, h.spec.node));
            (h.spec.node.to_owned(), state)
        })
        .collect()
}

/// The nodes a sample counts as down: not serving, or unknown (its host's slipwayd is not
/// answering: nothing says the node is up). A node whose beacon says only that it cannot reach
/// the control-plane endpoint (`unreachable`: its control plane is the one swapping) runs and
/// serves: it is not down.
fn down(sample: &[(String, Option<String>)]) -> Vec<String> {
    sample
        .iter()
        .filter(|(_, s)| !matches!(s.as_deref(), Some("ready" | "unreachable")))
        .map(|(n, s)| format!("{n} ({})", s.as_deref().unwrap_or("host silent")))
        .collect()
}

/// Polls until `done` holds for the three hosts' rollouts (None for a silent host).
fn wait_rollouts(
    hosts: &[Host],
    limit: Duration,
    what: &str,
    done: impl Fn(&[Option<Value>]) -> bool,
) -> Vec<Option<Value>> {
    let start = Instant::now();
    loop {
        let rollouts: Vec<Option<Value>> = hosts.iter().map(Host::rollout).collect();
        if done(&rollouts) {
            return rollouts;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last rollouts {rollouts:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether a rollout step is a swap in flight (not none, nor the last swap's end).
fn in_flight(step: &str) -> bool {
    !matches!(step, "" | "committed" | "rolled-back")
}

/// The step of the host's node in its rollout answer ("" when it does not swap).
fn step(rollout: &Value, node: &str) -> String {
    lab(rollout)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| n["step"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_cluster_spread_over_three_hosts_never_has_more_than_max_unavailable_nodes_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lan = tests::netns::Lan::create();
    let store = format!("oci:{}", d.join("store").display());
    build_and_push(d, &store, &lan.netns, GOOD, Variant::Good);
    build_and_push(d, &store, &lan.netns, V2, Variant::Changed);
    promote(d, &store, GOOD, &lan.netns);

    let mut hosts: Vec<Host> = Vec::new();
    for (index, spec) in HOSTS.iter().enumerate() {
        let host_dir = d.join(spec.name);
        std::fs::create_dir_all(&host_dir).unwrap();
        let netns = tests::netns::Netns::create();
        lan.join(&netns, "uplink", &format!("{}/24", spec.uplink));
        let state = host_dir.join("state");
        let toml = host_toml(
            index,
            &state,
            &store,
            &d.join("release.key.pub"),
            &format!("https://{API}"),
        );
        std::fs::write(host_dir.join("host.toml"), toml).unwrap();
        let etcd = etcd(d, &netns, index);
        hosts.push(Host {
            spec,
            _down: Down(host_dir.clone()),
            dir: host_dir,
            netns,
            bus: tests::dbus::Bus::start(),
            supervisor: None,
            etcd: Some(etcd),
        });
    }
    // hci-a makes the cluster's PKI (`slipwayd seed`); the others get a copy before their
    // first start, as an operator copies it (README: clusters across hosts).
    let pki = |h: &Host| h.dir.join("state/clusters/lab/pki");
    ok(slipwayd(&hosts[0].dir, &["seed", "--config", "host.toml"]));
    for host in &hosts[1..] {
        std::fs::create_dir_all(pki(host).parent().unwrap()).unwrap();
        ok(Command::new("cp")
            .arg("-a")
            .arg(pki(&hosts[0]))
            .arg(pki(host))
            .output()
            .unwrap());
    }
    // The FAKE API server, with a serving certificate from that CA.
    std::fs::write(d.join("world.json"), WORLD).unwrap();
    let requests = d.join("kube.jsonl");
    let mut fake = hosts[0]
        .netns
        .command(fake_apiserver())
        .arg("--ca-cert")
        .arg(pki(&hosts[0]).join("ca.crt"))
        .arg("--ca-key")
        .arg(pki(&hosts[0]).join("ca.key"))
        .arg("--world")
        .arg(d.join("world.json"))
        .arg("--log")
        .arg(&requests)
        .args(["--listen", API])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fake.stdout.take().unwrap()),
        &mut url,
    )
    .unwrap();
    assert_eq!(
        url.trim(),
        format!("https://{API}"),
        "the fake API server's URL"
    );
    let _fake = KillOnDrop(fake);
    hosts[0].start("run-a.log");
    hosts[1].start("run-b.log");
    hosts[2].start("run-c.log");
    let start = Instant::now();
    while !down(&sample(&hosts)).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(400),
            "three nodes ready on v1: {:?}",
            sample(&hosts)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The observer: every host's status, sampled until the end of the test.
    let observer_hosts: Vec<(PathBuf, String, &'static str)> = hosts
        .iter()
        .map(|h| (h.dir.clone(), h.bus().to_owned(), h.spec.node))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let worst: Arc<Mutex<Vec<String>>> = Arc::default();
    let observer = {
        let (stop, worst) = (Arc::clone(&stop), Arc::clone(&worst));
        std::thread::spawn(move || {
            let mut samples = 0u32;
            let began = Instant::now();
            let mut last: Vec<String> = Vec::new();
            let mut order: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let seen: Vec<(String, Option<String>)> = observer_hosts
                    .iter()
                    .map(|(dir, bus, node_name)| {
                        let state = status(dir, bus).and_then(|s| state_of(&s, node_name));
                        ((*node_name).to_owned(), state)
                    })
                    .collect();
                let now_down = down(&seen);
                for (node, state) in &seen {
                    if state.as_deref() == Some("swapping") && !order.contains(node) {
                        order.push(node.clone());
                    }
                }
                if now_down != last {
                    eprintln!(
                        "observer +{:.1}s: down {now_down:?}",
                        began.elapsed().as_secs_f64()
                    );
                    last.clone_from(&now_down);
                }
                let mut worst = worst.lock().unwrap();
                if now_down.len() > worst.len() {
                    *worst = now_down;
                }
                samples += 1;
            }
            (samples, order)
        })
    };

    // v2: the first worker's host seen verifying its swap is killed mid-swap.
    promote(d, &store, V2, &lan.netns);
    for host in &hosts {
        host.hangup();
    }
    let verifying = |r: &[Option<Value>]| {
        r.iter().zip(&hosts).position(|(r, h)| {
            h.spec.role == "worker"
                && r.as_ref()
                    .is_some_and(|r| step(r, h.spec.node) == "verifying")
        })
    };
    let rollouts = wait_rollouts(
        &hosts,
        Duration::from_secs(300),
        "a worker's swap verifying",
        |r| verifying(r).is_some(),
    );
    let victim = verifying(&rollouts).unwrap();
    let holder = |r: &Value| {
        lab(r)["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["host"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let witness = (victim + 1) % hosts.len();
    wait_rollouts(
        &hosts[witness..=witness],
        Duration::from_secs(10),
        "the swapping host seen holding the one slot",
        |r| {
            r[0].as_ref()
                .is_some_and(|r| holder(r) == [HOSTS[victim].name])
        },
    );
    hosts[victim].supervisor.take().unwrap().kill();
    let killed = Instant::now();
    // Its slot frees itself within the TTL (and the 2 s between reads of the witness; 7.8 s
    // measured on a loaded 2-core machine with a 4 s TTL).
    wait_rollouts(
        &hosts[witness..=witness],
        Duration::from_secs(TTL + 8),
        "the dead holder's slot freed",
        |r| r[0].as_ref().is_some_and(|r| holder(r).is_empty()),
    );
    eprintln!(
        "the dead holder's slot was free {:.1} s after the kill (TTL {TTL} s)",
        killed.elapsed().as_secs_f64()
    );
    // Its node, unvouched for, still counts: nobody else starts while it is away.
    std::thread::sleep(Duration::from_secs(8));
    for (i, host) in hosts.iter().enumerate().filter(|(i, _)| *i != victim) {
        let r = host.rollout().unwrap();
        assert!(
            !in_flight(&step(&r, host.spec.node)),
            "host {i} started a swap while {} was away: {r:#}",
            HOSTS[victim].name
        );
    }
    hosts[victim].start("run-victim-again.log");

    // One etcd member down: the rollout goes on.
    let member = (victim + 2) % hosts.len();
    hosts[member].kill_etcd();
    let rolled = wait_rollouts(&hosts, Duration::from_secs(600), "v2 everywhere", |r| {
        r.iter()
            .all(|r| r.as_ref().is_some_and(|r| lab(r)["state"] == "done"))
    });
    for (r, host) in rolled.iter().zip(&hosts) {
        let r = r.as_ref().unwrap();
        let node = lab(r)["nodes"][0].clone();
        assert!(
            node["current"].as_str().unwrap().ends_with(V2),
            "{}: {r:#}",
            host.spec.name
        );
    }
    check_drains(&std::fs::read_to_string(&requests).unwrap());
    let victim_log =
        std::fs::read_to_string(hosts[victim].dir.join("run-victim-again.log")).unwrap();
    assert!(
        victim_log.contains("resuming the swaps the rollout journal holds"),
        "the killed host resumed its swap: {victim_log}"
    );

    // Quorum lost: v1 promoted again starts nothing, and each host says why.
    let second = (member + 1) % hosts.len();
    hosts[second].kill_etcd();
    promote(d, &store, GOOD, &lan.netns);
    for host in &hosts {
        host.hangup();
    }
    std::thread::sleep(Duration::from_secs(20));
    for host in &hosts {
        let r = host.rollout().unwrap();
        assert!(
            !in_flight(&step(&r, host.spec.node)),
            "{}: a swap started without quorum: {r:#}",
            host.spec.name
        );
        // The plan itself says the store stopped it (not only the status's fleet problem).
        let reason = lab(&r)["reason"].as_str().unwrap();
        assert_eq!(lab(&r)["state"], "waiting", "{}: {r:#}", host.spec.name);
        assert!(reason.contains("fleet"), "{}: {r:#}", host.spec.name);
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, order) = observer.join().unwrap();
    // Control planes first, across hosts too (kubeadm upgrades need it).
    assert_eq!(
        order.first().map(String::as_str),
        Some("cp-1"),
        "the order nodes swapped in: {order:?}"
    );
    let worst = worst.lock().unwrap().clone();
    eprintln!(
        "observer: {samples} samples, at most {} down at once: {worst:?}",
        worst.len()
    );
    assert!(samples > 50, "the observer sampled too little: {samples}");
    assert!(
        worst.len() <= 1,
        "more than max-unavailable down at once: {worst:?}"
    );
    assert_eq!(worst.len(), 1, "the observer never saw a swap");
}

/// What slipwayd asked of the API server, as the fake logged it: each worker cordoned, its
/// web pod's evictions refused (429: the budget) until the drain deadline, then deleted
/// (`force`); no DaemonSet pod touched; every node it cordoned uncordoned last.
fn check_drains(log: &str) {
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |what: &str, key: &str, name: &str| {
        lines
            .iter()
            .filter(|l| l["what"] == what && l[key] == name)
            .count()
    };
    for (worker, pod) in [("worker-1", "shop/web-1"), ("worker-2", "shop/web-2")] {
        assert!(
            of("cordon", "node", worker) >= 1,
            "{worker} never cordoned: {log}"
        );
        let refused = lines
            .iter()
            .filter(|l| l["what"] == "evict" && l["pod"] == pod && l["code"] == 429)
            .count();
        assert!(
            refused >= 1,
            "{pod}: no eviction refused by its budget: {log}"
        );
        assert_eq!(
            of("delete", "pod", pod),
            1,
            "{pod}: force deletes it once: {log}"
        );
    }
    for pod in ["kube-system/proxy-1", "kube-system/proxy-2"] {
        assert_eq!(
            of("evict", "pod", pod) + of("delete", "pod", pod),
            0,
            "{pod}: {log}"
        );
    }
    for node in ["cp-1", "worker-1", "worker-2"] {
        let last = lines
            .iter()
            .rev()
            .find(|l| l["node"] == node && (l["what"] == "cordon" || l["what"] == "uncordon"))
            .unwrap_or_else(|| panic!("{node} was never cordoned: {log}"));
        assert_eq!(last["what"], "uncordon", "{node} left cordoned: {log}");
    }
}
