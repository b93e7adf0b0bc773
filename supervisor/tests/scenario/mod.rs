//! The parts of the slipwayd scenarios (run.rs, rollout.rs): the images published, the supervisor run and
//! killed, its status and metrics read the way other tools read them.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// Each scenario (run.rs, rollout.rs) uses its own part of these.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn slipway_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_slipwayd")).with_file_name("slipway");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p builder; ./scripts/test does)",
        path.display()
    );
    path
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn qemu_pids(state: &Path) -> Vec<String> {
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

/// The first image: tiny-linux as the recipe says.
pub const GOOD: &str = "2026.11.0";
/// The second: tiny-linux whose init exits at once, so its kernel panics and QEMU (run with
/// -no-reboot) ends: an image that crashes at boot.
pub const CRASHING: &str = "2026.11.1";

/// `slipway ARGS` in `d` (inside `netns` when given), with the downloads shared with the
/// other tests.
pub fn slipway_in(d: &Path, netns: Option<&tests::netns::Netns>, args: &[&str]) -> String {
    let mut command =
        netns.map_or_else(|| Command::new(slipway_bin()), |n| n.command(slipway_bin()));
    ok(command
        .current_dir(d)
        .env("SLIPWAY_CACHE", d.join("cache"))
        .args(args)
        .output()
        .unwrap())
}

pub fn slipway(d: &Path, args: &[&str]) -> String {
    slipway_in(d, None, args)
}

/// How a test image differs from tiny-linux as its recipe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As the recipe says.
    Good,
    /// Its init exits at once (the kernel panics, QEMU ends): an image that crashes at boot.
    Crashing,
    /// One file more (/etc/motd names its version): next month's image.
    Changed,
    /// The recipe's never-ready knob on: it boots and never reports ready.
    NeverReady,
}

/// Builds tiny-linux `version` as `variant` (locked against today's archive), signs it with
/// `release.key` (made on first use) and pushes it to `repo` on a plain-HTTP registry in
/// `netns`.
pub fn build_and_push(
    d: &Path,
    repo: &str,
    netns: &tests::netns::Netns,
    version: &str,
    variant: Variant,
) {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("recipes");
    if !d.join("cache/debs").exists() {
        let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slipway-downloads/debs");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::create_dir_all(d.join("cache")).unwrap();
        std::os::unix::fs::symlink(&shared, d.join("cache/debs")).unwrap();
    }
    let mut recipe = std::fs::read_to_string(recipes.join("tiny-linux.toml"))
        .unwrap()
        .replace(
            &format!("version = \"{GOOD}\""),
            &format!("version = \"{version}\""),
        );
    let knob = "  # { path = \"/etc/slipway/never-ready\", text = \"\" },";
    assert!(recipe.contains(knob), "the recipe's never-ready knob moved");
    let mut init = std::fs::read_to_string(recipes.join("tiny-linux/init")).unwrap();
    match variant {
        Variant::Good => {}
        Variant::Crashing => {
            init = "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
                echo \"slipway-node: crashing at boot, uptime $(/bin/busybox cut -d' ' -f1 /proc/uptime)\"\n\
                exit 1\n"
                .to_owned();
        }
        Variant::Changed => {
            recipe = recipe.replace(
                knob,
                &format!("  {{ path = \"/etc/motd\", text = \"tiny-linux {version}\\n\" }},"),
            );
        }
        Variant::NeverReady => recipe = recipe.replace(knob, &knob.replacen("# ", "", 1)),
    }
    let dir = d.join("recipe").join(version);
    std::fs::create_dir_all(dir.join("tiny-linux")).unwrap();
    std::fs::write(dir.join("tiny-linux.toml"), recipe).unwrap();
    std::fs::write(dir.join("tiny-linux/init"), init).unwrap();
    let toml = format!("recipe/{version}/tiny-linux.toml");
    if !d.join("release.key").exists() {
        slipway(d, &["keygen", "release.key"]);
    }
    slipway(d, &["lock", &toml]);
    slipway(d, &["build", &toml, "--locked", "--out", "out"]);
    slipway_in(
        d,
        Some(netns),
        &[
            "push",
            &format!("out/tiny-linux-{version}.vhdx"),
            &format!("{repo}:{version}"),
            "--key",
            "release.key",
            "--plain-http",
        ],
    );
}

/// Builds the good image and the crashing one, pushes both to `repo` and promotes the good
/// one to `stable`; returns the host.toml text.
pub fn publish(d: &Path, repo: &str, netns: &tests::netns::Netns) -> String {
    build_and_push(d, repo, netns, GOOD, Variant::Good);
    build_and_push(d, repo, netns, CRASHING, Variant::Crashing);
    promote(d, repo, GOOD, netns);
    host_config(&d.join("state"), repo, &d.join("release.key.pub"))
}

/// Promotes `version` in `repo` to `stable` (a new channel version, also for an older image).
pub fn promote(d: &Path, repo: &str, version: &str, netns: &tests::netns::Netns) {
    slipway_in(
        d,
        Some(netns),
        &[
            "promote",
            &format!("{repo}:{version}"),
            "--channel",
            "stable",
            "--key",
            "release.key",
            "--plain-http",
        ],
    );
}

/// The example host.toml with its state directory, source and key here, and small VMs. A
/// source that is no `oci:` layout is a plain-HTTP registry.
pub fn host_config(state: &Path, store: &str, key: &Path) -> String {
    let source = if store.starts_with("oci:") {
        format!("reference = \"{store}\"")
    } else {
        format!("reference = \"{store}\"\nplain-http = true")
    };
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/host.toml"))
        .unwrap()
        .replace("/var/lib/slipway", state.to_str().unwrap())
        .replace("reference = \"oci:/srv/slipway/nodes\"", &source)
        .replace("/etc/slipway/release.key.pub", key.to_str().unwrap())
        .replace("memory = \"2G\"", "memory = \"512M\"")
        .replace("memory = \"1G\"", "memory = \"512M\"")
}

/// host.toml's text with the `[[nodes]]` table of `name` left out.
pub fn without_node(host: &str, name: &str) -> String {
    let at = host.find(&format!("[[nodes]]\nname = \"{name}\"")).unwrap();
    let end = host[at + 1..]
        .find("[[nodes]]")
        .map_or(host.len(), |e| at + 1 + e);
    format!("{}{}", &host[..at], &host[end..])
}

/// A node table for host.toml.
pub fn node_table(name: &str, role: &str) -> String {
    format!(
        "\n[[nodes]]\nname = \"{name}\"\ncluster = \"lab\"\nrole = \"{role}\"\nmemory = \"512M\"\nstate-disk = \"8G\"\n"
    )
}

/// The pid of node `name`'s QEMU.
/// The generation node `name`'s record names (how many surges replaced its VM).
pub fn generation(state: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(state.join("nodes").join(name).join("record")).unwrap();
    let record: Value = serde_json::from_str(text.split_once('\n').unwrap().1).unwrap();
    record["generation"].as_u64().unwrap_or(0)
}

/// The run directory of node `name`'s VM: its own, or its generation's after a surge.
pub fn vm_dir(state: &Path, name: &str) -> PathBuf {
    let root = state.join("nodes").join(name);
    match generation(state, name) {
        0 => root,
        n => root.join(format!("gen-{n}")),
    }
}

pub fn qemu_pid(state: &Path, name: &str) -> u32 {
    std::fs::read_to_string(vm_dir(state, name).join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The seconds a node's reason says it waits before its next start ("... again in 5 s",
/// "... next start in 10 s ...").
pub fn announced_delay(reason: &str) -> Option<u64> {
    let (_, after) = reason
        .split_once(" again in ")
        .or_else(|| reason.split_once(" next start in "))?;
    after.split(' ').next()?.parse().ok()
}

/// `kill -9 PID`.
pub fn kill_9(pid: u32) {
    ok(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .unwrap());
}

/// A `slipwayd run`, killed (as by `kill -9`) when dropped.
pub struct Supervisor {
    child: Child,
}

impl Supervisor {
    /// Starts `slipwayd run`, inside `netns` when given (where it may make its taps).
    pub fn start(
        d: &Path,
        bus: &str,
        log: &str,
        netns: Option<&tests::netns::Netns>,
    ) -> Supervisor {
        Supervisor::start_with(d, bus, log, netns, &[])
    }

    /// [`Supervisor::start`] with `env` set for it.
    pub fn start_with(
        d: &Path,
        bus: &str,
        log: &str,
        netns: Option<&tests::netns::Netns>,
        env: &[(&str, &str)],
    ) -> Supervisor {
        let log = std::fs::File::create(d.join(log)).unwrap();
        let program = env!("CARGO_BIN_EXE_slipwayd");
        let mut command = netns.map_or_else(|| Command::new(program), |n| n.command(program));
        let child = command
            .current_dir(d)
            .args(["run", "--config", "host.toml", "--metrics", "127.0.0.1:0"])
            .args(["--bus", bus])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Supervisor { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for it to end by itself; how it ended.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn kill(&mut self) {
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
pub struct Down(pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_slipwayd"))
            .current_dir(&self.0)
            .args(["down", "--config", "host.toml"])
            .output();
    }
}

pub fn slipwayd(d: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipwayd"))
        .current_dir(d)
        .args(args)
        .output()
        .unwrap()
}

/// `slipwayd status --json`, or None while no supervisor answers.
pub fn status(d: &Path, bus: &str) -> Option<Value> {
    let out = slipwayd(d, &["status", "--json", "--bus", bus]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Cluster lab's rollout in a `rollout status --json` answer.
pub fn lab(rollout: &Value) -> &Value {
    rollout["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cluster"] == "lab")
        .unwrap_or_else(|| panic!("no rollout of lab in {rollout:#}"))
}

pub fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {status:#}"))
}

/// Polls the status until `done` holds; returns it and the time taken.
pub fn wait_for(
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

pub fn all_ready(s: &Value, names: &[&str]) -> bool {
    names.iter().all(|n| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == *n && x["state"] == "ready")
    })
}

pub fn busctl(bus: &str, args: &[&str]) -> String {
    ok(Command::new("busctl")
        .arg(format!("--address={bus}"))
        .args(args)
        .output()
        .unwrap())
}

/// The loopback address the supervisor on `bus` serves its metrics on (its MetricsAddress
/// property, as busctl reads it).
pub fn metrics_address(bus: &str) -> String {
    let property = busctl(
        bus,
        &[
            "get-property",
            "org.slipway.Supervisor1",
            "/org/slipway/Supervisor1",
            "org.slipway.Supervisor1",
            "MetricsAddress",
        ],
    );
    property
        .trim()
        .strip_prefix("s \"")
        .and_then(|m| m.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

/// `GET /metrics` from inside `netns` (the supervisor's loopback is there).
pub fn scrape(netns: &tests::netns::Netns, address: &str) -> String {
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
pub fn parse_metrics(text: &str) -> Result<serde_json::Map<String, Value>, String> {
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
pub fn seed_documents(state: &Path, node: &str) -> Vec<u8> {
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
pub fn console_beacon(state: &Path, node: &str) -> Value {
    let log = std::fs::read_to_string(vm_dir(state, node).join("console.log")).unwrap();
    let line = log
        .lines()
        .filter_map(|l| l.split_once("slipway-beacon: "))
        .next_back()
        .unwrap_or_else(|| panic!("{node} printed no beacon:\n{log}"))
        .1;
    serde_json::from_str(line.trim()).unwrap()
}

/// The process's resident memory and CPU time (user + system, in clock ticks).
pub fn rss_and_cpu(pid: u32) -> (u64, u64) {
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
