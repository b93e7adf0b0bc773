//! `slipwayd run` with real components: tiny-linux built, signed, pushed to a local OCI layout
//! and promoted; the supervisor on a private dbus-daemon boots three node VMs (QEMU + OVMF,
//! TCG) that report ready with exactly their role's kubeadm documents, reaching the
//! control-plane endpoint over the cluster's switch. Then: the D-Bus API seen by busctl and
//! dbus-monitor, the metrics read by the Prometheus client's OpenMetrics parser, `kill -9` of
//! the supervisor and a new one that re-attaches without rebooting a guest, a node removed from
//! host.toml (stopped, disks kept, then purged) and added back (booted), and `down`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

fn slipway_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_slipwayd")).with_file_name("slipway");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p builder; ./scripts/test does)",
        path.display()
    );
    path
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn qemu_pids(state: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("qemu-system.*{}", state.display())])
        .output()
        .unwrap();
    let mut pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    pids.sort();
    pids
}

/// tiny-linux (locked against today's archive, downloads shared with the other tests), signed,
/// pushed to `d/store` and promoted to `stable`; returns the host.toml text for it.
fn publish(d: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::create_dir_all(d.join("recipe/tiny-linux")).unwrap();
    for file in ["tiny-linux.toml", "tiny-linux/init"] {
        std::fs::copy(repo.join("recipes").join(file), d.join("recipe").join(file)).unwrap();
    }
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slipway-downloads/debs");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(d.join("cache")).unwrap();
    std::os::unix::fs::symlink(&shared, d.join("cache/debs")).unwrap();
    let slipway = |args: &[&str]| {
        ok(Command::new(slipway_bin())
            .current_dir(d)
            .env("SLIPWAY_CACHE", d.join("cache"))
            .args(args)
            .output()
            .unwrap())
    };
    slipway(&["keygen", "release.key"]);
    slipway(&["lock", "recipe/tiny-linux.toml"]);
    slipway(&[
        "build",
        "recipe/tiny-linux.toml",
        "--locked",
        "--out",
        "out",
    ]);
    let store = format!("oci:{}", d.join("store").display());
    slipway(&[
        "push",
        "out/tiny-linux-2026.11.0.vhdx",
        &format!("{store}:2026.11.0"),
        "--key",
        "release.key",
    ]);
    slipway(&[
        "promote",
        &format!("{store}:2026.11.0"),
        "--channel",
        "stable",
        "--key",
        "release.key",
    ]);
    host_config(&d.join("state"), &store, &d.join("release.key.pub"))
}

/// The example host.toml with its state directory, source and key here, and small VMs.
fn host_config(state: &Path, store: &str, key: &Path) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/host.toml"))
        .unwrap()
        .replace("/var/lib/slipway", state.to_str().unwrap())
        .replace("oci:/srv/slipway/nodes", store)
        .replace("/etc/slipway/release.key.pub", key.to_str().unwrap())
        .replace("memory = \"2G\"", "memory = \"512M\"")
        .replace("memory = \"1G\"", "memory = \"512M\"")
}

/// A `slipwayd run`, killed (as by `kill -9`) when dropped.
struct Supervisor {
    child: Child,
}

impl Supervisor {
    /// Starts `slipwayd run`, inside `netns` when given (where it may make its taps).
    fn start(d: &Path, bus: &str, log: &str, netns: Option<&tests::netns::Netns>) -> Supervisor {
        let log = std::fs::File::create(d.join(log)).unwrap();
        let program = env!("CARGO_BIN_EXE_slipwayd");
        let mut command = netns.map_or_else(|| Command::new(program), |n| n.command(program));
        let child = command
            .current_dir(d)
            .args(["run", "--config", "host.toml", "--metrics", "127.0.0.1:0"])
            .args(["--bus", bus])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Supervisor { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops the VMs however the test ends.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_slipwayd"))
            .current_dir(&self.0)
            .args(["down", "--config", "host.toml"])
            .output();
    }
}

fn slipwayd(d: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipwayd"))
        .current_dir(d)
        .args(args)
        .output()
        .unwrap()
}

/// `slipwayd status --json`, or None while no supervisor answers.
fn status(d: &Path, bus: &str) -> Option<Value> {
    let out = slipwayd(d, &["status", "--json", "--bus", bus]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {status:#}"))
}

/// Polls the status until `done` holds; returns it and the time taken.
fn wait_for(
    d: &Path,
    bus: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        if let Some(s) = status(d, bus) {
            if done(&s) {
                return (s, start.elapsed());
            }
            last = Some(s);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {limit:?}; last status {last:#?}");
}

fn all_ready(s: &Value, names: &[&str]) -> bool {
    names.iter().all(|n| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == *n && x["state"] == "ready")
    })
}

fn busctl(bus: &str, args: &[&str]) -> String {
    ok(Command::new("busctl")
        .arg(format!("--address={bus}"))
        .args(args)
        .output()
        .unwrap())
}

/// `GET /metrics` from inside `netns` (the supervisor's loopback is there).
fn scrape(netns: &tests::netns::Netns, address: &str) -> String {
    let script = "import sys, urllib.request\n\
        r = urllib.request.urlopen('http://' + sys.argv[1] + '/metrics')\n\
        assert r.status == 200 and r.headers['Content-Type'].startswith('application/openmetrics-text')\n\
        sys.stdout.write(r.read().decode())";
    ok(netns
        .command("/usr/bin/python3")
        .args(["-c", script, address])
        .output()
        .unwrap())
}

/// The samples of an OpenMetrics text, as parsed by the Prometheus Python client's parser
/// (Debian's python3-prometheus-client, hence Debian's python3 even where another one comes first
/// in PATH): `name{labels}` → value. Fails on text it rejects.
fn parse_metrics(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{%s}" % labels if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// The kubeadm documents on a node's seed disk.
fn seed_documents(state: &Path, node: &str) -> Vec<u8> {
    let seed = state.join("nodes").join(node).join("seed.img");
    let out = Command::new("mcopy")
        .arg("-i")
        .arg(&seed)
        .args(["::/kubeadm.yaml", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// The beacon the guest printed on its serial console as it came up (its own words, not
/// slipwayd's; its endpoint may not be up yet then).
fn console_beacon(state: &Path, node: &str) -> Value {
    let log = std::fs::read_to_string(state.join("nodes").join(node).join("console.log")).unwrap();
    let line = log
        .lines()
        .filter_map(|l| l.split_once("slipway-beacon: "))
        .next_back()
        .unwrap_or_else(|| panic!("{node} printed no beacon:\n{log}"))
        .1;
    serde_json::from_str(line.trim()).unwrap()
}

/// The process's resident memory and CPU time (user + system, in clock ticks).
fn rss_and_cpu(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss_kib, ticks)
}

#[test]
fn the_supervisor_boots_three_nodes_serves_its_api_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let host = publish(d);
    std::fs::write(d.join("host.toml"), &host).unwrap();
    let state = d.join("state");
    let bus = tests::dbus::Bus::start();
    let address = bus.address.as_str();
    let nodes = ["cp-1", "worker-1", "worker-2"];
    // The supervisor gives the host the cluster's gateway address on a tap: in a namespace of
    // the test's own, never in this machine's.
    let netns = tests::netns::Netns::create();

    let mut monitor = Command::new("dbus-monitor")
        .arg("--address")
        .arg(address)
        .arg("type='signal',interface='org.slipway.Supervisor1'")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Declared before the supervisors, so dropped after them: `down` is refused while one runs.
    let _down = Down(d.to_owned());
    let mut first = Supervisor::start(d, address, "run-1.log", Some(&netns));
    let (ready, _) = wait_for(
        d,
        address,
        Duration::from_secs(400),
        "three nodes ready",
        |s| all_ready(s, &nodes),
    );
    eprintln!(
        "slipwayd run: three nodes ready {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(qemu_pids(&state).len(), 3);
    assert!(
        ready["image"]
            .as_str()
            .unwrap()
            .starts_with("tiny-linux 2026.11.0 sha256:"),
        "{ready:#}"
    );
    for (name, address, kind) in [
        ("cp-1", "10.44.0.10", "InitConfiguration"),
        ("worker-1", "10.44.0.11", "JoinConfiguration"),
        ("worker-2", "10.44.0.12", "JoinConfiguration"),
    ] {
        let n = node(&ready, name);
        assert!(n["address"].as_str().unwrap().starts_with(address), "{n:#}");
        let digest = ready["image"].as_str().unwrap().split(' ').nth(2).unwrap();
        assert_eq!(n["digest"], digest, "{n:#}");
        // The guest's own account: the digest of the documents it installed is the digest of
        // what its seed carries, and those are its role's documents.
        let documents = seed_documents(&state, name);
        let digest = images::oci::artifact::hex(&Sha256::digest(&documents));
        let said = console_beacon(&state, name);
        assert_eq!(said["kubeadm_sha256"], digest, "{name}: {said:#}");
        assert_eq!(
            said["host"], "reachable",
            "{name} reaches the host: {said:#}"
        );
        // The node's directory holds its state disk (the guest's /var) and console: root's.
        for (path, mode) in [("", 0o700), ("state.raw", 0o600), ("console.log", 0o600)] {
            let meta = std::fs::metadata(state.join("nodes").join(name).join(path)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}/{path}");
        }
        let text = String::from_utf8(documents).unwrap();
        assert!(text.contains(&format!("kind: {kind}")), "{name}:\n{text}");
        let init = text.contains("kind: InitConfiguration");
        assert_eq!(init, name == "cp-1", "only cp-1 initialises:\n{text}");
    }

    // The table people read.
    let table = ok(slipwayd(d, &["status", "--bus", address]));
    for name in nodes {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(
            line.contains("ready") && line.contains("tiny-linux 2026.11.0"),
            "{table}"
        );
    }

    // D-Bus, as other tools see it.
    let introspection = busctl(
        address,
        &[
            "introspect",
            "org.slipway.Supervisor1",
            "/org/slipway/Supervisor1",
        ],
    );
    for member in [
        ".Nodes",
        ".Node",
        ".Reload",
        ".NodeChanged",
        ".MetricsAddress",
        ".Image",
    ] {
        assert!(introspection.contains(member), "{member}:\n{introspection}");
    }
    let answer = busctl(
        address,
        &[
            "call",
            "org.slipway.Supervisor1",
            "/org/slipway/Supervisor1",
            "org.slipway.Supervisor1",
            "Node",
            "s",
            "worker-1",
        ],
    );
    assert!(
        answer.contains("\"worker-1\" \"lab\" \"worker\" \"ready\""),
        "{answer}"
    );
    let metrics_property = busctl(
        address,
        &[
            "get-property",
            "org.slipway.Supervisor1",
            "/org/slipway/Supervisor1",
            "org.slipway.Supervisor1",
            "MetricsAddress",
        ],
    );
    let metrics_address = metrics_property
        .trim()
        .strip_prefix("s \"")
        .and_then(|m| m.strip_suffix('"'))
        .unwrap()
        .to_owned();

    // Metrics, through a real parser (which refuses a text cut short).
    let text = scrape(&netns, &metrics_address);
    let samples = parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(samples["slipway_nodes{state=\"ready\"}"], 3.0, "{text}");
    assert_eq!(
        samples["slipway_node_ready{cluster=\"lab\",node=\"worker-2\",role=\"worker\"}"], 1.0,
        "{text}"
    );
    assert_eq!(samples["slipway_vm_starts_total"], 3.0, "{text}");
    assert!(parse_metrics(text.trim_end_matches("# EOF\n")).is_err());

    // Idle cost: memory, and CPU over 10 s with three VMs beaconing.
    let (rss_kib, before) = rss_and_cpu(first.pid());
    std::thread::sleep(Duration::from_secs(10));
    let (_, after) = rss_and_cpu(first.pid());
    eprintln!(
        "slipwayd with three VMs: RSS {:.1} MiB, CPU {} ticks (1/100 s) in 10 s idle",
        rss_kib as f64 / 1024.0,
        after - before
    );

    // Signals: dbus-monitor heard each node become ready.
    let _ = monitor.kill();
    let mut heard = String::new();
    monitor
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut heard)
        .unwrap();
    let _ = monitor.wait();
    for name in nodes {
        let at = heard
            .find(&format!("string \"{name}\"\n   string \"ready\""))
            .unwrap_or_else(|| panic!("no NodeChanged {name} ready:\n{heard}"));
        assert!(heard[..at].contains("member=NodeChanged"), "{heard}");
    }

    // Only one supervisor per host, and `down` is refused while one runs.
    let second = slipwayd(
        d,
        &[
            "run",
            "--config",
            "host.toml",
            "--bus",
            address,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains(&format!("slipwayd run (pid {})", first.pid())),
        "{said}"
    );
    let down = slipwayd(d, &["down", "--config", "host.toml"]);
    assert!(!down.status.success(), "down while run supervises");

    // kill -9, then a new supervisor: no guest reboots, none is duplicated, all ready in 10 s.
    let pids = qemu_pids(&state);
    let before = wait_for(d, address, Duration::from_secs(30), "fresh beacons", |s| {
        all_ready(s, &nodes)
    })
    .0;
    first.kill();
    let killed = Instant::now();
    let _successor = Supervisor::start(d, address, "run-2.log", Some(&netns));
    let (after, _) = wait_for(d, address, Duration::from_secs(30), "ready again", |s| {
        all_ready(s, &nodes)
            && nodes.iter().all(|n| {
                node(s, n)["last_beacon"].as_i64() > node(&before, n)["last_beacon"].as_i64()
            })
    });
    let again = killed.elapsed();
    eprintln!(
        "after kill -9: all three ready again {:.1} s later",
        again.as_secs_f64()
    );
    assert!(again < Duration::from_secs(10), "took {again:?}");
    assert_eq!(qemu_pids(&state), pids, "a VM was restarted or duplicated");
    for name in nodes {
        let (old, new) = (node(&before, name), node(&after, name));
        let elapsed = new["last_beacon"].as_i64().unwrap() - old["last_beacon"].as_i64().unwrap();
        let (old_up, new_up) = (
            old["uptime"].as_i64().unwrap(),
            new["uptime"].as_i64().unwrap(),
        );
        assert!(
            new_up >= old_up + elapsed - 2,
            "{name} rebooted: uptime {old_up} s, then {new_up} s {elapsed} s later"
        );
    }

    // A node removed from host.toml is stopped; its disks stay until a purge.
    let at = host.find("[[nodes]]\nname = \"worker-2\"").unwrap();
    std::fs::write(d.join("host.toml"), &host[..at]).unwrap();
    wait_for(
        d,
        address,
        Duration::from_secs(90),
        "worker-2 removed",
        |s| node(s, "worker-2")["state"] == "removed",
    );
    assert_eq!(qemu_pids(&state).len(), 2);
    assert!(state.join("nodes/worker-2/state.raw").exists());
    // Purged through the running supervisor (never behind its back).
    let refused = slipwayd(
        d,
        &["purge", "cp-1", "--config", "host.toml", "--bus", address],
    );
    assert!(
        !refused.status.success(),
        "a configured node must not be purged"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("only a node removed from host.toml"),
        "{said}"
    );
    ok(slipwayd(
        d,
        &[
            "purge",
            "worker-2",
            "--config",
            "host.toml",
            "--bus",
            address,
        ],
    ));
    assert!(!state.join("nodes/worker-2").exists());

    // A host.toml that no longer loads is reported, and the config in force stays.
    std::fs::write(
        d.join("host.toml"),
        host.replace("cpus = 2", "cpus = \"two\""),
    )
    .unwrap();
    ok(slipwayd(d, &["reload", "--bus", address]));
    let (broken, _) = wait_for(d, address, Duration::from_secs(30), "config problem", |s| {
        s["problem"]
            .as_str()
            .unwrap()
            .contains("previous config stays in force")
    });
    assert_eq!(node(&broken, "cp-1")["state"], "ready", "{broken:#}");
    assert_eq!(qemu_pids(&state).len(), 2);

    // Added back, and asked to reload at once: it boots from the channel's image.
    std::fs::write(d.join("host.toml"), &host).unwrap();
    ok(slipwayd(d, &["reload", "--bus", address]));
    wait_for(d, address, Duration::from_secs(300), "worker-2 back", |s| {
        all_ready(s, &nodes)
    });
    assert_eq!(qemu_pids(&state).len(), 3);
}

#[test]
fn an_image_that_fails_a_check_is_never_booted_and_status_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slipway = |args: &[&str]| {
        ok(Command::new(slipway_bin())
            .current_dir(d)
            .args(args)
            .output()
            .unwrap())
    };
    slipway(&["keygen", "release.key"]);
    slipway(&["keygen", "other.key"]);
    let manifest = tests::image::make(d, "node", "1.0.0", 4, 7);
    let blob = images::manifest::Manifest::read(&manifest)
        .unwrap()
        .disk
        .sha256;
    let bus = tests::dbus::Bus::start();

    // Each case: its own repository, channel and host state.
    let cases: [(&str, &[&str], &str); 3] = [
        ("other-key", &["--key", "other.key"], "signature"),
        ("flipped-byte", &["--key", "release.key"], "digest"),
        (
            "expired",
            &["--key", "release.key", "--valid-for", "1s"],
            "expired",
        ),
    ];
    for (case, promote, why) in cases {
        let store = format!("oci:{}", d.join(case).join("store").display());
        slipway(&[
            "push",
            "node-1.0.0.vhdx",
            &format!("{store}:1.0.0"),
            "--key",
            "release.key",
        ]);
        let reference = format!("{store}:1.0.0");
        let mut args = vec!["promote", reference.as_str(), "--channel", "stable"];
        args.extend_from_slice(promote);
        slipway(&args);
        if case == "flipped-byte" {
            tests::patch(
                &d.join(case).join("store/blobs/sha256").join(&blob),
                1 << 20,
                &[0x5a],
            );
        }
        if case == "expired" {
            std::thread::sleep(Duration::from_secs(2));
        }
        let state = d.join(case).join("state");
        std::fs::write(
            d.join("host.toml"),
            host_config(&state, &store, &d.join("release.key.pub")),
        )
        .unwrap();
        let _run = Supervisor::start(d, &bus.address, &format!("{case}.log"), None);
        let (status, _) = wait_for(d, &bus.address, Duration::from_secs(60), case, |s| {
            // The pull runs beside the loop: its refusal comes a moment after the first pass.
            s["nodes"].as_array().unwrap().len() == 3 && s["problem"] != ""
        });
        let problem = status["problem"].as_str().unwrap();
        assert!(problem.contains(why), "{case}: {status:#}");
        assert_eq!(status["image"], "", "{case}");
        for n in status["nodes"].as_array().unwrap() {
            assert_eq!(n["state"], "waiting", "{case}: {n:#}");
            assert!(n["reason"].as_str().unwrap().contains(why), "{case}: {n:#}");
        }
        assert!(qemu_pids(&state).is_empty(), "{case}: a VM runs");
        assert!(
            !state.join("nodes").exists(),
            "{case}: a node disk was made"
        );
        eprintln!("{case}: {problem}");
    }
}
