//! [`Qemu`]: the [`Driver`] for node VMs under QEMU, as tokio code. QEMU runs detached
//! (`-daemonize`) as the unprivileged VM user under a seccomp sandbox; stopping escalates from
//! ACPI power-down to QMP `quit` to SIGKILL and returns only when the process is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::process::Command;

mod net;

use super::{Accel, PROBE_DEADLINE, files, pid_in, probe, qmp};
use crate::config;
use crate::driver::network::{self, Bridge, Ip, Switch};
use crate::driver::{Driver, StopDeadlines, Stopped, VmSpec, VmStatus};

/// How long one QMP answer may take while stopping.
const STOP_QMP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one QMP answer may take for a status: a hung QEMU must not hold the caller.
const STATUS_QMP_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the power button is pressed again while a guest has not powered down.
const POWERDOWN_REPEAT: Duration = Duration::from_secs(5);
/// How often a stop looks whether the process is gone.
const STOP_POLL: Duration = Duration::from_millis(100);
/// The QEMU binary.
const QEMU: &str = "qemu-system-x86_64";
/// The seccomp sandbox. `obsolete=deny` and `resourcecontrol=deny` hold with QEMU 7.2 and our
/// options. Measured there: `spawn=deny` kills QEMU with SIGSYS at `-daemonize`'s fork, and
/// `elevateprivileges=deny` (and `=children`) make it fail when it drops to the VM user after the
/// filter is installed; both stay allowed. Once QEMU has dropped root it has no privilege to
/// elevate, and what it may still spawn runs as the VM user.
const SANDBOX: &str = "on,obsolete=deny,resourcecontrol=deny";

/// Errors of the QEMU driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VM user does not exist.
    #[error(
        "the VM user {user} does not exist: node VMs run as it (run ./scripts/setup, or `useradd --system --no-create-home --shell /usr/sbin/nologin --user-group {user}`)"
    )]
    MissingUser {
        /// The user name.
        user: String,
    },
    /// The VM user is root by another name: dropping to it would drop nothing.
    #[error(
        "the VM user {user} has uid 0: node VMs must run as an unprivileged user ([hypervisor] user in host.toml)"
    )]
    PrivilegedUser {
        /// The user name.
        user: String,
    },
    /// The user database could not be read.
    #[error("cannot look up the VM user {user}: {why}")]
    LookUpUser {
        /// The user name.
        user: String,
        /// Why.
        why: String,
    },
    /// No OVMF.
    #[error("cannot find the OVMF firmware for node VMs (run ./scripts/setup)")]
    FindFirmware(#[source] firmware::FindFirmwareError),
    /// accel = "kvm" but KVM does not run guests here.
    #[error(
        "accel = \"kvm\": KVM did not run the firmware within {deadline:?} on this host (use accel = \"auto\" or \"tcg\")"
    )]
    KvmUnusable {
        /// The probe's deadline.
        deadline: Duration,
    },
    /// QEMU cannot drop privileges.
    #[error(
        "{QEMU} offers neither -run-with nor -runas: it cannot run VMs as an unprivileged user"
    )]
    NoPrivilegeDrop,
    /// A program failed.
    #[error("{tool} failed for VM {vm}: {stderr}")]
    RunTool {
        /// The program.
        tool: &'static str,
        /// The VM.
        vm: String,
        /// What it said.
        stderr: String,
    },
    /// A file or program could not be reached.
    #[error("cannot {action} {path}")]
    Access {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU daemonised but left no live pid.
    #[error("VM {vm}: QEMU started but no live process is named in {pidfile} (see {console})")]
    NoPid {
        /// The VM.
        vm: String,
        /// The pid file.
        pidfile: PathBuf,
        /// The console log.
        console: PathBuf,
    },
    /// The cluster network could not be brought up.
    #[error("cannot bring up the network of cluster {cluster}")]
    Network {
        /// The cluster.
        cluster: String,
        /// The cause.
        #[source]
        source: crate::driver::network::Error,
    },
    /// Nothing stopped the VM.
    #[error(
        "VM {vm}: QEMU pid {pid} still lives after power-down, quit and SIGKILL (is it in uninterruptible sleep? see /proc/{pid}/stack)"
    )]
    StillAlive {
        /// The VM.
        vm: String,
        /// Its process.
        pid: u32,
    },
}

impl Error {
    /// An [`Error::Access`].
    pub fn access(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Access {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The unprivileged user node VMs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmUser {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl VmUser {
    /// Looks `name` up in the user database (`getent passwd`: local files and NSS alike).
    pub async fn look_up(name: &str) -> Result<VmUser, Error> {
        let fail = |why: String| Error::LookUpUser {
            user: name.to_owned(),
            why,
        };
        let output = Command::new("getent")
            .args(["passwd", name])
            .output()
            .await
            .map_err(|e| fail(format!("getent: {e}")))?;
        // getent: 2 means "no such key".
        if output.status.code() == Some(2) {
            return Err(Error::MissingUser {
                user: name.to_owned(),
            });
        }
        if !output.status.success() {
            return Err(fail(String::from_utf8_lossy(&output.stderr).trim().into()));
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
        match (fields.first(), number(2), number(3)) {
            (Some(&found), Some(0), _) if found == name => Err(Error::PrivilegedUser {
                user: name.to_owned(),
            }),
            (Some(&found), Some(uid), Some(gid)) if found == name => Ok(VmUser {
                name: name.to_owned(),
                uid,
                gid,
            }),
            _ => Err(fail(format!("unexpected entry {:?}", line.trim_end()))),
        }
    }
}

/// How this QEMU drops root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeDrop {
    /// QEMU 9 and later: `-run-with user=USER`.
    RunWith,
    /// Older QEMU: `-runas USER`.
    RunAs,
}

impl PrivilegeDrop {
    /// Asks this host's QEMU which option it has.
    pub async fn detect() -> Result<PrivilegeDrop, Error> {
        let output = Command::new(QEMU)
            .arg("-help")
            .output()
            .await
            .map_err(|e| Error::access("run", Path::new(QEMU), e))?;
        let help = String::from_utf8_lossy(&output.stdout);
        let has = |option: &str| help.lines().any(|l| l.starts_with(option));
        if has("-run-with ") {
            Ok(PrivilegeDrop::RunWith)
        } else if has("-runas ") {
            Ok(PrivilegeDrop::RunAs)
        } else {
            Err(Error::NoPrivilegeDrop)
        }
    }

    fn args(self, user: &str) -> [String; 2] {
        match self {
            PrivilegeDrop::RunWith => ["-run-with".into(), format!("user={user}")],
            PrivilegeDrop::RunAs => ["-runas".into(), user.into()],
        }
    }
}

/// The QEMU driver of one host.
#[derive(Debug, Clone)]
pub struct Qemu {
    state_dir: PathBuf,
    accel: Accel,
    ovmf: firmware::Ovmf,
    user: VmUser,
    drop: PrivilegeDrop,
    /// Whether the host's link to the switch (a tap: CAP_NET_ADMIN in this network namespace)
    /// is made too; tests plug the switch into a tap in a namespace of their own instead.
    host_link: bool,
    /// The bridged clusters by name, from the config in force ([`Driver::configure`]); any
    /// other cluster's nodes plug into its VDE switch.
    bridges: Arc<RwLock<BTreeMap<String, Bridge>>>,
}

impl Qemu {
    /// The driver for VMs under `state_dir`: resolves `accel` (`auto` runs the KVM probe, about
    /// 5 s at worst, off the async threads), the OVMF firmware, the VM user `user`, and how this
    /// QEMU drops root.
    pub async fn open(state_dir: &Path, accel: config::Accel, user: &str) -> Result<Qemu, Error> {
        let user = VmUser::look_up(user).await?;
        let drop = PrivilegeDrop::detect().await?;
        let ovmf = firmware::find_default_ovmf().map_err(Error::FindFirmware)?;
        let kvm_works = || {
            let (code, vars) = (ovmf.code.clone(), ovmf.vars.clone());
            let mut confine = drop.args(&user.name).to_vec();
            confine.extend(["-sandbox".to_owned(), SANDBOX.to_owned()]);
            tokio::task::spawn_blocking(move || {
                probe("kvm", &code, &vars, PROBE_DEADLINE, &confine)
            })
        };
        let accel = match accel {
            config::Accel::Tcg => Accel::Tcg,
            config::Accel::Kvm if kvm_works().await.unwrap_or(false) => Accel::Kvm,
            config::Accel::Kvm => {
                return Err(Error::KvmUnusable {
                    deadline: PROBE_DEADLINE,
                });
            }
            config::Accel::Auto if kvm_works().await.unwrap_or(false) => {
                tracing::info!("accel auto: the KVM probe ran a guest: using KVM");
                Accel::Kvm
            }
            config::Accel::Auto => {
                tracing::info!(
                    deadline_s = PROBE_DEADLINE.as_secs(),
                    "accel auto: the KVM probe failed or hung past its deadline: using TCG"
                );
                Accel::Tcg
            }
        };
        Ok(Qemu {
            state_dir: state_dir.to_owned(),
            accel,
            ovmf,
            user,
            drop,
            host_link: true,
            bridges: Arc::default(),
        })
    }

    /// The acceleration in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The user VMs run as.
    pub fn user(&self) -> &VmUser {
        &self.user
    }

    /// The same driver, making cluster switches but no host link (tests that may not make tap
    /// devices in the host's namespace).
    #[cfg(test)]
    pub(crate) fn without_host_link(mut self) -> Qemu {
        self.host_link = false;
        self
    }

    fn switch(&self, cluster: &str) -> Switch {
        Switch::new(&self.state_dir, cluster)
    }

    async fn run(&self, vm: &str, tool: &'static str, args: &[String]) -> Result<(), Error> {
        let output = Command::new(tool)
            .args(args)
            .kill_on_drop(false)
            .output()
            .await
            .map_err(|e| Error::access("run", Path::new(tool), e))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::RunTool {
                tool,
                vm: vm.to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// See [`Driver::prepare`].
    #[tracing::instrument(skip_all, fields(vm = %spec.name), err)]
    pub async fn prepare_vm(&self, spec: &VmSpec) -> Result<(), Error> {
        let gid = self.user.gid;
        files::run_dir(&spec.dir, gid).await?;
        self.make_overlay(&spec.name, &spec.dir, &spec.base, &spec.image)
            .await?;
        files::state_disk(&spec.dir.join("state.raw"), spec.state_disk, gid).await?;
        files::vars(&self.ovmf.vars, &spec.dir.join("vars.fd"), gid).await?;
        files::console_log(&spec.dir, gid).await?;
        self.prepare_network(spec).await
    }

    /// See [`Driver::overlay`].
    pub async fn make_overlay(
        &self,
        vm: &str,
        dir: &Path,
        base: &Path,
        image: &str,
    ) -> Result<(), Error> {
        let overlay = dir.join(files::overlay_name(image));
        if tokio::fs::try_exists(&overlay).await.unwrap_or(false) {
            return Ok(());
        }
        // Made beside it, then renamed: a crash never leaves a torn overlay under its name.
        let partial = dir.join(format!(".{}.partial", files::overlay_name(image)));
        let _ = tokio::fs::remove_file(&partial).await;
        let mut args = ["create", "-q", "-f", "qcow2", "-b"]
            .map(String::from)
            .to_vec();
        args.push(base.to_string_lossy().into_owned());
        args.extend(["-F".into(), "vhdx".into()]);
        args.push(partial.to_string_lossy().into_owned());
        self.run(vm, "qemu-img", &args).await?;
        files::disk(&partial, self.user.gid).await?;
        tokio::fs::rename(&partial, &overlay)
            .await
            .map_err(|e| Error::access("rename", &partial, e))?;
        files::sync_dir(dir).await
    }

    /// See [`Driver::drop_overlays`].
    pub async fn drop_other_overlays(&self, dir: &Path, keep: &str) -> Result<(), Error> {
        let keep = files::overlay_name(keep);
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| Error::access("list", dir, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| Error::access("list", dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            // os.qcow2: the one overlay of a VM started before per-image overlays.
            let overlay = name == "os.qcow2" || files::is_overlay_name(&name);
            if overlay && name != keep {
                tokio::fs::remove_file(entry.path())
                    .await
                    .map_err(|e| Error::access("remove", &entry.path(), e))?;
                tracing::info!(overlay = %name, "previous OS overlay dropped");
            }
        }
        Ok(())
    }

    /// QEMU's command line for `spec`.
    fn args(&self, spec: &VmSpec) -> Vec<String> {
        let p = |name: &str| spec.dir.join(name).to_string_lossy().into_owned();
        let accel = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        let mut args: Vec<String> = [
            "-name",
            &spec.name,
            "-machine",
            &format!("q35,accel={accel}"),
            "-m",
            &format!("{}M", spec.memory >> 20),
            "-smp",
            &spec.cpus.to_string(),
            "-display",
            "none",
            "-daemonize",
            // A guest that reboots or panics ends QEMU: slipwayd sees the exit and decides when
            // the VM starts again (crash backoff), instead of a reboot loop it cannot see.
            "-no-reboot",
            "-pidfile",
            &p("qemu.pid"),
            "-sandbox",
            SANDBOX,
            "-drive",
            &format!(
                "if=pflash,format=raw,readonly=on,file={}",
                self.ovmf.code.display()
            ),
            "-drive",
            &format!("if=pflash,format=raw,file={}", p("vars.fd")),
            "-drive",
            &format!(
                "file={},format=qcow2,if=none,id=os",
                p(&files::overlay_name(&spec.image))
            ),
            "-device",
            "virtio-blk-pci,drive=os,bootindex=0",
            "-drive",
            &format!("file={},format=raw,if=none,id=state", p("state.raw")),
            "-device",
            "virtio-blk-pci,drive=state,serial=slipway-state",
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=seed,readonly=on",
                spec.seed.display()
            ),
            "-device",
            "virtio-blk-pci,drive=seed",
            "-device",
            "virtio-serial-pci",
            "-chardev",
            &format!(
                "socket,id=beacon,path={},server=on,wait=off",
                p("beacon.sock")
            ),
            "-device",
            "virtserialport,chardev=beacon,name=org.slipway.beacon",
            // Appended, not truncated: the log of every boot survives until rotated.
            "-chardev",
            &format!("file,id=console,path={},append=on", p(files::CONSOLE_LOG)),
            "-serial",
            "chardev:console",
            "-qmp",
            &format!("unix:{},server=on,wait=off", p("qmp.sock")),
        ]
        .map(String::from)
        .to_vec();
        args.extend([
            "-netdev".into(),
            self.netdev(spec),
            "-device".into(),
            format!("virtio-net-pci,netdev=net0,mac={}", spec.mac),
        ]);
        args.extend(self.drop.args(&self.user.name));
        args
    }

    /// See [`Driver::start`].
    #[tracing::instrument(skip_all, fields(vm = %spec.name), err)]
    pub async fn start_vm(&self, spec: &VmSpec) -> Result<u32, Error> {
        self.run(&spec.name, QEMU, &self.args(spec)).await?;
        // -daemonize returns after the pid file is written.
        pid_in(&spec.dir).ok_or_else(|| Error::NoPid {
            vm: spec.name.clone(),
            pidfile: spec.dir.join("qemu.pid"),
            console: spec.dir.join(files::CONSOLE_LOG),
        })
    }

    /// See [`Driver::stop`].
    #[tracing::instrument(skip(self, deadlines), err)]
    pub async fn stop_vm(
        &self,
        name: &str,
        dir: &Path,
        deadlines: StopDeadlines,
    ) -> Result<Stopped, Error> {
        let Some(pid) = pid_in(dir) else {
            return Ok(Stopped::AlreadyStopped);
        };
        let socket = dir.join("qmp.sock");
        let steps = [
            (Step::Powerdown, deadlines.powerdown),
            (Step::Quit, deadlines.quit),
            (Step::Kill, deadlines.kill),
        ];
        for (step, deadline) in steps {
            let started = Instant::now();
            let sent = match step {
                Step::Powerdown => qmp_command(&socket, "system_powerdown", deadline)
                    .await
                    .map_err(|e| e.to_string()),
                Step::Quit => qmp_command(&socket, "quit", deadline)
                    .await
                    .map_err(|e| e.to_string()),
                Step::Kill => kill(pid).await,
            };
            match sent {
                // Whatever was sent, the rest of this step's deadline is the wait.
                Ok(()) => {
                    if wait_gone(&socket, pid, dir, step, started, deadline).await {
                        let stopped = step.stopped();
                        tracing::info!(pid, ?stopped, "VM stopped");
                        return Ok(stopped);
                    }
                    tracing::warn!(pid, ?step, ?deadline, "VM still runs after this step");
                }
                // Nothing was delivered: waiting would change nothing; escalate now.
                Err(why) => tracing::warn!(pid, ?step, %why, "cannot deliver; escalating"),
            }
            if !runs(pid, dir) {
                let stopped = step.stopped();
                tracing::info!(pid, ?stopped, "VM stopped");
                return Ok(stopped);
            }
        }
        Err(Error::StillAlive {
            vm: name.to_owned(),
            pid,
        })
    }

    /// See [`Driver::status`].
    pub async fn vm_status(&self, dir: &Path) -> VmStatus {
        let Some(pid) = pid_in(dir) else {
            return VmStatus::Stopped;
        };
        let status = match qmp::Client::connect(&dir.join("qmp.sock"), STATUS_QMP_TIMEOUT).await {
            Ok(mut client) => client.status().await,
            Err(e) => Err(e),
        };
        match status {
            Ok(status) if status == "running" => VmStatus::Running { pid },
            Ok(status) => VmStatus::Paused { pid, status },
            Err(why) => {
                tracing::debug!(pid, %why, "QMP did not answer");
                if runs(pid, dir) {
                    VmStatus::Paused {
                        pid,
                        status: "unresponsive".into(),
                    }
                } else {
                    VmStatus::Stopped
                }
            }
        }
    }
}

/// The steps of a stop, in order.
#[derive(Debug, Clone, Copy)]
enum Step {
    Powerdown,
    Quit,
    Kill,
}

impl Step {
    fn stopped(self) -> Stopped {
        match self {
            Step::Powerdown => Stopped::PoweredDown,
            Step::Quit => Stopped::Quit,
            Step::Kill => Stopped::Killed,
        }
    }
}

/// Whether `pid` is still the QEMU of run directory `dir`.
fn runs(pid: u32, dir: &Path) -> bool {
    crate::driver::runs(pid, "qemu-system", dir)
}

/// Waits until `step`'s `deadline` (counted from `started`) for `pid` to be gone. During a
/// power-down the button is pressed again every [`POWERDOWN_REPEAT`]: a guest still booting
/// when it was first pressed (no ACPI handler yet) did not see it.
async fn wait_gone(
    socket: &Path,
    pid: u32,
    dir: &Path,
    step: Step,
    started: Instant,
    deadline: Duration,
) -> bool {
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        let slice = match step {
            Step::Powerdown => left.min(POWERDOWN_REPEAT),
            Step::Quit | Step::Kill => left,
        };
        if gone(pid, dir, slice).await {
            return true;
        }
        if started.elapsed() >= deadline {
            return false;
        }
        let _ = qmp_command(socket, "system_powerdown", deadline).await;
    }
}

/// Waits up to `deadline` for `pid` to be gone.
async fn gone(pid: u32, dir: &Path, deadline: Duration) -> bool {
    let started = Instant::now();
    loop {
        if !runs(pid, dir) {
            return true;
        }
        if started.elapsed() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL.min(deadline.saturating_sub(started.elapsed()))).await;
    }
}

/// Sends one QMP command, each answer bounded by the step's deadline and [`STOP_QMP_TIMEOUT`].
async fn qmp_command(socket: &Path, command: &str, deadline: Duration) -> Result<(), qmp::Error> {
    let timeout = STOP_QMP_TIMEOUT.min(deadline).max(STOP_POLL);
    let mut client = qmp::Client::connect(socket, timeout).await?;
    match client.execute(command).await {
        // `quit` may close the connection before its answer arrives.
        Ok(_) | Err(qmp::Error::Closed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGKILL to `pid`.
async fn kill(pid: u32) -> Result<(), String> {
    let output = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()
        .await
        .map_err(|e| format!("kill: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

impl Driver for Qemu {
    async fn prepare(&self, spec: &VmSpec) -> anyhow::Result<()> {
        Ok(self.prepare_vm(spec).await?)
    }

    async fn start(&self, spec: &VmSpec) -> anyhow::Result<u32> {
        Ok(self.start_vm(spec).await?)
    }

    async fn stop(
        &self,
        name: &str,
        dir: &Path,
        deadlines: StopDeadlines,
    ) -> anyhow::Result<Stopped> {
        let stopped = self.stop_vm(name, dir, deadlines).await?;
        // The VM is gone: its tap goes too (a bridged cluster's; none exists otherwise). It is
        // made again before the VM next starts.
        let tap = network::tap_name(dir);
        match tokio::task::spawn_blocking(move || network::remove_tap(&Ip::host(), &tap)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(vm = name, error = %e, "the VM's tap device stays"),
            Err(e) => tracing::warn!(vm = name, error = %e, "the VM's tap device stays"),
        }
        Ok(stopped)
    }

    async fn status(&self, _name: &str, dir: &Path) -> VmStatus {
        self.vm_status(dir).await
    }

    async fn overlay(&self, dir: &Path, base: &Path, image: &str) -> anyhow::Result<()> {
        let vm = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(self
            .make_overlay(vm.as_deref().unwrap_or("?"), dir, base, image)
            .await?)
    }

    async fn drop_overlays(&self, dir: &Path, keep: &str) -> anyhow::Result<()> {
        Ok(self.drop_other_overlays(dir, keep).await?)
    }

    fn beacon(&self, dir: &Path) -> crate::beacon::Port {
        crate::beacon::Port::Socket(dir.join("beacon.sock"))
    }

    async fn stop_network(&self, cluster: &str) {
        let switch = self.switch(cluster);
        // Whichever shape the network had: a cluster's config may have changed meanwhile.
        let name = cluster.to_owned();
        let stopped = tokio::task::spawn_blocking(move || {
            switch.stop();
            network::tear_down(&Ip::host(), &name)
        })
        .await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(cluster, error = %e, "stopping the network failed"),
            Err(e) => tracing::warn!(cluster, error = %e, "stopping the network failed"),
        }
    }

    fn configure(&self, config: &config::HostConfig) {
        self.use_networks(config);
    }

    async fn forget(&self, dir: &Path) -> anyhow::Result<()> {
        let tap = network::tap_name(dir);
        // A tap left behind holds no disk: logged, and the directory may go.
        if let Err(e) = network::remove_tap(&Ip::host(), &tap) {
            tracing::warn!(%tap, "cannot remove the tap device of a VM that is gone: {e:#}");
        }
        Ok(())
    }
}
