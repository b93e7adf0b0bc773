//! Region table (MS-VHDX 2.2.3): where the BAT and the metadata region live.

use super::{
    ALIGNMENT, Error, HEADER_AREA_SIZE, MAX_TABLE_ENTRIES, REGION_TABLE_SIZE, expect_checksum,
    expect_signature, guid_at, need, put, seal, u32_at, u64_at,
};
use crate::guid::Guid;

const S: &str = "region table";
const SIGNATURE: &str = "regi";
const CHECKSUM: usize = 4;
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 32;

/// Region identifiers known to this reader.
pub mod region {
    use crate::guid::Guid;

    /// The block allocation table.
    pub const BAT: Guid = Guid::from_fields(
        0x2DC2_7766,
        0xF623,
        0x4200,
        [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
    );
    /// The metadata region.
    pub const METADATA: Guid = Guid::from_fields(
        0x8B7C_A206,
        0x4790,
        0x4B9A,
        [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
    );
}

/// One entry of the region table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionEntry {
    /// What the region holds.
    pub guid: Guid,
    /// Where it starts, a multiple of 1 MiB past the header area.
    pub file_offset: u64,
    /// Its length, a non-zero multiple of 1 MiB.
    pub length: u32,
    /// A reader that does not know `guid` must refuse the file.
    pub required: bool,
}

impl RegionEntry {
    /// One past the last byte of the region.
    pub fn end(&self) -> u64 {
        // Cannot overflow: offsets are validated to be below 2^63 on decode.
        self.file_offset + u64::from(self.length)
    }
}

/// The decoded region table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionTable {
    /// Entries in file order.
    pub entries: Vec<RegionEntry>,
}

impl RegionTable {
    /// Decodes and validates a region table: signature, checksum, count, alignment, overlap,
    /// duplicates, unknown required regions, and the presence of the BAT and metadata regions.
    pub fn decode(buf: &[u8]) -> Result<RegionTable, Error> {
        need(S, buf, REGION_TABLE_SIZE)?;
        let buf = &buf[..REGION_TABLE_SIZE];
        expect_signature(S, buf, SIGNATURE)?;
        expect_checksum(S, buf, CHECKSUM)?;
        let count = u32_at(buf, 8);
        if count > MAX_TABLE_ENTRIES {
            return Err(Error::ValidateField {
                structure: S,
                field: "EntryCount",
                value: count.into(),
                expected: "at most 2047",
            });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let at = HEADER_LEN + i * ENTRY_LEN;
            let entry = RegionEntry {
                guid: guid_at(buf, at),
                file_offset: u64_at(buf, at + 16),
                length: u32_at(buf, at + 24),
                required: u32_at(buf, at + 28) & 1 == 1,
            };
            let field = |field, value, expected| Error::ValidateField {
                structure: S,
                field,
                value,
                expected,
            };
            if !entry.file_offset.is_multiple_of(ALIGNMENT)
                || entry.file_offset < HEADER_AREA_SIZE
                || entry.file_offset >= 1 << 62
            {
                return Err(field(
                    "FileOffset",
                    entry.file_offset,
                    "a multiple of 1 MiB past the header area",
                ));
            }
            if entry.length == 0 || u64::from(entry.length) % ALIGNMENT != 0 {
                return Err(field(
                    "Length",
                    entry.length.into(),
                    "a non-zero multiple of 1 MiB",
                ));
            }
            let known = entry.guid == region::BAT || entry.guid == region::METADATA;
            if entry.required && !known {
                return Err(Error::RejectUnknownRequired {
                    structure: S,
                    guid: entry.guid,
                });
            }
            entries.push(entry);
        }
        let table = RegionTable { entries };
        table.validate_layout()?;
        Ok(table)
    }

    fn validate_layout(&self) -> Result<(), Error> {
        let layout = |what: String| Error::ValidateLayout { structure: S, what };
        let mut sorted: Vec<&RegionEntry> = self.entries.iter().collect();
        sorted.sort_by_key(|e| e.file_offset);
        for pair in sorted.windows(2) {
            if pair[0].end() > pair[1].file_offset {
                return Err(layout(format!(
                    "region {} at {:#x} overlaps region {} at {:#x}",
                    pair[0].guid, pair[0].file_offset, pair[1].guid, pair[1].file_offset
                )));
            }
        }
        for known in [region::BAT, region::METADATA] {
            match self.entries.iter().filter(|e| e.guid == known).count() {
                1 => {}
                0 => return Err(layout(format!("required region {known} is missing"))),
                _ => return Err(layout(format!("region {known} appears more than once"))),
            }
        }
        Ok(())
    }

    /// The entry for a known region (present after a successful decode).
    pub fn find(&self, guid: Guid) -> Option<RegionEntry> {
        self.entries.iter().copied().find(|e| e.guid == guid)
    }

    /// Encodes the table with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; REGION_TABLE_SIZE];
        put(&mut buf, 0, SIGNATURE.as_bytes());
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        put(&mut buf, 8, &count.to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let at = HEADER_LEN + i * ENTRY_LEN;
            put(&mut buf, at, &e.guid.to_bytes());
            put(&mut buf, at + 16, &e.file_offset.to_le_bytes());
            put(&mut buf, at + 24, &e.length.to_le_bytes());
            put(&mut buf, at + 28, &u32::from(e.required).to_le_bytes());
        }
        seal(&mut buf, CHECKSUM);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RegionTable {
        RegionTable {
            entries: vec![
                RegionEntry {
                    guid: region::BAT,
                    file_offset: 3 << 20,
                    length: 1 << 20,
                    required: true,
                },
                RegionEntry {
                    guid: region::METADATA,
                    file_offset: 2 << 20,
                    length: 1 << 20,
                    required: true,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let t = table();
        assert_eq!(RegionTable::decode(&t.encode()).unwrap(), t);
        assert_eq!(t.find(region::BAT).unwrap().file_offset, 3 << 20);
    }

    #[test]
    fn each_error_is_reported() {
        let mut t = table();
        t.entries[0].file_offset = 2 << 20;
        assert!(matches!(
            RegionTable::decode(&t.encode()),
            Err(Error::ValidateLayout { .. })
        ));
        let mut t = table();
        t.entries.push(RegionEntry {
            guid: Guid::derived("x", b"y"),
            file_offset: 9 << 20,
            length: 1 << 20,
            required: true,
        });
        assert!(matches!(
            RegionTable::decode(&t.encode()),
            Err(Error::RejectUnknownRequired { .. })
        ));
        let mut t = table();
        t.entries.push(RegionEntry {
            guid: Guid::derived("x", b"y"),
            file_offset: 9 << 20,
            length: 1 << 20,
            required: false,
        });
        assert!(
            RegionTable::decode(&t.encode()).is_ok(),
            "optional unknown regions are ignored"
        );
        let mut t = table();
        t.entries.pop();
        assert!(matches!(
            RegionTable::decode(&t.encode()),
            Err(Error::ValidateLayout { .. })
        ));
        let mut t = table();
        t.entries[1].length = 4096;
        assert!(matches!(
            RegionTable::decode(&t.encode()),
            Err(Error::ValidateField {
                field: "Length",
                ..
            })
        ));
        let mut raw = table().encode();
        raw[8..12].copy_from_slice(&5000u32.to_le_bytes());
        super::super::seal(&mut raw, CHECKSUM);
        assert!(matches!(
            RegionTable::decode(&raw),
            Err(Error::ValidateField {
                field: "EntryCount",
                ..
            })
        ));
    }
}
