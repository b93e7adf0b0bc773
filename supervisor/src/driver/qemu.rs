//! Node VMs under QEMU: q35 + OVMF (a vars store per VM), the OS disk as a qcow2 overlay over
//! the immutable VHDX base (QEMU cannot open differencing VHDX), a state disk created once and
//! never deleted by an image change, the NoCloud seed read-only, the serial console in a log
//! file, QMP on a unix socket, and the beacon on the virtio-serial port org.slipway.beacon.
//! VMs run detached (`-daemonize`): slipwayd finds them again by their pid file and QMP socket,
//! so its own restart neither reboots nor duplicates a VM.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a QMP command may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the QEMU driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool failed.
    #[error("{tool} failed for VM {vm}: {stderr}")]
    RunTool {
        /// The program.
        tool: &'static str,
        /// The VM.
        vm: String,
        /// What it said.
        stderr: String,
    },
    /// Files or sockets.
    #[error("VM {vm}: cannot {action} {path}")]
    Access {
        /// The VM.
        vm: String,
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QMP said no.
    #[error("VM {vm}: QMP {command} failed: {message}")]
    Qmp {
        /// The VM.
        vm: String,
        /// The command.
        command: String,
        /// Its error.
        message: String,
    },
}

/// QEMU acceleration actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Emulation.
    Tcg,
}

/// What a VM is made of.
#[derive(Debug, Clone)]
pub struct Spec {
    /// VM name.
    pub name: String,
    /// Its run directory (sockets, logs, overlay, vars, state disk).
    pub dir: PathBuf,
    /// The image's VHDX (the overlay's backing file; never written).
    pub base: PathBuf,
    /// The seed disk.
    pub seed: PathBuf,
    /// State disk size (used once, when it is created).
    pub state_disk: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// MAC address.
    pub mac: String,
    /// The cluster's VDE switch socket directory.
    pub network: PathBuf,
    /// OVMF code (read-only).
    pub ovmf_code: PathBuf,
    /// OVMF vars template (copied once per VM).
    pub ovmf_vars: PathBuf,
    /// Acceleration.
    pub accel: Accel,
}

impl Spec {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn access(&self, action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let (vm, path) = (self.name.clone(), path.to_owned());
        move |source| Error::Access {
            vm,
            action,
            path,
            source,
        }
    }

    fn run(&self, tool: &'static str, args: &[&str]) -> Result<(), Error> {
        let output = Command::new(tool)
            .args(args)
            .output()
            .map_err(self.access("run", Path::new(tool)))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::RunTool {
                tool,
                vm: self.name.clone(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }
}

/// Makes the VM's disks: a fresh qcow2 overlay over the base (the OS disk is disposable), the
/// state disk only if it does not exist, the vars store only if it does not exist.
pub fn prepare(spec: &Spec) -> Result<(), Error> {
    // The VM's directory holds its state disk (the guest's /var: kubeconfigs, keys) and its
    // console log: the host's root alone reads them.
    private_dir(&spec.dir).map_err(spec.access("create", &spec.dir))?;
    let overlay = spec.path("os.qcow2");
    let _ = std::fs::remove_file(&overlay);
    let base = spec.base.to_string_lossy().into_owned();
    spec.run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &base,
            "-F",
            "vhdx",
            &overlay.to_string_lossy(),
        ],
    )?;
    let state = spec.path("state.raw");
    if !state.exists() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&state)
            .map_err(spec.access("create", &state))?;
        file.set_len(spec.state_disk)
            .map_err(spec.access("size", &state))?;
    }
    // QEMU appends to an existing log and keeps its mode.
    let log = spec.path("console.log");
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log)
        .map_err(spec.access("create", &log))?;
    let vars = spec.path("vars.fd");
    if !vars.exists() {
        std::fs::copy(&spec.ovmf_vars, &vars)
            .map_err(spec.access("copy the OVMF vars to", &vars))?;
    }
    Ok(())
}

/// Starts the VM detached; returns once QEMU has daemonised.
pub fn start(spec: &Spec) -> Result<(), Error> {
    let p = |name: &str| spec.path(name).to_string_lossy().into_owned();
    let accel = match spec.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let args: Vec<String> = vec![
        "-name".into(),
        spec.name.clone(),
        "-machine".into(),
        format!("q35,accel={accel}"),
        "-m".into(),
        format!("{}M", spec.memory >> 20),
        "-smp".into(),
        spec.cpus.to_string(),
        "-display".into(),
        "none".into(),
        "-daemonize".into(),
        "-pidfile".into(),
        p("qemu.pid"),
        "-drive".into(),
        format!(
            "if=pflash,format=raw,readonly=on,file={}",
            spec.ovmf_code.display()
        ),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", p("vars.fd")),
        "-drive".into(),
        format!("file={},format=qcow2,if=none,id=os", p("os.qcow2")),
        "-device".into(),
        "virtio-blk-pci,drive=os,bootindex=0".into(),
        "-drive".into(),
        format!("file={},format=raw,if=none,id=state", p("state.raw")),
        "-device".into(),
        "virtio-blk-pci,drive=state,serial=slipway-state".into(),
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=seed,readonly=on",
            spec.seed.display()
        ),
        "-device".into(),
        "virtio-blk-pci,drive=seed".into(),
        // The cluster's VDE switch: nodes of one cluster reach each other, nothing else.
        "-netdev".into(),
        format!("vde,id=net0,sock={}", spec.network.display()),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={}", spec.mac),
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!(
            "socket,id=beacon,path={},server=on,wait=off",
            p("beacon.sock")
        ),
        "-device".into(),
        "virtserialport,chardev=beacon,name=org.slipway.beacon".into(),
        "-serial".into(),
        format!("file:{}", p("console.log")),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", p("qmp.sock")),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spec.run("qemu-system-x86_64", &args)
}

/// The pid of the VM's QEMU, if it is running.
pub fn running(spec: &Spec) -> Option<u32> {
    pid_in(&spec.dir)
}

/// The pid of the QEMU of the VM whose run directory is `dir`, if it is running.
pub fn pid_in(dir: &Path) -> Option<u32> {
    super::live_pid(&dir.join("qemu.pid"), "qemu-system", dir)
}

/// A QMP connection.
pub struct Qmp {
    vm: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the QMP socket at `path` of VM `vm`; each answer may take `timeout`.
    pub fn connect_path(vm: &str, path: &Path, timeout: Duration) -> Result<Qmp, Error> {
        let access = |action, source| Error::Access {
            vm: vm.to_owned(),
            action,
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(|e| access("connect to", e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| access("configure", e))?;
        let writer = stream.try_clone().map_err(|e| access("configure", e))?;
        let mut qmp = Qmp {
            vm: vm.to_owned(),
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_line("greeting")?;
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read_line(&mut self, what: &str) -> Result<serde_json::Value, Error> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|source| Error::Access {
                vm: self.vm.clone(),
                action: "read QMP",
                path: PathBuf::from(what),
                source,
            })?;
        serde_json::from_str(&line).map_err(|e| Error::Qmp {
            vm: self.vm.clone(),
            command: what.into(),
            message: e.to_string(),
        })
    }

    /// Runs a QMP command; returns its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<serde_json::Value, Error> {
        let request = format!("{{\"execute\":\"{command}\"}}\n");
        self.writer
            .write_all(request.as_bytes())
            .map_err(|source| Error::Access {
                vm: self.vm.clone(),
                action: "write QMP",
                path: PathBuf::from(command),
                source,
            })?;
        loop {
            let reply = self.read_line(command)?;
            if let Some(value) = reply.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = reply.get("error") {
                return Err(Error::Qmp {
                    vm: self.vm.clone(),
                    command: command.into(),
                    message: error.to_string(),
                });
            }
            // An asynchronous event: keep reading.
        }
    }

    /// `query-status`: QEMU's run state (`running`, `paused`, ...).
    pub fn status(&mut self) -> Result<String, Error> {
        Ok(self.execute("query-status")?["status"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned())
    }
}

/// Stops the VM `name` whose run directory is `dir`: ACPI power-down, then `quit` when it has
/// not gone by `deadline`.
pub fn stop_dir(name: &str, dir: &Path, deadline: Duration) -> Result<(), Error> {
    let Some(pid) = pid_in(dir) else {
        return Ok(());
    };
    let connect = || Qmp::connect_path(name, &dir.join("qmp.sock"), QMP_TIMEOUT);
    if let Ok(mut qmp) = connect() {
        let _ = qmp.execute("system_powerdown");
    }
    let start = Instant::now();
    while start.elapsed() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::warn!(vm = %name, "no ACPI power-down within the deadline: quitting");
    if let Ok(mut qmp) = connect() {
        let _ = qmp.execute("quit");
    }
    Ok(())
}

/// TEMPORARY shim.
pub struct Qemu {
    state_dir: PathBuf,
    accel: Accel,
}

impl Qemu {
    /// shim
    pub async fn open(state_dir: &Path, accel: &crate::config::Accel) -> anyhow::Result<Qemu> {
        let accel = match accel {
            crate::config::Accel::Kvm => Accel::Kvm,
            _ => Accel::Tcg,
        };
        Ok(Qemu {
            state_dir: state_dir.to_owned(),
            accel,
        })
    }
}

impl super::Driver for Qemu {
    async fn prepare(&self, spec: &super::VmSpec) -> anyhow::Result<()> {
        super::network::Switch::new(&self.state_dir, &spec.network.cluster)
            .ensure(spec.network.gateway, spec.network.prefix)?;
        prepare(&self.spec(spec)?)?;
        Ok(())
    }
    async fn start(&self, spec: &super::VmSpec) -> anyhow::Result<u32> {
        let s = self.spec(spec)?;
        start(&s)?;
        Ok(running(&s).unwrap_or(0))
    }
    async fn stop(
        &self,
        name: &str,
        dir: &Path,
        deadlines: super::StopDeadlines,
    ) -> anyhow::Result<super::Stopped> {
        stop_dir(name, dir, deadlines.powerdown)?;
        Ok(super::Stopped::Quit)
    }
    async fn status(&self, _name: &str, dir: &Path) -> super::VmStatus {
        match pid_in(dir) {
            Some(pid) => super::VmStatus::Running { pid },
            None => super::VmStatus::Stopped,
        }
    }
    fn beacon(&self, dir: &Path) -> PathBuf {
        dir.join("beacon.sock")
    }
    async fn stop_network(&self, cluster: &str) {
        super::network::Switch::new(&self.state_dir, cluster).stop();
    }
}

impl Qemu {
    fn spec(&self, v: &super::VmSpec) -> anyhow::Result<Spec> {
        let ovmf = firmware::find_default_ovmf()?;
        Ok(Spec {
            name: v.name.clone(),
            dir: v.dir.clone(),
            base: v.base.clone(),
            seed: v.seed.clone(),
            state_disk: v.state_disk,
            cpus: v.cpus,
            memory: v.memory,
            mac: v.mac.clone(),
            network: super::network::Switch::new(&self.state_dir, &v.network.cluster).socket(),
            ovmf_code: ovmf.code,
            ovmf_vars: ovmf.vars,
            accel: self.accel,
        })
    }
}

/// How long the KVM probe may take before KVM counts as hung (OVMF reaches its boot manager in
/// well under a second with working KVM; about 4 s under TCG).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// Whether QEMU can run the node VMs' firmware with `accel` (`kvm` or `tcg`) on this host:
/// boots OVMF (`code`, a copy of `vars`) with no disks and waits at most `deadline` for its boot
/// manager to speak on the serial port. `/dev/kvm` can exist and still fail every guest: on the
/// machines this was built on, OVMF stops at its first FPU instruction with "KVM internal
/// error ... emulation failure" and QEMU sits paused; that is a `false` here, not a hang.
pub fn probe(accel: &str, code: &Path, vars: &Path, deadline: Duration) -> bool {
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

/// Creates `dir` (and its parents) readable by its owner alone; an existing one is left as it is.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_boots_the_firmware_under_tcg_and_never_outlives_its_deadline() {
        let ovmf = firmware::find_default_ovmf().unwrap();
        // TCG always works: this proves the probe sees the firmware's boot manager.
        assert!(probe(
            "tcg",
            &ovmf.code,
            &ovmf.vars,
            Duration::from_secs(60)
        ));
        // KVM may work or not on a given machine; either way the answer comes in time.
        let start = Instant::now();
        let kvm = probe("kvm", &ovmf.code, &ovmf.vars, Duration::from_secs(3));
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "the probe outlived its deadline"
        );
        eprintln!("kvm usable here: {kvm}");
    }
}
