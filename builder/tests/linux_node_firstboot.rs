//! linux-node's first boot (recipes/linux-node/slipway-firstboot) run whole with the system's
//! sh (dash, as on linux-node's Debian root) under a test root (`SLIPWAY_ROOT`), on seeds
//! slipwayd renders (its golden files). kubeadm, kubectl, systemctl and curl cannot run here
//! (no Kubernetes binaries or API server can be had): FAKES stand in for them, each a shell
//! script that records its arguments and answers as the real tool does in the one way the
//! script reads it (`kubeadm version -o short` prints `vX.Y.Z`, `kubectl apply -f FILE` takes
//! FILE, `kubectl get configmap kubeadm-config` prints a ClusterConfiguration, the others
//! succeed; see [`FAKE`] for the failures a test asks for). `sleep` is one too, so that the
//! script's bounded retries take no time and are counted. What is proven: which kubeadm command
//! each role runs on a fresh or a used state disk (chosen by the cluster's version), in what
//! order with the kubelet, that the pod network applied is the cluster's, what a rollback does,
//! what a failure leaves for the retry, and what is refused.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A node's root: the image's files, the seed of `golden` naming Kubernetes `seed_version`,
/// the state disk (`used`: joined at `disk_version`), and fake tools whose kubeadm is
/// `kubeadm_version`.
struct Node {
    dir: tempfile::TempDir,
}

const FAKE: &str = r#"#!/bin/sh
# FAKE (a test stand-in for the real tool): records its call, answers as the tool would.
# FAKE_KUBEADM_VERSION: what `kubeadm version -o short` prints. FAKE_CLUSTER_VERSION: the
# kubernetesVersion of the cluster's kubeadm-config (unset: the API cannot be read);
# FAKE_READ_FAILS: how many reads of it fail first (an API server coming up). FAKE_FAIL: words
# naming calls that fail (apply: `kubectl apply`; upgrade: `kubeadm upgrade`).
name=$(basename "$0")
echo "$name $*" >>"$SLIPWAY_ROOT/calls"
kube=$SLIPWAY_ROOT/etc/kubernetes
fail() {
	case " ${FAKE_FAIL:-} " in
	*" $1 "*)
		echo "FAKE: $name $1 failed" >&2
		exit 1
		;;
	esac
}
case "$name $*" in
"kubeadm version -o short") echo "$FAKE_KUBEADM_VERSION" ;;
"kubeadm init "*) touch "$kube/admin.conf" "$kube/kubelet.conf" ;;
"kubeadm join "*) touch "$kube/kubelet.conf" ;;
"kubeadm reset "*) rm -f "$kube/admin.conf" "$kube/kubelet.conf" ;;
"kubeadm upgrade "*) fail upgrade ;;
"kubectl "*" get configmap kubeadm-config "*)
	reads=$(cat "$SLIPWAY_ROOT/reads" 2>/dev/null || echo 0)
	echo $((reads + 1)) >"$SLIPWAY_ROOT/reads"
	if [ "$reads" -lt "${FAKE_READ_FAILS:-0}" ] || [ -z "${FAKE_CLUSTER_VERSION:-}" ]; then
		echo "FAKE: The connection to the server 10.0.0.10:6443 was refused" >&2
		exit 1
	fi
	printf 'apiServer: {}\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: %s\nnetworking:\n  podSubnet: 10.244.0.0/16\n' "$FAKE_CLUSTER_VERSION"
	;;
"kubectl "*" apply "*)
	fail apply
	while [ $# -gt 0 ]; do
		if [ "$1" = -f ]; then cp "$2" "$SLIPWAY_ROOT/applied.yaml"; fi
		shift
	done
	;;
esac
exit 0
"#;

/// The read of the cluster's version a control plane makes (with its admin credentials).
const READ_ADMIN: &str = "kubectl --kubeconfig ROOT/etc/kubernetes/admin.conf -n kube-system get configmap kubeadm-config -o jsonpath={.data.ClusterConfiguration}";
/// The read a worker makes (with its kubelet's credentials, which kubeadm lets read it).
const READ_KUBELET: &str = "kubectl --kubeconfig ROOT/etc/kubernetes/kubelet.conf -n kube-system get configmap kubeadm-config -o jsonpath={.data.ClusterConfiguration}";
/// The pod network apply of the initialiser.
const APPLY: &str = "kubectl --kubeconfig ROOT/etc/kubernetes/admin.conf apply -f ROOT/run/slipway/kube-flannel.yaml";

impl Node {
    fn new(golden: &str, seed_version: &str, cni: Option<&str>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let recipe = repo().join("recipes/linux-node");
        let mkdir = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        for d in [
            "usr/lib/slipway",
            "usr/share/slipway",
            "opt/cni/bin",
            "run/slipway/seed",
            "var/lib/slipway",
            "etc/kubernetes",
            "fake-bin",
        ] {
            mkdir(d);
        }
        std::fs::copy(
            recipe.join("slipway-lib"),
            root.join("usr/lib/slipway/lib.sh"),
        )
        .unwrap();
        // Pinned as a build on a networked machine would (a made-up digest).
        let manifest = std::fs::read_to_string(recipe.join("kube-flannel.yaml"))
            .unwrap()
            .replace("UNPINNED-flannel-cni-plugin", &"1".repeat(64))
            .replace("UNPINNED-flannel", &"2".repeat(64));
        std::fs::write(root.join("usr/share/slipway/kube-flannel.yaml"), manifest).unwrap();
        std::fs::write(root.join("opt/cni/bin/bridge"), "plugin").unwrap();
        let golden = repo().join("supervisor/src/seed/golden").join(golden);
        std::fs::copy(golden, root.join("run/slipway/seed/kubeadm.yaml")).unwrap();
        std::fs::write(
            root.join("run/slipway/seed/kubernetes"),
            format!("{seed_version}\n"),
        )
        .unwrap();
        if let Some(cni) = cni {
            std::fs::write(root.join("run/slipway/seed/cni"), format!("{cni}\n")).unwrap();
        }
        for tool in ["kubeadm", "kubectl", "systemctl", "curl", "sleep"] {
            let path = root.join("fake-bin").join(tool);
            std::fs::write(&path, FAKE).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Node { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A state disk that already holds a cluster, brought to `version`.
    fn used(self, version: &str) -> Node {
        std::fs::write(self.root().join("var/lib/slipway/joined"), "").unwrap();
        std::fs::write(
            self.root().join("var/lib/slipway/kubernetes"),
            format!("{version}\n"),
        )
        .unwrap();
        std::fs::write(self.root().join("etc/kubernetes/kubelet.conf"), "").unwrap();
        self
    }

    /// Runs first boot with an image whose kubeadm is `kubeadm_version`: (success, the fake
    /// tools' calls in order, stdout then stderr).
    fn boot(&self, kubeadm_version: &str) -> (bool, Vec<String>, String) {
        self.boot_with(kubeadm_version, &[])
    }

    /// [`Node::boot`] with the fakes' other settings (`FAKE_*`, see [`FAKE`]) in `env`.
    fn boot_with(
        &self,
        kubeadm_version: &str,
        env: &[(&str, &str)],
    ) -> (bool, Vec<String>, String) {
        let path = format!(
            "{}:{}",
            self.root().join("fake-bin").display(),
            std::env::var("PATH").unwrap()
        );
        let _ = std::fs::remove_file(self.root().join("calls"));
        let _ = std::fs::remove_file(self.root().join("reads"));
        let out = Command::new("sh")
            .arg(repo().join("recipes/linux-node/slipway-firstboot"))
            .env("SLIPWAY_ROOT", self.root())
            .env("FAKE_KUBEADM_VERSION", kubeadm_version)
            .envs(env.iter().copied())
            .env("PATH", path)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(self.root().join("calls")).unwrap_or_default();
        let root = self.root().display().to_string();
        (
            out.status.success(),
            calls.lines().map(|l| l.replace(&root, "ROOT")).collect(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root().join(path)).ok()
    }

    fn settled(&self) -> bool {
        self.root().join("run/slipway/settled").exists()
    }
}

#[test]
fn the_initialiser_inits_then_applies_flannel_on_the_clusters_pod_network() {
    let node = Node::new("init-control-plane.yaml", "v1.32.10", Some("flannel"));
    let (ok, calls, stderr) = node.boot("v1.32.10");
    assert!(ok, "{stderr}");
    assert_eq!(
        calls,
        [
            "kubeadm version -o short",
            "kubeadm init --config ROOT/run/slipway/seed/kubeadm.yaml",
            APPLY,
            "systemctl start kubelet",
            "curl -fsS -m 2 http://127.0.0.1:10248/healthz",
        ]
    );
    let applied = node.read("applied.yaml").unwrap();
    assert!(
        applied.contains("\"Network\": \"10.244.0.0/16\""),
        "{applied}"
    );
    assert!(!applied.contains("@POD_SUBNET@"));
    // The VXLAN backend Windows nodes can join (flannel's documented VNI and port for them).
    let net = net_conf(&applied);
    assert_eq!(net["Network"], "10.244.0.0/16");
    assert_eq!(net["Backend"]["Type"], "vxlan");
    assert_eq!(net["Backend"]["VNI"], 4096);
    assert_eq!(net["Backend"]["Port"], 4789);
    assert_eq!(
        node.read("var/lib/slipway/kubernetes").as_deref(),
        Some("v1.32.10\n")
    );
    assert!(node.root().join("var/lib/slipway/joined").exists() && node.settled());
    assert_eq!(
        node.read("var/lib/slipway/cni/bin/bridge").as_deref(),
        Some("plugin")
    );
}

#[test]
fn no_pod_network_is_applied_when_the_cluster_brings_its_own_and_joiners_only_join() {
    let node = Node::new("init-control-plane.yaml", "v1.32.10", Some("none"));
    let (ok, calls, stderr) = node.boot("v1.32.10");
    assert!(ok, "{stderr}");
    assert!(calls.iter().any(|c| c.starts_with("kubeadm init")));
    assert!(!calls.iter().any(|c| c.starts_with("kubectl")), "{calls:?}");

    let node = Node::new("join-worker.yaml", "v1.32.10", None);
    let (ok, calls, stderr) = node.boot("v1.32.10");
    assert!(ok, "{stderr}");
    assert_eq!(
        calls[1],
        "kubeadm join --config ROOT/run/slipway/seed/kubeadm.yaml"
    );
    assert!(!calls.iter().any(|c| c.starts_with("kubectl")), "{calls:?}");
    assert!(node.settled());
}

/// The net-conf.json of the kube-flannel-cfg ConfigMap in the manifest `text` (a literal
/// block, indented by four spaces).
fn net_conf(text: &str) -> serde_json::Value {
    let block: String = text
        .lines()
        .skip_while(|l| l.trim() != "net-conf.json: |")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{l}\n"))
        .collect();
    serde_json::from_str(&block).unwrap_or_else(|e| panic!("net-conf.json: {e}: {block}"))
}

/// The calls of an upgrade by `command` on a control plane whose API answered at once.
fn control_plane_upgrade(command: &str) -> Vec<String> {
    [
        "kubeadm version -o short",
        "systemctl start kubelet",
        READ_ADMIN,
        command,
        "systemctl daemon-reload",
        "systemctl restart kubelet",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn a_control_plane_upgrades_by_the_clusters_version_not_by_its_seed() {
    // Whichever control plane boots the new version first finds the cluster below it and
    // applies; every later one (the initialiser too) only upgrades itself.
    for (golden, cluster, command) in [
        (
            "init-control-plane.yaml",
            "v1.32.10",
            "kubeadm upgrade apply -y v1.33.0",
        ),
        (
            "join-control-plane.yaml",
            "v1.32.10",
            "kubeadm upgrade apply -y v1.33.0",
        ),
        ("init-control-plane.yaml", "v1.33.0", "kubeadm upgrade node"),
        ("join-control-plane.yaml", "v1.33.0", "kubeadm upgrade node"),
    ] {
        let node = Node::new(golden, "v1.33.0", None).used("v1.32.10");
        let (ok, calls, out) = node.boot_with("v1.33.0", &[("FAKE_CLUSTER_VERSION", cluster)]);
        assert!(ok, "{golden} on a cluster at {cluster}: {out}");
        assert_eq!(
            calls,
            control_plane_upgrade(command),
            "{golden} on {cluster}"
        );
        assert_eq!(
            node.read("var/lib/slipway/kubernetes").as_deref(),
            Some("v1.33.0\n")
        );
        assert!(node.settled(), "{golden}");
    }
}

#[test]
fn a_control_plane_waits_a_bounded_while_for_its_api_server_before_choosing() {
    // The local API server comes up through the kubelet: two refused reads, then the answer.
    let node = Node::new("join-control-plane.yaml", "v1.33.0", None).used("v1.32.10");
    let (ok, calls, out) = node.boot_with(
        "v1.33.0",
        &[
            ("FAKE_CLUSTER_VERSION", "v1.32.10"),
            ("FAKE_READ_FAILS", "2"),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        calls[..7],
        [
            "kubeadm version -o short",
            "systemctl start kubelet",
            READ_ADMIN,
            "sleep 5",
            READ_ADMIN,
            "sleep 5",
            READ_ADMIN,
        ]
    );
    assert_eq!(calls[7], "kubeadm upgrade apply -y v1.33.0");

    // An API that never answers: no upgrade is guessed, the disk keeps its version, and the
    // unit fails so systemd retries it.
    let node = Node::new("init-control-plane.yaml", "v1.33.0", None).used("v1.32.10");
    let (ok, calls, out) = node.boot_with("v1.33.0", &[]);
    assert!(
        !ok && out.contains("cannot read the cluster's Kubernetes version"),
        "{out}"
    );
    assert_eq!(calls.iter().filter(|c| *c == READ_ADMIN).count(), 30);
    assert_eq!(calls.iter().filter(|c| *c == "sleep 5").count(), 29);
    assert!(
        !calls.iter().any(|c| c.starts_with("kubeadm upgrade")),
        "{calls:?}"
    );
    assert_eq!(
        node.read("var/lib/slipway/kubernetes").as_deref(),
        Some("v1.32.10\n")
    );
    assert!(!node.settled());
}

#[test]
fn a_worker_upgrades_only_once_a_control_plane_brought_the_cluster_there() {
    // The cluster still below the image: the worker fails (systemd retries) and touches nothing.
    let node = Node::new("join-worker.yaml", "v1.33.0", None).used("v1.32.10");
    let (ok, calls, out) = node.boot_with("v1.33.0", &[("FAKE_CLUSTER_VERSION", "v1.32.10")]);
    assert!(!ok && out.contains("waiting for a control plane"), "{out}");
    assert_eq!(calls, ["kubeadm version -o short", READ_KUBELET]);
    assert_eq!(
        node.read("var/lib/slipway/kubernetes").as_deref(),
        Some("v1.32.10\n")
    );
    assert!(!node.settled());

    // The retry once the cluster is there, and a cluster the worker cannot read (left to
    // `kubeadm upgrade node`): both upgrade the node.
    for env in [&[("FAKE_CLUSTER_VERSION", "v1.33.0")][..], &[]] {
        let (ok, calls, out) = node.boot_with("v1.33.0", env);
        assert!(ok, "{env:?}: {out}");
        assert_eq!(
            calls,
            [
                "kubeadm version -o short",
                READ_KUBELET,
                "systemctl start kubelet",
                "kubeadm upgrade node",
                "systemctl daemon-reload",
                "systemctl restart kubelet",
            ],
            "{env:?}"
        );
        assert_eq!(
            node.read("var/lib/slipway/kubernetes").as_deref(),
            Some("v1.33.0\n")
        );
        assert!(node.settled());
        std::fs::write(node.root().join("var/lib/slipway/kubernetes"), "v1.32.10\n").unwrap();
    }
}

#[test]
fn a_failed_upgrade_keeps_the_recorded_version() {
    let node = Node::new("init-control-plane.yaml", "v1.33.0", None).used("v1.32.10");
    let (ok, calls, out) = node.boot_with(
        "v1.33.0",
        &[
            ("FAKE_CLUSTER_VERSION", "v1.32.10"),
            ("FAKE_FAIL", "upgrade"),
        ],
    );
    assert!(!ok, "{out}");
    assert_eq!(calls.last().unwrap(), "kubeadm upgrade apply -y v1.33.0");
    assert_eq!(
        node.read("var/lib/slipway/kubernetes").as_deref(),
        Some("v1.32.10\n")
    );
    assert!(!node.settled());
}

#[test]
fn a_rollback_runs_the_kubelet_behind_the_disk_and_changes_nothing() {
    // The disk was brought to v1.33.0 (or v1.32.11) and the previous image boots again: its
    // kubelet runs behind its control plane, no kubeadm runs, the disk keeps its version.
    for golden in [
        "init-control-plane.yaml",
        "join-control-plane.yaml",
        "join-worker.yaml",
    ] {
        for disk in ["v1.33.0", "v1.32.11"] {
            let node = Node::new(golden, "v1.32.10", None).used(disk);
            let (ok, calls, out) = node.boot_with("v1.32.10", &[("FAKE_CLUSTER_VERSION", disk)]);
            assert!(ok, "{golden} from {disk}: {out}");
            assert!(out.contains("runs behind it"), "{out}");
            assert_eq!(
                calls,
                ["kubeadm version -o short", "systemctl start kubelet"],
                "{golden} from {disk}"
            );
            assert_eq!(
                node.read("var/lib/slipway/kubernetes"),
                Some(format!("{disk}\n"))
            );
            assert!(node.settled(), "{golden} from {disk}");
        }
    }
    // Two minors back is beyond the skew kubeadm and the kubelet allow: refused.
    let node = Node::new("join-worker.yaml", "v1.32.10", None).used("v1.34.0");
    let (ok, calls, out) = node.boot("v1.32.10");
    assert!(!ok && out.contains("rolls back at most one minor"), "{out}");
    assert_eq!(calls, ["kubeadm version -o short"]);
    assert!(!node.settled());
}

#[test]
fn a_failed_pod_network_apply_is_retried_without_resetting_the_cluster() {
    let node = Node::new("init-control-plane.yaml", "v1.32.10", Some("flannel"));
    let (ok, calls, out) = node.boot_with("v1.32.10", &[("FAKE_FAIL", "apply")]);
    assert!(!ok, "{out}");
    assert_eq!(
        calls[..4],
        [
            "kubeadm version -o short",
            "kubeadm init --config ROOT/run/slipway/seed/kubeadm.yaml",
            APPLY,
            "sleep 5",
        ]
    );
    assert_eq!(calls.iter().filter(|c| *c == APPLY).count(), 30);
    assert!(node.root().join("var/lib/slipway/initialised").exists());
    assert!(!node.root().join("var/lib/slipway/joined").exists() && !node.settled());

    // systemd's retry (or a reboot): the cluster stays, only the apply runs again.
    let (ok, calls, out) = node.boot("v1.32.10");
    assert!(ok, "{out}");
    assert_eq!(
        calls,
        [
            "kubeadm version -o short",
            "systemctl start kubelet",
            APPLY,
            "systemctl start kubelet",
            "curl -fsS -m 2 http://127.0.0.1:10248/healthz",
        ]
    );
    assert!(node.root().join("etc/kubernetes/admin.conf").exists());
    assert_eq!(
        net_conf(&node.read("applied.yaml").unwrap())["Network"],
        "10.244.0.0/16"
    );
    assert!(node.root().join("var/lib/slipway/joined").exists() && node.settled());
}

#[test]
fn a_half_done_join_still_starts_again_from_a_clean_slate() {
    let node = Node::new("join-worker.yaml", "v1.32.10", None);
    std::fs::write(node.root().join("etc/kubernetes/kubelet.conf"), "").unwrap();
    let (ok, calls, out) = node.boot("v1.32.10");
    assert!(ok, "{out}");
    assert_eq!(
        calls[..3],
        [
            "kubeadm version -o short",
            "kubeadm reset --force",
            "kubeadm join --config ROOT/run/slipway/seed/kubeadm.yaml",
        ]
    );
}

#[test]
fn a_node_already_at_the_target_does_nothing_and_skews_are_refused() {
    let node = Node::new("join-worker.yaml", "v1.32.10", None).used("v1.32.10");
    let (ok, calls, stderr) = node.boot("v1.32.10");
    assert!(ok, "{stderr}");
    assert_eq!(
        calls,
        ["kubeadm version -o short", "systemctl start kubelet"]
    );
    assert!(node.settled());

    // Two minors up: refused on the node too (slipwayd refuses it before any swap).
    let node = Node::new("init-control-plane.yaml", "v1.34.0", None).used("v1.32.10");
    let (ok, calls, stderr) = node.boot("v1.34.0");
    assert!(
        !ok && stderr.contains("one minor version up at a time"),
        "{stderr}"
    );
    assert_eq!(calls, ["kubeadm version -o short"]);
    assert!(!node.settled());
    assert_eq!(
        node.read("var/lib/slipway/kubernetes").as_deref(),
        Some("v1.32.10\n")
    );

    // A seed that names another Kubernetes than the image carries: nothing is run.
    let node = Node::new("init-control-plane.yaml", "v1.33.0", Some("flannel"));
    let (ok, calls, stderr) = node.boot("v1.32.10");
    assert!(
        !ok && stderr.contains("this image carries v1.32.10"),
        "{stderr}"
    );
    assert_eq!(calls, ["kubeadm version -o short"]);
}
