//! The bridged node network, run for real inside network namespaces this test makes (root
//! only; skipped with the reason printed otherwise). Nothing is made in the namespace the test
//! runs in: every `ip` command runs with `-n NS`, and the namespaces go when the test ends,
//! even on failure.
//!
//! The model: a "LAN" namespace holding a plain bridge, three "host" namespaces each joined to
//! it by a veth pair whose host end is that host's uplink (`up0`), and two clusters spread over
//! hosts A and B, each with a node on both. The bridges, segments (VLAN or VXLAN), host
//! addresses and taps are made by the production code ([`Bridge::ensure`],
//! [`Bridge::ensure_tap`]) run in each host namespace. No VM boots: a node VM's NIC is stood in
//! for by a veth pair, one end in a namespace of the node's own (holding its address) and the
//! other joined to the production bridge by the production [`Bridge::attach`], where the VM's
//! tap would be. The production taps are made too (and must be ports of the bridge), but carry
//! nothing without a VM.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use super::bridge::{bridge_name, vxlan_group};
use super::*;
use crate::config::Segment;

/// The namespaces a test made; deleted when dropped, whether the test passed or not.
struct Namespaces {
    names: Vec<String>,
    prefix: String,
}

impl Namespaces {
    fn new(tag: &str) -> Namespaces {
        Namespaces {
            names: Vec::new(),
            prefix: format!("slwn{}{tag}", std::process::id()),
        }
    }

    fn add(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        sh(&["ip", "netns", "add", &full]);
        self.names.push(full.clone());
        sh(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        full
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs a command that must succeed.
fn sh(args: &[&str]) -> String {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Why this test cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("ping", "iputils-ping")] {
        let found = Command::new(tool).arg("-V").output().is_ok();
        if !found {
            return Some(format!("no `{tool}` (Debian package {package})"));
        }
    }
    None
}

/// Whether this kernel makes VLAN devices (CONFIG_VLAN_8021Q), asked in a namespace of its own.
fn kernel_has_vlans() -> bool {
    let mut spaces = Namespaces::new("probe");
    let ns = spaces.add("vlan");
    sh(&[
        "ip", "-n", &ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]);
    Command::new("ip")
        .args(["-n", &ns, "link", "add", "link", "p0", "name", "p0.7"])
        .args(["type", "vlan", "id", "7"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether namespace `from` gets an answer from `to` (one ping of 1 s, `tries` times).
fn pings(from: &str, to: Ipv4Addr, tries: u32) -> bool {
    (0..tries).any(|_| {
        let to = to.to_string();
        Command::new("ip")
            .args(["netns", "exec", from, "ping", "-n", "-q", "-c1", "-W1", &to])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// What must not change when setup runs again: each device by name with its index (a device
/// made again gets a new one), bridge, kind and segment id, and its IPv4 addresses.
type Snapshot = Vec<(
    String,
    u32,
    Option<String>,
    String,
    Option<u64>,
    Vec<(Ipv4Addr, u8)>,
)>;

fn snapshot(ip: &Ip) -> Snapshot {
    let mut links: Snapshot = ip
        .links()
        .unwrap()
        .into_iter()
        .map(|l| {
            let id = l.data("id").and_then(serde_json::Value::as_u64);
            let addresses = ip.ipv4_addresses(&l.ifname).unwrap();
            (
                l.ifname.clone(),
                l.ifindex,
                l.master.clone(),
                l.kind().to_owned(),
                id,
                addresses,
            )
        })
        .collect();
    links.sort();
    links
}

const HOSTS: [&str; 3] = ["a", "b", "c"];

fn cluster(name: &str, segment: Segment, net: u8, host: u8) -> Bridge {
    Bridge {
        cluster: name.to_owned(),
        uplink: "up0".into(),
        segment,
        address: Ipv4Addr::new(10, net, 0, host),
        prefix: 24,
    }
}

/// The clusters of host `h` (0, 1, 2): cluster one on 10.44.0.0/24 (host C holds its gateway
/// 10.44.0.1, A and B addresses of their own), cluster two on 10.45.0.0/24.
fn clusters(h: usize, one: Segment, two: Segment) -> [Bridge; 2] {
    let own = [2, 3, 1][h];
    [
        cluster("one", one, 44, own),
        cluster("two", two, 45, [2, 3, 4][h]),
    ]
}

/// A node VM stood in for: a veth pair, `eth0` in a namespace of the node's own with
/// `addresses`, the other end joined to `bridge` in `host` (where the VM's tap would be).
fn node(
    spaces: &mut Namespaces,
    name: &str,
    host: &str,
    bridge: &Bridge,
    addresses: &[&str],
) -> String {
    let ns = spaces.add(name);
    let port = format!("v-{name}");
    sh(&[
        "ip", "-n", host, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
        &ns,
    ]);
    bridge.attach(&Ip::in_netns(host), &port).unwrap();
    for address in addresses {
        sh(&["ip", "-n", &ns, "address", "add", address, "dev", "eth0"]);
    }
    sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    ns
}

/// The production setup of host `h`: both clusters' bridges, and a tap for each of the
/// cluster's VMs on it (hosts A and B run one node of each cluster).
fn set_up(host: &str, h: usize, one: Segment, two: Segment) {
    let ip = Ip::in_netns(host);
    for bridge in clusters(h, one, two) {
        bridge.ensure(&ip).unwrap();
        if h < 2 {
            let dir = format!("/var/lib/slipway/nodes/{}-{}", bridge.cluster, HOSTS[h]);
            let tap = tap_name(Path::new(&dir));
            bridge.ensure_tap(&ip, &tap, "nobody", &dir).unwrap();
        }
    }
}

fn two_clusters_over_three_hosts(tag: &str, one: Segment, two: Segment) {
    let mut spaces = Namespaces::new(tag);
    let lan = spaces.add("lan");
    sh(&["ip", "-n", &lan, "link", "add", "lan", "type", "bridge"]);
    sh(&["ip", "-n", &lan, "link", "set", "lan", "up"]);
    let mut hosts = Vec::new();
    for (h, name) in HOSTS.iter().enumerate() {
        let host = spaces.add(name);
        let port = format!("lan-{name}");
        sh(&[
            "ip", "-n", &lan, "link", "add", &port, "type", "veth", "peer", "name", "up0", "netns",
            &host,
        ]);
        sh(&[
            "ip", "-n", &lan, "link", "set", &port, "master", "lan", "up",
        ]);
        // The hosts' own addresses on their LAN (VXLAN rides on them; a VLAN needs none).
        let underlay = format!("192.168.77.{}/24", h + 1);
        sh(&["ip", "-n", &host, "address", "add", &underlay, "dev", "up0"]);
        set_up(&host, h, one, two);
        hosts.push(host);
    }
    let [a_one, a_two] = clusters(0, one, two);
    let [b_one, b_two] = clusters(1, one, two);
    // Cluster two's nodes also hold addresses in cluster one's subnet: were the segments not
    // apart, cluster one's node would reach them without any routing.
    let node_a1 = node(&mut spaces, "a1", &hosts[0], &a_one, &["10.44.0.10/24"]);
    let node_b1 = node(&mut spaces, "b1", &hosts[1], &b_one, &["10.44.0.11/24"]);
    let node_a2 = node(
        &mut spaces,
        "a2",
        &hosts[0],
        &a_two,
        &["10.45.0.10/24", "10.44.0.20/24"],
    );
    let node_b2 = node(
        &mut spaces,
        "b2",
        &hosts[1],
        &b_two,
        &["10.45.0.11/24", "10.44.0.21/24"],
    );
    let ip = |o: [u8; 4]| Ipv4Addr::from(o);

    // One cluster over hosts: its nodes on A and B reach each other, their hosts, and the
    // gateway that host C holds.
    assert!(
        pings(&node_a1, ip([10, 44, 0, 11]), 5),
        "cluster one: A's node cannot reach B's"
    );
    assert!(
        pings(&node_b1, ip([10, 44, 0, 10]), 5),
        "cluster one: B's node cannot reach A's"
    );
    assert!(
        pings(&node_a1, ip([10, 44, 0, 1]), 5),
        "cluster one: A's node cannot reach the gateway on host C"
    );
    assert!(
        pings(&node_b1, ip([10, 44, 0, 2]), 5),
        "cluster one: B's node cannot reach host A"
    );
    assert!(
        pings(&node_a2, ip([10, 45, 0, 11]), 5),
        "cluster two: A's node cannot reach B's"
    );
    // Cluster two's extra addresses work on its own segment...
    assert!(
        pings(&node_b2, ip([10, 44, 0, 20]), 5),
        "cluster two: its nodes' second addresses do not answer"
    );
    // ...and never across: not on the same host, not on another, not either way.
    for (from, to) in [
        (&node_a1, [10, 44, 0, 20]),
        (&node_a1, [10, 44, 0, 21]),
        (&node_b1, [10, 44, 0, 20]),
        (&node_a2, [10, 44, 0, 10]),
        (&node_b2, [10, 44, 0, 11]),
    ] {
        assert!(
            !pings(from, ip(to), 1),
            "{from} reached {to:?} in the other cluster"
        );
    }

    // The production taps are ports of their cluster's bridge, made for the VM user.
    for (h, host) in hosts.iter().enumerate().take(2) {
        for bridge in clusters(h, one, two) {
            let dir = format!("/var/lib/slipway/nodes/{}-{}", bridge.cluster, HOSTS[h]);
            let tap = Ip::in_netns(host)
                .link(&tap_name(Path::new(&dir)))
                .unwrap()
                .unwrap();
            assert_eq!(tap.master.as_deref(), Some(bridge.name().as_str()));
            assert_eq!(tap.data("user").and_then(|u| u.as_str()), Some("nobody"));
        }
    }

    // Setup again (a restarted slipwayd) changes nothing, and the nodes still reach.
    for (h, host) in hosts.iter().enumerate() {
        let before = snapshot(&Ip::in_netns(host));
        set_up(host, h, one, two);
        assert_eq!(
            snapshot(&Ip::in_netns(host)),
            before,
            "setup run again on host {}",
            HOSTS[h]
        );
    }
    assert!(
        pings(&node_a1, ip([10, 44, 0, 11]), 5),
        "after setup ran again"
    );

    // A changed host address replaces the old one rather than adding to it.
    let host_a = Ip::in_netns(&hosts[0]);
    let mut moved = a_one.clone();
    moved.address = ip([10, 44, 0, 5]);
    moved.ensure(&host_a).unwrap();
    assert_eq!(
        host_a.ipv4_addresses(&moved.name()).unwrap(),
        [(ip([10, 44, 0, 5]), 24)]
    );
    assert!(
        pings(&node_b1, ip([10, 44, 0, 5]), 5),
        "host A's new address"
    );

    // Errors: a missing uplink; a device of a derived name that is not ours.
    let mut lost = a_one.clone();
    lost.uplink = "eth9".into();
    let e = lost.ensure(&host_a).unwrap_err();
    assert!(matches!(e, Error::FindUplink { .. }), "{e}");
    assert!(e.to_string().contains("uplink eth9 does not exist"), "{e}");
    let e = a_one
        .ensure_tap(&host_a, "v-a1", "nobody", "x")
        .unwrap_err();
    assert!(matches!(e, Error::ForeignDevice { .. }), "{e}");
    assert!(e.to_string().contains("a veth device named v-a1"), "{e}");

    // A stopped VM's tap goes, once; the network's teardown leaves the uplink.
    let tap = tap_name(Path::new("/var/lib/slipway/nodes/one-a"));
    remove_tap(&host_a, &tap).unwrap();
    assert!(host_a.link(&tap).unwrap().is_none());
    remove_tap(&host_a, &tap).unwrap();
    remove_tap(&host_a, "v-a1").unwrap();
    assert!(
        host_a.link("v-a1").unwrap().is_some(),
        "a veth is no tap: it stays"
    );
    tear_down(&host_a, "two").unwrap();
    assert!(host_a.link(&a_two.name()).unwrap().is_none());
    assert!(host_a.link(&a_two.segment_device()).unwrap().is_none());
    assert!(host_a.link("up0").unwrap().is_some());
    assert!(
        host_a.link(&a_one.segment_device()).unwrap().is_some(),
        "cluster one's segment stays"
    );
    tear_down(&host_a, "two").unwrap();
}

#[test]
fn vxlan_keeps_clusters_apart_and_joins_a_cluster_over_hosts() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    two_clusters_over_three_hosts("x", Segment::Vxlan(101), Segment::Vxlan(102));
}

#[test]
fn vlans_keep_clusters_apart_and_join_a_cluster_over_hosts() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    if !kernel_has_vlans() {
        eprintln!(
            "skipped: this kernel makes no VLAN devices (CONFIG_VLAN_8021Q is off): `ip link add ... type vlan` says \"Unknown device type\""
        );
        return;
    }
    two_clusters_over_three_hosts("v", Segment::Vlan(101), Segment::Vlan(102));
}

#[test]
fn device_names_fit_the_kernel_and_differ() {
    let a = bridge_name("lab");
    assert_eq!(a.len(), 12);
    assert_ne!(a, bridge_name("lab2"));
    let tap = tap_name(Path::new("/var/lib/slipway/nodes/worker-1"));
    assert!(tap.starts_with("slwt") && tap.len() <= 15, "{tap}");
    assert_ne!(
        tap,
        tap_name(Path::new("/var/lib/slipway/nodes/worker-1/gen-1"))
    );
    // Never Linux's own UPLINK.VLAN name: the host may use that device for itself.
    let mut b = cluster("lab", Segment::Vlan(4094), 44, 2);
    let short = b.segment_device();
    assert!(short.starts_with("slwv") && short.len() <= 15, "{short}");
    b.uplink = "enp129s0f1np1".into();
    let long = b.segment_device();
    assert!(long.starts_with("slwv") && long.len() <= 15, "{long}");
    assert_ne!(short, long);
    b.segment = Segment::Vxlan(16_777_215);
    assert_eq!(b.segment_device(), "slwx16777215");
    assert_eq!(vxlan_group(0x01_02_03), Ipv4Addr::new(239, 1, 2, 3));
}
