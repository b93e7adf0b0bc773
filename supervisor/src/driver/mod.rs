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
