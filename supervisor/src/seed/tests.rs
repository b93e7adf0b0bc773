//! Seeds: each role gets exactly its documents, pinned to the cluster's CA; the disk is a
//! CIDATA FAT that the real tools read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::config::{HostConfig, NodeOs};

fn three_node_config() -> HostConfig {
    let text = include_str!("../../examples/host.toml").replace(
        "[[nodes]]\nname = \"worker-1\"",
        "[[nodes]]\nname = \"cp-2\"\ncluster = \"lab\"\nrole = \"control-plane\"\nmemory = \"2G\"\nstate-disk = \"8G\"\n\n[[nodes]]\nname = \"worker-1\"",
    );
    HostConfig::parse(Path::new("host.toml"), &text).unwrap()
}

#[test]
fn each_role_gets_its_documents() {
    let config = three_node_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let kinds = |name: &str| -> Vec<&'static str> {
        let node = &config.nodes[name];
        documents(
            &config.clusters["lab"],
            node,
            &pki,
            name == "cp-1",
            "1.32.10",
        )
        .iter()
        .map(Document::kind)
        .collect()
    };
    assert_eq!(
        kinds("cp-1"),
        [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration"
        ]
    );
    assert_eq!(kinds("cp-2"), ["JoinConfiguration"]);
    // A control-plane node that is not its cluster's recorded initialiser joins, whatever its
    // name (a `cp-0` added after cp-1 initialised the cluster).
    let node = &config.nodes["cp-1"];
    let joined: Vec<_> = documents(&config.clusters["lab"], node, &pki, false, "1.32.10")
        .iter()
        .map(Document::kind)
        .collect();
    assert_eq!(joined, ["JoinConfiguration"]);
    assert_eq!(kinds("worker-1"), ["JoinConfiguration"]);

    let cp2 = render(&config, &config.nodes["cp-2"], &pki, false, None).unwrap();
    // A control plane that joins carries the shared keys in its seed, so it needs no
    // certificateKey (kubeadm's uploaded copy is deleted after 2 h).
    assert!(
        !cp2.kubeadm_yaml.contains("certificateKey"),
        "{}",
        cp2.kubeadm_yaml.as_str()
    );
    assert!(
        cp2.kubeadm_yaml
            .contains("advertiseAddress: \"10.44.0.11\""),
        "{}",
        cp2.kubeadm_yaml.as_str()
    );
    let worker = render(&config, &config.nodes["worker-1"], &pki, false, None).unwrap();
    assert!(
        worker.kubeadm_yaml.contains(&pki.ca_cert_hash),
        "{}",
        worker.kubeadm_yaml.as_str()
    );
    assert!(
        worker
            .kubeadm_yaml
            .contains("apiServerEndpoint: 10.44.0.10:6443"),
        "{}",
        worker.kubeadm_yaml.as_str()
    );
    assert!(
        !worker.kubeadm_yaml.contains("certificateKey"),
        "workers never get the certificate key"
    );
    let cp1 = render(&config, &config.nodes["cp-1"], &pki, true, None).unwrap();
    assert!(cp1.kubeadm_yaml.contains("kubernetesVersion: v1.32.10"));
    assert!(
        cp1.network_config.contains("- 10.44.0.10/24")
            && cp1.network_config.contains("via: 10.44.0.1")
    );
    assert_ne!(cp1.mac, worker.mac);
    // The digest the beacon must echo is the digest of exactly these bytes.
    assert_eq!(
        cp1.kubeadm_sha256,
        kubeadm::ca_cert_hash(cp1.kubeadm_yaml.as_bytes()).trim_start_matches("sha256:")
    );
    // Control-plane nodes carry the CAs (so kubeadm init uses the CA workers pin); workers never.
    assert_eq!(cp1.pki_files.len(), 8);
    assert!(
        cp1.user_data
            .contains("path: /etc/kubernetes/pki/ca.key\n    permissions: \"0600\"")
    );
    assert!(worker.pki_files.is_empty() && !worker.user_data.contains("ca.key"));
    assert!(
        worker.kubeadm_yaml.contains("name: node-ip"),
        "{}",
        worker.kubeadm_yaml.as_str()
    );
}

#[test]
fn the_seed_is_a_private_cidata_disk() {
    let config = three_node_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let seed = render(&config, &config.nodes["cp-1"], &pki, true, None).unwrap();
    let path = dir.path().join("seed.img");
    write_image(&seed, &path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let label = Command::new("fatlabel").arg(&path).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "CIDATA");
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let read = |name: &str| {
        let out = Command::new("mtype")
            .args(["-i"])
            .arg(&path)
            .arg(format!("::/{name}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(read("kubeadm.yaml"), seed.kubeadm_yaml.as_str());
    assert!(read("user-data").starts_with("#cloud-config\nwrite_files:"));
    assert_eq!(read("meta-data"), seed.meta_data);
    assert_eq!(
        read("pki/etcd/ca.crt").as_bytes(),
        std::fs::read(dir.path().join("pki/etcd/ca.crt")).unwrap()
    );
    // The cloud-config carries the same documents, indented as a block scalar.
    let user_data: serde_json::Value = serde_saphyr::from_str(&read("user-data")).unwrap();
    assert_eq!(
        user_data["write_files"][0]["content"].as_str().unwrap(),
        seed.kubeadm_yaml.as_str()
    );
}

/// The documents each role gets, with the cluster's secrets replaced by placeholders, against
/// golden files reviewed against kubeadm's v1beta4 types.go (`SLIPWAY_BLESS=1` rewrites them
/// after a deliberate change; review the diff).
#[test]
fn each_role_matches_its_golden_file() {
    let config = three_node_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/seed/golden");
    for (node, file) in [
        ("cp-1", "init-control-plane.yaml"),
        ("cp-2", "join-control-plane.yaml"),
        ("worker-1", "join-worker.yaml"),
    ] {
        let seed = render(&config, &config.nodes[node], &pki, node == "cp-1", None).unwrap();
        let text = seed
            .kubeadm_yaml
            .replace(pki.bootstrap_token.expose(), "TOKEN")
            .replace(&pki.ca_cert_hash, "sha256:CA-HASH");
        let path = golden.join(file);
        if std::env::var_os("SLIPWAY_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            expected,
            "{node}'s documents differ from {}",
            path.display()
        );
    }
}

/// The initialiser's seed names the cluster's pod network (flannel unless host.toml says
/// `cni = "none"`); no other node's seed does, since only the initialiser applies it.
#[test]
fn only_the_initialisers_seed_names_the_pod_network() {
    let config = three_node_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let cp1 = render(&config, &config.nodes["cp-1"], &pki, true, None).unwrap();
    assert_eq!(cp1.cni, Some(Cni::Flannel));
    for node in ["cp-2", "worker-1"] {
        assert_eq!(
            render(&config, &config.nodes[node], &pki, false, None)
                .unwrap()
                .cni,
            None
        );
    }
    let path = dir.path().join("cp-1.img");
    write_image(&cp1, &path).unwrap();
    assert_eq!(mtype(&path, "cni").as_deref(), Some("flannel\n"));
    let worker = render(&config, &config.nodes["worker-1"], &pki, false, None).unwrap();
    let path = dir.path().join("worker-1.img");
    write_image(&worker, &path).unwrap();
    assert_eq!(mtype(&path, "cni"), None, "a worker's seed has no cni file");

    let mut none = config.clone();
    none.clusters.get_mut("lab").unwrap().cni = Cni::None;
    let cp1 = render(&none, &none.nodes["cp-1"], &pki, true, None).unwrap();
    let path = dir.path().join("none.img");
    write_image(&cp1, &path).unwrap();
    assert_eq!(mtype(&path, "cni").as_deref(), Some("none\n"));
}

/// Every seed names the Kubernetes version its node is to run: the image's when slipwayd
/// knows it (a swap to an image of a newer Kubernetes), else the cluster's configured one.
/// The initialiser's ClusterConfiguration says the same version.
#[test]
fn every_seed_carries_the_kubernetes_version_its_node_is_to_run() {
    let config = three_node_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    for (node, init) in [("cp-1", true), ("cp-2", false), ("worker-1", false)] {
        let node = &config.nodes[node];
        let configured = render(&config, node, &pki, init, None).unwrap();
        assert_eq!(configured.kubernetes, "v1.32.10");
        let swapped = render(&config, node, &pki, init, Some("1.33.2")).unwrap();
        assert_eq!(swapped.kubernetes, "v1.33.2");
        let path = dir.path().join(format!("{}.img", node.name));
        write_image(&swapped, &path).unwrap();
        assert_eq!(mtype(&path, "kubernetes").as_deref(), Some("v1.33.2\n"));
        if init {
            assert!(
                swapped.kubeadm_yaml.contains("kubernetesVersion: v1.33.2"),
                "{}",
                swapped.kubeadm_yaml.as_str()
            );
        } else {
            // A joining node's documents do not name a version: the swap changes no digest.
            assert_eq!(swapped.kubeadm_sha256, configured.kubeadm_sha256);
        }
    }
}

/// A file of the seed disk `path`, read back with mtools (None: it has no such file).
fn mtype(path: &Path, name: &str) -> Option<String> {
    let out = Command::new("mtype")
        .arg("-i")
        .arg(path)
        .arg(format!("::/{name}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// The example with worker-1 a Windows worker.
fn windows_config() -> HostConfig {
    let mut config = three_node_config();
    config.nodes.get_mut("worker-1").unwrap().os = NodeOs::Windows;
    config
}

/// A Windows worker joins with the documents a Linux worker gets but for the CRI endpoint,
/// containerd's named pipe; the beacon's digest is still the sha256 of exactly these bytes.
#[test]
fn a_windows_worker_joins_as_a_linux_one_through_containerds_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let linux = render(
        &three_node_config(),
        &three_node_config().nodes["worker-1"],
        &pki,
        false,
        None,
    )
    .unwrap();
    let config = windows_config();
    let windows = render(&config, &config.nodes["worker-1"], &pki, false, None).unwrap();
    let join = |yaml: &str| -> JoinConfiguration {
        match serde_saphyr::from_str::<Document>(yaml).unwrap() {
            Document::Join(join) => join,
            other => panic!("expected a JoinConfiguration, got {}", other.kind()),
        }
    };
    let mut from_windows = join(&windows.kubeadm_yaml);
    let registration = from_windows.node_registration.as_mut().unwrap();
    assert_eq!(
        registration.cri_socket.as_deref(),
        Some("npipe:////./pipe/containerd-containerd")
    );
    registration.cri_socket = Some("unix:///run/containerd/containerd.sock".into());
    assert_eq!(from_windows, join(&linux.kubeadm_yaml));
    assert_ne!(windows.kubeadm_sha256, linux.kubeadm_sha256);
    assert_eq!(
        windows.kubeadm_sha256,
        kubeadm::ca_cert_hash(windows.kubeadm_yaml.as_bytes()).trim_start_matches("sha256:")
    );
    assert!(windows.pki_files.is_empty() && windows.cni.is_none());
    // The same instance and host names, and the same MAC: only the formats differ.
    assert_eq!(windows.mac, linux.mac);
    assert!(windows.meta_data.ends_with("\nlocal-hostname: worker-1\n"));
}

/// The Windows worker's documents, secrets replaced, against their golden file (reviewed
/// against kubeadm's v1beta4 types.go; `SLIPWAY_BLESS=1` rewrites it).
#[test]
fn a_windows_worker_matches_its_golden_file() {
    let config = windows_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let seed = render(&config, &config.nodes["worker-1"], &pki, false, None).unwrap();
    let text = seed
        .kubeadm_yaml
        .replace(pki.bootstrap_token.expose(), "TOKEN")
        .replace(&pki.ca_cert_hash, "sha256:CA-HASH");
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/seed/golden/join-windows-worker.yaml");
    if std::env::var_os("SLIPWAY_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(text, std::fs::read_to_string(&path).unwrap());
}

/// What cloudbase-init reads: a network-config of version 1 for the node's MAC, and a
/// cloud-config whose one write_files entry puts the documents at the Windows path. Debian's
/// cloud-init validates the user-data, as the CLI test does for Linux seeds' (cloudbase-init's
/// cloud-config is a subset of cloud-init's).
#[test]
fn a_windows_seed_is_what_the_windows_agent_reads() {
    let config = windows_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let seed = render(&config, &config.nodes["worker-1"], &pki, false, None).unwrap();

    // The network-config is the one windows-node's agent parses: version 2, one ethernet
    // matched by MAC, one address, a default route.
    let network: serde_json::Value = serde_saphyr::from_str(&seed.network_config).unwrap();
    assert_eq!(
        network,
        serde_json::json!({
            "version": 2,
            "ethernets": {"node": {
                "match": {"macaddress": seed.mac},
                "set-name": "eth0",
                "addresses": ["10.44.0.12/24"],
                "routes": [{"to": "default", "via": "10.44.0.1"}],
            }},
        })
    );
    // The agent's parser looks for exactly these keys (recipes/windows-node/firstboot.ps1).
    let agent = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/windows-node/firstboot.ps1"),
    )
    .unwrap();
    for key in [
        "'ethernets'",
        "'macaddress'",
        "'addresses'",
        "'routes'",
        "'via'",
    ] {
        assert!(agent.contains(key), "firstboot.ps1 no longer reads {key}");
    }

    let user_data: serde_json::Value = serde_saphyr::from_str(&seed.user_data).unwrap();
    let files = user_data["write_files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{}", seed.user_data.as_str());
    assert_eq!(
        files[0]["path"].as_str(),
        Some(r"C:\ProgramData\Slipway\kubeadm.yaml")
    );
    assert_eq!(files[0]["permissions"].as_str(), Some("0600"));
    assert_eq!(
        files[0]["content"].as_str(),
        Some(seed.kubeadm_yaml.as_str())
    );

    let path = dir.path().join("user-data");
    std::fs::write(&path, seed.user_data.as_bytes()).unwrap();
    let schema = |path: &Path| {
        Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(path)
            .output()
            .expect("cloud-init (./scripts/setup installs it)")
    };
    let out = schema(&path);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Valid"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a broken write_files is refused.
    let broken = dir.path().join("broken");
    std::fs::write(
        &broken,
        seed.user_data
            .replacen("permissions: \"0600\"", "permissions: [6]", 1),
    )
    .unwrap();
    assert!(!schema(&broken).status.success());
}

/// The disk holds exactly the five files the Windows first boot reads, private as a Linux one.
#[test]
fn a_windows_seed_disk_holds_exactly_its_five_files() {
    let config = windows_config();
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::pki::ensure(&dir.path().join("pki"), "lab").unwrap();
    let seed = render(
        &config,
        &config.nodes["worker-1"],
        &pki,
        false,
        Some("1.33.2"),
    )
    .unwrap();
    let path = dir.path().join("seed.img");
    write_image(&seed, &path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let listing = Command::new("mdir")
        .args(["-b", "-i"])
        .arg(&path)
        .arg("::/")
        .output()
        .unwrap();
    assert!(listing.status.success());
    let mut names: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("::/").to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kubeadm.yaml",
            "kubernetes",
            "meta-data",
            "network-config",
            "user-data"
        ]
    );
    assert_eq!(
        mtype(&path, "kubeadm.yaml").as_deref(),
        Some(seed.kubeadm_yaml.as_str())
    );
    assert_eq!(
        mtype(&path, "network-config").as_deref(),
        Some(seed.network_config.as_str())
    );
    assert_eq!(mtype(&path, "kubernetes").as_deref(), Some("v1.33.2\n"));
    let label = Command::new("fatlabel").arg(&path).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "CIDATA");
}
