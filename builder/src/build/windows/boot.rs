//! The EFI system partition of a Windows image, as `bcdboot` would make it, offline: the
//! image's own `Windows\Boot\EFI` copied to `\EFI\Microsoft\Boot`, `bootmgfw.efi` also as the
//! removable-media path `\EFI\Boot\bootx64.efi` (no NVRAM entry can be written for a VM that
//! does not exist yet), and a BCD store made from the image's own `BCD-Template` whose boot
//! manager and Windows loader name the ESP and the Windows partition by their GPT GUIDs.

use std::path::{Path, PathBuf};

use images::bcd;
use images::guid::Guid;

use super::registry::{self, Edit};
use super::{Error, wim};
use crate::build::fs;

/// Where the image keeps its boot files and the template of its BCD store.
const BOOT_EFI: &str = "/Windows/Boot/EFI";
const BCD_TEMPLATE: &str = "/Windows/System32/config/BCD-Template";
/// The boot manager's file name.
const BOOTMGR: &str = "bootmgfw.efi";

/// What the ESP names.
pub struct Spec {
    /// The disk's GUID.
    pub disk: Guid,
    /// The ESP's partition GUID.
    pub esp: Guid,
    /// The Windows partition's GUID.
    pub windows: Guid,
    /// The Windows loader's BCD object.
    pub loader: Guid,
    /// The boot entry's description.
    pub description: String,
}

/// Makes `dir/esp.img` (`size` bytes, FAT32) from image `index` of `wim`; returns the BCD
/// store's path in `dir`.
pub fn make(
    wim: &Path,
    index: u32,
    spec: &Spec,
    size: u64,
    volume_id: u32,
    dir: &Path,
    epoch: u64,
) -> Result<PathBuf, Error> {
    let boot = dir.join("boot");
    std::fs::create_dir(&boot).map_err(super::io_err("create", &boot))?;
    wim::extract_dir(wim, index, BOOT_EFI, &boot)?;
    let efi = boot.join("EFI");
    let meta = std::fs::symlink_metadata(&efi).map_err(super::io_err("stat", &efi))?;
    if !meta.is_dir() {
        let target = std::fs::read_link(&efi)
            .map(|t| format!(" -> {}", t.display()))
            .unwrap_or_default();
        return Err(Error::EscapePath {
            path: format!("{BOOT_EFI}{target}"),
            why: "the boot files' directory is a link or not a directory".into(),
        });
    }
    let files = regular_files(&efi, &efi)?;
    if !files
        .iter()
        .any(|(rel, _)| rel.eq_ignore_ascii_case(BOOTMGR))
    {
        return Err(Error::FindBootFile {
            what: format!("{BOOT_EFI}/{BOOTMGR}"),
        });
    }
    let bcd_path = dir.join("BCD");
    wim::read(wim, index, BCD_TEMPLATE, &bcd_path).map_err(|e| match e {
        Error::ReadImageFile { stderr, .. } => Error::FindBootFile {
            what: format!("{BCD_TEMPLATE} ({stderr})"),
        },
        other => other,
    })?;
    let edits: Vec<Edit> = bcd::store_edits(&bcd::BootSpec {
        esp: bcd::PartitionId {
            disk: spec.disk,
            partition: spec.esp,
        },
        windows: bcd::PartitionId {
            disk: spec.disk,
            partition: spec.windows,
        },
        loader: spec.loader,
        description: spec.description.clone(),
        locale: "en-US".to_owned(),
        // One entry: no menu is shown whatever the timeout.
        timeout_seconds: 0,
        // Windows Server's own setting.
        nx_policy: bcd::ids::NX_OPT_OUT,
    })?
    .into_iter()
    .map(|e| Edit {
        key: e.key,
        name: e.name,
        kind: e.value.kind,
        data: e.value.data,
    })
    .collect();
    registry::merge(&bcd_path, &edits, epoch)?;
    let mut placed: Vec<(String, PathBuf)> = files
        .iter()
        .map(|(rel, path)| (format!("::/EFI/Microsoft/Boot/{rel}"), path.clone()))
        .collect();
    if let Some((_, manager)) = files
        .iter()
        .find(|(rel, _)| rel.eq_ignore_ascii_case(BOOTMGR))
    {
        placed.push(("::/EFI/Boot/bootx64.efi".to_owned(), manager.clone()));
    }
    placed.push(("::/EFI/Microsoft/Boot/BCD".to_owned(), bcd_path.clone()));
    placed.sort();
    let refs: Vec<(&str, &Path)> = placed
        .iter()
        .map(|(dest, src)| (dest.as_str(), src.as_path()))
        .collect();
    fs::vfat(&dir.join("esp.img"), size, volume_id, &refs, epoch)?;
    Ok(bcd_path)
}

/// Every regular file under `dir` as (path relative to `root` with `/`, host path), refusing
/// links and anything else that is not a file or a directory: the boot files come from an
/// image nobody here made, and a link in it could lead the build to a host file.
fn regular_files(root: &Path, dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(super::io_err("read", dir))?;
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(super::io_err("read", dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(super::io_err("stat", &path))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if meta.is_dir() {
            out.extend(regular_files(root, &path)?);
        } else if meta.is_file() {
            out.push((rel, path));
        } else {
            let target = std::fs::read_link(&path)
                .map(|t| format!(" -> {}", t.display()))
                .unwrap_or_default();
            return Err(Error::EscapePath {
                path: format!("{BOOT_EFI}/{rel}{target}"),
                why: "the boot files of the base image hold a link or a special file".into(),
            });
        }
    }
    Ok(out)
}
