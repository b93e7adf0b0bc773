//! `slipwayd run` with real components: tiny-linux built, signed, pushed to a real OCI
//! registry and promoted; the supervisor on a private dbus-daemon boots three node VMs (QEMU +
//! OVMF, TCG, as an unprivileged user in a seccomp sandbox) that report ready with exactly their
//! role's kubeadm documents, reaching the control-plane endpoint over the cluster's switch.
//! Then, on the same VMs: the D-Bus API seen by busctl and dbus-monitor, the metrics read by the
//! Prometheus client's OpenMetrics parser, `kill -9` of the supervisor and a new one that
//! re-attaches without rebooting a guest; a newer image promoted while nodes run, a node's QEMU
//! killed and slipwayd restarted, and no node moving to it; a new node on an image that crashes
//! at boot going to `crashloop`; the registry killed and a node restarted on its recorded image;
//! the middle node removed (the others keep their addresses) and purged; a `cp-0` added that
//! joins and never inits; and `down`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod scenario;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use scenario::*;

#[test]
fn the_supervisor_keeps_its_promises_when_things_go_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The supervisor gives the host the cluster's gateway address on a tap: in a namespace of
    // the test's own, never in this machine's. The registry runs there too.
    let netns = tests::netns::Netns::create();
    let mut registry = tests::registry::Registry::start_in(&netns);
    let repo = format!("{}/slipway/nodes", registry.host);
    let host = publish(d, &repo, &netns);
    std::fs::write(d.join("host.toml"), &host).unwrap();
    let state = d.join("state");
    let bus = tests::dbus::Bus::start();
    let address = bus.address.as_str();
    let nodes = ["cp-1", "worker-1", "worker-2"];

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
    let good = ready["image"].as_str().unwrap().to_owned();
    assert!(
        good.starts_with(&format!("tiny-linux {GOOD} sha256:")),
        "{ready:#}"
    );
    let good_digest = good.split(' ').nth(2).unwrap().to_owned();
    assert_eq!(ready["channel"], "fresh", "{ready:#}");
    let good_root = console_beacon(&state, "cp-1")["root_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, address, kind) in [
        ("cp-1", "10.44.0.10", "InitConfiguration"),
        ("worker-1", "10.44.0.11", "JoinConfiguration"),
        ("worker-2", "10.44.0.12", "JoinConfiguration"),
    ] {
        let n = node(&ready, name);
        assert!(n["address"].as_str().unwrap().starts_with(address), "{n:#}");
        assert_eq!(n["digest"], good_digest.as_str(), "{n:#}");
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
        // The node's directory holds its state disk (the guest's /var) and console: root's,
        // and QEMU's group's (QEMU runs as slipway-vm), nobody else's.
        let overlay = format!("os-{}.qcow2", &good_digest["sha256:".len()..][..16]);
        for path in ["", "state.raw", "console.log", overlay.as_str()] {
            let meta = std::fs::metadata(state.join("nodes").join(name).join(path)).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o007,
                0,
                "{name}/{path}: world access"
            );
        }
        let text = String::from_utf8(documents).unwrap();
        assert!(text.contains(&format!("kind: {kind}")), "{name}:\n{text}");
        let init = text.contains("kind: InitConfiguration");
        assert_eq!(init, name == "cp-1", "only cp-1 initialises:\n{text}");
    }
    // Least privilege: no QEMU runs as root; each runs as slipway-vm, in a seccomp sandbox.
    let vm_uid = ok(Command::new("id")
        .args(["-u", "slipway-vm"])
        .output()
        .unwrap());
    let qemus = qemu_pids(&state);
    assert_eq!(qemus.len(), 3);
    for pid in qemus {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
        assert!(
            uids.split_whitespace().all(|u| u == vm_uid.trim()),
            "QEMU {pid} runs as uids {uids}, not slipway-vm ({vm_uid})"
        );
        assert!(
            status.contains("Seccomp:\t2"),
            "QEMU {pid} has no seccomp filter"
        );
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
    let metrics_address = metrics_address(address);

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
    let mut second = Supervisor::start(d, address, "run-2.log", Some(&netns));
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
    // No guest rebooted: each one's uptime only grew. (Not by the time between the two
    // beacons' arrival: a guest writes a beacon while no supervisor listens, and it arrives,
    // with its older uptime, when the new one connects.)
    for name in nodes {
        let (old, new) = (node(&before, name), node(&after, name));
        let (old_up, new_up) = (
            old["uptime"].as_i64().unwrap(),
            new["uptime"].as_i64().unwrap(),
        );
        assert!(
            new_up > old_up,
            "{name} rebooted: uptime {old_up} s, then {new_up} s"
        );
    }

    // Rollouts paused (tests/rollout.rs has them), a newer image is promoted while the nodes
    // run. A node's QEMU dies and slipwayd restarts: no node changes image (only a rolling
    // swap may move one, and the pause outlives the restart).
    ok(slipwayd(d, &["rollout", "pause", "--bus", address]));
    promote(d, &repo, CRASHING, &netns);
    ok(slipwayd(d, &["reload", "--bus", address]));
    let (promoted, _) = wait_for(
        d,
        address,
        Duration::from_secs(120),
        "the new image verified",
        |s| {
            s["image"]
                .as_str()
                .unwrap()
                .starts_with(&format!("tiny-linux {CRASHING} "))
        },
    );
    let crashing_digest = promoted["image"]
        .as_str()
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .to_owned();
    let worker_1 = qemu_pid(&state, "worker-1");
    kill_9(worker_1);
    second.kill();
    let mut third = Supervisor::start(d, address, "run-3.log", Some(&netns));
    let (back, _) = wait_for(d, address, Duration::from_secs(300), "worker-1 back", |s| {
        all_ready(s, &nodes) && qemu_pid(&state, "worker-1") != worker_1
    });
    for name in nodes {
        assert_eq!(
            node(&back, name)["digest"],
            good_digest.as_str(),
            "{name} moved: {back:#}"
        );
    }
    assert_eq!(
        console_beacon(&state, "worker-1")["root_hash"],
        good_root.as_str(),
        "the guest booted another root"
    );

    // A new node boots the channel's image; this one crashes at boot: it goes to `crashloop`
    // with growing gaps between starts, and its console keeps every attempt.
    std::fs::write(
        d.join("host.toml"),
        format!("{host}{}", node_table("w-crash", "worker")),
    )
    .unwrap();
    ok(slipwayd(d, &["reload", "--bus", address]));
    let mut starts: Vec<Instant> = Vec::new();
    let mut delays: Vec<u64> = Vec::new();
    let mut last_pid = None;
    let deadline = Instant::now() + Duration::from_secs(400);
    let looped = loop {
        assert!(
            Instant::now() < deadline,
            "w-crash never reached crashloop; starts {starts:?}"
        );
        // A pid file caught while QEMU rewrites it reads empty: not a start.
        let pid = std::fs::read_to_string(state.join("nodes/w-crash/qemu.pid"))
            .ok()
            .filter(|p| p.trim().parse::<u32>().is_ok());
        if pid.is_some() && pid != last_pid {
            starts.push(Instant::now());
            last_pid = pid;
        }
        let Some(s) = status(d, address) else {
            continue;
        };
        let crash = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "w-crash")
            .cloned();
        if let Some(crash) = crash {
            // The delay before each next start, as slipwayd announces it.
            if let Some(delay) = announced_delay(crash["reason"].as_str().unwrap())
                && delays.last() != Some(&delay)
            {
                delays.push(delay);
            }
            if crash["state"] == "crashloop" {
                break s;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let crash = node(&looped, "w-crash");
    assert_eq!(crash["digest"], crashing_digest.as_str(), "{crash:#}");
    assert!(
        crash["reason"]
            .as_str()
            .unwrap()
            .contains("without becoming ready"),
        "{crash:#}"
    );
    // Each exit announces a longer wait (5, 10, 20 s, jittered by 20 %: the ranges do not
    // overlap), and each start really waited at least that long after the one before (the
    // boot time comes on top, and varies with the machine's load).
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("w-crash: starts {gaps:?} apart; announced delays {delays:?} s");
    assert!(
        delays.len() >= 3 && delays.windows(2).all(|w| w[1] > w[0]),
        "the backoff does not grow: {delays:?}"
    );
    assert!(gaps.len() >= 2, "{gaps:?}");
    for (gap, delay) in gaps.iter().zip(&delays) {
        assert!(
            gap.as_secs() >= *delay,
            "a start came {gap:?} after the one before, not {delay} s"
        );
    }
    let console = std::fs::read_to_string(state.join("nodes/w-crash/console.log")).unwrap();
    assert_eq!(
        console.matches("slipway-node: crashing at boot").count(),
        starts.len(),
        "the console lost an attempt:\n{console}"
    );
    for name in nodes {
        assert_eq!(node(&looped, name)["state"], "ready", "{looped:#}");
    }
    std::fs::write(d.join("host.toml"), &host).unwrap();
    ok(slipwayd(d, &["reload", "--bus", address]));
    wait_for(
        d,
        address,
        Duration::from_secs(90),
        "w-crash removed",
        |s| node(s, "w-crash")["state"] == "removed",
    );

    // The registry dies and a node's QEMU with it: the node restarts on its recorded image,
    // the channel is stale (not refused), and no node waits.
    registry.kill();
    let worker_2 = qemu_pid(&state, "worker-2");
    kill_9(worker_2);
    ok(slipwayd(d, &["reload", "--bus", address]));
    let (stale, _) = wait_for(
        d,
        address,
        Duration::from_secs(300),
        "worker-2 back, channel stale",
        |s| {
            s["channel"] == "stale"
                && all_ready(s, &nodes)
                && qemu_pid(&state, "worker-2") != worker_2
        },
    );
    assert!(
        stale["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] != "waiting"),
        "{stale:#}"
    );
    assert_eq!(
        node(&stale, "worker-2")["digest"],
        good_digest.as_str(),
        "{stale:#}"
    );
    assert!(
        stale["image"].as_str().unwrap().contains(&crashing_digest),
        "the target was dropped: {stale:#}"
    );
    let table = ok(slipwayd(d, &["status", "--bus", address]));
    assert!(table.contains("channel: stale (verified "), "{table}");

    // The registry is back, and the good image is promoted again (a new channel version naming
    // the old digest).
    registry.resume();
    promote(d, &repo, GOOD, &netns);
    ok(slipwayd(d, &["reload", "--bus", address]));
    wait_for(
        d,
        address,
        Duration::from_secs(120),
        "the good image again",
        |s| s["channel"] == "fresh" && s["image"].as_str().unwrap().contains(&good_digest),
    );

    // The middle node is removed: stopped, its disks kept until a purge; the others keep their
    // addresses.
    let without_middle = without_node(&host, "worker-1");
    std::fs::write(d.join("host.toml"), &without_middle).unwrap();
    let (removed, _) = wait_for(
        d,
        address,
        Duration::from_secs(90),
        "worker-1 removed",
        |s| node(s, "worker-1")["state"] == "removed",
    );
    assert!(
        node(&removed, "cp-1")["address"]
            .as_str()
            .unwrap()
            .starts_with("10.44.0.10/"),
        "{removed:#}"
    );
    assert!(
        node(&removed, "worker-2")["address"]
            .as_str()
            .unwrap()
            .starts_with("10.44.0.12/"),
        "{removed:#}"
    );
    assert_eq!(qemu_pids(&state).len(), 2);
    assert!(state.join("nodes/worker-1/state.raw").exists());
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
    for gone in ["worker-1", "w-crash"] {
        ok(slipwayd(
            d,
            &["purge", gone, "--config", "host.toml", "--bus", address],
        ));
        assert!(!state.join("nodes").join(gone).exists());
    }

    // A host.toml that no longer loads is reported, and the config in force stays.
    std::fs::write(
        d.join("host.toml"),
        without_middle.replace("cpus = 2", "cpus = \"two\""),
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

    // cp-0 is added, declared first (it sorts before cp-1 too): it takes a free address, never
    // one in use, and joins the cluster cp-1 initialised.
    let with_cp0 = without_middle.replacen(
        "[[nodes]]",
        &format!(
            "{}\n[[nodes]]",
            node_table("cp-0", "control-plane").trim_start()
        ),
        1,
    );
    std::fs::write(d.join("host.toml"), &with_cp0).unwrap();
    ok(slipwayd(d, &["reload", "--bus", address]));
    let (joined, _) = wait_for(d, address, Duration::from_secs(300), "cp-0 ready", |s| {
        all_ready(s, &["cp-0", "cp-1", "worker-2"])
    });
    let cp0 = node(&joined, "cp-0");
    assert!(
        cp0["address"].as_str().unwrap().starts_with("10.44.0.11/"),
        "{joined:#}"
    );
    assert_eq!(cp0["digest"], good_digest.as_str(), "{joined:#}");
    let text = String::from_utf8(seed_documents(&state, "cp-0")).unwrap();
    assert!(
        !text.contains("InitConfiguration"),
        "cp-0 would init:\n{text}"
    );
    assert!(
        text.contains("kind: JoinConfiguration") && text.contains("controlPlane:"),
        "{text}"
    );
    assert_eq!(qemu_pids(&state).len(), 3);

    // `down` stops every VM and says how; it never says stopped while a pid lives.
    third.kill();
    let pids = qemu_pids(&state);
    let down = ok(slipwayd(d, &["down", "--config", "host.toml"]));
    eprintln!("down:\n{down}");
    for name in ["cp-0", "cp-1", "worker-2"] {
        let line = down
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{down}"));
        assert!(line.contains("stopped"), "{down}");
    }
    for pid in pids {
        // Gone, or a zombie its parent (here the test machine's PID 1) has not reaped yet.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "down said stopped; pid {pid} lives:\n{status}"
        );
    }
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
        // Node records may be made; no disk is.
        for n in std::fs::read_dir(state.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for disk in std::fs::read_dir(n.path()).unwrap().flatten() {
                let disk = disk.file_name().into_string().unwrap();
                assert!(
                    !(disk.ends_with(".qcow2") || disk == "state.raw" || disk == "seed.img"),
                    "{case}: {disk} was made"
                );
            }
        }
        eprintln!("{case}: {problem}");
    }
}
