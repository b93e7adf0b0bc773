//! `slipwayd up` with real components: tiny-linux built, signed, pushed to a local OCI layout
//! and promoted; three node VMs (QEMU + OVMF, TCG) boot from it with their seeds and report
//! ready with exactly their role's kubeadm documents, reaching the control-plane endpoint over
//! the cluster's switch; a second `up` leaves them alone; removing a node from the config
//! stops it; `down` stops the rest; state disks stay.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn qemu_processes(state: &Path) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", &format!("qemu-system.*{}", state.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn three_nodes_boot_from_the_channel_and_report_ready() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // tiny-linux, locked against today's archive, downloads shared with the other tests.
    std::fs::create_dir_all(d.join("recipe/tiny-linux")).unwrap();
    std::fs::copy(
        repo.join("recipes/tiny-linux.toml"),
        d.join("recipe/tiny-linux.toml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("recipes/tiny-linux/init"),
        d.join("recipe/tiny-linux/init"),
    )
    .unwrap();
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

    let state = d.join("state");
    let host =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/host.toml"))
            .unwrap()
            .replace("/var/lib/slipway", state.to_str().unwrap())
            .replace("oci:/srv/slipway/nodes", &store)
            .replace(
                "/etc/slipway/release.key.pub",
                d.join("release.key.pub").to_str().unwrap(),
            )
            .replace("memory = \"2G\"", "memory = \"512M\"")
            .replace("memory = \"1G\"", "memory = \"512M\"");
    std::fs::write(d.join("host.toml"), host).unwrap();
    let slipwayd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_slipwayd"))
            .current_dir(d)
            .args(args)
            .output()
            .unwrap()
    };

    let up = slipwayd(&["up", "--config", "host.toml"]);
    let table = String::from_utf8_lossy(&up.stdout).into_owned();
    let guard = Down(d.to_owned());
    assert!(
        up.status.success(),
        "{}\n{table}",
        String::from_utf8_lossy(&up.stderr)
    );
    for node in ["cp-1", "worker-1", "worker-2"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(node) && l.contains("ready"))
            .unwrap_or_else(|| panic!("{node} not ready:\n{table}"));
        assert!(
            line.contains("tiny-linux 2026.11.0") && line.contains("digest matches"),
            "{line}"
        );
    }
    assert_eq!(qemu_processes(&state), 3);

    // A second pass (as after a supervisor restart) re-attaches and starts nothing new.
    let again = ok(slipwayd(&["up", "--config", "host.toml"]));
    assert_eq!(again.matches("already running").count(), 3, "{again}");
    assert_eq!(qemu_processes(&state), 3, "a VM was duplicated");

    // Removing a node from the config stops it and keeps its state disk.
    let config = std::fs::read_to_string(d.join("host.toml")).unwrap();
    let at = config.find("[[nodes]]\nname = \"worker-2\"").unwrap();
    std::fs::write(d.join("host.toml"), &config[..at]).unwrap();
    let third = ok(slipwayd(&["up", "--config", "host.toml"]));
    assert!(
        third.contains("worker-2         stopped: no longer in the config"),
        "{third}"
    );
    assert_eq!(qemu_processes(&state), 2);
    assert!(
        state.join("nodes/worker-2/state.raw").exists(),
        "a removed node keeps its state disk"
    );

    drop(guard);
    assert_eq!(qemu_processes(&state), 0, "down left VMs running");
    assert!(
        state.join("nodes/worker-1/state.raw").exists(),
        "down must keep state disks"
    );
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
