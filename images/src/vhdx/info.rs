//! A summary of a VHDX file for people (`slipway vhdx info`) and machines (`--json`).

use super::format::locator_key;
use super::reader::{Kind, Vhdx};

/// What `slipway vhdx info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    /// The file.
    pub path: String,
    /// Dynamic, fixed or differencing.
    pub kind: Kind,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Payload block size in bytes.
    pub block_size: u32,
    /// Logical sector size in bytes.
    pub logical_sector_size: u32,
    /// Physical sector size in bytes.
    pub physical_sector_size: u32,
    /// Payload blocks present in this file.
    pub allocated_blocks: u64,
    /// Payload blocks the disk has.
    pub total_blocks: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
    /// The disk's identity.
    pub disk_id: String,
    /// The current header's DataWriteGuid.
    pub data_write_guid: String,
    /// The creating program, from the file identifier.
    pub creator: String,
    /// True when a dirty log was replayed (in memory) to read the file.
    pub log_replayed: bool,
    /// For a differencing disk: how it names its parent.
    pub parent: Option<ParentInfo>,
    /// Non-fatal problems seen while opening.
    pub notes: Vec<String>,
}

/// How a differencing disk names its parent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParentInfo {
    /// The parent's DataWriteGuid when the child was made.
    pub parent_linkage: Option<String>,
    /// Path relative to the child's directory.
    pub relative_path: Option<String>,
    /// Absolute path.
    pub absolute_win32_path: Option<String>,
    /// The parent file the chain resolved to, if it was opened.
    pub resolved: Option<String>,
}

impl Info {
    /// Summarises an open file.
    pub fn of(vhdx: &Vhdx) -> Info {
        let g = vhdx.geometry();
        let parent = vhdx.parent_locator().map(|loc| ParentInfo {
            parent_linkage: loc.get(locator_key::PARENT_LINKAGE).map(str::to_owned),
            relative_path: loc.get(locator_key::RELATIVE_PATH).map(str::to_owned),
            absolute_win32_path: loc.get(locator_key::ABSOLUTE_WIN32_PATH).map(str::to_owned),
            resolved: vhdx.parent().map(|p| p.path().display().to_string()),
        });
        Info {
            path: vhdx.path().display().to_string(),
            kind: vhdx.kind(),
            virtual_size: g.virtual_size,
            block_size: g.block_size,
            logical_sector_size: g.logical_sector_size,
            physical_sector_size: vhdx.physical_sector_size(),
            allocated_blocks: vhdx.allocated_blocks().count() as u64,
            total_blocks: g.data_blocks(),
            file_size: vhdx.file_size(),
            disk_id: vhdx.disk_id().to_string(),
            data_write_guid: vhdx.header().data_write_guid.to_string(),
            creator: vhdx.creator().to_owned(),
            log_replayed: vhdx.log_replayed(),
            parent,
            notes: vhdx.notes().to_vec(),
        }
    }
}
