//! A fake Hyper-V host reached over real SSH: Debian's OpenSSH server (`sshd`, run as root on
//! 127.0.0.1 at a free port, with its own config, host key and client key in a temporary
//! directory) whose `powershell` is the `fake-powershell` binary ([`crate::hyperv`]). Killed
//! when dropped.
//!
//! Paths behave as on Windows' OpenSSH: sshd runs in a mount namespace of its own (`unshare
//! --mount --propagation private`, util-linux) where the fake host's `C:` drive, the directory
//! `ROOT/C:`, is bind-mounted on `/C:`. Windows' sftp-server reaches `C:\a\b` as `/C:/a/b`; a
//! path without the leading `/` is relative to the account's home directory, here as there
//! `C:\Users\NAME` (`/C:/Users/root`): an executor sending `C:/a/b` writes to
//! `C:\Users\root\C:\a\b` and the tests see the file is not where it should be. Each server
//! has its own namespace, so parallel tests do not see each other's `C:`. The mount point `/C:`
//! must exist on the real root: [`FakeHyperV::start`] makes the empty directory when it is
//! missing.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub use crate::hyperv::Fault;

/// Where the fake host's `C:` drive is mounted in sshd's namespace: Windows' sftp-server's
/// name for the drive's root.
const MOUNT_POINT: &str = "/C:";

/// The account the tests log in as: its home is `C:\Users\root`, where sftp starts.
const HOME_USER: &str = "root";

/// How long sshd may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running OpenSSH server in front of the fake `powershell`.
pub struct FakeHyperV {
    dir: TempDir,
    port: u16,
    sshd: Child,
}

impl FakeHyperV {
    /// Starts a fake host whose guests take 3 s to boot.
    pub fn start() -> FakeHyperV {
        FakeHyperV::start_with(3.0)
    }

    /// Starts a fake host whose guests take `boot_seconds` to answer.
    pub fn start_with(boot_seconds: f64) -> FakeHyperV {
        let dir = tempfile::tempdir().unwrap();
        let (ssh, bin, root) = (
            dir.path().join("ssh"),
            dir.path().join("bin"),
            dir.path().join("root"),
        );
        for d in [&ssh, &bin, &root] {
            std::fs::create_dir_all(d).unwrap();
        }
        let fake = fake_program();
        std::os::unix::fs::symlink(&fake, bin.join("powershell")).unwrap();
        // The Local executor's program: the fake with the environment sshd gives it.
        let local = bin.join("local-powershell");
        std::fs::write(
            &local,
            format!(
                "#!/bin/sh\nFAKE_HYPERV_ROOT='{}' FAKE_BOOT_SECONDS={boot_seconds} exec '{}' \"$@\"\n",
                root.display(),
                fake.display()
            ),
        )
        .unwrap();
        set_mode(&local, 0o755);
        for key in ["host_ed25519", "client_ed25519"] {
            crate::run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", ""])
                    .arg("-f")
                    .arg(ssh.join(key)),
            );
        }
        std::fs::copy(ssh.join("client_ed25519.pub"), ssh.join("authorized_keys")).unwrap();
        // sshd refuses a privilege separation directory that is missing.
        std::fs::create_dir_all("/run/sshd").unwrap();

        let port = free_port();
        let host_key = std::fs::read_to_string(ssh.join("host_ed25519.pub")).unwrap();
        std::fs::write(
            ssh.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .unwrap();
        let config = ssh.join("sshd_config");
        std::fs::write(&config, sshd_config(port, &ssh, &bin, &root, boot_seconds)).unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let drive = root.join("C:");
        std::fs::create_dir_all(drive.join("Users").join(HOME_USER)).unwrap();
        // The mount point, on the real root: an empty directory, the same for every test.
        std::fs::create_dir_all(MOUNT_POINT).unwrap();
        // sh runs in the new namespace, mounts, and becomes sshd (same pid: kill() reaches it).
        // An absolute path for sshd: it re-executes itself for each connection.
        let sshd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg("mount --bind \"$1\" \"$2\" && exec /usr/sbin/sshd -D -e -f \"$3\"")
            .arg("sh")
            .arg(&drive)
            .arg(MOUNT_POINT)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start unshare and /usr/sbin/sshd: {e} (apt-get install util-linux \
                     openssh-server; scripts/setup does)"
                )
            });
        let mut fake = FakeHyperV { dir, port, sshd };
        fake.wait_listening();
        fake
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            let exited = self.sshd.try_wait().unwrap();
            if exited.is_some() || start.elapsed() > START_DEADLINE {
                panic!(
                    "sshd did not listen on port {} ({exited:?}): {}",
                    self.port,
                    std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `user@host` to reach it.
    pub fn target(&self) -> String {
        "root@127.0.0.1".to_owned()
    }

    /// The client's private key.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("ssh/client_ed25519")
    }

    /// A known_hosts file holding the server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("ssh/known_hosts")
    }

    /// The fake host's filesystem root (`C:\a` is `root/C:/a`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The fake as a local program (for the Local executor): it runs with this host's root.
    pub fn local_program(&self) -> PathBuf {
        self.dir.path().join("bin/local-powershell")
    }

    /// Puts a VM named `name` that Slipway did not make (no Slipway Notes) on the fake host.
    pub fn put_foreign_vm(&self, name: &str) {
        self.put_untagged_vm(name, &format!("C:\\Hyper-V\\{name}"));
    }

    /// Puts a VM named `name` with no Notes whose Path is `directory` on the fake host: someone
    /// else's, or (in the node's own directory) one a create-vm killed right after New-VM left.
    pub fn put_untagged_vm(&self, name: &str, directory: &str) {
        let mut state: crate::hyperv::State =
            crate::hyperv::read_json(&self.root().join("hyperv.json")).unwrap_or_default();
        state
            .vms
            .insert(name.to_owned(), crate::hyperv::Vm::foreign(directory));
        crate::hyperv::write_json(
            &self.root().join("hyperv.json"),
            &serde_json::to_value(&state).unwrap(),
        );
    }

    /// Where the Windows path `win` is on this machine.
    pub fn host_path(&self, win: &str) -> PathBuf {
        self.root().join(win.replace('\\', "/"))
    }

    /// Writes a NoCloud seed as the driver makes it (a FAT volume labelled CIDATA in a VHDX)
    /// at the local path `vhdx`, holding `kubeadm.yaml` and a network-config whose first
    /// address is `address/24`.
    pub fn write_seed(vhdx: &Path, kubeadm_yaml: &str, address: &str) {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("seed.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        crate::run(Command::new("mkfs.vfat").args(["-n", "CIDATA"]).arg(&raw));
        let network =
            format!("version: 2\nethernets:\n  node:\n    addresses:\n      - {address}/24\n");
        for (name, text) in [
            ("kubeadm.yaml", kubeadm_yaml),
            ("network-config", network.as_str()),
        ] {
            let file = dir.path().join(name);
            std::fs::write(&file, text).unwrap();
            crate::run(
                Command::new("mcopy")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-i")
                    .arg(&raw)
                    .arg(&file)
                    .arg(format!("::/{name}")),
            );
        }
        let identity = images::vhdx::Identity::derived(kubeadm_yaml);
        crate::convert(&raw, vhdx, &images::vhdx::Options::new(identity));
    }

    /// sshd's own log (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The plans run so far, in order: `{"action", "params": {NAME: "value"}, "script"}` (values
    /// as the fake received them: text).
    pub fn plans(&self) -> Vec<Value> {
        std::fs::read_to_string(self.root().join("plans.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// What guests booted from each image say: a map of 64-hex image digest to
    /// `{"name", "version", "root_hash", "never_ready", "no_shutdown_service"}`.
    pub fn set_images(&self, images: &Value) {
        std::fs::write(self.root().join("images.json"), images.to_string()).unwrap();
    }

    /// Adds a fault, after those already waiting.
    pub fn inject(&self, fault: Fault) {
        let path = self.root().join("faults.json");
        let mut faults: Vec<Fault> = std::fs::read_to_string(&path)
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or_default();
        faults.push(fault);
        std::fs::write(path, serde_json::to_string(&faults).unwrap()).unwrap();
    }

    /// The fake Hyper-V's state (`{"vms": {NAME: {...}}}`).
    pub fn state(&self) -> Value {
        std::fs::read_to_string(self.root().join("hyperv.json"))
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or_else(|_| serde_json::json!({"vms": {}}))
    }
}

impl Drop for FakeHyperV {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// The server's config: key-only root login on loopback, nothing read from /etc/ssh, PATH
/// leading to the fake `powershell` whose drives are at `/`, sftp starting in the account's
/// home directory on the fake `C:` drive, as Windows' does.
fn sshd_config(port: u16, ssh: &Path, bin: &Path, root: &Path, boot_seconds: f64) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {ssh}/host_ed25519\n\
         PidFile none\n\
         AuthorizedKeysFile {ssh}/authorized_keys\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         # The keys live under /tmp, which is world-writable: StrictModes would refuse them.\n\
         StrictModes no\n\
         SetEnv PATH={bin}:/usr/bin:/bin FAKE_HYPERV_ROOT={root} FAKE_HYPERV_DRIVES=/ FAKE_BOOT_SECONDS={boot_seconds}\n\
         Subsystem sftp internal-sftp -d {MOUNT_POINT}/Users/{HOME_USER}\n",
        ssh = ssh.display(),
        bin = bin.display(),
        root = root.display(),
    )
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The `fake-powershell` binary beside the running test's own (target/debug), built by
/// `cargo build -p tests --bin fake-powershell` (a workspace `cargo test` builds it too).
pub fn fake_program() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join("fake-powershell");
    assert!(
        path.exists(),
        "{} is missing: cargo build -p tests --bin fake-powershell (./scripts/test builds it)",
        path.display()
    );
    path
}
