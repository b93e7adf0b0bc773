//! linux-node's recipe and first-boot scripts, checked without building the image (its
//! kubeadm and kubelet come from dl.k8s.io, which this machine cannot reach): the recipe parses
//! and validates, it places the flannel manifest and the shared shell functions, every script
//! is valid sh, and the upgrade decision first boot takes is the one kubeadm supports. The
//! scripts run with the system's sh (dash, as on linux-node's Debian root).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("recipes")
}

fn recipe() -> toml::Table {
    let text = std::fs::read_to_string(recipes().join("linux-node.toml")).unwrap();
    text.parse().unwrap()
}

#[test]
fn the_recipe_parses_and_validates() {
    // `build --locked` parses and validates the recipe, then stops at its lock (linux-node has
    // none here): an error in the recipe would name linux-node.toml:LINE:COLUMN instead.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["build", "--locked"])
        .arg(recipes().join("linux-node.toml"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the lock does not cover it"), "{stderr}");
    assert!(!stderr.contains("linux-node.toml:"), "{stderr}");
}

#[test]
fn the_recipe_places_the_flannel_manifest_and_the_first_boot_functions() {
    let recipe = recipe();
    let sources = recipe["sources"].as_table().unwrap();
    let files = recipe["root"]["files"].as_array().unwrap();
    let placed = |image_path: &str| -> (String, String) {
        let entry = files
            .iter()
            .find(|f| f["path"].as_str() == Some(image_path))
            .unwrap_or_else(|| panic!("{image_path} is not placed"));
        let source = entry["source"].as_str().unwrap().to_owned();
        let path = sources[&source]["path"].as_str().unwrap().to_owned();
        (source, path)
    };
    assert_eq!(
        placed("/usr/share/slipway/kube-flannel.yaml").1,
        "linux-node/kube-flannel.yaml"
    );
    assert_eq!(
        placed("/usr/lib/slipway/lib.sh").1,
        "linux-node/slipway-lib"
    );
    assert_eq!(
        placed("/usr/lib/slipway/firstboot").1,
        "linux-node/slipway-firstboot"
    );
    assert_eq!(
        placed("/usr/lib/slipway/beacon").1,
        "linux-node/slipway-beacon"
    );
    // Every file source beside the recipe exists.
    for (name, source) in sources {
        if let Some(path) = source.get("path").and_then(|p| p.as_str()) {
            assert!(
                recipes().join(path).is_file(),
                "source {name}: {path} is missing"
            );
        }
    }
    // The scripts source the functions from where the recipe puts them.
    for script in ["slipway-firstboot", "slipway-beacon"] {
        let text = std::fs::read_to_string(recipes().join("linux-node").join(script)).unwrap();
        assert!(text.contains("/usr/lib/slipway/lib.sh"), "{script}");
    }
    let firstboot =
        std::fs::read_to_string(recipes().join("linux-node/slipway-firstboot")).unwrap();
    assert!(firstboot.contains("flannel=$root/usr/share/slipway/kube-flannel.yaml"));
    let beacon = std::fs::read_to_string(recipes().join("linux-node/slipway-beacon")).unwrap();
    assert!(beacon.contains("--kubeconfig /etc/kubernetes/kubelet.conf"));
    assert!(
        !beacon.contains("10248/healthz"),
        "ready is the API's word, not /healthz"
    );
}

#[test]
fn every_linux_node_script_is_valid_sh() {
    for script in [
        "slipway-seed",
        "slipway-firstboot",
        "slipway-beacon",
        "slipway-lib",
    ] {
        let path = recipes().join("linux-node").join(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `FUNCTION ARGS...` from slipway-lib: (success, stdout, stderr).
fn lib(function: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(". \"$0\" && {function} \"$@\""))
        .arg(recipes().join("linux-node/slipway-lib"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn first_boot_moves_one_minor_up_or_rolls_back_one_minor() {
    for (from, to, step) in [
        ("v1.32.10", "v1.32.10", "none"),
        ("v1.32.10", "v1.33.0", "up"),
        ("v1.32.10", "v1.32.11", "up"),
        ("v1.32.9", "v1.32.10", "up"),
        ("v1.33.0", "v1.32.10", "behind"),
        ("v1.33.1", "v1.32.10", "behind"),
        ("v1.32.11", "v1.32.10", "behind"),
    ] {
        let (ok, out, stderr) = lib("upgrade_step", &[from, to]);
        assert!(ok, "{from} -> {to}: {stderr}");
        assert_eq!(out, step, "{from} -> {to}");
    }
    for (from, to) in [
        ("v1.32.10", "v1.34.0"),
        ("v1.34.0", "v1.32.10"),
        ("v1.32.10", "v2.0.0"),
        ("unknown", "v1.33.0"),
    ] {
        let (ok, out, stderr) = lib("upgrade_step", &[from, to]);
        assert!(!ok && out.is_empty(), "{from} -> {to} must be refused");
        assert!(
            stderr.contains(&format!("from {from}")) || stderr.contains(from),
            "{stderr}"
        );
    }
    let (_, _, stderr) = lib("upgrade_step", &["v1.32.10", "v1.34.0"]);
    assert!(
        stderr.contains("one minor version up at a time"),
        "{stderr}"
    );
}

#[test]
fn first_boot_orders_kubernetes_versions_numerically() {
    for (a, b, below) in [
        ("v1.32.10", "v1.33.0", true),
        ("v1.32.9", "v1.32.10", true),
        ("v1.9.0", "v1.10.0", true),
        ("v1.33.0", "v1.33.0", false),
        ("v1.33.0", "v1.32.10", false),
        ("v2.0.0", "v1.99.99", false),
        ("unknown", "v1.33.0", false),
    ] {
        assert_eq!(lib("version_below", &[a, b]).0, below, "{a} < {b}");
    }
}

#[test]
fn first_boot_reads_role_and_node_name_from_the_seed_documents() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor/src/seed/golden");
    for (file, role, name, subnet) in [
        ("init-control-plane.yaml", "init", "cp-1", "10.244.0.0/16"),
        ("join-control-plane.yaml", "control-plane", "cp-2", ""),
        ("join-worker.yaml", "worker", "worker-1", ""),
    ] {
        let path = golden.join(file);
        let path = path.to_str().unwrap();
        assert_eq!(lib("kube_role", &[path]).1, role, "{file}");
        assert_eq!(lib("node_name", &[path]).1, name, "{file}");
        assert_eq!(lib("pod_subnet", &[path]).1, subnet, "{file}");
    }
}
