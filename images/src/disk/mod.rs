//! A GPT disk as a list of extents: partitions in, the guest-visible disk out.
//!
//! [`layout`] places partitions on a disk with 512-byte sectors and returns the [`Extent`]s
//! the streaming VHDX writer ([`crate::vhdx::writer`]) consumes: a protective MBR, the primary
//! GPT header and entry array, each partition's content followed by zero padding, zero gaps,
//! and the backup array and header at the end. No raw disk is ever written; only the tables
//! (34 + 33 sectors) are held in memory. The same [`Layout`] always gives the same extents,
//! so with GUIDs from [`Guid::derived`] a build is reproducible.
//!
//! [`read_partitions`] reads a GPT back (through any byte source, such as a VHDX reader) to
//! find a partition in a built image. The on-disk format lives in `gpt`.
//!
//! Disk layout, in LBAs of 512 bytes, with `last` the disk's last LBA:
//! `0` protective MBR · `1` primary header · `2..=33` primary entries (128 × 128 bytes) ·
//! partitions, each starting on a multiple of [`Layout::alignment`] ·
//! `last-32..=last-1` backup entries · `last` backup header.

mod gpt;

use std::io;

pub use gpt::{
    ATTR_NO_AUTO, ATTR_READ_ONLY, ENTRY_COUNT, MAX_ENTRY_ARRAY_BYTES, NAME_UNITS, SECTOR_SIZE,
    read_partitions, types,
};

use crate::guid::Guid;
use crate::vhdx::writer::Extent;
use gpt::{BACKUP_LBAS, ENTRY_ARRAY_LBAS, ENTRY_SIZE, FIRST_USABLE_LBA, Header};

/// Default partition alignment: 1 MiB, as parted, sgdisk and systemd-repart use.
pub const DEFAULT_ALIGNMENT: u64 = 1 << 20;

/// Why a disk could not be laid out, or a partition table not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The alignment is zero or not a multiple of the sector size.
    #[error(
        "partition alignment {alignment} is not a positive multiple of {SECTOR_SIZE} bytes; \
         use disk::DEFAULT_ALIGNMENT (1 MiB) unless you need another"
    )]
    ValidateAlignment {
        /// The alignment given.
        alignment: u64,
    },
    /// The requested disk size is not a whole number of sectors.
    #[error(
        "disk size {disk_size} is not a multiple of {SECTOR_SIZE} bytes; round it to whole sectors"
    )]
    ValidateDiskSize {
        /// The size given.
        disk_size: u64,
    },
    /// The requested disk is too small for the partitions and both tables.
    #[error(
        "the partitions and both partition tables need {needed} bytes but the disk size is \
         {disk_size}; make the disk at least {needed} bytes or leave its size unset"
    )]
    FitPartitions {
        /// Smallest disk size that holds everything.
        needed: u64,
        /// The size given.
        disk_size: u64,
    },
    /// More partitions than the table has entries.
    #[error("{count} partitions were given but the partition table holds at most {max}")]
    CountPartitions {
        /// Partitions given.
        count: usize,
        /// Entries in the table.
        max: u32,
    },
    /// A partition name does not fit the 36 UTF-16 code units of a GPT entry.
    #[error(
        "partition {number} name {name:?} is {units} UTF-16 code units; a GPT name holds at most \
         {NAME_UNITS}, shorten it"
    )]
    EncodeName {
        /// Partition number (1-based).
        number: usize,
        /// The name given.
        name: String,
        /// Its length in UTF-16 code units.
        units: usize,
    },
    /// A partition has the zero type GUID, which GPT reads as an unused entry.
    #[error(
        "partition {number} ({name:?}) has the zero type GUID, which marks an unused entry; \
         give it a type from disk::types"
    )]
    ValidateType {
        /// Partition number (1-based).
        number: usize,
        /// Its name.
        name: String,
    },
    /// A partition's unique GUID is zero or the same as an earlier partition's.
    #[error(
        "partition {number} ({name:?}) unique GUID {guid} is zero or repeats an earlier \
         partition's; derive one per partition"
    )]
    ValidateUniqueGuid {
        /// Partition number (1-based).
        number: usize,
        /// Its name.
        name: String,
        /// The GUID given.
        guid: Guid,
    },
    /// A partition size is zero or not a whole number of sectors.
    #[error(
        "partition {number} ({name:?}) size {size} is not a positive multiple of {SECTOR_SIZE} \
         bytes; give it content or a size that is"
    )]
    ValidateSize {
        /// Partition number (1-based).
        number: usize,
        /// Its name.
        name: String,
        /// The size given or computed.
        size: u64,
    },
    /// A partition's content is longer than its explicit size.
    #[error(
        "partition {number} ({name:?}) content is {content} bytes, more than its size {size}; \
         grow the size or leave it unset"
    )]
    FitContent {
        /// Partition number (1-based).
        number: usize,
        /// Its name.
        name: String,
        /// Content length.
        content: u64,
        /// The size given.
        size: u64,
    },
    /// A size or offset does not fit in 64 bits.
    #[error(
        "the disk layout overflows 64-bit byte offsets at {what}; the sizes given are too large"
    )]
    ComputeLayout {
        /// Which value overflowed.
        what: &'static str,
    },
    /// Reading the partition table from the disk failed.
    #[error("read {len} bytes of the partition table at {offset:#x}")]
    ReadTable {
        /// Offset on the disk.
        offset: u64,
        /// Length.
        len: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// LBA 1 does not start with "EFI PART".
    #[error("GPT header signature is {found:?}, expected \"EFI PART\": the disk has no GPT")]
    MatchSignature {
        /// What the disk holds (lossy text).
        found: String,
    },
    /// The header CRC-32 does not match the header.
    #[error("GPT header checksum is {stored:#010x} but its content sums to {computed:#010x}")]
    MatchHeaderChecksum {
        /// The header's CRC field.
        stored: u32,
        /// The CRC of the header as read.
        computed: u32,
    },
    /// The entry array CRC-32 in the header does not match the array.
    #[error(
        "GPT partition entry array checksum is {stored:#010x} but the entries sum to \
         {computed:#010x}"
    )]
    MatchEntriesChecksum {
        /// The header's PartitionEntryArrayCRC32 field.
        stored: u32,
        /// The CRC of the array as read.
        computed: u32,
    },
    /// A header field is out of the range the reader accepts.
    #[error("GPT header {field} is {value}, which this reader does not accept")]
    ValidateHeader {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A partition entry runs backwards or outside the usable LBAs.
    #[error(
        "GPT partition {number} spans LBAs {first_lba}..={last_lba}, backwards or outside the \
         disk's usable area"
    )]
    ValidateEntry {
        /// Partition number (1-based entry index).
        number: usize,
        /// StartingLBA.
        first_lba: u64,
        /// EndingLBA.
        last_lba: u64,
    },
}

/// One partition to place.
#[derive(Debug, Clone)]
pub struct Partition {
    /// What the partition holds, e.g. [`types::ROOT_X86_64`].
    pub type_guid: Guid,
    /// This partition's own GUID; must be non-zero and distinct from the others'.
    pub unique_guid: Guid,
    /// GPT name (stored UTF-16LE, at most [`NAME_UNITS`] code units).
    pub name: String,
    /// GPT attribute bits, e.g. [`ATTR_READ_ONLY`].
    pub attributes: u64,
    /// The partition's bytes, in order; zeros follow up to the partition's size.
    pub content: Vec<Extent>,
    /// Explicit size in bytes: a multiple of 512, at least the content length. When unset the
    /// size is the content length rounded up to [`Layout::alignment`].
    pub size: Option<u64>,
}

/// A disk to lay out.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The disk's GUID in both GPT headers.
    pub disk_guid: Guid,
    /// Disk size in bytes (a multiple of 512); when unset, just big enough, rounded up to
    /// `alignment`.
    pub disk_size: Option<u64>,
    /// Every partition starts at a multiple of this many bytes (a multiple of 512).
    pub alignment: u64,
    /// The partitions, placed in this order; partition `n` is entry `n - 1` of the table.
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// A layout with no partitions, 1 MiB alignment and a disk just big enough.
    pub fn new(disk_guid: Guid) -> Layout {
        Layout {
            disk_guid,
            disk_size: None,
            alignment: DEFAULT_ALIGNMENT,
            partitions: Vec::new(),
        }
    }
}

/// Where a partition is: what a manifest records, and what [`read_partitions`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Partition number (1-based entry index), as in `/dev/sda2`.
    pub number: usize,
    /// GPT name.
    pub name: String,
    /// Partition type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// GPT attribute bits.
    pub attributes: u64,
    /// First LBA (StartingLBA).
    pub first_lba: u64,
    /// Last LBA, inclusive (EndingLBA).
    pub last_lba: u64,
    /// Offset on the disk in bytes (`first_lba * 512`).
    pub offset: u64,
    /// Size in bytes (`(last_lba - first_lba + 1) * 512`).
    pub size: u64,
}

/// A laid-out disk.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The whole guest-visible disk, in order; lengths add up to `size`. Adjacent zeros are
    /// merged and no extent is empty.
    pub extents: Vec<Extent>,
    /// The partitions as placed, in table order.
    pub partitions: Vec<Placed>,
    /// Disk size in bytes.
    pub size: u64,
}

/// Places the partitions of `layout` and returns the disk as extents.
///
/// Partitions go in order, each at the first multiple of `alignment` at or after the end of
/// the one before (the first at or after LBA 34). Checks: alignment, disk size, names, GUIDs
/// and sizes, and that everything fits before the backup table; every sum is checked.
pub fn layout(layout: Layout) -> Result<Disk, Error> {
    let Layout {
        disk_guid,
        disk_size,
        alignment,
        partitions,
    } = layout;
    if alignment == 0 || !alignment.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::ValidateAlignment { alignment });
    }
    if partitions.len() > ENTRY_COUNT as usize {
        return Err(Error::CountPartitions {
            count: partitions.len(),
            max: ENTRY_COUNT,
        });
    }
    let overflow = |what| Error::ComputeLayout { what };

    // Place every partition; keep its content and the zero padding that follows it.
    let mut placed: Vec<Placed> = Vec::with_capacity(partitions.len());
    let mut bodies = Vec::with_capacity(partitions.len());
    let mut end = FIRST_USABLE_LBA * SECTOR_SIZE;
    for (index, p) in partitions.into_iter().enumerate() {
        let number = index + 1;
        let (size, content) = check_partition(number, &p, &placed, alignment)?;
        let offset = round_up(end, alignment).ok_or(overflow("partition offset"))?;
        end = offset.checked_add(size).ok_or(overflow("partition end"))?;
        placed.push(Placed {
            number,
            name: p.name,
            type_guid: p.type_guid,
            unique_guid: p.unique_guid,
            attributes: p.attributes,
            first_lba: offset / SECTOR_SIZE,
            last_lba: sub(end / SECTOR_SIZE, 1, "partition last LBA")?,
            offset,
            size,
        });
        bodies.push((p.content, sub(size, content, "partition padding")?));
    }

    let needed = end
        .checked_add(BACKUP_LBAS * SECTOR_SIZE)
        .ok_or(overflow("disk size"))?;
    let size = match disk_size {
        None => round_up(needed, alignment).ok_or(overflow("disk size"))?,
        Some(disk_size) if !disk_size.is_multiple_of(SECTOR_SIZE) => {
            return Err(Error::ValidateDiskSize { disk_size });
        }
        Some(disk_size) if disk_size < needed => {
            return Err(Error::FitPartitions { needed, disk_size });
        }
        Some(disk_size) => disk_size,
    };

    // size >= needed >= 67 sectors, so none of these subtractions fails.
    let disk_lbas = size / SECTOR_SIZE;
    let last_lba = sub(disk_lbas, 1, "last LBA")?;
    let backup_entries_lba = sub(last_lba, ENTRY_ARRAY_LBAS, "backup entries LBA")?;
    let entries = gpt::encode_entries(&placed);
    let primary = Header {
        my_lba: 1,
        alternate_lba: last_lba,
        first_usable_lba: FIRST_USABLE_LBA,
        last_usable_lba: sub(backup_entries_lba, 1, "last usable LBA")?,
        disk_guid,
        entries_lba: 2,
        entry_count: ENTRY_COUNT,
        entry_size: ENTRY_SIZE,
        entries_crc: gpt::crc32(&entries),
    };
    let backup = Header {
        my_lba: last_lba,
        alternate_lba: 1,
        entries_lba: backup_entries_lba,
        ..primary
    };
    let mut head = gpt::protective_mbr(disk_lbas).to_vec();
    head.extend_from_slice(&primary.encode());
    head.extend_from_slice(&entries);
    let mut tail = entries;
    tail.extend_from_slice(&backup.encode());

    let mut extents = Vec::with_capacity(3 * placed.len() + 3);
    push(&mut extents, Extent::Bytes(head.into()));
    let mut at = FIRST_USABLE_LBA * SECTOR_SIZE;
    for (p, (content, padding)) in placed.iter().zip(bodies) {
        push(&mut extents, Extent::Zero(sub(p.offset, at, "gap")?));
        for extent in content {
            push(&mut extents, extent);
        }
        push(&mut extents, Extent::Zero(padding));
        at = p
            .offset
            .checked_add(p.size)
            .ok_or(overflow("partition end"))?;
    }
    let backup_at = backup_entries_lba
        .checked_mul(SECTOR_SIZE)
        .ok_or(overflow("backup entries offset"))?;
    push(&mut extents, Extent::Zero(sub(backup_at, at, "gap")?));
    push(&mut extents, Extent::Bytes(tail.into()));
    Ok(Disk {
        extents,
        partitions: placed,
        size,
    })
}

/// Checks one partition against the ones before it; returns its size and content length.
fn check_partition(
    number: usize,
    p: &Partition,
    before: &[Placed],
    alignment: u64,
) -> Result<(u64, u64), Error> {
    let name = || p.name.clone();
    let units = p.name.encode_utf16().count();
    if units > NAME_UNITS {
        return Err(Error::EncodeName {
            number,
            name: name(),
            units,
        });
    }
    if p.type_guid.is_zero() {
        return Err(Error::ValidateType {
            number,
            name: name(),
        });
    }
    if p.unique_guid.is_zero() || before.iter().any(|q| q.unique_guid == p.unique_guid) {
        return Err(Error::ValidateUniqueGuid {
            number,
            name: name(),
            guid: p.unique_guid,
        });
    }
    let content = content_len(&p.content).ok_or(Error::ComputeLayout {
        what: "partition content length",
    })?;
    let size = match p.size {
        Some(size) => size,
        None => round_up(content, alignment).ok_or(Error::ComputeLayout {
            what: "partition size",
        })?,
    };
    if size == 0 || !size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::ValidateSize {
            number,
            name: name(),
            size,
        });
    }
    if content > size {
        return Err(Error::FitContent {
            number,
            name: name(),
            content,
            size,
        });
    }
    Ok((size, content))
}

fn content_len(content: &[Extent]) -> Option<u64> {
    content
        .iter()
        .try_fold(0u64, |sum, extent| sum.checked_add(extent.len()))
}

/// `a - b`; the layout's invariants keep it from wrapping, and this keeps a broken invariant
/// from panicking.
fn sub(a: u64, b: u64, what: &'static str) -> Result<u64, Error> {
    a.checked_sub(b).ok_or(Error::ComputeLayout { what })
}

/// `n` rounded up to a multiple of `to` (non-zero), or None on overflow.
fn round_up(n: u64, to: u64) -> Option<u64> {
    n.checked_next_multiple_of(to)
}

/// Appends `extent`, dropping it when empty and merging it into a preceding run of zeros.
fn push(extents: &mut Vec<Extent>, extent: Extent) {
    if extent.is_empty() {
        return;
    }
    if let (Some(Extent::Zero(run)), Extent::Zero(more)) = (extents.last_mut(), &extent) {
        // Both lie inside a disk whose size fits in a u64, so the sum does too.
        *run = run.saturating_add(*more);
        return;
    }
    extents.push(extent);
}

#[cfg(test)]
mod tests;
