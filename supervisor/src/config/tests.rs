//! host.toml: the example parses into the expected plan; each kind of mistake is located.

use std::net::Ipv4Addr;
use std::path::Path;

use super::*;

const EXAMPLE: &str = include_str!("../../examples/host.toml");

/// Asserts that the example with `network` replaced by `to` (which holds the line `bad`) is
/// refused with `expected`, located at `at` within `bad`.
fn refused_at(network: &str, to: &str, bad: &str, at: &str, expected: &str) {
    let message = edited(network, to).expect_err(bad).to_string();
    assert!(message.contains(expected), "{bad}: {message}");
    let text = EXAMPLE.replacen(network, to, 1);
    let offset = text.find(bad).unwrap() + bad.find(at).unwrap();
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert!(
        message.starts_with(&format!("host.toml:{line}:{column}: ")),
        "{bad}: {message}"
    );
}

fn edited(from: &str, to: &str) -> Result<HostConfig, Error> {
    assert_eq!(EXAMPLE.matches(from).count(), 1, "{from:?} must occur once");
    HostConfig::parse(Path::new("host.toml"), &EXAMPLE.replacen(from, to, 1))
}

/// The error text, checked to start at the first occurrence of `at` in the edited text.
fn error_at(from: &str, to: &str, at: &str) -> String {
    let message = edited(from, to).expect_err("must be refused").to_string();
    let text = EXAMPLE.replacen(from, to, 1);
    let offset = text.find(at).expect("marker");
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert!(
        message.starts_with(&format!("host.toml:{line}:{column}: ")),
        "expected {line}:{column} in {message:?}"
    );
    message
}

#[test]
fn the_example_is_a_plan_with_addresses() {
    let config = HostConfig::parse(Path::new("host.toml"), EXAMPLE).unwrap();
    assert_eq!(config.name, "hci-01");
    assert_eq!(config.hypervisor, Hypervisor::Qemu(Accel::Auto));
    assert_eq!(config.vm_user, "slipway-vm");
    let lab = &config.clusters["lab"];
    assert_eq!(lab.network.to_string(), "10.44.0.0/24");
    let addresses: Vec<(&str, Ipv4Addr, Role)> = config
        .nodes
        .values()
        .map(|n| (n.name.as_str(), n.address, n.role))
        .collect();
    assert_eq!(
        addresses,
        [
            ("cp-1", Ipv4Addr::new(10, 44, 0, 10), Role::ControlPlane),
            ("worker-1", Ipv4Addr::new(10, 44, 0, 11), Role::Worker),
            ("worker-2", Ipv4Addr::new(10, 44, 0, 12), Role::Worker),
        ]
    );
    assert_eq!(config.nodes["worker-1"].cpus, 2, "cpus default to 2");
    assert_eq!(config.nodes["cp-1"].memory, 2 << 30);
}

#[test]
fn mistakes_are_located_and_explained() {
    let cases = [
        (
            "state-dir = ",
            "state-dri = ",
            "state-dri",
            "unknown field `state-dri`",
        ),
        ("format = 1", "format = 2", "2", "format 2 is not supported"),
        (
            "name = \"hci-01\"",
            "name = \"HCI_01\"",
            "\"HCI_01\"",
            "is not a DNS label",
        ),
        (
            "kind = \"qemu\"",
            "kind = \"xen\"",
            "\"xen\"",
            "expected \"qemu\" or \"hyperv\"",
        ),
        (
            "accel = \"auto\"",
            "accel = \"fast\"",
            "\"fast\"",
            "unknown variant `fast`",
        ),
        (
            "user = \"slipway-vm\"",
            "user = \"root\"",
            "\"root\"",
            "expected an unprivileged system user's name (not root)",
        ),
        (
            "user = \"slipway-vm\"",
            "user = \"VM User\"",
            "\"VM User\"",
            "expected an unprivileged system user's name",
        ),
        (
            "keys = [\"/etc/slipway/release.key.pub\"]",
            "keys = []",
            "[]",
            "boots nothing unsigned",
        ),
        (
            "cluster = \"lab\"\nrole = \"control-plane\"",
            "cluster = \"lbs\"\nrole = \"control-plane\"",
            "\"lbs\"",
            "does not declare",
        ),
        (
            "gateway = \"10.44.0.1\"",
            "gateway = \"10.45.0.1\"",
            "\"10.45.0.1\"",
            "outside the network",
        ),
        (
            "pool = \"10.44.0.10-10.44.0.50\"",
            "pool = \"10.44.0.10-10.44.0.11\"",
            "{\n",
            "",
        ),
        (
            "pod-cidr = \"10.244.0.0/16\"",
            "pod-cidr = \"10.244.0.1/16\"",
            "\"10.244.0.1/16\"",
            "host bits set",
        ),
        (
            "memory = \"2G\"",
            "memory = \"2Q\"",
            "\"2Q\"",
            "expected a size like",
        ),
        (
            "role = \"control-plane\"",
            "role = \"master\"",
            "\"master\"",
            "unknown variant `master`",
        ),
        (
            "kubernetes = \"1.32.10\"",
            "kubernetes = \"latest\"",
            "\"latest\"",
            "expected a version",
        ),
    ];
    for (from, to, at, expected) in cases {
        if at == "{\n" {
            // The pool runs out at the third node: located at that node's table.
            let message = edited(from, to).unwrap_err().to_string();
            assert!(
                message.contains("has no address left for node worker-2"),
                "{message}"
            );
            continue;
        }
        let message = error_at(from, to, at);
        assert!(message.contains(expected), "{from:?} -> {message}");
    }
}

#[test]
fn a_cluster_needs_a_control_plane() {
    let message = edited("role = \"control-plane\"", "role = \"worker\"")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("cluster lab has nodes but no control-plane node"),
        "{message}"
    );
}

#[test]
fn the_vm_user_defaults_to_slipway_vm_and_is_taken_as_given() {
    let config = edited("user = \"slipway-vm\"", "").unwrap();
    assert_eq!(config.vm_user, DEFAULT_VM_USER);
    let config = edited("user = \"slipway-vm\"", "user = \"qemu_nodes-2\"").unwrap();
    assert_eq!(config.vm_user, "qemu_nodes-2");
}

#[test]
fn a_cluster_rolls_in_place_one_at_a_time_unless_its_rollout_table_says_otherwise() {
    let network = "pool = \"10.44.0.10-10.44.0.50\" }";
    let config = edited(network, network).unwrap();
    assert_eq!(config.clusters["lab"].rollout, super::Rollout::default());
    let table = format!(
        "{network}\n[clusters.rollout]\nmax-unavailable = 2\nboot-deadline = \"2m\"\nsoak = \"0s\"\nwindow = \"22:00-04:00\""
    );
    let rollout = edited(network, &table).unwrap().clusters["lab"]
        .rollout
        .clone();
    assert_eq!(rollout.max_unavailable, 2);
    assert_eq!(rollout.boot_deadline, std::time::Duration::from_secs(120));
    assert_eq!(rollout.soak, std::time::Duration::ZERO);
    assert_eq!(rollout.window.unwrap().to_string(), "22:00-04:00 UTC");
    let surge = format!("{network}\n[clusters.rollout]\nstrategy = \"surge\"");
    assert_eq!(
        edited(network, &surge).unwrap().clusters["lab"]
            .rollout
            .strategy,
        super::Strategy::Surge
    );
    for (bad, at, expected) in [
        ("max-unavailable = 0", "0", "would never let a node move"),
        ("boot-deadline = \"300\"", "\"300\"", "expected a duration"),
        ("boot-deadline = \"5s\"", "\"5s\"", "at least 10 s"),
        ("window = \"25:00-01:00\"", "\"25:00-01:00\"", "HH:MM-HH:MM"),
        (
            "strategy = \"blue-green\"",
            "\"blue-green\"",
            "unknown variant `blue-green`",
        ),
    ] {
        refused_at(
            network,
            &format!("{network}\n[clusters.rollout]\n{bad}"),
            bad,
            at,
            expected,
        );
    }
}

/// The example's cluster network with `keys` added to it, and a second cluster `two` on
/// 10.45.0.0/24 with `second` added to its network (no nodes).
fn bridged(keys: &str, second: &str) -> (String, String) {
    let from = "pool = \"10.44.0.10-10.44.0.50\" }";
    let to = format!(
        "pool = \"10.44.0.10-10.44.0.50\"{keys} }}\n\n[[clusters]]\nname = \"two\"\nkubernetes = \"1.32.10\"\n\
         control-plane-endpoint = \"10.45.0.10:6443\"\npod-cidr = \"10.244.0.0/16\"\n\
         service-cidr = \"10.96.0.0/12\"\nnetwork = {{ cidr = \"10.45.0.0/24\", gateway = \"10.45.0.1\", \
         pool = \"10.45.0.10-10.45.0.50\"{second} }}"
    );
    (from.to_owned(), to)
}

#[test]
fn a_cluster_is_bridged_over_hosts_when_its_network_names_an_uplink_and_a_segment() {
    let config = edited("user = \"slipway-vm\"", "").unwrap();
    assert_eq!(config.clusters["lab"].link, Link::Switch, "the default");
    let (from, to) = bridged(
        ", uplink = \"eth1\", vlan = 101, host-address = \"10.44.0.2\"",
        ", uplink = \"eth1\", vlan = 102, host-address = \"10.45.0.1\"",
    );
    let config = edited(&from, &to).unwrap();
    assert_eq!(
        config.clusters["lab"].link,
        Link::Bridge(Bridged {
            uplink: "eth1".into(),
            segment: Segment::Vlan(101),
            host_address: Ipv4Addr::new(10, 44, 0, 2),
        })
    );
    // The host may hold the gateway itself.
    let Link::Bridge(two) = &config.clusters["two"].link else {
        panic!("two is bridged");
    };
    assert_eq!(two.host_address, config.clusters["two"].gateway);
    // One VLAN id on two uplinks is two segments; VXLAN identifiers are the LAN's.
    let (from, to) = bridged(
        ", uplink = \"eth1\", vlan = 101, host-address = \"10.44.0.2\"",
        ", uplink = \"eth2\", vlan = 101, host-address = \"10.45.0.2\"",
    );
    edited(&from, &to).unwrap();
    let (from, to) = bridged(
        ", uplink = \"eth1\", vxlan = 16777215, host-address = \"10.44.0.2\"",
        ", uplink = \"eth1\", vxlan = 7, host-address = \"10.45.0.2\"",
    );
    let config = edited(&from, &to).unwrap();
    assert!(matches!(
        &config.clusters["lab"].link,
        Link::Bridge(b) if b.segment == Segment::Vxlan(16_777_215)
    ));
}

#[test]
fn a_bridged_network_is_refused_with_its_mistake_located() {
    let host = ", host-address = \"10.44.0.2\"";
    let cases = [
        (
            format!(", uplink = \"eth1\", vlan = 0{host}"),
            "",
            "0, host",
            "expected a VLAN id from 1 to 4094",
        ),
        (
            format!(", uplink = \"eth1\", vlan = 4095{host}"),
            "",
            "4095",
            "expected a VLAN id from 1 to 4094",
        ),
        (
            format!(", uplink = \"eth1\", vlan = -1{host}"),
            "",
            "-1, host",
            "expected a VLAN id from 1 to 4094",
        ),
        (
            format!(", uplink = \"eth1\", vxlan = 16777216{host}"),
            "",
            "16777216",
            "from 1 to 16777215",
        ),
        (
            format!(", uplink = \"eth1\", vlan = 5, vxlan = 5{host}"),
            "",
            "5, vxlan",
            "vlan or vxlan, not both",
        ),
        (
            format!(", uplink = \"eth1\"{host}"),
            "",
            "\"eth1\"",
            "needs vlan (1 to 4094) or vxlan",
        ),
        (
            ", uplink = \"eth1\", vlan = 5".to_owned(),
            "",
            "\"eth1\"",
            "needs host-address",
        ),
        (", vlan = 5".to_owned(), "", "5 }", "need uplink"),
        (host.to_owned(), "", "\"10.44.0.2\"", "need uplink"),
        (
            format!(", uplink = \"a/b\", vlan = 5{host}"),
            "",
            "\"a/b\"",
            "expected a network device name",
        ),
        (
            format!(", uplink = \"sixteen-bytes-xx\", vlan = 5{host}"),
            "",
            "\"sixteen",
            "1 to 15 bytes",
        ),
        (
            ", uplink = \"eth1\", vlan = 5, host-address = \"10.44.0.20\"".to_owned(),
            "",
            "\"10.44.0.20\"",
            "outside the pool",
        ),
        (
            ", uplink = \"eth1\", vlan = 5, host-address = \"10.45.0.2\"".to_owned(),
            "",
            "\"10.45.0.2\"",
            "must lie inside 10.44.0.0/24",
        ),
        (
            ", uplink = \"eth1\", vlan = 5, host-address = \"ten\"".to_owned(),
            "",
            "\"ten\"",
            "expected an IPv4 address",
        ),
        (
            format!(", uplink = \"eth1\", vlan = 101{host}"),
            ", uplink = \"eth1\", vlan = 101, host-address = \"10.45.0.2\"",
            "101, host-address = \"10.45",
            "vlan 101 on eth1 is already cluster lab's: give each cluster a segment of its own",
        ),
        (
            format!(", uplink = \"eth1\", vxlan = 9{host}"),
            ", uplink = \"eth2\", vxlan = 9, host-address = \"10.45.0.2\"",
            "9, host-address = \"10.45",
            "vxlan 9 on eth2 is already cluster lab's",
        ),
    ];
    for (keys, second, at, expected) in cases {
        let (from, to) = bridged(&keys, second);
        let message = edited(&from, &to).expect_err(&keys).to_string();
        assert!(message.contains(expected), "{keys} / {second}: {message}");
        let text = EXAMPLE.replacen(&from, &to, 1);
        // The marker's first occurrence after the first cluster's pool (the second cluster's
        // when the mistake is there).
        let start = if second.is_empty() {
            0
        } else {
            text.find("name = \"two\"").unwrap()
        };
        let offset = start + text[start..].find(at).expect(at);
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        assert!(
            message.starts_with(&format!("host.toml:{line}:{column}: ")),
            "{keys} / {second}: expected {line}:{column} in {message}"
        );
    }
}

#[test]
fn a_cluster_talks_to_its_kubernetes_api_only_with_a_kube_table_whose_keys_default() {
    use super::kube::DEFAULT_DRAIN_DEADLINE;
    use crate::kube::drain::PodPolicy;
    let network = "pool = \"10.44.0.10-10.44.0.50\" }";
    let config = edited(network, network).unwrap();
    assert_eq!(config.clusters["lab"].kube, None, "no table: no API calls");
    let empty = format!("{network}\n[clusters.kube]");
    let kube = edited(network, &empty).unwrap().clusters["lab"]
        .kube
        .clone()
        .unwrap();
    assert_eq!(
        kube.endpoint, "10.44.0.10:6443",
        "the control-plane endpoint"
    );
    assert_eq!(kube.url(), "https://10.44.0.10:6443");
    assert_eq!(kube.drain_deadline, DEFAULT_DRAIN_DEADLINE);
    assert_eq!(kube.on_deadline, super::OnDeadline::RollBack);
    assert_eq!(kube.drain.empty_dir, PodPolicy::Refuse);
    assert_eq!(kube.drain.unmanaged, PodPolicy::Refuse);
    assert!(kube.ready_gate);
    let full = format!(
        "{network}\n[clusters.kube]\napi = \"https://api.lab.example:8443\"\ndrain-deadline = \"90s\"\n\
         on-deadline = \"force\"\nempty-dir = \"evict\"\nunmanaged = \"evict\"\nready-gate = false"
    );
    let kube = edited(network, &full).unwrap().clusters["lab"]
        .kube
        .clone()
        .unwrap();
    assert_eq!(kube.endpoint, "api.lab.example:8443");
    assert_eq!(kube.drain_deadline, std::time::Duration::from_secs(90));
    assert_eq!(kube.on_deadline, super::OnDeadline::Force);
    assert_eq!(kube.drain.empty_dir, PodPolicy::Evict);
    assert_eq!(kube.drain.unmanaged, PodPolicy::Evict);
    assert!(!kube.ready_gate);
    for (bad, at, expected) in [
        (
            "api = \"http://10.44.0.10:6443\"",
            "\"http",
            "expected https://HOST:PORT",
        ),
        (
            "api = \"https://10.44.0.10:6443/api\"",
            "\"https",
            "no path",
        ),
        (
            "drain-deadline = \"5\"",
            "\"5\"",
            "drain-deadline: \"5\": expected a duration",
        ),
        ("drain-deadline = \"0s\"", "\"0s\"", "at least 1 s"),
        (
            "on-deadline = \"delete\"",
            "\"delete\"",
            "unknown variant `delete`, expected `roll-back` or `force`",
        ),
        (
            "empty-dir = \"keep\"",
            "\"keep\"",
            "unknown variant `keep`, expected `refuse` or `evict`",
        ),
        ("ready-gate = \"yes\"", "\"yes\"", "invalid type"),
        ("drain = true", "drain", "unknown field `drain`"),
    ] {
        refused_at(
            network,
            &format!("{network}\n[clusters.kube]\n{bad}"),
            bad,
            at,
            expected,
        );
    }
}
