//! linux-node's first boot (recipes/linux-node/slipway-firstboot) run whole with the system's
//! sh (dash, as on linux-node's Debian root) under a test root (`SLIPWAY_ROOT`), on seeds
//! slipwayd renders (its golden files). kubeadm, kubectl, systemctl and curl cannot run here
//! (no Kubernetes binaries or API server can be had): FAKES stand in for them, each a shell
//! script that records its arguments and answers as the real tool does in the one way the
//! script reads it (`kubeadm version -o short` prints `vX.Y.Z`, `kubectl apply -f FILE` takes
//! FILE, the others succeed). What is proven: which kubeadm command each role runs on a fresh or
//! a used state disk, in what order with the kubelet, that the pod network applied is the
//! cluster's, and what is refused.

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
name=$(basename "$0")
echo "$name $*" >>"$SLIPWAY_ROOT/calls"
case "$name $1 $2" in
"kubeadm version -o") echo "$FAKE_KUBEADM_VERSION" ;;
esac
if [ "$name" = kubectl ]; then
	while [ $# -gt 0 ]; do
		if [ "$1" = -f ]; then cp "$2" "$SLIPWAY_ROOT/applied.yaml"; fi
		shift
	done
fi
exit 0
"#;

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
        for tool in ["kubeadm", "kubectl", "systemctl", "curl"] {
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
    /// tools' calls in order, stderr).
    fn boot(&self, kubeadm_version: &str) -> (bool, Vec<String>, String) {
        let path = format!(
            "{}:{}",
            self.root().join("fake-bin").display(),
            std::env::var("PATH").unwrap()
        );
        let out = Command::new("sh")
            .arg(repo().join("recipes/linux-node/slipway-firstboot"))
            .env("SLIPWAY_ROOT", self.root())
            .env("FAKE_KUBEADM_VERSION", kubeadm_version)
            .env("PATH", path)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(self.root().join("calls")).unwrap_or_default();
        let root = self.root().display().to_string();
        (
            out.status.success(),
            calls.lines().map(|l| l.replace(&root, "ROOT")).collect(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
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
            "kubectl --kubeconfig ROOT/etc/kubernetes/admin.conf apply -f ROOT/run/slipway/kube-flannel.yaml",
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

#[test]
fn a_used_state_disk_is_upgraded_by_role_then_the_kubelet_restarts() {
    for (golden, command) in [
        (
            "init-control-plane.yaml",
            "kubeadm upgrade apply -y v1.33.0",
        ),
        ("join-control-plane.yaml", "kubeadm upgrade node"),
        ("join-worker.yaml", "kubeadm upgrade node"),
    ] {
        let node = Node::new(golden, "v1.33.0", None).used("v1.32.10");
        let (ok, calls, stderr) = node.boot("v1.33.0");
        assert!(ok, "{golden}: {stderr}");
        assert_eq!(
            calls,
            [
                "kubeadm version -o short",
                "systemctl start kubelet",
                command,
                "systemctl daemon-reload",
                "systemctl restart kubelet",
            ],
            "{golden}"
        );
        assert_eq!(
            node.read("var/lib/slipway/kubernetes").as_deref(),
            Some("v1.33.0\n")
        );
        assert!(node.settled(), "{golden}");
    }
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
