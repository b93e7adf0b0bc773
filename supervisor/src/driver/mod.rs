//! Hypervisor drivers and the node network.

pub mod network;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use qemu::private_dir;

/// What a driver needs to make and run one node VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Node name.
    pub name: String,
    /// Run directory.
    pub dir: PathBuf,
    /// Base image.
    pub base: PathBuf,
    /// Seed.
    pub seed: PathBuf,
    /// State disk size.
    pub state_disk: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Memory.
    pub memory: u64,
    /// MAC.
    pub mac: String,
    /// Network.
    pub network: NetSpec,
}
/// Network.
#[derive(Debug, Clone)]
pub struct NetSpec {
    /// Cluster.
    pub cluster: String,
    /// Gateway.
    pub gateway: std::net::Ipv4Addr,
    /// Prefix.
    pub prefix: u8,
}
/// Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmStatus {
    /// Running.
    Running {
        /// pid
        pid: u32,
    },
    /// Paused.
    Paused {
        /// pid
        pid: u32,
        /// status
        status: String,
    },
    /// Stopped.
    Stopped,
}
/// Deadlines.
#[derive(Debug, Clone, Copy)]
pub struct StopDeadlines {
    /// a
    pub powerdown: Duration,
    /// b
    pub quit: Duration,
    /// c
    pub kill: Duration,
}
/// How.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// a
    AlreadyStopped,
    /// b
    PoweredDown,
    /// c
    Quit,
    /// d
    Killed,
}
/// Driver.
pub trait Driver: Send + Sync + 'static {
    /// prepare
    fn prepare(&self, spec: &VmSpec) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// start
    fn start(&self, spec: &VmSpec) -> impl Future<Output = anyhow::Result<u32>> + Send;
    /// stop
    fn stop(
        &self,
        name: &str,
        dir: &Path,
        deadlines: StopDeadlines,
    ) -> impl Future<Output = anyhow::Result<Stopped>> + Send;
    /// status
    fn status(&self, name: &str, dir: &Path) -> impl Future<Output = VmStatus> + Send;
    /// beacon
    fn beacon(&self, dir: &Path) -> PathBuf;
    /// stop network
    fn stop_network(&self, cluster: &str) -> impl Future<Output = ()> + Send;
}

/// The pid in `pidfile` if that process still runs `program` with `marker` on its command line
/// (pids are reused: a stale pid file must not make another process look like ours).
pub fn live_pid(pidfile: &Path, program: &str, marker: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&cmdline);
    // The marker as a whole path or a directory of one: `nodes/w-1` must not match `nodes/w-10`.
    let marker = marker.to_string_lossy();
    let names_marker = text.match_indices(&*marker).any(|(at, _)| {
        matches!(
            text[at + marker.len()..].chars().next(),
            None | Some('/' | '\0' | ',')
        )
    });
    (text.contains(program) && names_marker).then_some(pid)
}

#[cfg(test)]
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
