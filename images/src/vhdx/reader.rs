//! Opening a VHDX file and reading its guest-visible content.
//!
//! Opening follows MS-VHDX 2.1's order: file identifier → both headers (the valid one with the
//! larger sequence number wins; one bad copy is noted, not fatal) → log replay (in memory: the
//! file is not modified) → region tables → metadata → BAT, each validated before use. Every
//! structure's position and size are checked against the file's real size before anything is
//! allocated for it, so a hostile file cannot make the reader allocate more than the file holds.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::backing::Backing;
use super::format::{
    self, BatEntry, FileIdentifier, FileParameters, Geometry, HEADER_OFFSETS, HEADER_SIZE, Header,
    MetadataTable, ParentLocator, PayloadState, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE,
    RegionTable, item, locator_key, region,
};
use super::{layout, log};
use crate::guid::Guid;

/// Largest parent locator this reader accepts (Hyper-V's are a few hundred bytes).
const MAX_PARENT_LOCATOR: u32 = 64 * 1024;
/// Longest differencing chain followed (guards against loops).
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Why a VHDX could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened.
    #[error("open {path}")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A structure could not be read from the file (often: the file is truncated).
    #[error("read the {what} at {offset:#x}")]
    ReadStructure {
        /// Which structure.
        what: String,
        /// Where.
        offset: u64,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A structure was read but is not valid.
    #[error("decode the {what}")]
    DecodeStructure {
        /// Which structure.
        what: String,
        /// What is wrong.
        #[source]
        source: format::Error,
    },
    /// Neither header copy is valid.
    #[error("neither header copy is valid (header 1: {first}; header 2: {second})")]
    FindHeader {
        /// Why the first copy was refused.
        first: Box<format::Error>,
        /// Why the second copy was refused.
        second: Box<format::Error>,
    },
    /// Neither region table copy is valid.
    #[error("neither region table copy is valid (table 1: {first}; table 2: {second})")]
    FindRegionTable {
        /// Why the first copy was refused.
        first: String,
        /// Why the second copy was refused.
        second: String,
    },
    /// The log could not be replayed.
    #[error("replay the log")]
    ReplayLog(#[source] log::Error),
    /// A required metadata item is absent.
    #[error("the metadata has no {item} item")]
    FindMetadataItem {
        /// The item's name.
        item: &'static str,
    },
    /// A metadata item has the wrong size.
    #[error("the metadata item {item} is {length} bytes, expected {expected}")]
    SizeMetadataItem {
        /// The item's name.
        item: &'static str,
        /// Its length.
        length: u32,
        /// What was expected.
        expected: String,
    },
    /// A structure lies (partly) outside the file or over another one.
    #[error("{what}")]
    PlaceStructure {
        /// What is misplaced, with offsets.
        what: String,
    },
    /// The BAT has invalid entries.
    #[error("the block allocation table is invalid: {first}{}", more_suffix(*.more))]
    ValidateBat {
        /// The first problem found.
        first: String,
        /// How many more were found.
        more: usize,
    },
    /// A differencing disk was read without its parent.
    #[error("{path} is a differencing disk; open it with its parent chain to read it")]
    NeedParent {
        /// The child.
        path: PathBuf,
    },
    /// The parent of a differencing disk could not be found.
    #[error("find the parent of {child}: tried {}", display_paths(tried))]
    FindParent {
        /// The child.
        child: PathBuf,
        /// Every path tried, in order.
        tried: Vec<PathBuf>,
    },
    /// The parent found is not the one the child was made from.
    #[error(
        "{parent} is not the parent {child} was made from: its DataWriteGuid is {found}, the child records {expected}"
    )]
    MatchParent {
        /// The child.
        child: PathBuf,
        /// The candidate parent.
        parent: PathBuf,
        /// The child's parent_linkage.
        expected: String,
        /// The candidate's DataWriteGuid.
        found: Guid,
    },
    /// The parent's size or sector size differs from the child's.
    #[error("{parent} has a different geometry from its child {child}")]
    MatchParentGeometry {
        /// The child.
        child: PathBuf,
        /// The parent.
        parent: PathBuf,
    },
    /// The differencing chain is longer than [`MAX_CHAIN_DEPTH`] (or loops).
    #[error("the differencing chain at {path} is deeper than {MAX_CHAIN_DEPTH} (or loops)")]
    FollowChain {
        /// Where the limit was hit.
        path: PathBuf,
    },
    /// Guest data could not be read.
    #[error("read {len} bytes of guest data at virtual offset {offset:#x}")]
    ReadData {
        /// Virtual offset.
        offset: u64,
        /// Length.
        len: usize,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A read past the end of the virtual disk.
    #[error("read of {len} bytes at {offset:#x} passes the end of the {size}-byte virtual disk")]
    ReadPastEnd {
        /// Virtual offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Virtual size.
        size: u64,
    },
}

fn more_suffix(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" (and {more} more problems; run `slipway vhdx check` for all)")
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no path (the locator names none)".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What kind of VHDX a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Blocks allocated on demand.
    Dynamic,
    /// Every block allocated up front.
    Fixed,
    /// Blocks not present here come from a parent.
    Differencing,
}

/// An open VHDX file (read-only), optionally with its parent chain.
#[derive(Debug)]
pub struct Vhdx {
    path: PathBuf,
    backing: Backing,
    creator: String,
    header: Header,
    header_slot: usize,
    regions: RegionTable,
    params: FileParameters,
    geometry: Geometry,
    disk_id: Guid,
    physical_sector_size: u32,
    parent_locator: Option<ParentLocator>,
    bat: Vec<BatEntry>,
    log_replayed: bool,
    notes: Vec<String>,
    parent: Option<Box<Vhdx>>,
}

/// Everything [`load`] learns from a file; `check` reports on it, `open` insists it is clean.
pub(crate) struct Loaded {
    pub vhdx: Vhdx,
    pub bat_findings: Vec<String>,
}

fn read_at(backing: &Backing, what: &str, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    backing
        .read_exact_at(&mut buf, offset)
        .map_err(|source| Error::ReadStructure {
            what: what.to_owned(),
            offset,
            source,
        })?;
    Ok(buf)
}

/// Reads one header copy; `Err` carries why it is not usable.
fn read_header(backing: &Backing, slot: usize) -> Result<Header, format::Error> {
    let offset = HEADER_OFFSETS[slot];
    let mut buf = vec![0u8; HEADER_SIZE];
    if backing.read_exact_at(&mut buf, offset).is_err() {
        return Err(format::Error::ReadTruncated {
            structure: "header",
            len: 0,
            need: HEADER_SIZE,
        });
    }
    Header::decode(&buf)
}

/// Reads the whole file structure. Problems that make the file unreadable are errors;
/// problems a repair could survive (one bad copy) go to `notes`; BAT problems are collected.
pub(crate) fn load(path: &Path) -> Result<Loaded, Error> {
    let file = File::open(path).map_err(|source| Error::OpenFile {
        path: path.to_owned(),
        source,
    })?;
    let mut backing = Backing::new(file).map_err(|source| Error::OpenFile {
        path: path.to_owned(),
        source,
    })?;
    let mut notes = Vec::new();

    let ident = read_at(&backing, "file identifier", 0, format::FILE_IDENTIFIER_SIZE)?;
    let ident = FileIdentifier::decode(&ident).map_err(|source| Error::DecodeStructure {
        what: "file identifier".into(),
        source,
    })?;

    let (header, header_slot) = match (read_header(&backing, 0), read_header(&backing, 1)) {
        (Ok(a), Ok(b)) => {
            if b.sequence_number > a.sequence_number {
                (b, 1)
            } else {
                (a, 0)
            }
        }
        (Ok(a), Err(e)) => {
            notes.push(format!("header 2 is not valid and was ignored: {e}"));
            (a, 0)
        }
        (Err(e), Ok(b)) => {
            notes.push(format!("header 1 is not valid and was ignored: {e}"));
            (b, 1)
        }
        (Err(first), Err(second)) => {
            return Err(Error::FindHeader {
                first: Box::new(first),
                second: Box::new(second),
            });
        }
    };

    let overlay = log::plan_replay(&backing, &header).map_err(Error::ReplayLog)?;
    let log_replayed = overlay.is_some();
    if let Some(overlay) = overlay {
        backing.set_overlay(overlay);
    }

    let regions = load_region_tables(&backing, &mut notes)?;
    let file_size = backing.size();
    let structure_limit = backing.materialized_size();
    let log_range = header.log_offset
        ..header
            .log_offset
            .saturating_add(u64::from(header.log_length));
    for entry in &regions.entries {
        if entry.file_offset < log_range.end && entry.end() > log_range.start {
            return Err(Error::PlaceStructure {
                what: format!(
                    "region {} at {:#x} overlaps the log at {:#x}",
                    entry.guid, entry.file_offset, log_range.start
                ),
            });
        }
    }
    let (meta_region, bat_region) =
        match (regions.find(region::METADATA), regions.find(region::BAT)) {
            (Some(m), Some(b)) => (m, b),
            // decode() guarantees both; keep the error path honest anyway.
            _ => {
                return Err(Error::PlaceStructure {
                    what: "the region table lacks the BAT or metadata region".into(),
                });
            }
        };

    let meta = Metadata::load(
        &backing,
        meta_region.file_offset,
        u64::from(meta_region.length),
        structure_limit,
    )?;

    let entries = meta.geometry.bat_entries();
    let bat_bytes = entries * 8;
    if bat_bytes > u64::from(bat_region.length)
        || bat_region.file_offset + bat_bytes > structure_limit
    {
        return Err(Error::PlaceStructure {
            what: format!(
                "the BAT needs {bat_bytes} bytes for {entries} entries; its region holds {} bytes at {:#x} in a {structure_limit}-byte file",
                bat_region.length, bat_region.file_offset
            ),
        });
    }
    let raw = read_at(
        &backing,
        "block allocation table",
        bat_region.file_offset,
        usize::try_from(bat_bytes).unwrap_or(usize::MAX),
    )?;
    let bat: Vec<BatEntry> = raw
        .chunks_exact(8)
        .map(|c| BatEntry(format::u64_at(c, 0)))
        .collect();

    let mut reserved = vec![
        (0, format::HEADER_AREA_SIZE, "the header area".to_owned()),
        (
            meta_region.file_offset,
            meta_region.end(),
            "the metadata region".to_owned(),
        ),
        (
            bat_region.file_offset,
            bat_region.end(),
            "the BAT region".to_owned(),
        ),
    ];
    if header.log_length > 0 {
        reserved.push((log_range.start, log_range.end, "the log".to_owned()));
    }
    let bat_findings = layout::bat_findings(&meta.geometry, &bat, &reserved, file_size);

    let vhdx = Vhdx {
        path: path.to_owned(),
        backing,
        creator: ident.creator,
        header,
        header_slot,
        regions,
        params: meta.params,
        geometry: meta.geometry,
        disk_id: meta.disk_id,
        physical_sector_size: meta.physical_sector_size,
        parent_locator: meta.parent_locator,
        bat,
        log_replayed,
        notes,
        parent: None,
    };
    Ok(Loaded { vhdx, bat_findings })
}

fn load_region_tables(backing: &Backing, notes: &mut Vec<String>) -> Result<RegionTable, Error> {
    let read = |slot: usize| -> Result<RegionTable, String> {
        let mut buf = vec![0u8; REGION_TABLE_SIZE];
        backing
            .read_exact_at(&mut buf, REGION_TABLE_OFFSETS[slot])
            .map_err(|e| e.to_string())?;
        RegionTable::decode(&buf).map_err(|e| e.to_string())
    };
    match (read(0), read(1)) {
        (Ok(a), Ok(b)) => {
            if a != b {
                notes.push("the two region table copies differ; the first was used".into());
            }
            Ok(a)
        }
        (Ok(a), Err(e)) => {
            notes.push(format!("region table 2 is not valid and was ignored: {e}"));
            Ok(a)
        }
        (Err(e), Ok(b)) => {
            notes.push(format!("region table 1 is not valid and was ignored: {e}"));
            Ok(b)
        }
        (Err(first), Err(second)) => Err(Error::FindRegionTable { first, second }),
    }
}

fn decode(what: &'static str) -> impl Fn(format::Error) -> Error {
    move |source| Error::DecodeStructure {
        what: what.to_owned(),
        source,
    }
}

struct Metadata {
    params: FileParameters,
    geometry: Geometry,
    disk_id: Guid,
    physical_sector_size: u32,
    parent_locator: Option<ParentLocator>,
}

impl Metadata {
    fn load(
        backing: &Backing,
        offset: u64,
        region_len: u64,
        file_size: u64,
    ) -> Result<Metadata, Error> {
        let table_len = format::METADATA_TABLE_SIZE as u64;
        if offset + table_len > file_size {
            return Err(Error::PlaceStructure {
                what: format!(
                    "the metadata table at {offset:#x} ends past the end of the {file_size}-byte file"
                ),
            });
        }
        let table = read_at(
            backing,
            "metadata table",
            offset,
            format::METADATA_TABLE_SIZE,
        )?;
        let table =
            MetadataTable::decode(&table, region_len).map_err(|source| Error::DecodeStructure {
                what: "metadata table".into(),
                source,
            })?;
        let item_bytes =
            |id: Guid, name: &'static str, min: u32, max: u32| -> Result<Option<Vec<u8>>, Error> {
                let Some(entry) = table.find(id) else {
                    return Ok(None);
                };
                if entry.length < min || entry.length > max {
                    let expected = if min == max {
                        format!("{min}")
                    } else {
                        format!("{min} to {max}")
                    };
                    return Err(Error::SizeMetadataItem {
                        item: name,
                        length: entry.length,
                        expected,
                    });
                }
                let at = offset + u64::from(entry.offset);
                if at + u64::from(entry.length) > file_size {
                    return Err(Error::PlaceStructure {
                        what: format!(
                            "metadata item {name} at {at:#x} ends past the end of the file"
                        ),
                    });
                }
                read_at(backing, name, at, entry.length as usize).map(Some)
            };
        let required = |id, name, size| -> Result<Vec<u8>, Error> {
            item_bytes(id, name, size, size)?.ok_or(Error::FindMetadataItem { item: name })
        };

        let params =
            FileParameters::decode(&required(item::FILE_PARAMETERS, "file parameters", 8)?)
                .map_err(decode("file parameters"))?;
        let virtual_size = format::u64_at(
            &required(item::VIRTUAL_DISK_SIZE, "virtual disk size", 8)?,
            0,
        );
        let disk_id = format::guid_at(&required(item::VIRTUAL_DISK_ID, "virtual disk id", 16)?, 0);
        let logical = format::u32_at(
            &required(item::LOGICAL_SECTOR_SIZE, "logical sector size", 4)?,
            0,
        );
        let physical = format::u32_at(
            &required(item::PHYSICAL_SECTOR_SIZE, "physical sector size", 4)?,
            0,
        );
        if physical != 512 && physical != 4096 {
            return Err(Error::DecodeStructure {
                what: "physical sector size".into(),
                source: format::Error::ValidateField {
                    structure: "metadata",
                    field: "PhysicalSectorSize",
                    value: physical.into(),
                    expected: "512 or 4096",
                },
            });
        }
        let geometry = Geometry::new(virtual_size, params.block_size, logical, params.has_parent)
            .map_err(decode("disk geometry"))?;
        let parent_locator = if params.has_parent {
            let bytes = item_bytes(
                item::PARENT_LOCATOR,
                "parent locator",
                20,
                MAX_PARENT_LOCATOR,
            )?
            .ok_or(Error::FindMetadataItem {
                item: "parent locator",
            })?;
            Some(ParentLocator::decode(&bytes).map_err(decode("parent locator"))?)
        } else {
            None
        };
        Ok(Metadata {
            params,
            geometry,
            disk_id,
            physical_sector_size: physical,
            parent_locator,
        })
    }
}

impl Vhdx {
    /// Opens a VHDX read-only, replaying a dirty log in memory. A differencing disk opens but
    /// reads of blocks it does not hold fail until it is opened with [`Vhdx::open_chain`].
    #[tracing::instrument(level = "debug")]
    pub fn open(path: &Path) -> Result<Vhdx, Error> {
        let loaded = load(path)?;
        if let Some(first) = loaded.bat_findings.first() {
            return Err(Error::ValidateBat {
                first: first.clone(),
                more: loaded.bat_findings.len() - 1,
            });
        }
        Ok(loaded.vhdx)
    }

    /// Opens a VHDX and, for a differencing disk, its parents: each found through the parent
    /// locator (relative path first, then absolute) and checked against `parent_linkage`.
    pub fn open_chain(path: &Path) -> Result<Vhdx, Error> {
        Vhdx::open_chain_depth(path, 0)
    }

    fn open_chain_depth(path: &Path, depth: usize) -> Result<Vhdx, Error> {
        if depth > MAX_CHAIN_DEPTH {
            return Err(Error::FollowChain {
                path: path.to_owned(),
            });
        }
        let mut vhdx = Vhdx::open(path)?;
        if let Some(locator) = vhdx.parent_locator.clone() {
            let parent = vhdx.find_parent(&locator, depth)?;
            vhdx.parent = Some(Box::new(parent));
        }
        Ok(vhdx)
    }

    fn find_parent(&self, locator: &ParentLocator, depth: usize) -> Result<Vhdx, Error> {
        let linkages: Vec<String> = [locator_key::PARENT_LINKAGE, locator_key::PARENT_LINKAGE2]
            .iter()
            .filter_map(|k| locator.get(k).map(str::to_owned))
            .collect();
        let accepted: Vec<Guid> = linkages.iter().filter_map(|l| l.parse().ok()).collect();
        let here = self.path.parent().unwrap_or(Path::new("."));
        let mut tried = Vec::new();
        if let Some(rel) = locator.get(locator_key::RELATIVE_PATH) {
            tried.push(here.join(rel.replace('\\', "/")));
        }
        if let Some(abs) = locator.get(locator_key::ABSOLUTE_WIN32_PATH) {
            tried.push(PathBuf::from(abs));
            if abs.contains('\\') {
                tried.push(PathBuf::from(abs.replace('\\', "/")));
            }
        }
        let mut mismatch = None;
        for candidate in &tried {
            if !candidate.is_file() {
                continue;
            }
            let parent = Vhdx::open_chain_depth(candidate, depth + 1)?;
            if !accepted.contains(&parent.header.data_write_guid) {
                mismatch = Some(Error::MatchParent {
                    child: self.path.clone(),
                    parent: candidate.clone(),
                    expected: linkages
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "nothing".into()),
                    found: parent.header.data_write_guid,
                });
                continue;
            }
            if parent.geometry.virtual_size != self.geometry.virtual_size
                || parent.geometry.logical_sector_size != self.geometry.logical_sector_size
            {
                return Err(Error::MatchParentGeometry {
                    child: self.path.clone(),
                    parent: candidate.clone(),
                });
            }
            return Ok(parent);
        }
        Err(mismatch.unwrap_or(Error::FindParent {
            child: self.path.clone(),
            tried,
        }))
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Sizes: virtual size, block size, sector size.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }
    /// The current header.
    pub fn header(&self) -> &Header {
        &self.header
    }
    /// Which header copy is current (0 or 1).
    pub fn header_slot(&self) -> usize {
        self.header_slot
    }
    /// The region table in use.
    pub fn regions(&self) -> &RegionTable {
        &self.regions
    }
    /// The file parameters item.
    pub fn file_parameters(&self) -> FileParameters {
        self.params
    }
    /// The disk's identity.
    pub fn disk_id(&self) -> Guid {
        self.disk_id
    }
    /// Physical sector size.
    pub fn physical_sector_size(&self) -> u32 {
        self.physical_sector_size
    }
    /// The parent locator of a differencing disk.
    pub fn parent_locator(&self) -> Option<&ParentLocator> {
        self.parent_locator.as_ref()
    }
    /// The opened parent, after [`Vhdx::open_chain`].
    pub fn parent(&self) -> Option<&Vhdx> {
        self.parent.as_deref()
    }
    /// Text of the file identifier's creator field.
    pub fn creator(&self) -> &str {
        &self.creator
    }
    /// True when a dirty log was replayed (in memory) on open.
    pub fn log_replayed(&self) -> bool {
        self.log_replayed
    }
    /// Non-fatal problems found while opening (a bad header or region table copy).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    /// The raw BAT.
    pub fn bat(&self) -> &[BatEntry] {
        &self.bat
    }
    /// The file's size (after an in-memory log replay, its replayed size).
    pub fn file_size(&self) -> u64 {
        self.backing.size()
    }
    /// What kind of VHDX this is.
    pub fn kind(&self) -> Kind {
        if self.params.has_parent {
            Kind::Differencing
        } else if self.params.leave_blocks_allocated {
            Kind::Fixed
        } else {
            Kind::Dynamic
        }
    }

    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The BAT entry of payload block `block`.
    pub fn block_entry(&self, block: u64) -> BatEntry {
        let index = usize::try_from(self.geometry.payload_index(block)).unwrap_or(usize::MAX);
        self.bat.get(index).copied().unwrap_or_default()
    }

    /// The payload blocks that hold data in this file (not its parents), in block order.
    pub fn allocated_blocks(&self) -> impl Iterator<Item = AllocatedBlock> + '_ {
        (0..self.geometry.data_blocks()).filter_map(move |block| {
            let entry = self.block_entry(block);
            let state = entry.payload_state()?;
            state.has_offset().then(|| AllocatedBlock {
                block,
                virtual_offset: block * self.geometry.block_bytes(),
                len: self.geometry.block_len(block),
                file_offset: entry.file_offset(),
                state,
            })
        })
    }

    /// True when some layer of the chain may hold non-zero data for `block`.
    pub fn block_may_hold_data(&self, block: u64) -> bool {
        match self.block_entry(block).payload_state() {
            Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent) => true,
            Some(PayloadState::NotPresent) => self
                .parent
                .as_ref()
                .is_some_and(|p| p.block_may_hold_data(block)),
            _ => false,
        }
    }

    /// Reads guest data at virtual `offset` into `buf`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let size = self.geometry.virtual_size;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(Error::ReadPastEnd {
                offset,
                len: buf.len(),
                size,
            });
        }
        let block_size = self.geometry.block_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / block_size;
            let within = pos % block_size;
            let n =
                usize::try_from((block_size - within).min((buf.len() - done) as u64)).unwrap_or(0);
            let dst = &mut buf[done..done + n];
            let entry = self.block_entry(block);
            match entry.payload_state() {
                Some(PayloadState::FullyPresent) => {
                    self.read_file(dst, entry.file_offset() + within, pos)?
                }
                Some(PayloadState::PartiallyPresent) => {
                    self.read_partial(dst, block, within, pos)?
                }
                Some(PayloadState::NotPresent) => self.read_parent(dst, pos)?,
                _ => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn read_file(
        &self,
        dst: &mut [u8],
        file_offset: u64,
        virtual_offset: u64,
    ) -> Result<(), Error> {
        self.backing
            .read_exact_at(dst, file_offset)
            .map_err(|source| Error::ReadData {
                offset: virtual_offset,
                len: dst.len(),
                source,
            })
    }

    fn read_parent(&self, dst: &mut [u8], pos: u64) -> Result<(), Error> {
        match (&self.parent, self.params.has_parent) {
            (Some(parent), _) => parent.read_at(dst, pos),
            (None, false) => {
                dst.fill(0);
                Ok(())
            }
            (None, true) => Err(Error::NeedParent {
                path: self.path.clone(),
            }),
        }
    }

    /// Reads a partially present block: each sector comes from this file when its bit in the
    /// chunk's sector bitmap is set, from the parent otherwise.
    fn read_partial(&self, dst: &mut [u8], block: u64, within: u64, pos: u64) -> Result<(), Error> {
        let g = &self.geometry;
        let sector = u64::from(g.logical_sector_size);
        let bitmap = self
            .bat
            .get(usize::try_from(g.bitmap_index(block / g.chunk_ratio())).unwrap_or(usize::MAX))
            .copied()
            .unwrap_or_default();
        let block_offset = self.block_entry(block).file_offset();
        if bitmap.bitmap_state() != Some(format::BitmapState::Present) {
            return self.read_parent(dst, pos);
        }
        // Sector numbers within the chunk covered by this read, and their bitmap bytes.
        let first_sector = (block % g.chunk_ratio()) * (g.block_bytes() / sector) + within / sector;
        let last_sector = (block % g.chunk_ratio()) * (g.block_bytes() / sector)
            + (within + dst.len() as u64 - 1) / sector;
        let byte_lo = first_sector / 8;
        let byte_hi = last_sector / 8;
        let mut bits = vec![0u8; usize::try_from(byte_hi - byte_lo + 1).unwrap_or(0)];
        self.read_file(&mut bits, bitmap.file_offset() + byte_lo, pos)?;
        let present = |s: u64| {
            let i = usize::try_from(s / 8 - byte_lo).unwrap_or(0);
            bits[i] >> (s % 8) & 1 == 1
        };
        let mut done = 0usize;
        while done < dst.len() {
            let at = within + done as u64;
            let s = first_sector + (at / sector - within / sector);
            let here = present(s);
            // Extend the run while sectors share the same source.
            let mut run_end = (at / sector + 1) * sector;
            let mut next = s + 1;
            while run_end < within + dst.len() as u64 && present(next) == here {
                run_end += sector;
                next += 1;
            }
            let n = usize::try_from(run_end.min(within + dst.len() as u64) - at).unwrap_or(0);
            let part = &mut dst[done..done + n];
            if here {
                self.read_file(part, block_offset + at, pos + done as u64)?;
            } else {
                self.read_parent(part, pos + done as u64)?;
            }
            done += n;
        }
        Ok(())
    }
}

/// A payload block present in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatedBlock {
    /// Block number.
    pub block: u64,
    /// Where its data starts on the virtual disk.
    pub virtual_offset: u64,
    /// Guest-visible bytes in the block.
    pub len: u64,
    /// Where the block starts in the file.
    pub file_offset: u64,
    /// Fully or partially present.
    pub state: PayloadState,
}

/// A `Read + Seek` view of a VHDX's guest content, for code that wants a stream.
#[derive(Debug)]
pub struct Cursor<'a> {
    vhdx: &'a Vhdx,
    pos: u64,
}

impl Vhdx {
    /// A `Read + Seek` view of the guest content, starting at offset 0.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor { vhdx: self, pos: 0 }
    }
}

impl std::io::Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.vhdx.geometry.virtual_size.saturating_sub(self.pos);
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        self.vhdx
            .read_at(&mut buf[..n], self.pos)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Cursor<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let size = self.vhdx.geometry.virtual_size;
        let target = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the disk",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}
