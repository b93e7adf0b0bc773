//! Rolling image swaps with real components: tiny-linux v1, v2 (one file changed) and a broken
//! v3 (the recipe's never-ready knob) built, signed and pushed to a real OCI registry; three
//! node VMs (QEMU + OVMF, TCG) on v1. One booted set of VMs serves every assertion:
//! - v2 promoted: slipwayd is killed with SIGKILL at every journal step of the first node's
//!   swap and started again each time (the crash matrix), then rolls the other two; never
//!   more than one node down, each state disk's node id kept and its boot count one higher,
//!   every guest's beacon showing v2's root hash;
//! - v3 promoted: the first node misses its boot deadline and is rolled back to v2, with
//!   slipwayd killed at every rollback step; the other two never reboot; v3 is marked failed,
//!   stays failed across a restart, and is never tried again;
//! - surge: v1 promoted again (a rollout back is a normal rollout) with `strategy = "surge"`:
//!   cp-1 swaps in place, each worker gets a replacement (its own run directory, state disk,
//!   MAC and address) that is ready before its old VM stops; slipwayd is killed while
//!   worker-1's replacement has verified, and again at its handover;
//! - pause, then v2 promoted again: nothing moves while paused; resumed, cp-1 swaps, then an
//!   abort while worker-1's replacement verifies drops the replacement, and the old VM runs on;
//! - the D-Bus signal, the metrics and `slipwayd rollout status` say each of these.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod scenario;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use scenario::*;

const V2: &str = "2026.12.0";
const V3: &str = "2027.01.0";
const NODES: [&str; 3] = ["cp-1", "worker-1", "worker-2"];
/// The forward steps of a swap, each one a place slipwayd is killed at.
const FORWARD: [&str; 8] = [
    "planned",
    "drained",
    "stopping",
    "stopped",
    "disks-switched",
    "booting",
    "verifying",
    "committed",
];
const BACKWARD: [&str; 3] = ["rolling-back", "booting-previous", "rolled-back"];

/// `slipwayd rollout status --json`.
fn rollout(d: &Path, bus: &str) -> Option<Value> {
    let out = slipwayd(d, &["rollout", "status", "--json", "--bus", bus]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn step<'a>(rollout: &'a Value, name: &str) -> &'a str {
    lab(rollout)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .unwrap()["step"]
        .as_str()
        .unwrap()
}

/// The QEMU processes running on node `name`'s disks, by run directory: `""` for the node's
/// own, `gen-N` for a surge's generation.
fn vms_by_dir(state: &Path, name: &str) -> BTreeMap<String, usize> {
    let marker = format!("{}/nodes/{name}/", state.display());
    let out = Command::new("pgrep")
        .args(["-af", &format!("qemu-system.*{marker}")])
        .output()
        .unwrap();
    let mut dirs = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let after = &line[line.find(&marker).unwrap() + marker.len()..];
        let first = after.split('/').next().unwrap_or_default();
        let dir = if first.starts_with("gen-") && after.contains('/') {
            first
        } else {
            ""
        };
        *dirs.entry(dir.to_owned()).or_default() += 1;
    }
    dirs
}

/// The QEMU processes running for node `name` (its own VM and a surge's replacement).
fn vms_of(state: &Path, name: &str) -> usize {
    vms_by_dir(state, name).values().sum()
}

/// The journal's payload (the line after the record header).
fn journal(state: &Path) -> Value {
    let text = std::fs::read_to_string(state.join("rollout")).unwrap();
    serde_json::from_str(text.split_once('\n').unwrap().1).unwrap()
}

/// What must hold whenever slipwayd has just died: no node has two VMs on its disks, at most
/// one node is down, and every state disk is the one made at first boot.
fn invariants(state: &Path, disks: &BTreeMap<&str, u64>, when: &str) {
    let mut down = Vec::new();
    for name in NODES {
        let vms = vms_by_dir(state, name);
        assert!(
            vms.values().all(|n| *n <= 1),
            "{when}: two VMs on one run directory of {name}: {vms:?}"
        );
        if vms.is_empty() {
            down.push(name);
        }
        if !disks.contains_key(name) {
            continue;
        }
        // Swapped in place: its VM runs on its own disks, never in another directory.
        assert!(
            vms.keys().all(String::is_empty),
            "{when}: {name} has a VM outside its own directory: {vms:?}"
        );
        let ino = std::fs::metadata(state.join("nodes").join(name).join("state.raw"))
            .unwrap()
            .ino();
        assert_eq!(
            ino, disks[name],
            "{when}: {name}'s state disk was made again"
        );
    }
    assert!(down.len() <= 1, "{when}: down at once: {down:?}");
}

/// The crash matrix: a slipwayd per step of `steps`, each told to kill itself with SIGKILL
/// right after the journal records cp-1's swap entering that step (the next one resumes
/// from there). After each death: the journal says that step, `check` agrees, and the
/// invariants hold. Returns the supervisor started after the last step, told nothing.
fn crash_walk(
    d: &Path,
    bus: &str,
    netns: &tests::netns::Netns,
    disks: &BTreeMap<&str, u64>,
    steps: &[&str],
    log: &str,
    check: impl Fn(usize, &Value),
) -> Supervisor {
    let state = d.join("state");
    let die_at = |i: usize| -> Vec<(&str, &str)> {
        steps
            .get(i)
            .map(|step| ("SLIPWAYD_DIE_AT_STEP", *step))
            .into_iter()
            .collect()
    };
    let mut supervisor =
        Supervisor::start_with(d, bus, &format!("run-{log}-0.log"), Some(netns), &die_at(0));
    for (i, at) in steps.iter().enumerate() {
        let ended = supervisor
            .wait_exit(Duration::from_secs(400))
            .unwrap_or_else(|| panic!("slipwayd did not reach step {at}"));
        assert_eq!(
            ended.signal(),
            Some(9),
            "it ended otherwise at {at}: {ended:?}"
        );
        let j = journal(&state);
        assert_eq!(j["swaps"]["cp-1"]["step"], *at, "{j:#}");
        check(i, &j);
        invariants(&state, disks, &format!("killed at {at}"));
        let next = format!("run-{log}-{}.log", i + 1);
        supervisor = Supervisor::start_with(d, bus, &next, Some(netns), &die_at(i + 1));
    }
    supervisor
}

/// Waits for the rollout to satisfy `done`, checking on every look that at most one node is
/// down (no QEMU, or a swap step that stops it).
fn watch(
    d: &Path,
    bus: &str,
    state: &Path,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value, &Value) -> bool,
) -> (Value, Value) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        if let (Some(s), Some(r)) = (status(d, bus), rollout(d, bus)) {
            let swapping: Vec<&str> = NODES
                .iter()
                .copied()
                .filter(|n| !matches!(step(&r, n), "" | "committed" | "rolled-back"))
                .collect();
            let no_vm: Vec<&str> = NODES
                .iter()
                .copied()
                .filter(|n| vms_of(state, n) == 0)
                .collect();
            assert!(
                swapping.len() <= 1,
                "{what}: swapping at once: {swapping:?}\n{r:#}"
            );
            assert!(no_vm.len() <= 1, "{what}: down at once: {no_vm:?}");
            if done(&s, &r) {
                return (s, r);
            }
            last = Some(r);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what}: not within {limit:?}; last rollout {last:#?}");
}

/// Each node's beacon as its guest last printed it (node id, boot count, root hash, uptime).
fn beacons(state: &Path) -> BTreeMap<&'static str, Value> {
    NODES
        .iter()
        .map(|n| (*n, console_beacon(state, n)))
        .collect()
}

/// The rollout's boot deadline, in seconds: short, yet long enough for a TCG guest to reach its
/// init (and count the boot on its state disk) while the other lane of `scripts/test` compiles
/// (60 s was not, once, on 2 cores).
const BOOT_DEADLINE: i64 = 90;

/// The host.toml of this test: the example's, on TCG, with short rollout deadlines.
fn host(d: &Path, repo: &str) -> String {
    let host = host_config(&d.join("state"), repo, &d.join("release.key.pub"))
        .replace("accel = \"auto\"", "accel = \"tcg\"");
    let network = host.find("network = {").unwrap();
    let end = network + host[network..].find('\n').unwrap() + 1;
    format!(
        "{}\n[clusters.rollout]\nmax-unavailable = 1\nboot-deadline = \"{BOOT_DEADLINE}s\"\nsoak = \"6s\"\n{}",
        &host[..end],
        &host[end..]
    )
}

#[test]
fn images_roll_node_by_node_survive_crashes_and_roll_back_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let netns = tests::netns::Netns::create();
    let registry = tests::registry::Registry::start_in(&netns);
    let repo = format!("{}/slipway/nodes", registry.host);
    build_and_push(d, &repo, &netns, GOOD, Variant::Good);
    build_and_push(d, &repo, &netns, V2, Variant::Changed);
    build_and_push(d, &repo, &netns, V3, Variant::NeverReady);
    promote(d, &repo, GOOD, &netns);
    std::fs::write(d.join("host.toml"), host(d, &repo)).unwrap();
    let state = d.join("state");
    let bus = tests::dbus::Bus::start();
    let bus = bus.address.as_str();
    let mut monitor = Command::new("dbus-monitor")
        .arg("--address")
        .arg(bus)
        .arg("type='signal',interface='org.slipway.Supervisor1',member='RolloutChanged'")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _down = Down(d.to_owned());
    let mut supervisor = Supervisor::start(d, bus, "run-v1.log", Some(&netns));
    wait_for(
        d,
        bus,
        Duration::from_secs(400),
        "three nodes ready on v1",
        |s| all_ready(s, &NODES),
    );
    let v1 = beacons(&state);
    let disks: BTreeMap<&str, u64> = NODES
        .iter()
        .map(|n| {
            let meta = std::fs::metadata(state.join("nodes").join(n).join("state.raw")).unwrap();
            (*n, meta.ino())
        })
        .collect();
    for (name, beacon) in &v1 {
        assert_eq!(beacon["boot_count"], 1, "{name}: {beacon:#}");
        assert_eq!(beacon["state_disk"], "formatted", "{name}: {beacon:#}");
    }
    let r = rollout(d, bus).unwrap();
    assert_eq!(lab(&r)["state"], "done", "{r:#}");

    // v2, with slipwayd killed at every step of the first node's swap.
    supervisor.kill();
    promote(d, &repo, V2, &netns);
    let rolled = Instant::now();
    let mut supervisor = crash_walk(d, bus, &netns, &disks, &FORWARD, "die", |_, j| {
        let swaps = j["swaps"].as_object().unwrap();
        assert_eq!(swaps.len(), 1, "one swap at a time: {j:#}");
    });
    let (s, r) = watch(
        d,
        bus,
        &state,
        Duration::from_secs(600),
        "every node on v2",
        |s, r| lab(r)["state"] == "done" && all_ready(s, &NODES),
    );
    eprintln!(
        "v1 → v2 across three nodes (8 restarts on the first): {:.0} s",
        rolled.elapsed().as_secs_f64()
    );
    let v2_digest = node(&s, "cp-1")["digest"].as_str().unwrap().to_owned();
    assert!(s["image"].as_str().unwrap().contains(V2), "{s:#}");
    let v2 = beacons(&state);
    for name in NODES {
        assert_eq!(
            node(&s, name)["digest"],
            v2_digest.as_str(),
            "{name}: {s:#}"
        );
        let (before, after) = (&v1[name], &v2[name]);
        assert_eq!(after["version"], V2, "{name}: {after:#}");
        assert_ne!(
            after["root_hash"], before["root_hash"],
            "{name} kept v1's root"
        );
        assert_eq!(
            after["node_id"], before["node_id"],
            "{name}'s state disk lost its node id"
        );
        assert_eq!(
            after["boot_count"], 2,
            "{name} booted more or less than once more: {after:#}"
        );
        assert_eq!(after["state_disk"], "mounted", "{name}: {after:#}");
        assert_eq!(step(&r, name), "committed", "{r:#}");
        // The committed swap dropped the previous OS overlay: one overlay, v2's.
        let overlays: Vec<String> = std::fs::read_dir(state.join("nodes").join(name))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("os") && n.ends_with(".qcow2"))
            .collect();
        assert_eq!(overlays.len(), 1, "{name}: {overlays:?}");
    }
    assert_eq!(v2["worker-1"]["root_hash"], v2["cp-1"]["root_hash"]);
    invariants(&state, &disks, "after v2");

    // v3 never reports ready: the first node is rolled back on its own, slipwayd killed at
    // every rollback step; the workers are never touched.
    let workers: Vec<u32> = ["worker-1", "worker-2"]
        .iter()
        .map(|n| qemu_pid(&state, n))
        .collect();
    supervisor.kill();
    promote(d, &repo, V3, &netns);
    let broke = Instant::now();
    let mut supervisor = crash_walk(d, bus, &netns, &disks, &BACKWARD, "back", |i, j| {
        if i == 0 {
            let reason = j["swaps"]["cp-1"]["reason"].as_str().unwrap();
            assert!(
                reason.contains("no healthy beacon") && reason.contains(V3),
                "{reason}"
            );
        }
    });
    let (s, r) = watch(
        d,
        bus,
        &state,
        Duration::from_secs(120),
        "v3 failed, cp-1 back on v2",
        |s, r| lab(r)["state"] == "failed" && all_ready(s, &NODES),
    );
    let back = broke.elapsed();
    eprintln!(
        "broken v3: cp-1 back on v2 and ready {:.0} s after the promotion (deadline {BOOT_DEADLINE} s, three restarts of slipwayd)",
        back.as_secs_f64()
    );
    let reason = lab(&r)["reason"].as_str().unwrap();
    assert!(
        reason.contains(V3) && reason.contains("cp-1") && reason.contains("no healthy beacon"),
        "{r:#}"
    );
    assert_eq!(node(&s, "cp-1")["digest"], v2_digest.as_str());
    let cp = console_beacon(&state, "cp-1");
    assert_eq!(
        (cp["version"].as_str(), cp["event"].as_str()),
        (Some(V2), Some("ready")),
        "{cp:#}"
    );
    assert_eq!(cp["node_id"], v1["cp-1"]["node_id"]);
    assert_eq!(cp["boot_count"], 4, "once on v3, once back on v2: {cp:#}");
    for (name, pid) in ["worker-1", "worker-2"].iter().zip(&workers) {
        assert_eq!(qemu_pid(&state, name), *pid, "{name} was restarted");
        assert_eq!(
            console_beacon(&state, name)["boot_count"],
            2,
            "{name} rebooted"
        );
    }
    // Back within its deadline plus one boot (and the three restarts of slipwayd).
    let j = journal(&state);
    let last = &j["last"]["cp-1"];
    assert_eq!(last["step"], "rolled-back", "{j:#}");
    let took = last["since"].as_i64().unwrap() - last["started"].as_i64().unwrap();
    assert!(
        took <= BOOT_DEADLINE + 45,
        "the rollback took {took} s: {j:#}"
    );
    // v3 stays failed: across a restart and a reload, nothing is planned.
    supervisor.kill();
    let mut supervisor = Supervisor::start(d, bus, "run-failed.log", Some(&netns));
    wait_for(
        d,
        bus,
        Duration::from_secs(30),
        "the new supervisor",
        |_| true,
    );
    ok(slipwayd(d, &["reload", "--bus", bus]));
    let (_, r) = watch(
        d,
        bus,
        &state,
        Duration::from_secs(60),
        "v3 still failed",
        |s, r| lab(r)["state"] == "failed" && all_ready(s, &NODES),
    );
    std::thread::sleep(Duration::from_secs(8));
    let j = journal(&state);
    assert!(
        j["swaps"].as_object().unwrap().is_empty(),
        "v3 was tried again: {j:#}"
    );
    assert_eq!(j["failed"].as_object().unwrap().len(), 1, "{j:#}");
    assert!(lab(&r)["reason"].as_str().unwrap().contains(V3));
    let text = ok(slipwayd(d, &["rollout", "status", "--bus", bus]));
    assert!(text.contains("failed") && text.contains("cp-1"), "{text}");

    // Surge: v1 promoted again (a rollout back is a normal rollout). cp-1, a control plane,
    // swaps in place; each worker gets a replacement beside it, ready before its old VM
    // stops. slipwayd is killed while worker-1's replacement verifies, and again right
    // before its handover.
    supervisor.kill();
    let policy = "[clusters.rollout]\n";
    let surge = std::fs::read_to_string(d.join("host.toml"))
        .unwrap()
        .replacen(policy, &format!("{policy}strategy = \"surge\"\n"), 1);
    std::fs::write(d.join("host.toml"), surge).unwrap();
    promote(d, &repo, GOOD, &netns);
    let old_workers: BTreeMap<&str, u32> = ["worker-1", "worker-2"]
        .iter()
        .map(|n| (*n, qemu_pid(&state, n)))
        .collect();
    let surged = Instant::now();
    let mut supervisor = Supervisor::start_with(
        d,
        bus,
        "run-surge-0.log",
        Some(&netns),
        &[("SLIPWAYD_DIE_AT_STEP", "worker-1:drained")],
    );
    let ended = supervisor.wait_exit(Duration::from_secs(400)).unwrap();
    assert_eq!(ended.signal(), Some(9), "{ended:?}");
    let j = journal(&state);
    let w1 = &j["swaps"]["worker-1"];
    assert_eq!(w1["surge"]["generation"], 1, "{j:#}");
    // The replacement verified while the old VM ran on: both up now, each on its own disks.
    assert_eq!(qemu_pid(&state, "worker-1"), old_workers["worker-1"]);
    let vms = vms_by_dir(&state, "worker-1");
    assert_eq!(
        vms,
        BTreeMap::from([(String::new(), 1), ("gen-1".to_owned(), 1)]),
        "worker-1's VMs after its replacement verified"
    );
    invariants(&state, &BTreeMap::new(), "killed at worker-1's drained");
    let mut supervisor = Supervisor::start_with(
        d,
        bus,
        "run-surge-1.log",
        Some(&netns),
        &[("SLIPWAYD_DIE_AT_STEP", "worker-1:stopped")],
    );
    let ended = supervisor.wait_exit(Duration::from_secs(200)).unwrap();
    assert_eq!(ended.signal(), Some(9), "{ended:?}");
    assert_eq!(generation(&state, "worker-1"), 0, "handed over early");
    let vms = vms_by_dir(&state, "worker-1");
    assert_eq!(
        vms,
        BTreeMap::from([("gen-1".to_owned(), 1)]),
        "worker-1's VMs at its handover"
    );
    invariants(&state, &BTreeMap::new(), "killed at worker-1's handover");
    let supervisor = Supervisor::start(d, bus, "run-surge-2.log", Some(&netns));
    let (s, r) = watch(
        d,
        bus,
        &state,
        Duration::from_secs(600),
        "every node on v1 again, the workers by surge",
        |s, r| lab(r)["state"] == "done" && all_ready(s, &NODES),
    );
    eprintln!(
        "v2 → v1: cp-1 in place, two workers by surge (two restarts): {:.0} s",
        surged.elapsed().as_secs_f64()
    );
    let v1_digest = node(&s, "cp-1")["digest"].as_str().unwrap().to_owned();
    assert_ne!(v1_digest, v2_digest);
    let j = journal(&state);
    for name in ["worker-1", "worker-2"] {
        let last = &j["last"][name];
        assert_eq!(last["step"], "committed", "{j:#}");
        assert_eq!(step(&r, name), "committed", "{r:#}");
        assert_eq!(node(&s, name)["digest"], v1_digest.as_str(), "{s:#}");
        // Ready before the old VM stopped: its first healthy beacon came before the old
        // VM's last one. (worker-1's old VM was stopped by a supervisor that had just
        // started and had not heard it yet: its last healthy beacon is not known.)
        let (first, before) = (
            last["first_healthy"].as_f64().unwrap(),
            last["last_healthy"].as_f64().unwrap(),
        );
        assert!(first > 0.0, "{last:#}");
        assert!(
            first < before || (name == "worker-1" && before == 0.0),
            "{name}'s replacement was not ready before its old VM stopped: {last:#}"
        );
        // The replacement is the node now: its generation, address and disks; the old
        // generation's disks are gone.
        assert_eq!(generation(&state, name), 1);
        let address = last["surge"]["address"].as_str().unwrap();
        assert!(
            node(&s, name)["address"]
                .as_str()
                .unwrap()
                .starts_with(address),
            "{s:#}"
        );
        let root = state.join("nodes").join(name);
        assert!(!root.join("state.raw").exists() && !root.join("qemu.pid").exists());
        let beacon = console_beacon(&state, name);
        assert_eq!(beacon["version"], GOOD, "{beacon:#}");
        assert_eq!(beacon["root_hash"], v1[name]["root_hash"], "{beacon:#}");
        assert_ne!(beacon["node_id"], v1[name]["node_id"], "a fresh state disk");
        assert_eq!(beacon["boot_count"], 1, "{beacon:#}");
        assert_ne!(qemu_pid(&state, name), old_workers[name]);
    }
    let cp = console_beacon(&state, "cp-1");
    assert_eq!(
        cp["node_id"], v1["cp-1"]["node_id"],
        "cp-1 swapped in place"
    );
    assert_eq!(cp["boot_count"], 5, "{cp:#}");
    assert!(
        j["swaps"].as_object().unwrap().is_empty() && generation(&state, "cp-1") == 0,
        "{j:#}"
    );

    // Paused, v2 promoted again: nothing moves. Resumed: cp-1 swaps to v2, then worker-1's
    // surge begins; aborted while its replacement verifies, the replacement is dropped and
    // the old VM never stopped. (A fresh supervisor: the metrics below are this part's.)
    drop(supervisor);
    let supervisor = Supervisor::start(d, bus, "run-abort.log", Some(&netns));
    wait_for(
        d,
        bus,
        Duration::from_secs(30),
        "the new supervisor",
        |_| true,
    );
    ok(slipwayd(d, &["rollout", "pause", "--bus", bus]));
    promote(d, &repo, V2, &netns);
    ok(slipwayd(d, &["reload", "--bus", bus]));
    let (_, r) = watch(
        d,
        bus,
        &state,
        Duration::from_secs(60),
        "paused on v2",
        |_, r| lab(r)["state"] == "paused" && lab(r)["target"].as_str().unwrap().contains(V2),
    );
    assert!(r["paused"].as_bool().unwrap(), "{r:#}");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        journal(&state)["swaps"].as_object().unwrap().is_empty(),
        "a swap started while paused"
    );
    ok(slipwayd(d, &["rollout", "resume", "--bus", bus]));
    watch(
        d,
        bus,
        &state,
        Duration::from_secs(200),
        "worker-1's replacement verifying v2",
        |_, r| step(r, "worker-1") == "verifying",
    );
    let worker = qemu_pid(&state, "worker-1");
    assert_eq!(
        vms_by_dir(&state, "worker-1").len(),
        2,
        "no replacement beside worker-1"
    );
    ok(slipwayd(d, &["rollout", "abort", "lab", "--bus", bus]));
    let (s, r) = watch(
        d,
        bus,
        &state,
        Duration::from_secs(200),
        "aborted, worker-1's replacement dropped",
        |s, r| {
            lab(r)["state"] == "aborted"
                && step(r, "worker-1") == "rolled-back"
                && all_ready(s, &NODES)
        },
    );
    assert_eq!(step(&r, "cp-1"), "committed", "{r:#}");
    assert_eq!(node(&s, "cp-1")["digest"], v2_digest.as_str(), "{s:#}");
    assert_eq!(node(&s, "worker-1")["digest"], v1_digest.as_str(), "{s:#}");
    assert_eq!(
        qemu_pid(&state, "worker-1"),
        worker,
        "worker-1's VM was stopped"
    );
    assert_eq!(generation(&state, "worker-1"), 1);
    assert!(
        !state.join("nodes/worker-1/gen-2").exists(),
        "the replacement's disks were kept"
    );
    assert_eq!(vms_of(&state, "worker-1"), 1);
    assert!(
        journal(&state)["failed"].as_object().unwrap().len() == 1,
        "an abort marks no image failed"
    );

    // What the metrics say of it all (this supervisor saw cp-1's swap and the abort only).
    let address = metrics_address(bus);
    let text = scrape(&netns, &address);
    let samples = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        samples["slipway_swaps_total{result=\"aborted\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["slipway_rollout_state{cluster=\"lab\",state=\"aborted\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["slipway_swaps_total{result=\"committed\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples["slipway_swap_duration_seconds_count"], 2.0,
        "{text}"
    );
    drop(supervisor);

    // The signal: dbus-monitor heard the rollout fail and the abort.
    let _ = monitor.kill();
    let mut heard = String::new();
    std::io::Read::read_to_string(&mut monitor.stdout.take().unwrap(), &mut heard).unwrap();
    let _ = monitor.wait();
    for state in ["failed", "aborted", "rolling"] {
        assert!(
            heard.contains(&format!("string \"{state}\"")),
            "no RolloutChanged {state}:\n{heard}"
        );
    }
}
