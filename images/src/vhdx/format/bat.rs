//! Block allocation table entries and the geometry that sizes the table (MS-VHDX 2.5).
//!
//! The BAT interleaves payload and sector-bitmap entries: each "chunk" is `chunk_ratio`
//! payload entries followed by one sector-bitmap entry. A chunk covers 2^23 logical sectors.

use super::{Error, MAX_VIRTUAL_SIZE, MIB, SECTORS_PER_BITMAP_BLOCK};

const STATE_MASK: u64 = 0b111;
const OFFSET_SHIFT: u32 = 20;

/// State of a payload block's BAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadState {
    /// Not in this file: zeros, or the parent's data in a differencing disk.
    NotPresent,
    /// Content undefined (reads as zeros here).
    Undefined,
    /// Reads as zeros.
    Zero,
    /// Unmapped by a trim (reads as zeros here).
    Unmapped,
    /// Every sector is in this file at the entry's offset.
    FullyPresent,
    /// Differencing only: the sector bitmap says which sectors are here.
    PartiallyPresent,
}

impl PayloadState {
    /// Decodes the three state bits; `None` for the reserved values 4 and 5.
    pub fn from_bits(bits: u64) -> Option<PayloadState> {
        Some(match bits {
            0 => PayloadState::NotPresent,
            1 => PayloadState::Undefined,
            2 => PayloadState::Zero,
            3 => PayloadState::Unmapped,
            6 => PayloadState::FullyPresent,
            7 => PayloadState::PartiallyPresent,
            _ => return None,
        })
    }

    /// The three state bits.
    pub fn bits(self) -> u64 {
        match self {
            PayloadState::NotPresent => 0,
            PayloadState::Undefined => 1,
            PayloadState::Zero => 2,
            PayloadState::Unmapped => 3,
            PayloadState::FullyPresent => 6,
            PayloadState::PartiallyPresent => 7,
        }
    }

    /// True when the entry's offset points at a block in the file.
    pub fn has_offset(self) -> bool {
        matches!(
            self,
            PayloadState::FullyPresent | PayloadState::PartiallyPresent
        )
    }
}

/// State of a sector-bitmap block's BAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapState {
    /// No bitmap block: no sector of the chunk is present in this file.
    NotPresent,
    /// The bitmap block is at the entry's offset.
    Present,
}

impl BitmapState {
    /// Decodes the three state bits; `None` for values other than 0 and 6.
    pub fn from_bits(bits: u64) -> Option<BitmapState> {
        match bits {
            0 => Some(BitmapState::NotPresent),
            6 => Some(BitmapState::Present),
            _ => None,
        }
    }
}

/// One 64-bit BAT entry: state in bits 0-2, file offset in MiB in bits 20-63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatEntry(pub u64);

impl BatEntry {
    /// Builds an entry from its state bits and a 1 MiB-aligned file offset.
    pub fn new(state_bits: u64, file_offset: u64) -> BatEntry {
        debug_assert_eq!(file_offset % MIB, 0);
        BatEntry((file_offset >> OFFSET_SHIFT) << OFFSET_SHIFT | state_bits & STATE_MASK)
    }

    /// A payload entry.
    pub fn payload(state: PayloadState, file_offset: u64) -> BatEntry {
        BatEntry::new(state.bits(), file_offset)
    }

    /// The three state bits.
    pub fn state_bits(self) -> u64 {
        self.0 & STATE_MASK
    }

    /// The payload state, if the bits are a valid one.
    pub fn payload_state(self) -> Option<PayloadState> {
        PayloadState::from_bits(self.state_bits())
    }

    /// The bitmap state, if the bits are a valid one.
    pub fn bitmap_state(self) -> Option<BitmapState> {
        BitmapState::from_bits(self.state_bits())
    }

    /// File offset in bytes.
    pub fn file_offset(self) -> u64 {
        (self.0 >> OFFSET_SHIFT) << OFFSET_SHIFT
    }

    /// The reserved bits 3-19, which must be zero.
    pub fn reserved_bits(self) -> u64 {
        self.0 & 0x000F_FFF8
    }
}

/// The numbers that follow from the metadata and size the BAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Payload block size in bytes.
    pub block_size: u32,
    /// Logical sector size in bytes (512 or 4096).
    pub logical_sector_size: u32,
    /// A differencing disk (sizes the BAT differently).
    pub has_parent: bool,
}

impl Geometry {
    /// Validates the combination of sizes.
    pub fn new(
        virtual_size: u64,
        block_size: u32,
        logical_sector_size: u32,
        has_parent: bool,
    ) -> Result<Geometry, Error> {
        const S: &str = "metadata";
        if logical_sector_size != 512 && logical_sector_size != 4096 {
            return Err(Error::ValidateField {
                structure: S,
                field: "LogicalSectorSize",
                value: logical_sector_size.into(),
                expected: "512 or 4096",
            });
        }
        if virtual_size == 0
            || virtual_size > MAX_VIRTUAL_SIZE
            || !virtual_size.is_multiple_of(u64::from(logical_sector_size))
        {
            return Err(Error::ValidateField {
                structure: S,
                field: "VirtualDiskSize",
                value: virtual_size,
                expected: "a non-zero multiple of the logical sector size, at most 64 TiB",
            });
        }
        if !block_size.is_power_of_two() || !(1 << 20..=256 << 20).contains(&block_size) {
            return Err(Error::ValidateField {
                structure: S,
                field: "BlockSize",
                value: block_size.into(),
                expected: "a power of two from 1 MiB to 256 MiB",
            });
        }
        Ok(Geometry {
            virtual_size,
            block_size,
            logical_sector_size,
            has_parent,
        })
    }

    /// Block size as u64.
    pub fn block_bytes(&self) -> u64 {
        u64::from(self.block_size)
    }

    /// Payload blocks per sector-bitmap block (at least 16 for valid sizes).
    pub fn chunk_ratio(&self) -> u64 {
        SECTORS_PER_BITMAP_BLOCK * u64::from(self.logical_sector_size) / self.block_bytes()
    }

    /// Number of payload blocks.
    pub fn data_blocks(&self) -> u64 {
        self.virtual_size.div_ceil(self.block_bytes())
    }

    /// Number of sector-bitmap blocks.
    pub fn bitmap_blocks(&self) -> u64 {
        self.data_blocks().div_ceil(self.chunk_ratio())
    }

    /// Number of BAT entries.
    pub fn bat_entries(&self) -> u64 {
        if self.has_parent {
            self.bitmap_blocks() * (self.chunk_ratio() + 1)
        } else {
            self.data_blocks() + (self.data_blocks() - 1) / self.chunk_ratio()
        }
    }

    /// BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio()
    }

    /// BAT index of the sector-bitmap entry of chunk `chunk`.
    pub fn bitmap_index(&self, chunk: u64) -> u64 {
        chunk * (self.chunk_ratio() + 1) + self.chunk_ratio()
    }

    /// True when BAT index `index` holds a sector-bitmap entry.
    pub fn is_bitmap_index(&self, index: u64) -> bool {
        index % (self.chunk_ratio() + 1) == self.chunk_ratio()
    }

    /// Payload block number of a payload BAT index.
    pub fn block_of_index(&self, index: u64) -> u64 {
        index - index / (self.chunk_ratio() + 1)
    }

    /// Guest-visible bytes in block `block` (the last one may be short).
    pub fn block_len(&self, block: u64) -> u64 {
        let start = block * self.block_bytes();
        self.block_bytes()
            .min(self.virtual_size.saturating_sub(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_packs_state_and_offset() {
        let e = BatEntry::payload(PayloadState::FullyPresent, 5 * MIB);
        assert_eq!(e.payload_state(), Some(PayloadState::FullyPresent));
        assert_eq!(e.file_offset(), 5 * MIB);
        assert_eq!(e.reserved_bits(), 0);
        assert_eq!(BatEntry(4).payload_state(), None);
        assert_eq!(BatEntry(6).bitmap_state(), Some(BitmapState::Present));
        assert_eq!(BatEntry(2).bitmap_state(), None);
    }

    #[test]
    fn geometry_matches_the_specification_formulas() {
        // 512-byte sectors, 1 MiB blocks: 4096 blocks per chunk.
        let g = Geometry::new(10 << 30, 1 << 20, 512, false).unwrap();
        assert_eq!(g.chunk_ratio(), 4096);
        assert_eq!(g.data_blocks(), 10240);
        assert_eq!(g.bat_entries(), 10240 + 10239 / 4096);
        assert_eq!(g.payload_index(4096), 4097);
        assert_eq!(g.bitmap_index(0), 4096);
        assert!(g.is_bitmap_index(4096));
        assert_eq!(g.block_of_index(4097), 4096);
        let d = Geometry::new(10 << 30, 1 << 20, 512, true).unwrap();
        assert_eq!(d.bat_entries(), 3 * 4097);
        let g = Geometry::new(3 << 20 | 512, 1 << 20, 512, false).unwrap();
        assert_eq!(g.data_blocks(), 4);
        assert_eq!(g.block_len(3), 512);
    }

    #[test]
    fn geometry_refuses_bad_sizes() {
        assert!(Geometry::new(0, 1 << 20, 512, false).is_err());
        assert!(Geometry::new(1000, 1 << 20, 512, false).is_err());
        assert!(Geometry::new(1 << 30, 1 << 20, 1024, false).is_err());
        assert!(Geometry::new((64 << 40) + 512, 1 << 20, 512, false).is_err());
        assert!(Geometry::new(1 << 30, 3 << 20, 512, false).is_err());
    }
}
