//! `slipwayd run` on a Hyper-V host, issue 16's acceptance. Hyper-V and PowerShell cannot run
//! here: slipwayd reaches a real OpenSSH server on loopback whose `powershell` is the fake
//! Hyper-V host (`tests::sshd::FakeHyperV`, named a fake: it checks each plan's command line,
//! emulates the cmdlets on a JSON state and plays a guest that reads its seed and publishes its
//! beacon as a KVP item). Everything on slipwayd's side is the production code: the config,
//! the pulls of two signed channels (Linux and Windows images, the Windows ones built by
//! `slipway build` from recipes/windows-node.toml over a synthetic install.wim), the Hyper-V
//! driver and its plans, the executor over ssh/sftp, the beacon, the rollout's swap machine.
//! One set of fake VMs serves every assertion:
//! - a Linux control plane and two Windows workers are made, booted and ready, each VM as its
//!   image asks (Secure Boot template, VLAN, MAC), a failing plan on the way being a clear
//!   reason that the next pass gets over;
//! - both channels promote a new image: the rollout swaps every node in place, one at a time,
//!   each keeping its state disk (node id kept, boot count one higher) and dropping its old OS
//!   disk once committed;
//! - every plan the host received is one of the golden plans (which the plan tests parse with
//!   tree-sitter-powershell), with the golden command line's parameters.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tests::sshd::{FakeHyperV, Fault};
use tests::windows::{NodeSources, Spec};

use scenario::*;

const V1: &str = "2026.11.0";
const V2: &str = "2026.12.0";
const NODES: [&str; 3] = ["cp-1", "win-1", "win-2"];
const ROOT: &str = r"C:\Slipway";

/// `slipway push FILE oci:STORE:TAG`, signed; the artifact digest it printed.
fn push(d: &Path, vhdx: &Path, tag: &str) -> String {
    let out = slipway(
        d,
        &[
            "push",
            vhdx.to_str().unwrap(),
            &format!("oci:{}:{tag}", d.join("store").display()),
            "--key",
            "release.key",
        ],
    );
    let first = out.lines().next().unwrap();
    let digest = first.split('@').nth(1).unwrap().split(' ').next().unwrap();
    assert!(digest.starts_with("sha256:"), "{out}");
    digest.to_owned()
}

/// Promotes tag `tag` to `channel`.
fn promote_to(d: &Path, tag: &str, channel: &str) {
    slipway(
        d,
        &[
            "promote",
            &format!("oci:{}:{tag}", d.join("store").display()),
            "--channel",
            channel,
            "--key",
            "release.key",
        ],
    );
}

/// The Windows node image `version`, built from the reference recipe; its VHDX.
fn windows_image(d: &Path, sources: &NodeSources, version: &str) -> std::path::PathBuf {
    let recipe = sources.recipe(|r| {
        r["image"]
            .as_table_mut()
            .unwrap()
            .insert("version".into(), version.into());
    });
    slipway(
        d,
        &[
            "build",
            recipe.to_str().unwrap(),
            "--out",
            d.join("out").to_str().unwrap(),
            "--cache",
            d.join("cache").to_str().unwrap(),
        ],
    );
    d.join(format!("out/windows-node-{version}.vhdx"))
}

/// host.toml: the Hyper-V example, reaching the fake over SSH.
fn host_toml(d: &Path, fake: &FakeHyperV) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hyperv-host.toml");
    let executor = format!(
        "executor = {{ ssh = \"{}\", port = {}, identity = \"{}\", known-hosts = \"{}\" }}",
        fake.target(),
        fake.port(),
        fake.identity().display(),
        fake.known_hosts().display()
    );
    let text = std::fs::read_to_string(example).unwrap();
    let line = text.lines().find(|l| l.starts_with("executor = ")).unwrap();
    text.replace(line, &executor)
        .replace("/var/lib/slipway", d.join("state").to_str().unwrap())
        .replace(
            "oci:/srv/slipway/nodes",
            &format!("oci:{}", d.join("store").display()),
        )
        .replace(
            "/etc/slipway/release.key.pub",
            d.join("release.key.pub").to_str().unwrap(),
        )
        .replace(r"root = 'D:\Slipway'", &format!("root = '{ROOT}'"))
        + "\n[clusters.rollout]\nboot-deadline = \"60s\"\nsoak = \"5s\"\n"
}

/// The fake's VMs by name.
fn vms(fake: &FakeHyperV) -> serde_json::Map<String, Value> {
    fake.state()["vms"].as_object().unwrap().clone()
}

/// What VM `name`'s state disk holds (node id, boot count).
fn state_disk(fake: &FakeHyperV, name: &str) -> Value {
    let path = format!(r"{ROOT}\vms\{name}\state.vhdx");
    serde_json::from_slice(&std::fs::read(fake.host_path(&path)).unwrap()).unwrap()
}

/// `slipwayd rollout status --json`.
fn rollout(d: &Path, bus: &str) -> Option<Value> {
    let out = slipwayd(d, &["rollout", "status", "--json", "--bus", bus]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn a_hyperv_host_runs_and_swaps_windows_workers_beside_a_linux_node() {
    let fake = FakeHyperV::start_with(1.0);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    slipway(d, &["keygen", "release.key"]);

    // Two months of images: Linux (small stand-ins: the fake never boots them) and Windows
    // (really built). What each says once "booted" is the fake guest's images.json.
    let sources = NodeSources::new(&Spec::default());
    let mut digests = BTreeMap::new();
    let mut images = serde_json::Map::new();
    for (n, version) in [V1, V2].into_iter().enumerate() {
        tests::image::make(d, "linux-node", version, 4, n as u64 + 1);
        let linux = push(
            d,
            &d.join(format!("linux-node-{version}.vhdx")),
            &format!("linux-{version}"),
        );
        let windows = push(
            d,
            &windows_image(d, &sources, version),
            &format!("windows-{version}"),
        );
        for (digest, name) in [(&linux, "linux-node"), (&windows, "windows-node")] {
            images.insert(
                digest.trim_start_matches("sha256:").to_owned(),
                json!({"name": name, "version": version, "root_hash": ""}),
            );
        }
        digests.insert(version, (linux, windows));
    }
    fake.set_images(&Value::Object(images));
    promote_to(d, &format!("linux-{V1}"), "stable");
    promote_to(d, &format!("windows-{V1}"), "windows-stable");
    std::fs::write(d.join("host.toml"), host_toml(d, &fake)).unwrap();
    ok(slipwayd(d, &["check-config", "--config", "host.toml"]));

    // A plan failing on the way: win-2's first create-vm. Its reason says so; the next pass
    // makes it.
    fake.inject(Fault {
        action: "create-vm".into(),
        name: Some("win-2".into()),
        mode: "exit".into(),
        times: 1,
    });
    let bus = tests::dbus::Bus::start();
    let _run = Supervisor::start(d, &bus.address, "slipwayd.log", None);
    let reasons = std::sync::Mutex::new(BTreeSet::new());
    let (s, took) = wait_for(
        d,
        &bus.address,
        Duration::from_secs(180),
        "all ready",
        |s| {
            let reason = s["nodes"]
                .as_array()
                .and_then(|nodes| nodes.iter().find(|n| n["name"] == "win-2"))
                .and_then(|n| n["reason"].as_str())
                .unwrap_or_default();
            reasons.lock().unwrap().insert(reason.to_owned());
            all_ready(s, &NODES)
        },
    );
    eprintln!("three nodes ready in {took:?}");
    let reasons = reasons.into_inner().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("cannot make VM win-2") && r.contains("fault injected by the test")),
        "the failed plan is a reason: {reasons:#?}"
    );
    let (linux_v1, windows_v1) = &digests[V1];
    assert_eq!(node(&s, "cp-1")["digest"], **linux_v1);
    for name in ["win-1", "win-2"] {
        assert_eq!(node(&s, name)["digest"], **windows_v1);
        assert_eq!(node(&s, name)["image"], format!("windows-node {V1}"));
    }
    let made = vms(&fake);
    assert_eq!(
        made.keys().collect::<Vec<_>>(),
        ["cp-1", "win-1", "win-2"],
        "one VM per node, no half-made one left"
    );
    assert_eq!(made["cp-1"]["secure_boot_template"], "None");
    for name in ["win-1", "win-2"] {
        assert_eq!(made[name]["secure_boot_template"], "MicrosoftWindows");
    }
    for vm in made.values() {
        assert_eq!(vm["vlan"], 44, "the cluster's VLAN: {vm}");
        assert_eq!(vm["switch"], "Slipway");
        assert_eq!(vm["state"], "Running");
    }
    let before: BTreeMap<&str, Value> = NODES.iter().map(|n| (*n, state_disk(&fake, n))).collect();

    // Next month: both channels move; the rollout swaps all three in place, one at a time.
    promote_to(d, &format!("linux-{V2}"), "stable");
    promote_to(d, &format!("windows-{V2}"), "windows-stable");
    let (linux_v2, windows_v2) = &digests[V2];
    let most_down = std::cell::Cell::new(0);
    let (s, took) = wait_for(d, &bus.address, Duration::from_secs(300), "swapped", |s| {
        let down = NODES.iter().filter(|n| !all_ready(s, &[n])).count();
        most_down.set(most_down.get().max(down));
        NODES.iter().all(|n| {
            let want = if *n == "cp-1" { linux_v2 } else { windows_v2 };
            node(s, n)["digest"] == **want && node(s, n)["state"] == "ready"
        }) && rollout(d, &bus.address).is_some_and(|r| lab(&r)["state"] == "done")
    });
    eprintln!("three nodes swapped in {took:?}");
    let most_down = most_down.get();
    assert!(
        most_down <= 1,
        "max-unavailable 1 held: {most_down} down at once"
    );
    for name in NODES {
        let after = state_disk(&fake, name);
        assert_eq!(
            after["node_id"], before[name]["node_id"],
            "{name}'s state disk kept"
        );
        assert_eq!(
            after["boot_count"].as_u64().unwrap(),
            before[name]["boot_count"].as_u64().unwrap() + 1,
            "{name} rebooted once"
        );
        let os_disks: Vec<_> = std::fs::read_dir(fake.host_path(&format!(r"{ROOT}\vms\{name}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.starts_with("os-"))
            .collect();
        assert_eq!(
            os_disks.len(),
            1,
            "{name}'s old OS disk dropped: {os_disks:?}"
        );
    }
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3);

    // Every plan the host ran is a golden one, and parses.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/driver/hyperv/golden");
    let mut seen = BTreeSet::new();
    for plan in fake.plans() {
        let action = plan["action"].as_str().unwrap();
        let file = plan["script"].as_str().unwrap();
        let script =
            std::fs::read_to_string(fake.host_path(&format!(r"{ROOT}\plans\{file}"))).unwrap();
        let expected = std::fs::read_to_string(golden.join(format!("{action}.txt"))).unwrap();
        let (line, golden_script) = expected.split_once('\n').unwrap();
        assert_eq!(
            script, golden_script,
            "{action}: the script is the golden one"
        );
        let names: Vec<&str> = line
            .split(' ')
            .filter_map(|w| w.strip_prefix('-'))
            .skip_while(|w| *w != "File")
            .skip(1)
            .collect();
        let params: Vec<&str> = plan["params"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(
            params, sorted,
            "{action}: the golden command line's parameters"
        );
        seen.insert(action.to_owned());
    }
    for action in [
        "create-vm",
        "os-disk",
        "start-vm",
        "status",
        "beacon",
        "stop-vm",
        "drop-os-disks",
    ] {
        assert!(seen.contains(action), "{action} never ran: {seen:?}");
    }
}
