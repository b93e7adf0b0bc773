//! Hypervisor drivers and the node network: the [`Driver`] trait says what the daemon needs of a
//! hypervisor to make, run, stop and watch one node VM; `qemu::Qemu` (Unix only) and
//! [`hyperv::driver::HyperV`] implement it, [`AnyDriver`] is whichever the host config names.
//!
//! Everything Unix-only (the QEMU driver, its VDE switches, bridges and taps, unix sockets,
//! `/proc`) is compiled on Unix alone: a Windows build of slipwayd keeps the Hyper-V driver.

mod any;
pub mod hyperv;
#[cfg(unix)]
pub mod network;
#[cfg(unix)]
pub mod qemu;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use any::AnyDriver;

use crate::model::Digest;

/// What a driver needs to make and run one node VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Node name, a DNS label.
    pub name: String,
    /// Its run directory STATE/nodes/NAME (disks, sockets, logs).
    pub dir: PathBuf,
    /// The image's VHDX in the store (the read-only backing file of the OS overlay).
    pub base: PathBuf,
    /// The image's digest, `sha256:HEX`: each image gets an OS overlay of its own, so a swap
    /// keeps the previous one until it commits.
    pub image: String,
    /// The NoCloud seed disk image (raw, attached read-only).
    pub seed: PathBuf,
    /// State disk size in bytes (used once, when the disk is created).
    pub state_disk: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// The VM's MAC address.
    pub mac: String,
    /// The cluster network it plugs into.
    pub network: NetSpec,
    /// The Secure Boot keys its image's manifest asks for (`boot.secure_boot`: `none`,
    /// `MicrosoftWindows`): Hyper-V's template; QEMU boots its own OVMF vars either way.
    pub secure_boot: String,
}

/// A cluster's node network as a VM needs it.
#[derive(Debug, Clone)]
pub struct NetSpec {
    /// The cluster's name.
    pub cluster: String,
    /// The host's address on it.
    pub gateway: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

/// What runs in a VM's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// The VM runs.
    Running {
        /// Its hypervisor process.
        pid: u32,
    },
    /// The process lives but the guest does not run: QEMU's run state (`paused`,
    /// `internal-error`, `shutdown`, ...), or `unresponsive` when QMP did not answer in time.
    Paused {
        /// Its hypervisor process.
        pid: u32,
        /// Why it does not run.
        status: String,
    },
    /// No process of the VM is alive.
    Stopped,
}

/// How [`VmStatus::unknown`] marks its status.
const UNKNOWN: &str = "unknown: ";

impl VmStatus {
    /// The hypervisor did not answer (a Hyper-V host out of reach): the VM may run or not.
    /// Read as running by everything that would start or delete something (never a second
    /// VM, never its disks deleted on a guess), and changes no node's state.
    pub fn unknown(why: impl std::fmt::Display) -> VmStatus {
        VmStatus::Paused {
            pid: 0,
            status: format!("{UNKNOWN}{why}"),
        }
    }

    /// Whether this is [`VmStatus::unknown`]'s.
    pub fn is_unknown(&self) -> bool {
        matches!(self, VmStatus::Paused { status, .. } if status.starts_with(UNKNOWN))
    }
}

/// How long each step of a stop may take before the next, harder one.
#[derive(Debug, Clone, Copy)]
pub struct StopDeadlines {
    /// For the guest to power off after an ACPI power-button press.
    pub powerdown: Duration,
    /// For the hypervisor to exit after being told to quit.
    pub quit: Duration,
    /// For the process to vanish after SIGKILL.
    pub kill: Duration,
}

/// Which step of a stop ended the VM.
// `Stopped::AlreadyStopped` reads as what it says at the call site (issue 12 names it).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing ran.
    AlreadyStopped,
    /// The guest powered off.
    PoweredDown,
    /// The hypervisor quit on request.
    Quit,
    /// The process was killed.
    Killed,
}

/// A hypervisor that runs node VMs.
pub trait Driver: Send + Sync + 'static {
    /// Makes the disks: the OS overlay of spec.image over spec.base only if missing (see
    /// [`Driver::overlay`]), the state disk only if missing, firmware vars only if missing, the
    /// console log kept (rotated by size); the network of spec.network is up afterwards.
    fn prepare(&self, spec: &VmSpec) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Makes the OS overlay of `image` (a digest) over `base` in run directory `dir` unless it
    /// exists; the overlays of other images stay (a swap's way back). Atomic: a crash leaves
    /// the overlay whole or absent.
    fn overlay(
        &self,
        dir: &Path,
        base: &Path,
        image: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Deletes the OS overlays in `dir` of every image but `keep` (a digest): a committed
    /// swap's previous disk. The VM must run on `keep`'s overlay or not at all.
    fn drop_overlays(
        &self,
        dir: &Path,
        keep: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Starts the prepared VM detached; returns its pid.
    fn start(&self, spec: &VmSpec) -> impl Future<Output = anyhow::Result<u32>> + Send;
    /// Stops the VM of node `name` whose run directory is `dir`: ACPI power-down, then QMP quit,
    /// then SIGKILL, each within its deadline. Ok only when no process of that VM is alive; Err
    /// when it still lives after all three.
    fn stop(
        &self,
        name: &str,
        dir: &Path,
        deadlines: StopDeadlines,
    ) -> impl Future<Output = anyhow::Result<Stopped>> + Send;
    /// What runs in `dir` now (a short QMP timeout: a hung QEMU must not hold the caller).
    fn status(&self, name: &str, dir: &Path) -> impl Future<Output = VmStatus> + Send;
    /// Where the beacon lines of the VM in run directory `dir` are read from.
    fn beacon(&self, dir: &Path) -> crate::beacon::Port;
    /// Stops the network of `cluster` (after its last VM).
    fn stop_network(&self, cluster: &str) -> impl Future<Output = ()> + Send;
    /// The host config in force: given once the driver is open and again after every reload.
    /// The QEMU driver learns each cluster's node network from it (a VDE switch unless the
    /// cluster is bridged over hosts); a driver that needs nothing of it ignores it.
    fn configure(&self, _config: &crate::config::HostConfig) {}
    /// Gives back what the (stopped) VM of run directory `dir` held on the host besides its
    /// files, before the directory is deleted: the QEMU driver's tap device of a bridged
    /// cluster (a VM that died by itself kept it; a failure there is logged), the Hyper-V
    /// driver's VM and its disks on the Hyper-V host. An error means something of the VM is
    /// still there: the directory must stay, so that the VM is neither lost track of nor its
    /// disks (a state disk above all) taken up again by a VM made under the same name.
    fn forget(&self, _dir: &Path) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
    /// Readies image `digest` (its VHDX at `base`) for VMs before a boot's deadline starts to
    /// run: the Hyper-V driver uploads it to the host once (gigabytes: minutes, bounded by the
    /// upload's own deadline); QEMU reads it where it is and needs nothing.
    fn stage(
        &self,
        _base: &Path,
        _digest: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Whether [`Driver::stage`] has work worth waiting for (an upload to a Hyper-V host):
    /// the daemon then stages each image in a task of its own before a VM boots it.
    fn stages(&self) -> bool {
        false
    }

    /// Removes from the hypervisor the images the store no longer keeps, once the store's
    /// garbage collection has run: `keep` is the set the store kept (every node record's
    /// image, each channel's target and previous one, both images of every swap in flight).
    /// The Hyper-V driver removes each image it uploaded that `keep` does not name, but none a
    /// VM or an OS disk still rests on (a disk kept for a rollback); QEMU reads the images
    /// where the store keeps them and has nothing to do. The caller only logs an error.
    fn prune_images(
        &self,
        _keep: &BTreeSet<Digest>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// The pid in `pidfile` if that process still runs `program` with `marker` on its command line
/// (pids are reused: a stale pid file must not make another process look like ours).
#[cfg(unix)]
pub fn live_pid(pidfile: &Path, program: &str, marker: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    runs(pid, program, marker).then_some(pid)
}

/// Whether process `pid` is alive and runs `program` with `marker` (a whole path, or a directory
/// of one) on its command line. A zombie has an empty command line: it counts as gone. Reads
/// `/proc`, so Unix only (the QEMU driver's).
#[cfg(unix)]
pub fn runs(pid: u32, program: &str, marker: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let text = String::from_utf8_lossy(&cmdline);
    // The marker as a whole path or a directory of one: `nodes/w-1` must not match `nodes/w-10`.
    let marker = marker.to_string_lossy();
    let names_marker = text.match_indices(&*marker).any(|(at, _)| {
        matches!(
            text[at + marker.len()..].chars().next(),
            None | Some('/' | '\0' | ',')
        )
    });
    text.contains(program) && names_marker
}

/// Test support.
#[cfg(test)]
pub mod testing {
    use std::collections::BTreeSet;
    use std::future::Future;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use super::{Digest, Driver, StopDeadlines, Stopped, VmSpec, VmStatus};

    /// A driver without VMs, for tests of the daemon's parts that never touch one (a drain, a
    /// seed's token): it makes nothing and finds every VM stopped. Its `forget` fails for a run
    /// directory holding a file [`HELD`], as a hypervisor that cannot give a VM's disks back;
    /// its `prune_images` records the set it is given.
    #[derive(Default)]
    pub struct NoVms {
        /// The `keep` of each `prune_images` call, in order.
        pub pruned: Mutex<Vec<BTreeSet<Digest>>>,
    }

    /// See [`NoVms`].
    pub const HELD: &str = "held-by-the-hypervisor";

    /// Its beacon: a polled source that never has a line (a socket would tie it to Unix).
    struct Silent;

    impl crate::beacon::Poll for Silent {
        fn read(
            &self,
        ) -> Pin<Box<dyn Future<Output = anyhow::Result<Option<String>>> + Send + '_>> {
            Box::pin(async { Ok(None) })
        }
    }

    impl Driver for NoVms {
        async fn prepare(&self, _: &VmSpec) -> anyhow::Result<()> {
            anyhow::bail!("no VMs here")
        }
        async fn overlay(&self, _: &Path, _: &Path, _: &str) -> anyhow::Result<()> {
            anyhow::bail!("no VMs here")
        }
        async fn drop_overlays(&self, _: &Path, _: &str) -> anyhow::Result<()> {
            Ok(())
        }
        async fn start(&self, _: &VmSpec) -> anyhow::Result<u32> {
            anyhow::bail!("no VMs here")
        }
        async fn stop(&self, _: &str, _: &Path, _: StopDeadlines) -> anyhow::Result<Stopped> {
            anyhow::bail!("no VMs here")
        }
        async fn status(&self, _: &str, _: &Path) -> VmStatus {
            VmStatus::Stopped
        }
        fn beacon(&self, _: &Path) -> crate::beacon::Port {
            crate::beacon::Port::Poll(Arc::new(Silent))
        }
        async fn stop_network(&self, _: &str) {}
        async fn forget(&self, dir: &Path) -> anyhow::Result<()> {
            if dir.join(HELD).exists() {
                anyhow::bail!("the hypervisor holds {}", dir.display());
            }
            Ok(())
        }
        async fn prune_images(&self, keep: &BTreeSet<Digest>) -> anyhow::Result<()> {
            self.pruned
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(keep.clone());
            Ok(())
        }
    }

    /// What a test's driver does otherwise than [`NoVms`] (each hook's default is NoVms's).
    pub trait Hooks: Send + Sync + 'static {
        /// The status of the VM tracked as `name`.
        fn status(&self, _name: &str) -> impl Future<Output = VmStatus> + Send {
            async { VmStatus::Stopped }
        }
        /// Brings the image at `base` to the hypervisor.
        fn stage(&self, _base: &Path) -> impl Future<Output = anyhow::Result<()>> + Send {
            async { Ok(()) }
        }
        /// See [`Driver::stages`].
        fn stages(&self) -> bool {
            false
        }
    }

    /// [`NoVms`] but for the hooks of `H`.
    #[derive(Default)]
    pub struct Hooked<H> {
        /// The hooks (and whatever the test keeps in them).
        pub hooks: H,
        base: NoVms,
    }

    impl<H> Hooked<H> {
        /// The driver with `hooks`.
        pub fn new(hooks: H) -> Hooked<H> {
            Hooked {
                hooks,
                base: NoVms::default(),
            }
        }
    }

    impl<H: Hooks> Driver for Hooked<H> {
        async fn prepare(&self, spec: &VmSpec) -> anyhow::Result<()> {
            self.base.prepare(spec).await
        }
        async fn overlay(&self, dir: &Path, base: &Path, image: &str) -> anyhow::Result<()> {
            self.base.overlay(dir, base, image).await
        }
        async fn drop_overlays(&self, dir: &Path, keep: &str) -> anyhow::Result<()> {
            self.base.drop_overlays(dir, keep).await
        }
        async fn start(&self, spec: &VmSpec) -> anyhow::Result<u32> {
            self.base.start(spec).await
        }
        async fn stop(
            &self,
            name: &str,
            dir: &Path,
            deadlines: StopDeadlines,
        ) -> anyhow::Result<Stopped> {
            self.base.stop(name, dir, deadlines).await
        }
        async fn status(&self, name: &str, _: &Path) -> VmStatus {
            self.hooks.status(name).await
        }
        fn beacon(&self, dir: &Path) -> crate::beacon::Port {
            self.base.beacon(dir)
        }
        async fn stop_network(&self, cluster: &str) {
            self.base.stop_network(cluster).await;
        }
        async fn forget(&self, dir: &Path) -> anyhow::Result<()> {
            self.base.forget(dir).await
        }
        async fn stage(&self, base: &Path, _: &str) -> anyhow::Result<()> {
            self.hooks.stage(base).await
        }
        fn stages(&self) -> bool {
            self.hooks.stages()
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_names_our_process_only_with_the_whole_marker() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        std::fs::write(&pidfile, std::process::id().to_string()).unwrap();
        // This test's own command line holds its program path: a marker of it, whole, matches.
        let exe = std::env::current_exe().unwrap();
        let program = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(live_pid(&pidfile, program, &exe), Some(std::process::id()));
        let prefix = exe.to_str().unwrap();
        let cut = Path::new(&prefix[..prefix.len() - 1]);
        assert_eq!(
            live_pid(&pidfile, program, cut),
            None,
            "a prefix is not the marker"
        );
    }
}
