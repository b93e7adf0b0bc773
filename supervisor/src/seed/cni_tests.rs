//! The pod network a seed names, as linux-node carries it out: the flannel manifest pinned in
//! the image holds what flannel needs, and first boot's `flannel_manifest` (recipes/linux-node/
//! slipway-lib, run here with the system's sh, dash, as on linux-node's Debian root) sets its
//! network to the podSubnet of the very documents slipwayd renders.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::*;

fn recipe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/linux-node")
}

fn manifest_text() -> String {
    std::fs::read_to_string(recipe_dir().join("kube-flannel.yaml")).unwrap()
}

fn documents_of(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the flannel manifest"))
}

/// Runs `flannel_manifest DOCUMENTS MANIFEST` from slipway-lib: (success, stdout, stderr).
fn flannel_manifest(documents: &Path, manifest: &Path) -> (bool, String, String) {
    let lib = recipe_dir().join("slipway-lib");
    let out = Command::new("sh")
        .arg("-c")
        .arg(". \"$1\" && flannel_manifest \"$2\" \"$3\"")
        .arg("sh")
        .arg(&lib)
        .arg(documents)
        .arg(manifest)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_pinned_manifest_holds_what_flannel_needs() {
    let docs = documents_of(&manifest_text());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    assert_eq!(
        by_kind(&docs, "Namespace")["metadata"]["name"],
        "kube-flannel"
    );
    let rules = by_kind(&docs, "ClusterRole")["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["resources"][0] == "nodes/status" && r["verbs"][0] == "patch")
    );
    let config = &by_kind(&docs, "ConfigMap")["data"];
    let cni: Value = serde_json::from_str(config["cni-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(cni["plugins"][0]["type"], "flannel");
    let net: Value = serde_json::from_str(config["net-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(net["Network"], "@POD_SUBNET@");
    assert_eq!(net["Backend"]["Type"], "vxlan");
    let spec = &by_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let names = |key: &str| -> Vec<String> {
        spec[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names("initContainers"),
        ["install-cni-plugin", "install-cni"]
    );
    assert_eq!(names("containers"), ["kube-flannel"]);
    assert_eq!(spec["hostNetwork"], true);
    // Every image by tag and digest (the digest a placeholder until pinned on a networked
    // machine; first boot refuses to apply it until then).
    for container in spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["containers"].as_array().unwrap())
    {
        let image = container["image"].as_str().unwrap();
        let (named, digest) = image.split_once("@sha256:").unwrap();
        assert!(
            named
                .rsplit_once(':')
                .is_some_and(|(_, tag)| tag.starts_with('v')),
            "{image}"
        );
        assert!(!digest.is_empty(), "{image}");
    }
    // The read-only root: CNI plugins and config go where containerd is told to read them.
    let containerd = std::fs::read_to_string(recipe_dir().join("containerd-config.toml")).unwrap();
    for volume in spec["volumes"].as_array().unwrap() {
        if let Some(path) = volume["hostPath"]["path"].as_str()
            && path.starts_with("/var/lib/slipway/cni/")
        {
            assert!(containerd.contains(&format!("\"{path}\"")), "{path}");
        }
    }
}

#[test]
fn first_boot_sets_flannels_network_to_the_podsubnet_slipwayd_rendered() {
    let text = include_str!("../../examples/host.toml").replace(
        "pod-cidr = \"10.244.0.0/16\"",
        "pod-cidr = \"10.32.0.0/12\"",
    );
    let config = HostConfig::parse(Path::new("host.toml"), &text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let init = render(&config, &config.nodes["cp-1"], &pki, true, None).unwrap();
    let documents = dir.path().join("kubeadm.yaml");
    std::fs::write(&documents, init.kubeadm_yaml.as_bytes()).unwrap();

    // As shipped, the digests are placeholders: refused, saying what to do.
    let (ok, _, stderr) = flannel_manifest(&documents, &recipe_dir().join("kube-flannel.yaml"));
    assert!(!ok && stderr.contains("pin the flannel images"), "{stderr}");

    // Pinned (a made-up digest here): the network is the cluster's pod CIDR.
    let pinned = dir.path().join("kube-flannel.yaml");
    let digest = "0".repeat(64);
    let text = manifest_text()
        .replace("UNPINNED-flannel-cni-plugin", &digest)
        .replace("UNPINNED-flannel", &digest);
    std::fs::write(&pinned, text).unwrap();
    let (ok, out, stderr) = flannel_manifest(&documents, &pinned);
    assert!(ok, "{stderr}");
    let docs = documents_of(&out);
    let net: Value = serde_json::from_str(
        by_kind(&docs, "ConfigMap")["data"]["net-conf.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(net["Network"], "10.32.0.0/12");
    assert_eq!(docs.len(), 6);

    // A joining node's documents name no podSubnet: nothing to fill it from.
    let worker = render(&config, &config.nodes["worker-1"], &pki, false, None).unwrap();
    std::fs::write(&documents, worker.kubeadm_yaml.as_bytes()).unwrap();
    let (ok, _, stderr) = flannel_manifest(&documents, &pinned);
    assert!(
        !ok && stderr.contains("names no IPv4 podSubnet"),
        "{stderr}"
    );
}
