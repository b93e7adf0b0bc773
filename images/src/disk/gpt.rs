//! The on-disk structures of a GUID Partition Table, encoded and decoded explicitly
//! little-endian (UEFI Specification 2.10, section 5: "GUID Partition Table (GPT) Disk Layout").
//!
//! Only what Slipway writes is produced: 512-byte logical sectors, a protective MBR, and two
//! copies of a 128-entry table of 128-byte entries. The reader accepts any entry size and count
//! the specification allows, as long as the array fits in [`MAX_ENTRY_ARRAY_BYTES`].

use std::io;

use super::{Error, Placed};
use crate::guid::Guid;

/// Logical sector size of every disk Slipway builds.
pub const SECTOR_SIZE: u64 = SECTOR_BYTES as u64;
const SECTOR_BYTES: usize = 512;
/// Number of entries in each partition entry array Slipway writes.
pub const ENTRY_COUNT: u32 = 128;
/// Size of one partition entry Slipway writes.
pub const ENTRY_SIZE: u32 = 128;
/// Longest partition name, in UTF-16 code units (the name field is 72 bytes).
pub const NAME_UNITS: usize = 36;
/// Largest entry array the reader accepts (hostile headers may claim billions of entries).
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

/// Bit 60 of a partition's attributes: mount the file system read-only (UAPI Group,
/// Discoverable Partitions Specification, "Partition Attribute Flags").
pub const ATTR_READ_ONLY: u64 = 1 << 60;
/// Bit 63 of a partition's attributes: systemd-gpt-auto-generator must not mount the
/// partition automatically (UAPI Group, Discoverable Partitions Specification).
pub const ATTR_NO_AUTO: u64 = 1 << 63;

/// Partition type GUIDs.
pub mod types {
    use crate::guid::Guid;

    /// EFI System Partition (UEFI Specification 5.3.3; also listed by the UAPI Group's
    /// Discoverable Partitions Specification): `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub const ESP: Guid = Guid::from_fields(
        0xC12A_7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    );
    /// Root file system for x86-64 (UAPI Group, Discoverable Partitions Specification):
    /// `4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709`.
    pub const ROOT_X86_64: Guid = Guid::from_fields(
        0x4F68_BCE3,
        0xE8CD,
        0x4DB1,
        [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
    );
    /// dm-verity hash data of the x86-64 root file system (UAPI Group, Discoverable Partitions
    /// Specification): `2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5`.
    pub const ROOT_X86_64_VERITY: Guid = Guid::from_fields(
        0x2C73_57ED,
        0xEBD2,
        0x46D9,
        [0xAE, 0xC1, 0x23, 0xD4, 0x37, 0xEC, 0x2B, 0xF5],
    );
    /// Microsoft Reserved Partition (UEFI Specification's list of OS partition types;
    /// Microsoft's "Windows and GPT FAQ"): `E3C9E316-0B5C-4DB8-817D-F92DF00215AE`.
    pub const MSR: Guid = Guid::from_fields(
        0xE3C9_E316,
        0x0B5C,
        0x4DB8,
        [0x81, 0x7D, 0xF9, 0x2D, 0xF0, 0x02, 0x15, 0xAE],
    );
    /// Microsoft basic data (a Windows NTFS volume): `EBD0A0A2-B9E5-4433-87C0-68B6B72699C7`.
    pub const BASIC_DATA: Guid = Guid::from_fields(
        0xEBD0_A0A2,
        0xB9E5,
        0x4433,
        [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
    );
    /// Generic Linux data (UAPI Group, Discoverable Partitions Specification, "Generic Linux
    /// Data Partitions"): `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
    pub const LINUX_GENERIC: Guid = Guid::from_fields(
        0x0FC6_3DAF,
        0x8483,
        0x4772,
        [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
    );
}

/// Sectors taken by the entry array Slipway writes: 128 × 128 bytes.
pub(super) const ENTRY_ARRAY_LBAS: u64 = (ENTRY_COUNT as u64) * (ENTRY_SIZE as u64) / SECTOR_SIZE;
/// First LBA a partition may use: after the MBR, the primary header and the primary array.
pub(super) const FIRST_USABLE_LBA: u64 = 2 + ENTRY_ARRAY_LBAS;
/// Sectors at the end of the disk: the backup array and the backup header.
pub(super) const BACKUP_LBAS: u64 = ENTRY_ARRAY_LBAS + 1;

const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Revision 1.0.
const REVISION: u32 = 0x0001_0000;
/// Bytes of the header the header CRC covers.
const HEADER_SIZE: u32 = 92;
const HEADER_CRC_OFFSET: usize = 16;
const MBR_ENTRY_OFFSET: usize = 446;
const MBR_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Partition type of the protective MBR's only entry.
const MBR_TYPE_PROTECTIVE: u8 = 0xEE;
const NAME_OFFSET: usize = 56;

/// The fields of a GPT header (UEFI 5.3.2, table 5.5) Slipway reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// One sector: the 92-byte header with its CRC, then zeros.
    pub fn encode(&self) -> [u8; SECTOR_BYTES] {
        let mut s = [0u8; SECTOR_BYTES];
        s[0..8].copy_from_slice(&SIGNATURE);
        s[8..12].copy_from_slice(&REVISION.to_le_bytes());
        s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 CRC (below), 20..24 reserved, zero.
        s[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid.to_bytes());
        s[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
        s[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32(&s[..HEADER_SIZE as usize]);
        s[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        s
    }

    /// Decodes and checks a header sector: signature, then CRC, then sizes.
    pub fn decode(s: &[u8; SECTOR_BYTES]) -> Result<Header, Error> {
        if s[0..8] != SIGNATURE {
            return Err(Error::MatchSignature {
                found: String::from_utf8_lossy(&s[0..8]).into_owned(),
            });
        }
        let header_size = le32(s, 12);
        if header_size < HEADER_SIZE || header_size as usize > SECTOR_BYTES {
            return Err(Error::ValidateHeader {
                field: "HeaderSize",
                value: header_size.into(),
            });
        }
        let mut covered = s[..header_size as usize].to_vec();
        covered[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].fill(0);
        let (stored, computed) = (le32(s, HEADER_CRC_OFFSET), crc32(&covered));
        if stored != computed {
            return Err(Error::MatchHeaderChecksum { stored, computed });
        }
        let header = Header {
            my_lba: le64(s, 24),
            alternate_lba: le64(s, 32),
            first_usable_lba: le64(s, 40),
            last_usable_lba: le64(s, 48),
            disk_guid: Guid::from_bytes(bytes16(s, 56)),
            entries_lba: le64(s, 72),
            entry_count: le32(s, 80),
            entry_size: le32(s, 84),
            entries_crc: le32(s, 88),
        };
        // The specification allows 128 × 2^n bytes; anything smaller cannot hold an entry.
        if header.entry_size < ENTRY_SIZE || !header.entry_size.is_power_of_two() {
            return Err(Error::ValidateHeader {
                field: "SizeOfPartitionEntry",
                value: header.entry_size.into(),
            });
        }
        let array = u64::from(header.entry_count) * u64::from(header.entry_size);
        if array > MAX_ENTRY_ARRAY_BYTES {
            return Err(Error::ValidateHeader {
                field: "NumberOfPartitionEntries × SizeOfPartitionEntry",
                value: array,
            });
        }
        Ok(header)
    }
}

/// The protective MBR (UEFI 5.2.3): no boot code, disk signature 0, one partition of type
/// 0xEE covering the disk from LBA 1 (capped at 2^32 - 1 sectors).
pub(super) fn protective_mbr(disk_lbas: u64) -> [u8; SECTOR_BYTES] {
    let mut s = [0u8; SECTOR_BYTES];
    let size = u32::try_from(disk_lbas.saturating_sub(1)).unwrap_or(u32::MAX);
    let e = &mut s[MBR_ENTRY_OFFSET..MBR_ENTRY_OFFSET + 16];
    // Boot indicator 0; starting CHS 0x000200 (head 0, sector 2, cylinder 0).
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = MBR_TYPE_PROTECTIVE;
    // Ending CHS: not representable for any useful disk, so the specification's 0xFFFFFF.
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&size.to_le_bytes());
    s[510..512].copy_from_slice(&MBR_SIGNATURE);
    s
}

/// The 128-entry array for `partitions`, unused entries zero. Names must already have been
/// checked to fit in [`NAME_UNITS`]; longer ones are cut rather than overflowing the field.
pub(super) fn encode_entries(partitions: &[Placed]) -> Vec<u8> {
    let entry = ENTRY_SIZE as usize;
    let mut array = vec![0u8; ENTRY_COUNT as usize * entry];
    for (p, e) in partitions.iter().zip(array.chunks_exact_mut(entry)) {
        e[0..16].copy_from_slice(&p.type_guid.to_bytes());
        e[16..32].copy_from_slice(&p.unique_guid.to_bytes());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        let name = &mut e[NAME_OFFSET..NAME_OFFSET + 2 * NAME_UNITS];
        for (unit, at) in p.name.encode_utf16().zip(name.chunks_exact_mut(2)) {
            at.copy_from_slice(&unit.to_le_bytes());
        }
    }
    array
}

/// Reads the partitions of a GPT disk through `bytes_at(offset, buf)`, which must fill `buf`
/// with the disk's bytes at `offset` (a raw file, or a VHDX through its reader).
///
/// Reads the primary header (LBA 1) and its entry array and checks the signature, both CRCs,
/// the sizes, and that every used entry lies inside the usable LBAs. At most
/// [`MAX_ENTRY_ARRAY_BYTES`] are read whatever the header claims. Unused entries (zero type
/// GUID) are skipped; the rest are returned in table order.
pub fn read_partitions(
    mut bytes_at: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> Result<Vec<Placed>, Error> {
    let mut sector = [0u8; SECTOR_BYTES];
    bytes_at(SECTOR_SIZE, &mut sector).map_err(|source| Error::ReadTable {
        offset: SECTOR_SIZE,
        len: SECTOR_SIZE,
        source,
    })?;
    let header = Header::decode(&sector)?;
    if header.my_lba != 1 {
        return Err(Error::ValidateHeader {
            field: "MyLBA",
            value: header.my_lba,
        });
    }
    let offset = header
        .entries_lba
        .checked_mul(SECTOR_SIZE)
        .ok_or(Error::ValidateHeader {
            field: "PartitionEntryLBA",
            value: header.entries_lba,
        })?;
    // At most MAX_ENTRY_ARRAY_BYTES: Header::decode checked it.
    let len = u64::from(header.entry_count) * u64::from(header.entry_size);
    let mut array = vec![
        0u8;
        usize::try_from(len).map_err(|_| Error::ValidateHeader {
            field: "NumberOfPartitionEntries × SizeOfPartitionEntry",
            value: len,
        })?
    ];
    bytes_at(offset, &mut array).map_err(|source| Error::ReadTable {
        offset,
        len,
        source,
    })?;
    let computed = crc32(&array);
    if computed != header.entries_crc {
        return Err(Error::MatchEntriesChecksum {
            stored: header.entries_crc,
            computed,
        });
    }

    let mut partitions = Vec::new();
    for (index, e) in array.chunks_exact(header.entry_size as usize).enumerate() {
        let type_guid = Guid::from_bytes(bytes16(e, 0));
        if type_guid.is_zero() {
            continue;
        }
        let number = index.saturating_add(1);
        let (first_lba, last_lba) = (le64(e, 32), le64(e, 40));
        let bad = || Error::ValidateEntry {
            number,
            first_lba,
            last_lba,
        };
        if first_lba > last_lba
            || first_lba < header.first_usable_lba
            || last_lba > header.last_usable_lba
        {
            return Err(bad());
        }
        let sectors = (last_lba - first_lba).checked_add(1).ok_or_else(bad)?;
        let units: Vec<u16> = e[NAME_OFFSET..NAME_OFFSET + 2 * NAME_UNITS]
            .chunks_exact(2)
            .map(|u| u16::from_le_bytes([u[0], u[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Placed {
            number,
            name: String::from_utf16_lossy(&units),
            type_guid,
            unique_guid: Guid::from_bytes(bytes16(e, 16)),
            attributes: le64(e, 48),
            first_lba,
            last_lba,
            offset: first_lba.checked_mul(SECTOR_SIZE).ok_or_else(bad)?,
            size: sectors.checked_mul(SECTOR_SIZE).ok_or_else(bad)?,
        });
    }
    Ok(partitions)
}

// Field readers for fixed offsets inside buffers whose length the caller has checked.
fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn bytes16(b: &[u8], at: usize) -> [u8; 16] {
    let mut v = [0u8; 16];
    v.copy_from_slice(&b[at..at + 16]);
    v
}

/// CRC-32 as GPT uses it: IEEE 802.3 / zlib (reflected polynomial 0xEDB88320, initial value
/// and final XOR all ones). Not the CRC-32C that VHDX uses.
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = u32::MAX;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut c = i;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i as usize] = c;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::disk::tests::{bytes, input_file, materialise, part, read_raw, sgdisk, three};
    use crate::disk::{Layout, layout};
    use crate::pio;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn type_guids_print_as_the_specification_writes_them() {
        assert_eq!(
            types::ESP.to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(
            types::ROOT_X86_64.to_string(),
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        );
        assert_eq!(
            types::ROOT_X86_64_VERITY.to_string(),
            "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5"
        );
        assert_eq!(
            types::LINUX_GENERIC.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
    }

    fn header() -> Header {
        Header {
            my_lba: 1,
            alternate_lba: 99,
            first_usable_lba: FIRST_USABLE_LBA,
            last_usable_lba: 66,
            disk_guid: Guid::derived("test", b"disk"),
            entries_lba: 2,
            entry_count: ENTRY_COUNT,
            entry_size: ENTRY_SIZE,
            entries_crc: 7,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn header_with_bad_signature_is_refused() {
        let mut s = header().encode();
        s[0] = b'X';
        assert!(matches!(
            Header::decode(&s),
            Err(Error::MatchSignature { found }) if found == "XFI PART"
        ));
    }

    #[test]
    fn header_with_bad_crc_is_refused() {
        let mut s = header().encode();
        s[40] ^= 1;
        assert!(matches!(
            Header::decode(&s),
            Err(Error::MatchHeaderChecksum { .. })
        ));
    }

    /// Re-encodes a header sector after editing it, so only the field under test is wrong.
    fn with_crc(mut s: [u8; 512]) -> [u8; 512] {
        s[16..20].fill(0);
        let crc = crc32(&s[..92]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }

    #[test]
    fn hostile_header_sizes_are_refused() {
        let mut s = header().encode();
        s[12..16].copy_from_slice(&4096u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&s),
            Err(Error::ValidateHeader {
                field: "HeaderSize",
                value: 4096
            })
        ));

        let mut s = header().encode();
        s[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Header::decode(&with_crc(s)),
            Err(Error::ValidateHeader { value, .. }) if value == u64::from(u32::MAX) * 128
        ));

        let mut s = header().encode();
        s[84..88].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&with_crc(s)),
            Err(Error::ValidateHeader {
                field: "SizeOfPartitionEntry",
                value: 100
            })
        ));
    }

    #[test]
    fn entries_outside_the_usable_area_are_refused() {
        let placed = Placed {
            number: 1,
            name: "x".into(),
            type_guid: types::LINUX_GENERIC,
            unique_guid: Guid::derived("test", b"x"),
            attributes: 0,
            first_lba: 40,
            last_lba: 67,
            offset: 40 * 512,
            size: 28 * 512,
        };
        let entries = encode_entries(&[placed]);
        let h = Header {
            entries_crc: crc32(&entries),
            ..header()
        };
        let mut disk = vec![0u8; 512];
        disk.extend(h.encode());
        disk.extend(&entries);
        let read = |offset: u64, buf: &mut [u8]| {
            let at = usize::try_from(offset).unwrap();
            buf.copy_from_slice(&disk[at..at + buf.len()]);
            Ok(())
        };
        assert!(matches!(
            read_partitions(read),
            Err(Error::ValidateEntry {
                number: 1,
                first_lba: 40,
                last_lba: 67
            })
        ));
    }

    #[test]
    fn read_failures_carry_the_offset() {
        let err = read_partitions(|_, _| Err(io::Error::other("gone"))).unwrap_err();
        assert!(matches!(
            err,
            Error::ReadTable {
                offset: 512,
                len: 512,
                ..
            }
        ));
    }

    // Whole disks from `layout`, checked against sgdisk and read back.

    #[test]
    fn sgdisk_accepts_the_disk_and_reads_the_entries() {
        let input = input_file();
        let disk = layout(three(&input)).unwrap();
        let raw = materialise(&disk);

        // sgdisk -v repairs a damaged table in memory before it verifies, and then still says
        // "No problems found": the damage shows only as a caution about a corrupt GPT.
        let clean = |text: &str| text.contains("No problems found") && !text.contains("corrupt");
        let verify = sgdisk(&["-v"], raw.path());
        assert!(clean(&verify), "{verify}");
        let damaged = materialise(&disk);
        pio::write_all_at(damaged.as_file(), b"X", disk.size - 512 + 40).unwrap();
        let verify = sgdisk(&["-v"], damaged.path());
        assert!(!clean(&verify), "{verify}");

        let root = &disk.partitions[1];
        assert_eq!((root.first_lba, root.last_lba), (4096, 4096 + 6 * 1024 - 1));
        let info = sgdisk(&["-i", "2"], raw.path());
        for line in [
            "Partition GUID code: 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".to_owned(),
            format!("Partition unique GUID: {}", root.unique_guid),
            "First sector: 4096 ".to_owned(),
            format!("Last sector: {} ", root.last_lba),
            "Attribute flags: 1000000000000000".to_owned(),
            "Partition name: 'root-x86-64'".to_owned(),
        ] {
            assert!(info.contains(&line), "{line:?} not in:\n{info}");
        }
    }

    #[test]
    fn read_partitions_round_trips_and_content_lands_in_place() {
        let input = input_file();
        let disk = layout(three(&input)).unwrap();
        let raw = materialise(&disk);
        let read = read_partitions(read_raw(raw.as_file())).unwrap();
        assert_eq!(read, disk.partitions);

        let root = &read[1];
        let mut got = vec![0u8; usize::try_from(root.size).unwrap()];
        pio::read_exact_at(raw.as_file(), &mut got, root.offset).unwrap();
        let mut want = vec![0u8; (2 << 20) + 1000];
        pio::read_exact_at(&input, &mut want, 4096).unwrap();
        assert_eq!(got[..want.len()], want[..]);
        assert!(got[want.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn read_partitions_works_through_a_vhdx() {
        let input = input_file();
        let disk = layout(three(&input)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.vhdx");
        let out = File::create_new(&path).unwrap();
        let options = crate::vhdx::Options::new(crate::vhdx::Identity::derived("disk-test"));
        crate::vhdx::writer::write(&out, &disk.extents, &options, &mut |_| {}).unwrap();
        let vhdx = crate::vhdx::Vhdx::open(&path).unwrap();
        let read =
            read_partitions(|offset, buf| vhdx.read_at(buf, offset).map_err(io::Error::other))
                .unwrap();
        assert_eq!(read, disk.partitions);
    }

    #[test]
    fn corrupt_entries_are_refused() {
        let input = input_file();
        let raw = materialise(&layout(three(&input)).unwrap());
        pio::write_all_at(raw.as_file(), b"X", 2 * 512 + 60).unwrap();
        assert!(matches!(
            read_partitions(read_raw(raw.as_file())),
            Err(Error::MatchEntriesChecksum { .. })
        ));
    }

    #[test]
    fn names_of_36_code_units_fit() {
        let mut l = Layout::new(Guid::derived("slipway.test.disk", b"names"));
        l.partitions = vec![part(&"é".repeat(36), types::ESP, vec![bytes(1, 0)], None)];
        let disk = layout(l).unwrap();
        let raw = materialise(&disk);
        let read = read_partitions(read_raw(raw.as_file())).unwrap();
        assert_eq!(read[0].name, "é".repeat(36));
    }
}
