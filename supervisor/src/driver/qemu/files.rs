//! A VM's run directory and the files in it, and who may reach them.
//!
//! QEMU opens every disk, the vars store, the console log and its sockets while it is still root,
//! then drops to the VM user (measured with QEMU 7.2: a run directory of root-only 0700 and files
//! of 0600 boots, writes the vars store and the console, and quits). After the drop it only tries
//! to unlink its pid file and sockets at exit, which a directory it cannot write refuses
//! harmlessly (the pid file is checked against /proc, and QEMU unlinks a stale socket before it
//! binds). So the directory is root's with the VM user's group able to enter it but not to
//! create or delete in it (0750), and the disks are group read-write (0660) so a block-layer
//! reopen after the drop (a reconfigured drive, a block job) still works. Nobody else reaches
//! anything: the state disk holds the node's keys.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::vm::Error;

/// The console log's name in the run directory.
pub const CONSOLE_LOG: &str = "console.log";
/// A console log longer than this is rotated before the next start.
pub const CONSOLE_ROTATE_BYTES: u64 = 1 << 20;
/// Rotated console logs kept: console.log.1 (newest) to console.log.3 (oldest).
pub const CONSOLE_GENERATIONS: u32 = 3;

/// The run directory: entered by root and the VM group, written by root alone.
const DIR_MODE: u32 = 0o750;
/// Disks and the vars store: read-write for root and the VM group.
const DISK_MODE: u32 = 0o660;
/// The console log: QEMU writes it through the descriptor it opened as root; the group reads.
const LOG_MODE: u32 = 0o640;

/// Makes `path` root's, group `gid`, with `mode`.
pub async fn restrict(path: &Path, gid: u32, mode: u32) -> Result<(), Error> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || std::os::unix::fs::chown(&owned, Some(0), Some(gid)))
        .await
        .map_err(|e| Error::access("change the owner of", path, std::io::Error::other(e)))?
        .map_err(|e| Error::access("change the owner of", path, e))?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| Error::access("change the mode of", path, e))
}

/// Creates the run directory `dir` and restricts it to root and group `gid`. Parents it has to
/// make are root's alone (0700): the state directory holds the clusters' PKI, and QEMU needs no
/// path through it after the drop.
pub async fn run_dir(dir: &Path, gid: u32) -> Result<(), Error> {
    let mut parents = tokio::fs::DirBuilder::new();
    parents.recursive(true).mode(0o700);
    parents
        .create(dir)
        .await
        .map_err(|e| Error::access("create", dir, e))?;
    restrict(dir, gid, DIR_MODE).await
}

/// Restricts a disk or vars store to root and group `gid`.
pub async fn disk(path: &Path, gid: u32) -> Result<(), Error> {
    restrict(path, gid, DISK_MODE).await
}

/// Creates the raw state disk of `size` bytes unless it exists (it outlives every image).
pub async fn state_disk(path: &Path, size: u64, gid: u32) -> Result<(), Error> {
    let created = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await;
    match created {
        Ok(file) => file
            .set_len(size)
            .await
            .map_err(|e| Error::access("size", path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::access("create", path, e)),
    }
    disk(path, gid).await
}

/// Copies the firmware's vars template to `path` unless a vars store is there (it holds the
/// VM's boot entries and, later, its Secure Boot keys).
pub async fn vars(template: &Path, path: &Path, gid: u32) -> Result<(), Error> {
    if !tokio::fs::try_exists(path)
        .await
        .map_err(|e| Error::access("look for", path, e))?
    {
        tokio::fs::copy(template, path)
            .await
            .map_err(|e| Error::access("copy the OVMF vars template to", path, e))?;
    }
    disk(path, gid).await
}

/// The OS overlay of image `digest` (`sha256:HEX`) in a run directory: `os-HEX16.qcow2`.
pub fn overlay_name(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("os-{}.qcow2", &hex[..hex.len().min(16)])
}

/// Whether `name` is an OS overlay's file name ([`overlay_name`]).
pub fn is_overlay_name(name: &str) -> bool {
    name.strip_prefix("os-")
        .and_then(|n| n.strip_suffix(".qcow2"))
        .is_some_and(|hex| hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Syncs directory `dir` (a rename in it is durable afterwards).
pub async fn sync_dir(dir: &Path) -> Result<(), Error> {
    let path = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&path).and_then(|d| d.sync_all()))
        .await
        .map_err(|e| Error::access("sync", dir, e.into()))?
        .map_err(|e| Error::access("sync", dir, e))
}

/// The `generation`th rotated console log of `dir` (0: the live one).
pub fn console(dir: &Path, generation: u32) -> PathBuf {
    match generation {
        0 => dir.join(CONSOLE_LOG),
        n => dir.join(format!("{CONSOLE_LOG}.{n}")),
    }
}

/// Rotates the console log of `dir` when it has grown past [`CONSOLE_ROTATE_BYTES`] (the
/// oldest generation is dropped), then makes sure a live log exists for QEMU to append to.
pub async fn console_log(dir: &Path, gid: u32) -> Result<(), Error> {
    let live = console(dir, 0);
    let size = match tokio::fs::metadata(&live).await {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::access("look at", &live, e)),
    };
    if size > CONSOLE_ROTATE_BYTES {
        for generation in (1..=CONSOLE_GENERATIONS).rev() {
            let from = console(dir, generation - 1);
            let to = console(dir, generation);
            match tokio::fs::rename(&from, &to).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::access("rotate", &from, e)),
            }
        }
    }
    tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&live)
        .await
        .map_err(|e| Error::access("create", &live, e))?;
    restrict(&live, gid, LOG_MODE).await
}
