//! The QEMU driver against real QEMU under TCG: OVMF over an empty VHDX (the firmware runs, finds
//! nothing to boot, and keeps writing to the console; it ignores ACPI power-down).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Qemu;
use super::files::{self, CONSOLE_GENERATIONS, CONSOLE_ROTATE_BYTES};
use super::vm::{PrivilegeDrop, VmUser};
use crate::config;
use crate::driver::network::Switch;
use crate::driver::{Driver, NetSpec, StopDeadlines, Stopped, VmSpec, VmStatus};

const VM_USER: &str = config::DEFAULT_VM_USER;

fn spec(root: &Path) -> VmSpec {
    let base = root.join("base.vhdx");
    if !base.exists() {
        tests::run(
            tests::qemu_img(&["create", "-q", "-f", "vhdx"])
                .arg(&base)
                .arg("64M"),
        );
        std::fs::write(root.join("seed.raw"), vec![0u8; 1 << 20]).unwrap();
    }
    VmSpec {
        name: "n-1".into(),
        dir: root.join("state/nodes/n-1"),
        base,
        image: format!("sha256:{}", "1a".repeat(32)),
        seed: root.join("seed.raw"),
        state_disk: 64 << 20,
        cpus: 1,
        memory: 256 << 20,
        mac: "52:54:00:aa:bb:01".into(),
        network: NetSpec {
            cluster: "lab".into(),
            gateway: "10.44.0.1".parse().unwrap(),
            prefix: 24,
        },
        secure_boot: "none".into(),
    }
}

async fn driver(root: &Path) -> Qemu {
    Qemu::open(&root.join("state"), config::Accel::Tcg, VM_USER)
        .await
        .unwrap()
        .without_host_link()
}

/// Frames the tap `tap` in `netns` has received from its switch.
fn received(netns: &tests::netns::Netns, tap: &str) -> u64 {
    let path = format!("/sys/class/net/{tap}/statistics/rx_packets");
    tests::run(netns.command("cat").arg(path))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until the console log holds more than `after` bytes and the firmware's boot manager
/// has spoken after them; returns the log.
async fn console_after(dir: &Path, after: usize) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let log = tokio::fs::read(dir.join("console.log")).await.unwrap();
        if log.len() > after && log[after..].windows(6).any(|w| w == b"BdsDxe") {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no firmware output after byte {after}: {:?}",
            String::from_utf8_lossy(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ends what a failed test left running: the VM of `dir` and the switch.
struct Cleanup {
    dir: std::path::PathBuf,
    switch: Switch,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = super::pid_in(&self.dir) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        self.switch.stop();
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && !std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .is_empty()
}

fn signal(pid: u32, signal: &str) {
    tests::run(std::process::Command::new("kill").args([signal, &pid.to_string()]));
}

/// One VM, booted twice: it runs as the VM user under seccomp with its files closed to others
/// and still sends frames through its cluster's (root) switch; a firmware that ignores
/// power-down is ended by quit; its console keeps both boots; a frozen QEMU (QMP never answers)
/// is SIGKILLed; stop returns only once the pid is gone.
#[tokio::test]
async fn a_vm_runs_unprivileged_keeps_its_console_and_always_stops() {
    let root = tempfile::tempdir().unwrap();
    let qemu = driver(root.path()).await;
    let spec = spec(root.path());
    let user = VmUser::look_up(VM_USER).await.unwrap();
    assert_eq!(qemu.status(&spec.name, &spec.dir).await, VmStatus::Stopped);

    qemu.prepare(&spec).await.unwrap();
    // The host link, in a namespace of the test's own: a tap the switch's frames arrive on.
    let switch = Switch::new(&root.path().join("state"), &spec.network.cluster);
    let _cleanup = Cleanup {
        dir: spec.dir.clone(),
        switch: switch.clone(),
    };
    assert!(switch.running().is_some(), "prepare starts the switch");
    let netns = tests::netns::Netns::create();
    let tap = "slwtest0";
    tests::run(
        netns
            .command("vde_plug2tap")
            .arg("-s")
            .arg(switch.socket())
            .arg("-P")
            .arg(switch.plug_pidfile())
            .args(["-d", tap]),
    );
    let start = Instant::now();
    while !tests::output(netns.command("ip").args(["link", "set", tap, "up"]))
        .status
        .success()
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no tap {tap}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = received(&netns, tap);
    let pid = qemu.start(&spec).await.unwrap();
    let crate::beacon::Port::Socket(socket) = qemu.beacon(&spec.dir) else {
        panic!("QEMU's beacon is a socket")
    };
    let beacon = tokio::net::UnixStream::connect(socket).await;
    assert!(
        beacon.is_ok(),
        "the beacon socket takes a connection: {beacon:?}"
    );

    // (c) Least privilege: the VM user, a seccomp filter, files for root and its group only.
    let ps =
        tests::run(std::process::Command::new("ps").args(["-o", "user=", "-p", &pid.to_string()]));
    assert_eq!(ps.trim(), VM_USER);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
        "{status}"
    );
    for (name, mode) in [
        ("", 0o750),
        ("os-1a1a1a1a1a1a1a1a.qcow2", 0o660),
        ("state.raw", 0o660),
        ("vars.fd", 0o660),
        ("console.log", 0o640),
    ] {
        let meta = std::fs::metadata(spec.dir.join(name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
            (0, user.gid, mode),
            "{name}"
        );
    }

    let first = console_after(&spec.dir, 0).await;
    // The firmware's network boot (DHCP) reaches the host's tap through the switch, though QEMU
    // dropped root after connecting to it.
    // QEMU dropped root after connecting to the cluster's root switch: its frames still get
    // through (QEMU's own gratuitous RARPs for the NIC; the firmware does no network boot).
    let mut client =
        super::qmp::Client::connect(&spec.dir.join("qmp.sock"), Duration::from_secs(5))
            .await
            .unwrap();
    let announce = serde_json::json!({ "initial": 50, "max": 100, "rounds": 3, "step": 50 });
    client
        .execute_with("announce-self", announce)
        .await
        .unwrap();
    drop(client);
    let start = Instant::now();
    while received(&netns, tap) <= before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no frame from the VM reached the switch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("frames from the VM after {:?}", start.elapsed());
    assert_eq!(
        qemu.status(&spec.name, &spec.dir).await,
        VmStatus::Running { pid }
    );

    // (a) OVMF with nothing to boot ignores the power button: quit ends it, within its deadline.
    let deadlines = StopDeadlines {
        powerdown: Duration::from_secs(2),
        quit: Duration::from_secs(10),
        kill: Duration::from_secs(5),
    };
    let start = Instant::now();
    let stopped = qemu.stop(&spec.name, &spec.dir, deadlines).await.unwrap();
    let took = start.elapsed();
    eprintln!("stop of a firmware that ignores power-down: {stopped:?} after {took:?}");
    assert_eq!(stopped, Stopped::Quit);
    assert!(!alive(pid), "stop returned while pid {pid} lives");
    assert!(
        took >= deadlines.powerdown,
        "quit came before the power-down deadline: {took:?}"
    );
    assert!(took < deadlines.powerdown + deadlines.quit, "{took:?}");
    assert_eq!(qemu.status(&spec.name, &spec.dir).await, VmStatus::Stopped);
    assert_eq!(
        qemu.stop(&spec.name, &spec.dir, deadlines).await.unwrap(),
        Stopped::AlreadyStopped
    );

    // (d) A second start appends to the first boot's console output.
    qemu.prepare(&spec).await.unwrap();
    let pid = qemu.start(&spec).await.unwrap();
    let both = console_after(&spec.dir, first.len()).await;
    assert!(
        both.starts_with(&first),
        "the first boot's console was lost"
    );

    // (b) A frozen QEMU: QMP takes the connection and never answers, so power-down and quit
    // cannot be delivered; SIGKILL ends it, and nothing waits out the first two deadlines.
    signal(pid, "-STOP");
    let status = qemu.status(&spec.name, &spec.dir).await;
    assert_eq!(
        status,
        VmStatus::Paused {
            pid,
            status: "unresponsive".into()
        }
    );
    let deadlines = StopDeadlines {
        powerdown: Duration::from_secs(30),
        quit: Duration::from_secs(30),
        kill: Duration::from_secs(5),
    };
    let start = Instant::now();
    let stopped = qemu.stop(&spec.name, &spec.dir, deadlines).await.unwrap();
    eprintln!(
        "stop of a frozen QEMU: {stopped:?} after {:?}",
        start.elapsed()
    );
    assert_eq!(stopped, Stopped::Killed);
    assert!(!alive(pid), "stop returned while pid {pid} lives");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "waited out a deadline of an undeliverable step: {:?}",
        start.elapsed()
    );

    qemu.stop_network(&spec.network.cluster).await;
    let start = Instant::now();
    while switch.running().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the switch outlived stop_network"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_console_log_rotates_past_its_size_keeping_three_generations() {
    let dir = tempfile::tempdir().unwrap();
    let gid = VmUser::look_up(VM_USER).await.unwrap().gid;
    let log = |n| files::console(dir.path(), n);
    // Under the size: left alone, appended to.
    std::fs::write(log(0), b"boot 1\n").unwrap();
    files::console_log(dir.path(), gid).await.unwrap();
    assert_eq!(std::fs::read(log(0)).unwrap(), b"boot 1\n");
    assert!(!log(1).exists());
    // Past the size, with every generation present: each moves up one, the oldest is dropped.
    let big = vec![b'x'; usize::try_from(CONSOLE_ROTATE_BYTES).unwrap() + 1];
    std::fs::write(log(0), &big).unwrap();
    for n in 1..=CONSOLE_GENERATIONS {
        std::fs::write(log(n), format!("generation {n}")).unwrap();
    }
    files::console_log(dir.path(), gid).await.unwrap();
    assert_eq!(std::fs::read(log(0)).unwrap(), b"", "a fresh live log");
    assert_eq!(std::fs::read(log(1)).unwrap(), big);
    assert_eq!(std::fs::read_to_string(log(2)).unwrap(), "generation 1");
    assert_eq!(std::fs::read_to_string(log(3)).unwrap(), "generation 2");
    assert!(!log(CONSOLE_GENERATIONS + 1).exists(), "only three kept");
}

#[tokio::test]
async fn a_missing_vm_user_is_named_with_how_to_make_it() {
    let error = VmUser::look_up("slipway-no-such-user").await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("slipway-no-such-user"), "{message}");
    assert!(message.contains("scripts/setup"), "{message}");
    assert!(message.contains("useradd --system"), "{message}");
    let user = VmUser::look_up(VM_USER).await.unwrap();
    assert_ne!(user.uid, 0);
}

#[tokio::test]
async fn the_privilege_drop_option_matches_the_qemu_version() {
    let version = tests::run(std::process::Command::new("qemu-system-x86_64").arg("-version"));
    let major: u32 = version
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let expected = if major >= 9 {
        PrivilegeDrop::RunWith
    } else {
        PrivilegeDrop::RunAs
    };
    assert_eq!(
        PrivilegeDrop::detect().await.unwrap(),
        expected,
        "{version}"
    );
}

#[tokio::test]
async fn each_image_gets_its_own_overlay_kept_until_a_commit_drops_the_others() {
    let root = tempfile::tempdir().unwrap();
    let spec = spec(root.path());
    let qemu = driver(root.path()).await;
    files::run_dir(&spec.dir, qemu.user().gid).await.unwrap();
    let (old, new) = (spec.image.clone(), format!("sha256:{}", "2b".repeat(32)));
    qemu.overlay(&spec.dir, &spec.base, &old).await.unwrap();
    let first = std::fs::metadata(spec.dir.join(files::overlay_name(&old))).unwrap();
    // Made again (a swap step run twice after a crash): the same file, not a fresh one.
    qemu.overlay(&spec.dir, &spec.base, &old).await.unwrap();
    let again = std::fs::metadata(spec.dir.join(files::overlay_name(&old))).unwrap();
    assert_eq!((first.ino(), first.mtime()), (again.ino(), again.mtime()));
    qemu.overlay(&spec.dir, &spec.base, &new).await.unwrap();
    let info = tests::run(
        tests::qemu_img(&["info", "--output=json"]).arg(spec.dir.join(files::overlay_name(&new))),
    );
    assert!(info.contains(spec.base.to_str().unwrap()), "{info}");
    std::fs::write(spec.dir.join("os.qcow2"), b"left by an older slipwayd").unwrap();
    std::fs::write(spec.dir.join("state.raw"), b"state").unwrap();
    qemu.drop_overlays(&spec.dir, &new).await.unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&spec.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, [files::overlay_name(&new), "state.raw".to_owned()]);
}
