//! Metadata region (MS-VHDX 2.6): the table and the items this reader knows.

use super::{
    BLOCK_SIZE_RANGE, Error, MAX_TABLE_ENTRIES, METADATA_TABLE_SIZE, expect_signature, guid_at,
    need, put, u16_at, u32_at, utf16_decode, utf16_encode,
};
use crate::guid::Guid;

const S: &str = "metadata table";
const SIGNATURE: &str = "metadata";
const HEADER_LEN: usize = 32;
const ENTRY_LEN: usize = 32;
const FLAG_USER: u32 = 1;
const FLAG_VIRTUAL_DISK: u32 = 2;
const FLAG_REQUIRED: u32 = 4;

/// Metadata item identifiers known to this reader (MS-VHDX 2.6.2).
pub mod item {
    use crate::guid::Guid;

    /// Block size and flags ([`super::FileParameters`]).
    pub const FILE_PARAMETERS: Guid = Guid::from_fields(
        0xCAA1_6737,
        0xFA36,
        0x4D43,
        [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
    );
    /// Virtual disk size in bytes (u64).
    pub const VIRTUAL_DISK_SIZE: Guid = Guid::from_fields(
        0x2FA5_4224,
        0xCD1B,
        0x4876,
        [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
    );
    /// The disk's identity (SCSI page 83), a GUID.
    pub const VIRTUAL_DISK_ID: Guid = Guid::from_fields(
        0xBECA_12AB,
        0xB2E6,
        0x4523,
        [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
    );
    /// Logical sector size (u32: 512 or 4096).
    pub const LOGICAL_SECTOR_SIZE: Guid = Guid::from_fields(
        0x8141_BF1D,
        0xA96F,
        0x4709,
        [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
    );
    /// Physical sector size (u32: 512 or 4096).
    pub const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_fields(
        0xCDA3_48C7,
        0x445D,
        0x4471,
        [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
    );
    /// Where a differencing disk's parent is ([`super::ParentLocator`]).
    pub const PARENT_LOCATOR: Guid = Guid::from_fields(
        0xA8D3_5F2D,
        0xB30B,
        0x454D,
        [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
    );
    /// The only parent locator type defined: a VHDX parent.
    pub const LOCATOR_TYPE_VHDX: Guid = Guid::from_fields(
        0xB04A_EFB7,
        0xD19E,
        0x4A81,
        [0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13],
    );

    /// True for the items whose meaning this reader knows.
    pub fn is_known(guid: Guid) -> bool {
        [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            VIRTUAL_DISK_ID,
            LOGICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR_SIZE,
            PARENT_LOCATOR,
        ]
        .contains(&guid)
    }
}

/// Keys of the VHDX parent locator (MS-VHDX 2.6.2.6.1).
pub mod locator_key {
    /// The parent's DataWriteGuid at the time the child was made, as `{GUID}`.
    pub const PARENT_LINKAGE: &str = "parent_linkage";
    /// An alternative linkage a writer may record while it updates the parent.
    pub const PARENT_LINKAGE2: &str = "parent_linkage2";
    /// Path of the parent relative to the child's directory (Windows separators).
    pub const RELATIVE_PATH: &str = "relative_path";
    /// Volume GUID path of the parent.
    pub const VOLUME_PATH: &str = "volume_path";
    /// Absolute path of the parent.
    pub const ABSOLUTE_WIN32_PATH: &str = "absolute_win32_path";
}

/// One entry of the metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataEntry {
    /// What the item is.
    pub item_id: Guid,
    /// Offset of the item from the start of the metadata region (0 when `length` is 0).
    pub offset: u32,
    /// Length of the item in bytes.
    pub length: u32,
    /// A user item (ignored by this reader).
    pub is_user: bool,
    /// The item describes the virtual disk rather than the file.
    pub is_virtual_disk: bool,
    /// A reader that does not know the item must refuse the file.
    pub is_required: bool,
}

/// The decoded metadata table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataTable {
    /// Entries in table order.
    pub entries: Vec<MetadataEntry>,
}

impl MetadataTable {
    /// Decodes and validates the table at the start of a metadata region of `region_len` bytes.
    pub fn decode(buf: &[u8], region_len: u64) -> Result<MetadataTable, Error> {
        need(S, buf, METADATA_TABLE_SIZE)?;
        expect_signature(S, buf, SIGNATURE)?;
        let count = u16_at(buf, 10);
        if u32::from(count) > MAX_TABLE_ENTRIES {
            return Err(Error::ValidateField {
                structure: S,
                field: "EntryCount",
                value: count.into(),
                expected: "at most 2047",
            });
        }
        let mut entries: Vec<MetadataEntry> = Vec::with_capacity(count.into());
        for i in 0..usize::from(count) {
            let at = HEADER_LEN + i * ENTRY_LEN;
            let flags = u32_at(buf, at + 24);
            let entry = MetadataEntry {
                item_id: guid_at(buf, at),
                offset: u32_at(buf, at + 16),
                length: u32_at(buf, at + 20),
                is_user: flags & FLAG_USER != 0,
                is_virtual_disk: flags & FLAG_VIRTUAL_DISK != 0,
                is_required: flags & FLAG_REQUIRED != 0,
            };
            let field = |field, value: u32, expected| Error::ValidateField {
                structure: S,
                field,
                value: value.into(),
                expected,
            };
            if entry.length == 0 {
                if entry.offset != 0 {
                    return Err(field("Offset", entry.offset, "0 for an empty item"));
                }
            } else {
                if (entry.offset as usize) < METADATA_TABLE_SIZE {
                    return Err(field(
                        "Offset",
                        entry.offset,
                        "at least 64 KiB (past the table)",
                    ));
                }
                if u64::from(entry.offset) + u64::from(entry.length) > region_len {
                    return Err(Error::ValidateLayout {
                        structure: S,
                        what: format!(
                            "item {} ({} bytes at {:#x}) ends past the metadata region",
                            entry.item_id, entry.length, entry.offset
                        ),
                    });
                }
            }
            if !entry.is_user && entry.is_required && !item::is_known(entry.item_id) {
                return Err(Error::RejectUnknownRequired {
                    structure: S,
                    guid: entry.item_id,
                });
            }
            if entries
                .iter()
                .any(|e| e.item_id == entry.item_id && e.is_user == entry.is_user)
            {
                return Err(Error::ValidateLayout {
                    structure: S,
                    what: format!("item {} appears more than once", entry.item_id),
                });
            }
            entries.push(entry);
        }
        Ok(MetadataTable { entries })
    }

    /// The system (non-user) entry for `id`.
    pub fn find(&self, id: Guid) -> Option<MetadataEntry> {
        self.entries
            .iter()
            .copied()
            .find(|e| e.item_id == id && !e.is_user)
    }

    /// Encodes the table (64 KiB).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; METADATA_TABLE_SIZE];
        put(&mut buf, 0, SIGNATURE.as_bytes());
        let count = u16::try_from(self.entries.len()).unwrap_or(u16::MAX);
        put(&mut buf, 10, &count.to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let at = HEADER_LEN + i * ENTRY_LEN;
            let flag = |set: bool, bit: u32| if set { bit } else { 0 };
            let flags = flag(e.is_user, FLAG_USER)
                | flag(e.is_virtual_disk, FLAG_VIRTUAL_DISK)
                | flag(e.is_required, FLAG_REQUIRED);
            put(&mut buf, at, &e.item_id.to_bytes());
            put(&mut buf, at + 16, &e.offset.to_le_bytes());
            put(&mut buf, at + 20, &e.length.to_le_bytes());
            put(&mut buf, at + 24, &flags.to_le_bytes());
        }
        buf
    }
}

/// The file parameters item: block size and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileParameters {
    /// Payload block size: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// Blocks are preallocated (a fixed VHDX) and must stay allocated.
    pub leave_blocks_allocated: bool,
    /// The file is a differencing disk and has a parent locator.
    pub has_parent: bool,
}

impl FileParameters {
    /// Size of the encoded item.
    pub const SIZE: usize = 8;

    /// Decodes and validates the item.
    pub fn decode(buf: &[u8]) -> Result<FileParameters, Error> {
        const S: &str = "file parameters";
        need(S, buf, Self::SIZE)?;
        let block_size = u32_at(buf, 0);
        let flags = u32_at(buf, 4);
        if !block_size.is_power_of_two()
            || block_size < BLOCK_SIZE_RANGE.0
            || block_size > BLOCK_SIZE_RANGE.1
        {
            return Err(Error::ValidateField {
                structure: S,
                field: "BlockSize",
                value: block_size.into(),
                expected: "a power of two from 1 MiB to 256 MiB",
            });
        }
        Ok(FileParameters {
            block_size,
            leave_blocks_allocated: flags & 1 != 0,
            has_parent: flags & 2 != 0,
        })
    }

    /// Encodes the item.
    pub fn encode(&self) -> Vec<u8> {
        let flags = u32::from(self.leave_blocks_allocated) | u32::from(self.has_parent) << 1;
        [self.block_size.to_le_bytes(), flags.to_le_bytes()].concat()
    }
}

/// The parent locator item: key/value pairs saying where the parent is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParentLocator {
    /// Key/value pairs in item order.
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    const HEADER_LEN: usize = 20;
    const ENTRY_LEN: usize = 12;

    /// Decodes and validates a VHDX parent locator.
    pub fn decode(buf: &[u8]) -> Result<ParentLocator, Error> {
        const S: &str = "parent locator";
        need(S, buf, Self::HEADER_LEN)?;
        let locator_type = guid_at(buf, 0);
        if locator_type != item::LOCATOR_TYPE_VHDX {
            return Err(Error::RejectUnknownRequired {
                structure: S,
                guid: locator_type,
            });
        }
        let count = usize::from(u16_at(buf, 18));
        need(S, buf, Self::HEADER_LEN + count * Self::ENTRY_LEN)?;
        let mut entries: Vec<(String, String)> = Vec::with_capacity(count);
        for i in 0..count {
            let at = Self::HEADER_LEN + i * Self::ENTRY_LEN;
            let text = |offset: u32, len: u16, field| -> Result<String, Error> {
                let start = offset as usize;
                let end = start + usize::from(len);
                if len == 0 || !len.is_multiple_of(2) || end > buf.len() {
                    return Err(Error::ValidateField {
                        structure: S,
                        field,
                        value: offset.into(),
                        expected: "a non-empty, even-length UTF-16 string inside the item",
                    });
                }
                Ok(utf16_decode(&buf[start..end]))
            };
            let key = text(u32_at(buf, at), u16_at(buf, at + 8), "KeyOffset")?;
            let value = text(u32_at(buf, at + 4), u16_at(buf, at + 10), "ValueOffset")?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(Error::ValidateLayout {
                    structure: S,
                    what: format!("key {key:?} appears more than once"),
                });
            }
            entries.push((key, value));
        }
        Ok(ParentLocator { entries })
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Encodes the locator.
    pub fn encode(&self) -> Vec<u8> {
        let table_len = Self::HEADER_LEN + self.entries.len() * Self::ENTRY_LEN;
        let mut buf = vec![0u8; table_len];
        put(&mut buf, 0, &item::LOCATOR_TYPE_VHDX.to_bytes());
        let count = u16::try_from(self.entries.len()).unwrap_or(u16::MAX);
        put(&mut buf, 18, &count.to_le_bytes());
        for (i, (key, value)) in self.entries.iter().enumerate() {
            let at = Self::HEADER_LEN + i * Self::ENTRY_LEN;
            let mut place = |text: &str, offset_field: usize, len_field: usize| {
                let bytes = utf16_encode(text);
                let offset = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
                buf.extend_from_slice(&bytes);
                put(&mut buf, at + offset_field, &offset.to_le_bytes());
                put(&mut buf, at + len_field, &len.to_le_bytes());
            };
            place(key, 0, 8);
            place(value, 4, 10);
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_rejects_unknown_required_items() {
        let mut table = MetadataTable {
            entries: vec![MetadataEntry {
                item_id: item::FILE_PARAMETERS,
                offset: 65536,
                length: 8,
                is_user: false,
                is_virtual_disk: false,
                is_required: true,
            }],
        };
        assert_eq!(
            MetadataTable::decode(&table.encode(), 1 << 20).unwrap(),
            table
        );
        table.entries.push(MetadataEntry {
            item_id: Guid::derived("x", b"y"),
            offset: 65544,
            length: 8,
            is_user: false,
            is_virtual_disk: false,
            is_required: true,
        });
        assert!(matches!(
            MetadataTable::decode(&table.encode(), 1 << 20),
            Err(Error::RejectUnknownRequired { .. })
        ));
        table.entries[1].is_required = false;
        assert!(MetadataTable::decode(&table.encode(), 1 << 20).is_ok());
        table.entries[1].offset = 100;
        assert!(matches!(
            MetadataTable::decode(&table.encode(), 1 << 20),
            Err(Error::ValidateField {
                field: "Offset",
                ..
            })
        ));
        table.entries[1].offset = (1 << 20) - 4;
        assert!(matches!(
            MetadataTable::decode(&table.encode(), 1 << 20),
            Err(Error::ValidateLayout { .. })
        ));
    }

    #[test]
    fn file_parameters_validate_block_size() {
        let p = FileParameters {
            block_size: 1 << 20,
            leave_blocks_allocated: false,
            has_parent: true,
        };
        assert_eq!(FileParameters::decode(&p.encode()).unwrap(), p);
        for bad in [0u32, 4096, 3 << 20, 512 << 20] {
            let q = FileParameters {
                block_size: bad,
                ..p
            };
            assert!(FileParameters::decode(&q.encode()).is_err(), "{bad}");
        }
    }

    #[test]
    fn parent_locator_round_trips_and_bounds_offsets() {
        let loc = ParentLocator {
            entries: vec![
                (
                    locator_key::PARENT_LINKAGE.into(),
                    "{2DC27766-F623-4200-9D64-115E9BFD4A08}".into(),
                ),
                (locator_key::RELATIVE_PATH.into(), ".\\base.vhdx".into()),
            ],
        };
        let bytes = loc.encode();
        assert_eq!(ParentLocator::decode(&bytes).unwrap(), loc);
        assert_eq!(loc.get(locator_key::RELATIVE_PATH), Some(".\\base.vhdx"));
        let mut bad = bytes.clone();
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ParentLocator::decode(&bad).is_err());
        let mut bad = bytes;
        bad[18..20].copy_from_slice(&500u16.to_le_bytes());
        assert!(matches!(
            ParentLocator::decode(&bad),
            Err(Error::ReadTruncated { .. })
        ));
    }
}
