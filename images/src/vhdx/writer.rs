//! The streaming VHDX writer.
//!
//! Input is a list of [`Extent`]s (ranges of files, bytes in memory, or zeros) that together
//! form the guest-visible disk; no raw disk is ever materialised. File ranges are read only
//! where the file has data (SEEK_DATA/SEEK_HOLE), all-zero blocks are never allocated, and
//! the BAT is kept in memory. Payload blocks are written first, then the BAT and metadata,
//! then (after an fsync) the region tables and both headers: until the last step the file has
//! no valid header, so a crash mid-write never leaves something that looks like a VHDX.
//!
//! Layout written (all offsets 1 MiB-aligned, as Hyper-V and qemu lay files out):
//! `[0, 1M)` identifier, headers, region tables · `[1M, 2M)` log (empty) ·
//! `[2M, 3M)` metadata · `[3M, 3M + BAT)` BAT · then payload blocks in virtual order.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    self, BatEntry, FileIdentifier, FileParameters, Geometry, HEADER_OFFSETS, Header, MIB,
    MetadataEntry, MetadataTable, ParentLocator, PayloadState, REGION_TABLE_OFFSETS, RegionEntry,
    RegionTable, item, region,
};
use super::stream::{AlignedBuf, nonzero_runs, with_background_sync};
use crate::atomic::{sync_parent, temporary_path};
use crate::guid::{Guid, RandomGuidError};
use crate::pio;

/// Default block size: 1 MiB, Microsoft's advice for Linux guests.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u32 = 1 << 20;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u32 = 1 << 20;
const BAT_OFFSET: u64 = 3 * MIB;
/// Size of the read buffer; a block is processed in pieces of at most this size.
const CHUNK: u64 = MIB;

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested sizes are not a valid VHDX geometry.
    #[error("invalid disk geometry")]
    ValidateGeometry(#[source] format::Error),
    /// The physical sector size is neither 512 nor 4096.
    #[error("physical sector size {0} is not 512 or 4096")]
    ValidatePhysicalSector(u32),
    /// Reading input data failed.
    #[error("read {len} bytes of input at {offset:#x}")]
    ReadInput {
        /// Offset in the input file.
        offset: u64,
        /// Length.
        len: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("write {what} to the output at {offset:#x}")]
    WriteOutput {
        /// What was being written.
        what: &'static str,
        /// Where.
        offset: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Creating, syncing or renaming the output file failed.
    #[error("{action} {path}")]
    PlaceOutput {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Syncing the output in the background failed.
    #[error("sync the output to disk")]
    SyncOutput(#[from] io::Error),
    /// No random identifiers could be had.
    #[error("make identifiers for the new disk")]
    MakeIdentity(#[source] RandomGuidError),
}

/// The identifiers a new VHDX carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Header FileWriteGuid.
    pub file_write: Guid,
    /// Header DataWriteGuid (children record it as their parent linkage).
    pub data_write: Guid,
    /// The virtual disk's identity (SCSI page 83).
    pub disk_id: Guid,
}

impl Identity {
    /// Fresh random identifiers.
    pub fn random() -> Result<Identity, Error> {
        let g = || Guid::random().map_err(Error::MakeIdentity);
        Ok(Identity {
            file_write: g()?,
            data_write: g()?,
            disk_id: g()?,
        })
    }

    /// Identifiers derived from `seed`, for reproducible builds. The seed must identify the
    /// disk's content (a digest of it), not just its name: a differencing child accepts any
    /// parent with the DataWriteGuid it recorded, so two disks with other bytes must never
    /// share a seed.
    pub fn derived(seed: &str) -> Identity {
        Identity {
            file_write: Guid::derived("slipway.vhdx.file-write", seed.as_bytes()),
            data_write: Guid::derived("slipway.vhdx.data-write", seed.as_bytes()),
            disk_id: Guid::derived("slipway.vhdx.disk-id", seed.as_bytes()),
        }
    }
}

/// How to write the image.
#[derive(Debug, Clone)]
pub struct Options {
    /// Payload block size (power of two, 1 MiB to 256 MiB).
    pub block_size: u32,
    /// Logical sector size (512 or 4096).
    pub logical_sector_size: u32,
    /// Physical sector size (512 or 4096).
    pub physical_sector_size: u32,
    /// Allocate every block, in order (a fixed VHDX).
    pub fixed: bool,
    /// Identifiers to write.
    pub identity: Identity,
    /// Text for the file identifier's creator field.
    pub creator: String,
    /// For a differencing disk: where the parent is.
    pub(crate) parent: Option<ParentLocator>,
}

impl Options {
    /// Dynamic, 1 MiB blocks, 512-byte logical and 4096-byte physical sectors.
    pub fn new(identity: Identity) -> Options {
        Options {
            block_size: DEFAULT_BLOCK_SIZE,
            logical_sector_size: 512,
            physical_sector_size: 4096,
            fixed: false,
            identity,
            creator: format!("Slipway {}", env!("CARGO_PKG_VERSION")),
            parent: None,
        }
    }
}

/// One piece of the guest-visible disk, in order.
#[derive(Debug, Clone)]
pub enum Extent {
    /// `len` bytes of `file` starting at `offset`; holes in the file read as zeros.
    File {
        /// The input.
        file: Arc<File>,
        /// Start in the input.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Bytes held in memory (partition tables, small generated structures).
    Bytes(Arc<[u8]>),
    /// `len` zero bytes.
    Zero(u64),
}

impl Extent {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Extent::File { len, .. } | Extent::Zero(len) => *len,
            Extent::Bytes(bytes) => bytes.len() as u64,
        }
    }

    /// True for an empty extent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Guest-visible size.
    pub virtual_size: u64,
    /// Payload blocks allocated.
    pub allocated_blocks: u64,
    /// Size of the VHDX file.
    pub file_size: u64,
}

/// Writes a VHDX of the extents into `out`, which must be empty, then syncs it.
/// `progress` is called with the number of guest bytes processed so far.
pub fn write(
    out: &File,
    extents: &[Extent],
    options: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, Error> {
    let virtual_size: u64 = extents.iter().map(Extent::len).sum();
    let geometry = Geometry::new(
        virtual_size,
        options.block_size,
        options.logical_sector_size,
        options.parent.is_some(),
    )
    .map_err(Error::ValidateGeometry)?;
    if options.physical_sector_size != 512 && options.physical_sector_size != 4096 {
        return Err(Error::ValidatePhysicalSector(options.physical_sector_size));
    }
    let bat_len = (geometry.bat_entries() * 8).next_multiple_of(MIB);
    let data_start = BAT_OFFSET + bat_len;
    let mut blocks = BlockPlacer::new(geometry, data_start, options.fixed);

    let mut buf = AlignedBuf::new(usize::try_from(CHUNK).unwrap_or(1 << 20));
    with_background_sync(out, |sync| -> Result<(), Error> {
        let mut virtual_pos = 0u64;
        for extent in extents {
            for (data_at, len, source) in data_pieces(extent)? {
                // Walk the piece in chunks that never cross a 1 MiB (hence block) boundary.
                let mut done = 0;
                while done < len {
                    let vpos = virtual_pos + data_at + done;
                    let n = (CHUNK - vpos % CHUNK).min(len - done);
                    let chunk = buf.slice_mut(usize::try_from(n).unwrap_or(0));
                    source.read(chunk, done)?;
                    // Only the non-zero runs are written: zeros inside an allocated block
                    // stay holes in the output, which read back as zeros.
                    for (lo, hi) in nonzero_runs(chunk) {
                        let file_offset = blocks.place(vpos + lo as u64);
                        pio::write_all_at(out, &chunk[lo..hi], file_offset).map_err(|source| {
                            Error::WriteOutput {
                                what: "payload data",
                                offset: file_offset,
                                source,
                            }
                        })?;
                        sync.wrote((hi - lo) as u64);
                    }
                    done += n;
                    progress(vpos + n);
                }
            }
            virtual_pos += extent.len();
        }
        Ok(())
    })?;
    progress(virtual_size);

    let (bat, file_end) = blocks.finish();
    let file_size = file_end.max(data_start);
    out.set_len(file_size)
        .map_err(|source| Error::WriteOutput {
            what: "file size",
            offset: file_size,
            source,
        })?;
    let bat_bytes: Vec<u8> = bat.iter().flat_map(|e| e.0.to_le_bytes()).collect();
    write_at(out, &bat_bytes, BAT_OFFSET, "BAT")?;
    write_at(
        out,
        &encode_metadata(&geometry, options),
        METADATA_OFFSET,
        "metadata",
    )?;
    out.sync_data().map_err(|source| Error::WriteOutput {
        what: "data (fsync)",
        offset: 0,
        source,
    })?;

    let regions = RegionTable {
        entries: vec![
            RegionEntry {
                guid: region::BAT,
                file_offset: BAT_OFFSET,
                length: u32::try_from(bat_len).unwrap_or(u32::MAX),
                required: true,
            },
            RegionEntry {
                guid: region::METADATA,
                file_offset: METADATA_OFFSET,
                length: METADATA_LENGTH,
                required: true,
            },
        ],
    };
    let regions = regions.encode();
    write_at(
        out,
        &FileIdentifier {
            creator: options.creator.clone(),
        }
        .encode(),
        0,
        "file identifier",
    )?;
    write_at(out, &regions, REGION_TABLE_OFFSETS[0], "region table")?;
    write_at(out, &regions, REGION_TABLE_OFFSETS[1], "region table")?;
    let mut header = Header {
        sequence_number: 1,
        file_write_guid: options.identity.file_write,
        data_write_guid: options.identity.data_write,
        log_guid: Guid::ZERO,
        log_version: 0,
        version: 1,
        log_length: LOG_LENGTH,
        log_offset: LOG_OFFSET,
    };
    write_at(out, &header.encode(), HEADER_OFFSETS[0], "header")?;
    header.sequence_number = 2;
    write_at(out, &header.encode(), HEADER_OFFSETS[1], "header")?;
    out.sync_all().map_err(|source| Error::WriteOutput {
        what: "headers (fsync)",
        offset: 0,
        source,
    })?;
    Ok(Summary {
        virtual_size,
        allocated_blocks: blocks_allocated(&bat, &geometry),
        file_size,
    })
}

/// Writes a VHDX to `path` atomically: into a temporary file beside it, synced, then renamed
/// over `path`. On failure nothing is left at `path` (nor the temporary file).
pub fn write_file(
    path: &Path,
    extents: &[Extent],
    options: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, Error> {
    let tmp = temporary_path(path);
    let place = |action, source| Error::PlaceOutput {
        action,
        path: path.to_owned(),
        source,
    };
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| place("create a temporary file beside", e))?;
    let result = write(&out, extents, options, progress).and_then(|summary| {
        std::fs::rename(&tmp, path).map_err(|e| place("rename the finished image to", e))?;
        sync_parent(path).map_err(|e| place("sync the directory of", e))?;
        Ok(summary)
    });
    if result.is_err() {
        let _ignored = std::fs::remove_file(&tmp);
    }
    result
}

fn write_at(out: &File, bytes: &[u8], offset: u64, what: &'static str) -> Result<(), Error> {
    pio::write_all_at(out, bytes, offset).map_err(|source| Error::WriteOutput {
        what,
        offset,
        source,
    })
}

fn blocks_allocated(bat: &[BatEntry], g: &Geometry) -> u64 {
    (0..g.data_blocks())
        .filter(|b| {
            bat.get(usize::try_from(g.payload_index(*b)).unwrap_or(usize::MAX))
                .is_some_and(|e| e.file_offset() != 0)
        })
        .count() as u64
}

/// Decides where each payload block goes and builds the BAT.
struct BlockPlacer {
    geometry: Geometry,
    bat: Vec<BatEntry>,
    next_free: u64,
}

impl BlockPlacer {
    fn new(geometry: Geometry, data_start: u64, fixed: bool) -> BlockPlacer {
        let entries = usize::try_from(geometry.bat_entries()).unwrap_or(0);
        let mut bat = vec![BatEntry::default(); entries];
        let mut next_free = data_start;
        if fixed {
            // Every block present, in order, whether or not it holds data (as Hyper-V does).
            for block in 0..geometry.data_blocks() {
                let index = usize::try_from(geometry.payload_index(block)).unwrap_or(0);
                bat[index] = BatEntry::payload(PayloadState::FullyPresent, next_free);
                next_free += geometry.block_bytes();
            }
        }
        if geometry.has_parent {
            // A differencing disk gets a zeroed sector-bitmap block per chunk up front
            // (1 MiB per 4 GiB with 512-byte sectors). Valid per the specification, it
            // spares the first write an allocation, and libvhdi (20210425) needs it: it
            // reads a bitmap even for chunks whose bitmap entry is "not present", from
            // file offset 0, and then serves sectors of the child's own header as data.
            for chunk in 0..geometry.bitmap_blocks() {
                let index = usize::try_from(geometry.bitmap_index(chunk)).unwrap_or(0);
                bat[index] = BatEntry::new(6, next_free);
                next_free += super::format::SECTOR_BITMAP_BLOCK_SIZE;
            }
        }
        BlockPlacer {
            geometry,
            bat,
            next_free,
        }
    }

    /// The file offset for guest byte `vpos`, allocating its block on first use.
    fn place(&mut self, vpos: u64) -> u64 {
        let block_size = self.geometry.block_bytes();
        let block = vpos / block_size;
        let index = usize::try_from(self.geometry.payload_index(block)).unwrap_or(0);
        let entry = &mut self.bat[index];
        if entry.file_offset() == 0 {
            // Blocks arrive in virtual order, so the file ends up laid out in order too.
            *entry = BatEntry::payload(PayloadState::FullyPresent, self.next_free);
            self.next_free += block_size;
        }
        entry.file_offset() + vpos % block_size
    }

    fn finish(self) -> (Vec<BatEntry>, u64) {
        (self.bat, self.next_free)
    }
}

fn encode_metadata(g: &Geometry, options: &Options) -> Vec<u8> {
    let params = FileParameters {
        block_size: g.block_size,
        leave_blocks_allocated: options.fixed,
        has_parent: options.parent.is_some(),
    };
    let mut items: Vec<(Guid, Vec<u8>, bool)> = vec![
        (item::FILE_PARAMETERS, params.encode(), false),
        (
            item::VIRTUAL_DISK_SIZE,
            g.virtual_size.to_le_bytes().to_vec(),
            true,
        ),
        (
            item::VIRTUAL_DISK_ID,
            options.identity.disk_id.to_bytes().to_vec(),
            true,
        ),
        (
            item::LOGICAL_SECTOR_SIZE,
            g.logical_sector_size.to_le_bytes().to_vec(),
            true,
        ),
        (
            item::PHYSICAL_SECTOR_SIZE,
            options.physical_sector_size.to_le_bytes().to_vec(),
            true,
        ),
    ];
    if let Some(locator) = &options.parent {
        items.push((item::PARENT_LOCATOR, locator.encode(), false));
    }
    let mut data = Vec::new();
    let mut table = MetadataTable::default();
    for (id, bytes, is_virtual_disk) in items {
        let offset = format::METADATA_TABLE_SIZE + data.len();
        table.entries.push(MetadataEntry {
            item_id: id,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            length: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            is_user: false,
            is_virtual_disk,
            is_required: true,
        });
        data.extend_from_slice(&bytes);
    }
    let mut out = table.encode();
    out.extend_from_slice(&data);
    out
}

/// Where the bytes of a data piece come from.
enum PieceSource<'a> {
    File(&'a File, u64),
    Bytes(&'a [u8]),
}

impl PieceSource<'_> {
    /// Reads `buf.len()` bytes starting `at` bytes into the piece.
    fn read(&self, buf: &mut [u8], at: u64) -> Result<(), Error> {
        match self {
            PieceSource::File(file, start) => {
                let offset = start + at;
                pio::read_exact_at(file, buf, offset).map_err(|source| Error::ReadInput {
                    offset,
                    len: buf.len() as u64,
                    source,
                })
            }
            PieceSource::Bytes(bytes) => {
                let from = usize::try_from(at).unwrap_or(usize::MAX);
                buf.copy_from_slice(&bytes[from..from + buf.len()]);
                Ok(())
            }
        }
    }
}

/// The parts of an extent that may hold data, as (offset within the extent, length, source).
fn data_pieces(extent: &Extent) -> Result<Vec<(u64, u64, PieceSource<'_>)>, Error> {
    Ok(match extent {
        Extent::Zero(_) => Vec::new(),
        Extent::Bytes(bytes) => vec![(0, bytes.len() as u64, PieceSource::Bytes(bytes))],
        Extent::File { file, offset, len } => check_input_size(file, *offset, *len)
            .and_then(|()| data_ranges(file, *offset, *len))
            .map_err(|source| Error::ReadInput {
                offset: *offset,
                len: *len,
                source,
            })?
            .into_iter()
            .map(|(start, n)| (start - offset, n, PieceSource::File(file, start)))
            .collect(),
    })
}

/// Refuses an extent that reaches past the end of its file: holes past the end would
/// otherwise read as zeros and hide a truncated input.
fn check_input_size(mut file: &File, offset: u64, len: u64) -> io::Result<()> {
    // Seeking to the end gives the size of regular files and block devices alike.
    let size = io::Seek::seek(&mut file, io::SeekFrom::End(0))?;
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the extent ({len} bytes at {offset:#x}) reaches past the end of its {size}-byte input"
            ),
        ));
    }
    Ok(())
}

/// The data (non-hole) ranges of `file` within `[offset, offset + len)`, as (start, length).
/// Files or devices that cannot report holes are one data range.
#[cfg(unix)]
pub fn data_ranges(file: &File, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let end = offset + len;
    let mut ranges = Vec::new();
    let mut pos = offset;
    while pos < end {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => {
                ranges.push((pos, end - pos));
                break;
            }
        };
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.min(end),
            Err(_) => end,
        };
        ranges.push((data, hole - data));
        pos = hole;
    }
    Ok(ranges)
}

/// The data ranges of `file` within `[offset, offset + len)`: all of it. Windows has no
/// SEEK_DATA/SEEK_HOLE (its allocated-ranges query is not used here): a sparse input is read
/// whole, and its zero blocks are still left out of the VHDX, only found more slowly.
#[cfg(not(unix))]
pub fn data_ranges(_file: &File, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    Ok(if len == 0 {
        Vec::new()
    } else {
        vec![(offset, len)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extent_past_the_end_of_its_file_is_refused() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(MIB).unwrap();
        let out = tempfile::tempfile().unwrap();
        let extents = [Extent::File {
            file: Arc::new(file),
            offset: 0,
            len: 2 * MIB,
        }];
        let err = write(
            &out,
            &extents,
            &Options::new(Identity::derived("t")),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, Error::ReadInput { .. }), "{err:?}");
    }

    #[test]
    fn data_ranges_skip_holes() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(64 * MIB).unwrap();
        pio::write_all_at(&file, &[1u8; 4096], 8 * MIB).unwrap();
        pio::write_all_at(&file, &[1u8; 4096], 40 * MIB).unwrap();
        let ranges = data_ranges(&file, 0, 64 * MIB).unwrap();
        // Filesystems report data at their own granularity; what matters is that the holes
        // are skipped and the data is covered.
        let covered: u64 = ranges.iter().map(|r| r.1).sum();
        assert!(covered < 8 * MIB, "{ranges:?}");
        for at in [8 * MIB, 40 * MIB] {
            assert!(
                ranges.iter().any(|(s, l)| *s <= at && at + 4096 <= s + l),
                "{at:#x} not in {ranges:?}"
            );
        }
        assert!(data_ranges(&file, 16 * MIB, MIB).unwrap().is_empty());
    }
}
