//! Booting a disk image under QEMU + OVMF (TCG: KVM guests hang on this kind of machine) with
//! the serial console captured to a file the test can watch.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running guest; killed when dropped.
pub struct Guest {
    child: Child,
    serial: PathBuf,
    _dir: tempfile::TempDir,
}

impl Guest {
    /// Boots `disk` (QEMU driver `format`, e.g. `vhdx`) as a virtio disk under UEFI. The disk is
    /// opened with `-snapshot`: the guest's writes never reach the file.
    pub fn boot_uefi(disk: &Path, format: &str) -> Guest {
        let ovmf = firmware::find_default_ovmf().expect("OVMF (run ./scripts/setup)");
        let dir = tempfile::tempdir().unwrap();
        let vars = dir.path().join("vars.fd");
        std::fs::copy(&ovmf.vars, &vars).unwrap();
        let serial = dir.path().join("serial.log");
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "q35,accel=tcg", "-m", "512", "-smp", "1"])
            .args([
                "-display",
                "none",
                "-no-reboot",
                "-snapshot",
                "-net",
                "none",
            ])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                ovmf.code.display()
            ))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!(
                "file={},format={format},if=none,id=os",
                disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=os"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (run ./scripts/setup)");
        Guest {
            child,
            serial,
            _dir: dir,
        }
    }

    /// Waits until the serial console shows one of `patterns` (returns it) or `timeout` passes
    /// or the guest exits (returns `None`); also returns the whole console text.
    pub fn wait_for(&mut self, patterns: &[&str], timeout: Duration) -> (Option<String>, String) {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.serial).unwrap_or_default();
            if let Some(found) = patterns.iter().find(|p| text.contains(*p)) {
                return (Some((*found).to_owned()), text);
            }
            let exited = self.child.try_wait().ok().flatten().is_some();
            if exited || start.elapsed() > timeout {
                let text = std::fs::read_to_string(&self.serial).unwrap_or_default();
                let found = patterns
                    .iter()
                    .find(|p| text.contains(*p))
                    .map(|p| (*p).to_owned());
                return (found, text);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
