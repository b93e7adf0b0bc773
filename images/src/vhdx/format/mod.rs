//! The on-disk structures of MS-VHDX v1, decoded and encoded explicitly little-endian.
//!
//! Every structure has a named constant for its offset, size and signature. Decoding checks,
//! in this order: length, signature, checksum, counts, field ranges. Nothing here allocates
//! more than the fixed size of the structure being decoded or the bytes it was given.
//!
//! File layout (MS-VHDX 2.1): the first 1 MiB holds the file type identifier and two copies
//! each of the header and the region table; everything after it (log, metadata, BAT, payload
//! and sector-bitmap blocks) sits at 1 MiB-aligned offsets named by the region table and BAT.

mod bat;
mod header;
mod metadata;
mod region_table;

pub use bat::{BatEntry, BitmapState, Geometry, PayloadState};
pub use header::{FileIdentifier, Header};
pub use metadata::{
    FileParameters, MetadataEntry, MetadataTable, ParentLocator, item, locator_key,
};
pub use region_table::{RegionEntry, RegionTable, region};

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte: the alignment of every region and block in a VHDX file.
pub const MIB: u64 = 1024 * 1024;
/// Everything before this offset belongs to the file identifier, headers and region tables.
pub const HEADER_AREA_SIZE: u64 = MIB;
/// Alignment of regions, payload blocks and sector-bitmap blocks.
pub const ALIGNMENT: u64 = MIB;
/// Offset of the file type identifier.
pub const FILE_IDENTIFIER_OFFSET: u64 = 0;
/// Bytes of the file type identifier that carry data (signature + creator).
pub const FILE_IDENTIFIER_SIZE: usize = 8 + 512;
/// Offsets of the two header copies.
pub const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
/// Size of one header structure (the checksum covers exactly this).
pub const HEADER_SIZE: usize = 4096;
/// Offsets of the two region table copies.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
/// Size of one region table (the checksum covers exactly this).
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
/// Size of the metadata table at the start of the metadata region.
pub const METADATA_TABLE_SIZE: usize = 64 * 1024;
/// Largest entry count of a region or metadata table.
pub const MAX_TABLE_ENTRIES: u32 = 2047;
/// Smallest and largest payload block sizes the specification allows.
pub const BLOCK_SIZE_RANGE: (u32, u32) = (1 << 20, 256 << 20);
/// Largest virtual disk the specification allows (64 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Size of a sector-bitmap block.
pub const SECTOR_BITMAP_BLOCK_SIZE: u64 = MIB;
/// Each sector-bitmap block covers this many sectors (one bit each): 2^23.
pub const SECTORS_PER_BITMAP_BLOCK: u64 = 1 << 23;

/// Why a structure could not be decoded, or why its fields are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes were available than the structure needs.
    #[error("{structure} needs {need} bytes, only {len} are there")]
    ReadTruncated {
        /// Which structure.
        structure: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The signature bytes are not the ones the structure starts with.
    #[error("{structure} signature is {found:?}, expected {expected:?}")]
    MatchSignature {
        /// Which structure.
        structure: &'static str,
        /// What the file holds (lossy text).
        found: String,
        /// What the specification requires.
        expected: &'static str,
    },
    /// The stored CRC-32C does not match the content.
    #[error("{structure} checksum is {stored:#010x} but its content sums to {computed:#010x}")]
    VerifyChecksum {
        /// Which structure.
        structure: &'static str,
        /// Stored checksum.
        stored: u32,
        /// Checksum of the content.
        computed: u32,
    },
    /// A field holds a value the specification does not allow.
    #[error("{structure} field {field} is {value}, expected {expected}")]
    ValidateField {
        /// Which structure.
        structure: &'static str,
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What would be acceptable.
        expected: &'static str,
    },
    /// Two entries of a table describe overlapping ranges or the same item.
    #[error("{structure}: {what}")]
    ValidateLayout {
        /// Which structure.
        structure: &'static str,
        /// What is wrong, with offsets.
        what: String,
    },
    /// A region or metadata item this reader does not know is marked required.
    #[error("{structure} entry {guid} is marked required but is unknown to this reader")]
    RejectUnknownRequired {
        /// Which table.
        structure: &'static str,
        /// The unknown identifier.
        guid: crate::guid::Guid,
    },
}

pub(crate) fn need(structure: &'static str, buf: &[u8], size: usize) -> Result<(), Error> {
    if buf.len() < size {
        return Err(Error::ReadTruncated {
            structure,
            len: buf.len(),
            need: size,
        });
    }
    Ok(())
}

// Little-endian field access. Callers check the buffer length first with `need`, so the
// slices below are always in bounds; a short buffer is a bug, not input.
pub(crate) fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([buf[off], buf[off + 1]])
}
pub(crate) fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}
pub(crate) fn u64_at(buf: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(b)
}
pub(crate) fn guid_at(buf: &[u8], off: usize) -> crate::guid::Guid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&buf[off..off + 16]);
    crate::guid::Guid::from_bytes(b)
}
pub(crate) fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// CRC-32C of `buf` with the four checksum bytes at `field` taken as zero (MS-VHDX 2.2.2).
pub fn checksum(buf: &[u8], field: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..field]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &buf[field + 4..])
}

/// Checks the signature at offset 0 of `buf` (which must be long enough).
pub(crate) fn expect_signature(
    structure: &'static str,
    buf: &[u8],
    expected: &'static str,
) -> Result<(), Error> {
    let n = expected.len();
    if &buf[..n] != expected.as_bytes() {
        return Err(Error::MatchSignature {
            structure,
            found: String::from_utf8_lossy(&buf[..n]).into_owned(),
            expected,
        });
    }
    Ok(())
}

/// Checks the CRC-32C stored at `field` against the content of `buf`.
pub(crate) fn expect_checksum(
    structure: &'static str,
    buf: &[u8],
    field: usize,
) -> Result<(), Error> {
    let stored = u32_at(buf, field);
    let computed = checksum(buf, field);
    if stored != computed {
        return Err(Error::VerifyChecksum {
            structure,
            stored,
            computed,
        });
    }
    Ok(())
}

/// Stores the CRC-32C of `buf` at `field`.
pub(crate) fn seal(buf: &mut [u8], field: usize) {
    let sum = checksum(buf, field);
    put(buf, field, &sum.to_le_bytes());
}

/// Decodes UTF-16LE text (lengths are in bytes; an odd length is refused by callers).
pub(crate) fn utf16_decode(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Encodes text as UTF-16LE.
pub(crate) fn utf16_encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}
