//! The Windows volume as a file: made by `mkntfs`, read and written with the ntfs-3g tools
//! (`ntfscat`, `ntfscp`, `ntfssecaudit`), never mounted.

use std::fmt::Write as _;
use std::path::Path;

use super::{Error, pinned_time};
use crate::build::fs;

/// NTFS cluster size Windows uses for system volumes.
const CLUSTER: u32 = 4096;
/// Sector size of the disk.
const SECTOR: u64 = 512;

/// Makes an empty NTFS volume of `size` bytes in `out`, for a partition starting at byte
/// `offset` of its disk (the boot sector records it: Windows boots from it), with a volume
/// serial number derived from the build's inputs and every timestamp zero.
pub fn make(out: &Path, size: u64, offset: u64, serial: u64) -> Result<(), Error> {
    let file = std::fs::File::create(out).map_err(super::io_err("create", out))?;
    file.set_len(size).map_err(super::io_err("size", out))?;
    drop(file);
    fs::run(
        "mkntfs",
        [
            "--fast".as_ref(),
            "--force".as_ref(),
            // Timestamps of the volume's own files: zero, not the build's clock.
            "--zero-time".as_ref(),
            "--label".as_ref(),
            "Windows".as_ref(),
            "--sector-size".as_ref(),
            SECTOR.to_string().as_ref(),
            "--cluster-size".as_ref(),
            CLUSTER.to_string().as_ref(),
            "--partition-start".as_ref(),
            (offset / SECTOR).to_string().as_ref(),
            "--heads".as_ref(),
            "255".as_ref(),
            "--sectors-per-track".as_ref(),
            "63".as_ref(),
            "--quiet".as_ref(),
            out.as_os_str(),
        ],
        &[],
    )?;
    fs::run(
        "ntfslabel",
        [
            format!("--new-serial={serial:016x}").as_ref(),
            out.as_os_str(),
            "Windows".as_ref(),
        ],
        &[],
    )?;
    Ok(())
}

/// Reads file `path` (`/Windows/...`) of the volume into `to`.
pub fn read(volume: &Path, path: &str, to: &Path) -> Result<(), Error> {
    super::read_out("ntfscat", [volume.as_os_str(), path.as_ref()], path, to)
}

/// Overwrites the existing file `path` of the volume with `from` (its inode, security
/// descriptor and attributes kept).
pub fn write(volume: &Path, from: &Path, path: &str, epoch: u64) -> Result<(), Error> {
    pinned_time(
        "ntfscp",
        [
            "--force".as_ref(),
            "--quiet".as_ref(),
            volume.as_os_str(),
            from.as_os_str(),
            path.as_ref(),
        ],
        epoch,
    )
}

/// Who may use what the build placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// SYSTEM and Administrators: full control; Users: read and run.
    Program,
    /// SYSTEM and Administrators only (Slipway's own directory: it will hold the join token).
    Private,
}

/// Sets the security descriptor of each `(path, is_directory, access)` on the volume, in the
/// format `ntfssecaudit -s` reads back from its own backups.
pub fn set_security(
    volume: &Path,
    entries: &[(String, bool, Access)],
    list: &Path,
    epoch: u64,
) -> Result<(), Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for (path, dir, access) in entries {
        let sd = descriptor(*dir, *access);
        let _ = writeln!(
            text,
            "{} {path}\nSecurity key : none",
            if *dir { "Directory" } else { "File" }
        );
        for (row, chunk) in sd.chunks(16).enumerate() {
            let _ = write!(text, "        {:06x} ", row * 16);
            for word in chunk.chunks(4) {
                let _ = write!(text, " ");
                for byte in word {
                    let _ = write!(text, "{byte:02x}");
                }
            }
            text.push('\n');
        }
    }
    std::fs::write(list, text).map_err(super::io_err("write", list))?;
    pinned_time(
        "ntfssecaudit",
        ["-s".as_ref(), volume.as_os_str(), list.as_os_str()],
        epoch,
    )
}

/// A self-relative security descriptor: owner Administrators, group SYSTEM, and a DACL
/// granting SYSTEM and Administrators full control (and Users read and execute for
/// [`Access::Program`]), inherited by what a directory will hold.
pub fn descriptor(directory: bool, access: Access) -> Vec<u8> {
    const SYSTEM: &[u8] = &[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    const ADMINISTRATORS: &[u8] = &[1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
    const USERS: &[u8] = &[1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x21, 2, 0, 0];
    /// FILE_ALL_ACCESS.
    const FULL: u32 = 0x001F_01FF;
    /// FILE_GENERIC_READ | FILE_GENERIC_EXECUTE.
    const READ_EXECUTE: u32 = 0x0012_00A9;
    /// OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE.
    const INHERIT: u8 = 0x03;
    let flags = if directory { INHERIT } else { 0 };
    let ace = |mask: u32, sid: &[u8]| {
        let mut ace = vec![0u8, flags];
        ace.extend_from_slice(&u16::try_from(8 + sid.len()).unwrap_or(0).to_le_bytes());
        ace.extend_from_slice(&mask.to_le_bytes());
        ace.extend_from_slice(sid);
        ace
    };
    let mut aces = vec![ace(FULL, SYSTEM), ace(FULL, ADMINISTRATORS)];
    if access == Access::Program {
        aces.push(ace(READ_EXECUTE, USERS));
    }
    let count = u16::try_from(aces.len()).unwrap_or(0);
    let aces = aces.concat();
    let mut acl = vec![2u8, 0];
    acl.extend_from_slice(&u16::try_from(8 + aces.len()).unwrap_or(0).to_le_bytes());
    acl.extend_from_slice(&count.to_le_bytes());
    acl.extend_from_slice(&[0, 0]);
    acl.extend_from_slice(&aces);
    let owner = 20u32;
    let group = owner + 16;
    let dacl = group + 12;
    // SE_SELF_RELATIVE | SE_DACL_PROTECTED | SE_DACL_PRESENT: what the build sets is what holds.
    let mut sd = vec![1u8, 0];
    sd.extend_from_slice(&0x9004u16.to_le_bytes());
    for field in [owner, group, 0, dacl] {
        sd.extend_from_slice(&field.to_le_bytes());
    }
    sd.extend_from_slice(ADMINISTRATORS);
    sd.extend_from_slice(SYSTEM);
    sd.extend_from_slice(&acl);
    sd
}
