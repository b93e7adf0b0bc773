//! The systemd unit (`supervisor/systemd/slipwayd.service`): systemd's own checker accepts it,
//! it keeps the VMs alive across a stop or restart, and its sandbox leaves slipwayd and QEMU
//! what they need.
//!
//! systemd is not PID 1 in the test container, so nothing here starts the unit: these are the
//! checks systemd-analyze can make offline on a unit file.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the unit says slipwayd is installed; the copies under test point at the built binary.
const INSTALLED: &str = "/usr/local/bin/slipwayd";

/// The highest `systemd-analyze security` exposure (× 10) the unit may have; it has 4.9
/// with systemd 252. Dropping a protection without saying why should fail here.
const EXPOSURE_THRESHOLD: &str = "50";

fn unit_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/slipwayd.service"
    ))
    .unwrap()
}

/// Writes the unit into `dir` as `slipwayd.service` with ExecStart pointing at the binary this
/// test built (systemd-analyze refuses a command that does not exist) and `edit` (from, to)
/// applied; returns its path.
fn copy_unit(dir: &Path, edit: Option<(&str, &str)>) -> PathBuf {
    let text = unit_text();
    assert!(
        text.contains(INSTALLED),
        "the unit no longer runs {INSTALLED}"
    );
    let mut text = text.replace(INSTALLED, env!("CARGO_BIN_EXE_slipwayd"));
    if let Some((from, to)) = edit {
        assert!(text.contains(from), "{from:?} is not in the unit");
        text = text.replace(from, to);
    }
    let path = dir.join("slipwayd.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn systemd_analyze(args: &[&str], unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .current_dir(unit.parent().unwrap())
        .output()
        .expect("systemd-analyze did not run: install systemd (scripts/setup does)")
}

/// What `systemd-analyze verify` says about the unit: its exit status and every line that
/// mentions it. verify exits 0 on some warnings (an unknown key, for one), so a clean unit is
/// one with no such line.
fn verify(unit: &Path) -> (Output, Vec<String>) {
    let out = systemd_analyze(
        &[
            "verify",
            "--man=no",
            "--generators=no",
            "--recursive-errors=no",
        ],
        unit,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = text
        .lines()
        .filter(|line| line.contains("slipwayd.service"))
        .map(str::to_owned)
        .collect();
    (out, lines)
}

/// The values assigned to `key` in `section`, in order (systemd applies the last one for
/// single-valued keys). The unit uses no line continuations.
fn values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = String::new();
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "continuation line: {line}");
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_owned();
        } else if let Some((k, v)) = line.split_once('=')
            && current == section
            && k.trim() == key
        {
            found.push(v.trim().to_owned());
        }
    }
    found
}

/// The single value of `key` in `section`.
fn value(text: &str, section: &str, key: &str) -> String {
    let all = values(text, section, key);
    assert_eq!(all.len(), 1, "[{section}] {key}= set {} times", all.len());
    all.into_iter().next().unwrap()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let unit = copy_unit(dir.path(), None);
    let (out, lines) = verify(&unit);
    assert!(
        out.status.success() && lines.is_empty(),
        "systemd-analyze verify ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_reports_a_misspelled_directive() {
    // Proves the check above can fail: verify exits 0 here, only the line says what is wrong.
    let dir = tempfile::tempdir().unwrap();
    let unit = copy_unit(dir.path(), Some(("KillMode=process", "KilMode=process")));
    let (out, lines) = verify(&unit);
    assert!(
        lines.iter().any(|line| line.contains("KilMode")),
        "systemd-analyze verify did not report KilMode= ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn verify_reports_a_missing_binary() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-slipwayd");
    let unit = copy_unit(
        dir.path(),
        Some((env!("CARGO_BIN_EXE_slipwayd"), missing.to_str().unwrap())),
    );
    let (out, lines) = verify(&unit);
    assert!(
        !out.status.success() && lines.iter().any(|line| line.contains("no-such-slipwayd")),
        "systemd-analyze verify accepted a missing ExecStart binary ({}): {lines:?}",
        out.status
    );
}

#[test]
fn a_stop_or_restart_signals_slipwayd_alone() {
    let text = unit_text();
    // systemd.kill(5): `process` sends SIGTERM (and SIGKILL after the timeout) to the main
    // process only; the daemonised QEMUs and VDE switches stay in the control group.
    assert_eq!(value(&text, "Service", "KillMode"), "process");
    // A reload must not reach the VMs either: SIGHUP to the main pid, not the group.
    assert_eq!(
        value(&text, "Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    // An OOM-killed QEMU is one failed VM, not a reason to stop the supervisor.
    assert_eq!(value(&text, "Service", "OOMPolicy"), "continue");
    for key in ["SendSIGHUP", "KillSignal", "RestartKillSignal", "ExecStop"] {
        assert!(
            values(&text, "Service", key).is_empty(),
            "{key}= is set: check what it does to the VMs (systemd.kill(5))"
        );
    }
    assert_eq!(
        value(&text, "Service", "ExecStart"),
        format!("{INSTALLED} run --config /etc/slipway/host.toml")
    );
    assert_eq!(value(&text, "Service", "Type"), "exec");
    assert_eq!(value(&text, "Service", "Restart"), "on-failure");
    assert_eq!(value(&text, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn the_sandbox_leaves_what_slipwayd_and_qemu_use() {
    let text = unit_text();
    let caps = value(&text, "Service", "CapabilityBoundingSet");
    let caps: Vec<&str> = caps.split_whitespace().collect();
    for cap in [
        "CAP_NET_ADMIN", // taps (vde_plug2tap), ip address/link
        "CAP_SETUID",    // QEMU -runas
        "CAP_SETGID",    // QEMU -runas
        "CAP_KILL",      // signalling a QEMU that runs as slipway-vm
    ] {
        assert!(caps.contains(&cap), "{cap} missing from {caps:?}");
    }
    let devices = values(&text, "Service", "DeviceAllow");
    for device in ["/dev/kvm rw", "/dev/net/tun rw"] {
        assert!(
            devices.iter().any(|d| d == device),
            "{device} missing from {devices:?}"
        );
    }
    assert_eq!(value(&text, "Service", "StateDirectory"), "slipway");
    // Each of these breaks a VM: TCG's JIT needs writable code, PrivateDevices' /dev has no
    // kvm or net/tun, ProtectProc=invisible hides QEMUs of another uid (a second QEMU would
    // start on the same disks), a private network or user namespace has no host taps.
    for key in [
        "MemoryDenyWriteExecute",
        "PrivateDevices",
        "ProtectProc",
        "PrivateNetwork",
        "PrivateUsers",
    ] {
        assert!(
            values(&text, "Service", key).is_empty(),
            "{key}= breaks the VMs: see the comment at the end of [Service]"
        );
    }
}

#[test]
fn the_exposure_stays_under_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let unit = copy_unit(dir.path(), None);
    let out = systemd_analyze(
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            &format!("--threshold={EXPOSURE_THRESHOLD}"),
        ],
        &unit,
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze security ({}):\n{}\n{}",
        out.status,
        report.lines().last().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Overall exposure level for slipwayd.service"));
}

#[test]
fn the_exposure_check_can_fail() {
    // Without the capability bounding set (root's full set) the exposure is 6.2 with systemd
    // 252: over the threshold.
    let dir = tempfile::tempdir().unwrap();
    let unit = copy_unit(
        dir.path(),
        Some((
            "CapabilityBoundingSet=CAP_NET_ADMIN",
            "#CapabilityBoundingSet=CAP_NET_ADMIN",
        )),
    );
    let out = systemd_analyze(
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            &format!("--threshold={EXPOSURE_THRESHOLD}"),
        ],
        &unit,
    );
    assert!(
        !out.status.success(),
        "dropping CapabilityBoundingSet= still passed the threshold"
    );
}
