//! The byte layout of a BCD device element (format 1, stored as REG_BINARY).
//!
//! Layout, from three public sources that agree:
//! - ReactOS `boot/environ/include/bl.h` (Alex Ionescu's reimplementation of Windows' boot
//!   library): `BL_DEVICE_DESCRIPTOR` = type, flags, size, reserved, then for a partition
//!   `BL_PARTITION_ENTRY`-like identification and a `BL_LOCAL_DEVICE` naming the disk;
//!   `BL_DEVICE_TYPE` (boot 5, partition 6) and `BL_PARTITION_TYPE` (GPT 0, MBR 1, raw 2).
//! - Misty Projects, "BCDEdit: Devices Partition - Data"
//!   (<http://www.mistyprojects.co.uk/documents/BCDEdit/files/device_partition.htm>): a real
//!   `partition=C:` element of an MBR disk with its offsets explained (type at 0x10, partition
//!   offset at 0x20, disk signature at 0x38).
//! - Tools that write the GPT form for offline stores: jpz4085/BCD-SYS `update_device.sh`
//!   (a bcdboot for Linux over hivexsh), and a public Python hivex BCD module whose comment
//!   holds a real GPT dump (see the tests), reading partition GUID at 0x20 and disk GUID at
//!   0x38 as Windows GUIDs.
//!
//! ```text
//! 0x00  16  options GUID: another object holding device options, zero when none
//! 0x10   4  device type          (5 boot, 6 partition, ...)
//! 0x14   4  flags                (0)
//! 0x18   4  descriptor size      (0x48: bytes from 0x10 to the end)
//! 0x1c   4  reserved             (0)
//! 0x20  16  partition: GPT partition GUID, or MBR partition byte offset (u64) + 8 zeros
//! 0x30   4  disk kind            (0 = hard disk)
//! 0x34   4  partition style      (0 GPT, 1 MBR, 2 raw)
//! 0x38  16  disk: GPT disk GUID, or MBR disk signature (u32) + 12 zeros
//! 0x48  16  reserved             (zeros)
//! 0x58      end
//! ```
//!
//! A boot device (`device boot`, "the partition bootmgr came from") has the same size with
//! type 5 and zeros from 0x20 on (the `{ramdiskoptions}` element in a public PXE script,
//! `create_bcd.pl`, and the parent of the ramdisk in the Python module's dump).
//!
//! GUIDs are stored the Windows way (first three fields little-endian, last eight bytes as
//! they are), exactly as GPT stores them, so [`Guid::from_bytes`] takes them as they are (the
//! Python module and regipy read them with `uuid.UUID(bytes_le=...)`, the shell tools reverse
//! the first three groups of the text form).
//!
//! A store on the ESP names the ESP (`{bootmgr}`'s `device`) and the Windows partition (the
//! loader's `device` and `osdevice`) with this same partition form: BCD-SYS writes it for
//! both, and regipy's `boot_entry_list` plugin (mkorman90/regipy
//! `regipy/plugins/bcd/boot_entry_list.py`) reads every entry of a real UEFI store, the boot
//! manager included, as partition GUID at 0x20 and disk GUID at 0x38. The GUIDs are the ones
//! `sgdisk -i N` prints as "Partition unique GUID" and `sgdisk -p` as "Disk identifier".

use std::fmt;

use crate::guid::Guid;

/// Offset of the options GUID.
pub const OPTIONS_OFFSET: usize = 0x00;
/// Offset of the device type.
pub const TYPE_OFFSET: usize = 0x10;
/// Offset of the descriptor flags.
pub const FLAGS_OFFSET: usize = 0x14;
/// Offset of the descriptor size (counted from [`TYPE_OFFSET`]).
pub const SIZE_OFFSET: usize = 0x18;
/// Offset of the reserved word that ends the descriptor header.
pub const HEADER_RESERVED_OFFSET: usize = 0x1c;
/// Bytes every device element has: options GUID and descriptor header.
pub const HEADER_LEN: usize = 0x20;
/// Offset of the partition identification (GPT partition GUID or MBR byte offset).
pub const PARTITION_OFFSET: usize = 0x20;
/// Offset of the kind of disk holding the partition.
pub const DISK_KIND_OFFSET: usize = 0x30;
/// Offset of the partition style.
pub const STYLE_OFFSET: usize = 0x34;
/// Offset of the disk identification (GPT disk GUID or MBR signature).
pub const DISK_OFFSET: usize = 0x38;
/// Offset of the reserved tail of a partition or boot descriptor.
pub const TAIL_OFFSET: usize = 0x48;
/// Total length of a partition or boot device element.
pub const ELEMENT_LEN: usize = 0x58;
/// The descriptor size of a partition or boot device: [`ELEMENT_LEN`] minus the options GUID.
pub const DESCRIPTOR_SIZE: u32 = 0x48;

/// Device type: a whole disk.
pub const TYPE_DISK: u32 = 0;
/// Device type: a partition named the pre-Vista way.
pub const TYPE_LEGACY_PARTITION: u32 = 2;
/// Device type: a serial port.
pub const TYPE_SERIAL: u32 = 3;
/// Device type: a network (UDP) device.
pub const TYPE_UDP: u32 = 4;
/// Device type: the device the boot manager was loaded from.
pub const TYPE_BOOT: u32 = 5;
/// Device type: a partition of a disk.
pub const TYPE_PARTITION: u32 = 6;
/// Device type: a device located by searching for a file (VHD boot).
pub const TYPE_LOCATE: u32 = 8;
/// Disk kind of a partition's disk: a local hard disk.
pub const DISK_KIND_HARD_DISK: u32 = 0;
/// Partition style: GPT (partition and disk named by GUIDs).
pub const STYLE_GPT: u32 = 0;
/// Partition style: MBR (partition named by byte offset, disk by signature).
pub const STYLE_MBR: u32 = 1;

/// A BCD device, as the `device` and `osdevice` elements name one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A partition of a GPT disk (`partition=` on a GPT disk).
    Partition {
        /// The GPT header's disk GUID.
        disk: Guid,
        /// The partition entry's unique partition GUID.
        partition: Guid,
    },
    /// A partition of an MBR disk.
    MbrPartition {
        /// The MBR disk signature (LBA 0, offset 0x1b8).
        disk_signature: u32,
        /// The partition's first byte on the disk.
        offset: u64,
    },
    /// `boot`: the partition the boot manager was loaded from.
    Boot,
    /// Any other form (ramdisk, file, VHD locate, options, unknown flags), kept as bytes.
    Other {
        /// The device type at [`TYPE_OFFSET`].
        kind: u32,
        /// The whole element, options GUID included.
        bytes: Vec<u8>,
    },
}

/// Why bytes are not a device element this module accepts, or a device cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceFault {
    /// Shorter than the options GUID and descriptor header.
    #[error("{len} bytes, shorter than the {HEADER_LEN}-byte device header")]
    ReadHeader {
        /// Bytes given.
        len: usize,
    },
    /// A boot or partition descriptor whose size field is not the one the layout has.
    #[error("device type {kind} says its descriptor has {size} bytes, expected {DESCRIPTOR_SIZE}")]
    CheckSize {
        /// The device type.
        kind: u32,
        /// The size field.
        size: u32,
    },
    /// A boot or partition element truncated or with bytes past its descriptor.
    #[error("device type {kind} element has {len} bytes, expected {ELEMENT_LEN}")]
    CheckLength {
        /// The device type.
        kind: u32,
        /// Bytes given.
        len: usize,
    },
    /// An [`Device::Other`] whose `kind` is not the type its bytes hold.
    #[error("device kind {kind} given, but its bytes hold type {found}")]
    MatchKind {
        /// The kind given.
        kind: u32,
        /// The type at [`TYPE_OFFSET`] of the bytes.
        found: u32,
    },
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

fn guid_at(bytes: &[u8], offset: usize) -> Guid {
    let mut raw = [0u8; 16];
    if let Some(slice) = bytes.get(offset..offset + 16) {
        raw.copy_from_slice(slice);
    }
    Guid::from_bytes(raw)
}

fn put_u32(out: &mut [u8], offset: usize, value: u32) {
    if let Some(slice) = out.get_mut(offset..offset + 4) {
        slice.copy_from_slice(&value.to_le_bytes());
    }
}

fn zero(bytes: &[u8], range: std::ops::Range<usize>) -> bool {
    bytes.get(range).is_some_and(|b| b.iter().all(|&x| x == 0))
}

impl Device {
    /// Decodes a device element. A boot or partition element must be exactly
    /// [`ELEMENT_LEN`] bytes with the matching size field; forms this module does not model
    /// (non-zero options, flags or reserved bytes, other types or partition styles) come back
    /// as [`Device::Other`] rather than failing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Device, DeviceFault> {
        if bytes.len() < HEADER_LEN {
            return Err(DeviceFault::ReadHeader { len: bytes.len() });
        }
        let kind = u32_at(bytes, TYPE_OFFSET);
        let other = || Device::Other {
            kind,
            bytes: bytes.to_vec(),
        };
        if kind != TYPE_BOOT && kind != TYPE_PARTITION {
            return Ok(other());
        }
        let size = u32_at(bytes, SIZE_OFFSET);
        if size != DESCRIPTOR_SIZE {
            return Err(DeviceFault::CheckSize { kind, size });
        }
        if bytes.len() != ELEMENT_LEN {
            return Err(DeviceFault::CheckLength {
                kind,
                len: bytes.len(),
            });
        }
        let plain_header = zero(bytes, OPTIONS_OFFSET..TYPE_OFFSET)
            && u32_at(bytes, FLAGS_OFFSET) == 0
            && u32_at(bytes, HEADER_RESERVED_OFFSET) == 0
            && zero(bytes, TAIL_OFFSET..ELEMENT_LEN);
        if !plain_header {
            return Ok(other());
        }
        if kind == TYPE_BOOT {
            return Ok(if zero(bytes, PARTITION_OFFSET..TAIL_OFFSET) {
                Device::Boot
            } else {
                other()
            });
        }
        if u32_at(bytes, DISK_KIND_OFFSET) != DISK_KIND_HARD_DISK {
            return Ok(other());
        }
        match u32_at(bytes, STYLE_OFFSET) {
            STYLE_GPT => Ok(Device::Partition {
                disk: guid_at(bytes, DISK_OFFSET),
                partition: guid_at(bytes, PARTITION_OFFSET),
            }),
            STYLE_MBR
                if zero(bytes, PARTITION_OFFSET + 8..DISK_KIND_OFFSET)
                    && zero(bytes, DISK_OFFSET + 4..TAIL_OFFSET) =>
            {
                let mut offset = [0u8; 8];
                offset.copy_from_slice(&bytes[PARTITION_OFFSET..PARTITION_OFFSET + 8]);
                Ok(Device::MbrPartition {
                    disk_signature: u32_at(bytes, DISK_OFFSET),
                    offset: u64::from_le_bytes(offset),
                })
            }
            _ => Ok(other()),
        }
    }

    /// Encodes the device as the element's bytes. [`Device::Other`] is written as it is, after
    /// checking that its bytes hold a header and its own `kind`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DeviceFault> {
        let mut out = vec![0u8; ELEMENT_LEN];
        match self {
            Device::Other { kind, bytes } => {
                if bytes.len() < HEADER_LEN {
                    return Err(DeviceFault::ReadHeader { len: bytes.len() });
                }
                let found = u32_at(bytes, TYPE_OFFSET);
                if found != *kind {
                    return Err(DeviceFault::MatchKind { kind: *kind, found });
                }
                return Ok(bytes.clone());
            }
            Device::Boot => {
                put_u32(&mut out, TYPE_OFFSET, TYPE_BOOT);
            }
            Device::Partition { disk, partition } => {
                put_u32(&mut out, TYPE_OFFSET, TYPE_PARTITION);
                out[PARTITION_OFFSET..PARTITION_OFFSET + 16].copy_from_slice(&partition.to_bytes());
                put_u32(&mut out, DISK_KIND_OFFSET, DISK_KIND_HARD_DISK);
                put_u32(&mut out, STYLE_OFFSET, STYLE_GPT);
                out[DISK_OFFSET..DISK_OFFSET + 16].copy_from_slice(&disk.to_bytes());
            }
            Device::MbrPartition {
                disk_signature,
                offset,
            } => {
                put_u32(&mut out, TYPE_OFFSET, TYPE_PARTITION);
                out[PARTITION_OFFSET..PARTITION_OFFSET + 8].copy_from_slice(&offset.to_le_bytes());
                put_u32(&mut out, DISK_KIND_OFFSET, DISK_KIND_HARD_DISK);
                put_u32(&mut out, STYLE_OFFSET, STYLE_MBR);
                put_u32(&mut out, DISK_OFFSET, *disk_signature);
            }
        }
        put_u32(&mut out, SIZE_OFFSET, DESCRIPTOR_SIZE);
        Ok(out)
    }
}

impl fmt::Display for Device {
    /// bcdedit-like text: `partition (GPT disk …, partition …)`, `boot`, ….
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Partition { disk, partition } => {
                write!(f, "partition (GPT disk {disk}, partition {partition})")
            }
            Device::MbrPartition {
                disk_signature,
                offset,
            } => write!(
                f,
                "partition (MBR disk {disk_signature:08x}, offset {offset})"
            ),
            Device::Boot => f.write_str("boot"),
            Device::Other { kind, bytes } => {
                write!(f, "device of type {kind} ({} bytes)", bytes.len())
            }
        }
    }
}
