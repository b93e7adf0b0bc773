//! Node VMs under QEMU: q35 + OVMF (a vars store per VM), the OS disk as a qcow2 overlay over
//! the immutable VHDX base (QEMU cannot open differencing VHDX), a state disk created once and
//! never deleted by an image change, the NoCloud seed read-only, the serial console appended to
//! a log file, QMP on a unix socket, and the beacon on the virtio-serial port
//! org.slipway.beacon. VMs run detached (`-daemonize`) as an unprivileged user in a seccomp
//! sandbox: slipwayd finds them again by their pid file and QMP socket, so its own restart
//! neither reboots nor duplicates a VM.
//!
//! [`Qemu`] (in `vm`) is the [`crate::driver::Driver`]; `files` makes the disks and keeps the
//! console, `qmp` talks to a running QEMU.

mod files;
pub mod qmp;
mod vm;

pub use vm::Qemu;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// QEMU acceleration actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Emulation.
    Tcg,
}

/// The pid of the QEMU of the VM whose run directory is `dir`, if it is running.
pub fn pid_in(dir: &Path) -> Option<u32> {
    super::live_pid(&dir.join("qemu.pid"), "qemu-system", dir)
}

/// How long the KVM probe may take before KVM counts as hung (OVMF reaches its boot manager in
/// well under a second with working KVM; about 4 s under TCG).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// Whether QEMU can run the node VMs' firmware with `accel` (`kvm` or `tcg`) on this host:
/// boots OVMF (`code`, a copy of `vars`) with no disks and waits at most `deadline` for its boot
/// manager to speak on the serial port. `/dev/kvm` can exist and still fail every guest: on the
/// machines this was built on, OVMF stops at its first FPU instruction with "KVM internal
/// error ... emulation failure" and QEMU sits paused; that is a `false` here, not a hang.
/// `confine` is added to QEMU's arguments: the node VMs' privilege drop and sandbox, so the
/// probe never runs a guest as root either.
pub fn probe(
    accel: &str,
    code: &Path,
    vars: &Path,
    deadline: Duration,
    confine: &[String],
) -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let vars_copy = dir.path().join("vars.fd");
    let serial = dir.path().join("serial.log");
    if std::fs::copy(vars, &vars_copy).is_err() {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            &format!("q35,accel={accel}"),
            "-m",
            "128",
            "-display",
            "none",
        ])
        .args(["-nodefaults", "-no-reboot", "-net", "none"])
        .args(confine)
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars_copy.display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let start = Instant::now();
    let works = loop {
        let text = std::fs::read(&serial).unwrap_or_default();
        if text.windows(6).any(|w| w == b"BdsDxe") {
            break true;
        }
        if start.elapsed() > deadline || matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    works
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn the_probe_boots_the_firmware_under_tcg_and_never_outlives_its_deadline() {
        let ovmf = firmware::find_default_ovmf().unwrap();
        // TCG always works: this proves the probe sees the firmware's boot manager.
        assert!(probe(
            "tcg",
            &ovmf.code,
            &ovmf.vars,
            Duration::from_secs(60),
            &[]
        ));
        // KVM may work or not on a given machine; either way the answer comes in time.
        let start = Instant::now();
        let kvm = probe("kvm", &ovmf.code, &ovmf.vars, Duration::from_secs(3), &[]);
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "the probe outlived its deadline"
        );
        eprintln!("kvm usable here: {kvm}");
    }
}
