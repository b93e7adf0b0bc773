//! Hypervisor drivers and the node network.

pub mod network;
pub mod qemu;

use std::path::Path;

/// The pid in `pidfile` if that process still runs `program` with `marker` on its command line
/// (pids are reused: a stale pid file must not make another process look like ours).
pub fn live_pid(pidfile: &Path, program: &str, marker: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&cmdline);
    (text.contains(program) && text.contains(&*marker.to_string_lossy())).then_some(pid)
}
