//! Tests of the device layout and of the element encoding.

use super::device::{self, Device, DeviceFault};
use super::element::{EncodeFault, ValueFault};
use super::ids::*;
use super::*;
use crate::guid::Guid;

/// Bytes from a `.reg`-style list: `"00,0a,ff"` with any whitespace.
fn hex(text: &str) -> Vec<u8> {
    text.split(',')
        .map(|b| u8::from_str_radix(b.trim(), 16).unwrap())
        .collect()
}

fn guid(text: &str) -> Guid {
    text.parse().unwrap()
}

/// A real `partition=C:` osloader device element of a Windows 8.1 install on an MBR disk,
/// from Misty Projects, "BCDEdit: Devices Partition - Data"
/// (http://www.mistyprojects.co.uk/documents/BCDEdit/files/device_partition.htm).
const MISTY_MBR_PARTITION: &str = "00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,06,00,00,00,
    00,00,00,00,48,00,00,00,00,00,00,00,00,00,f0,15,00,00,00,00,
    00,00,00,00,00,00,00,00,00,00,00,00,01,00,00,00,f1,a8,eb,b3,
    00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,
    00,00,00,00,00,00,00,00";

/// A real ramdisk device element (`ramdisk=[partition]\sources\boot.wim,{ramdiskoptions}`)
/// whose parent is a partition of a GPT disk: the "GPT example" dump in the comment of a
/// public Python hivex BCD module (`decode_device_data`; the search index gave its text, not
/// its repository name). Bytes 0x44..0x8c are a partition descriptor as in a top-level
/// device element.
const PY_GPT_RAMDISK: &str = "c8,dc,19,76,fe,fa,d9,11,b4,11,00,04,76,eb,a2,5f,
    00,00,00,00,01,00,00,00,a0,00,00,00,00,00,00,00,
    03,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,
    00,00,00,00,00,00,00,00,01,00,00,00,78,00,00,00,
    05,00,00,00,06,00,00,00,00,00,00,00,48,00,00,00,
    00,00,00,00,0b,da,9b,f8,9f,8a,2a,47,aa,c8,80,44,
    fa,df,b2,40,00,00,00,00,00,00,00,00,46,7c,1f,6e,
    39,06,86,43,82,e3,e2,0c,98,94,80,25,00,00,00,00,
    00,00,00,00,00,00,00,00,00,00,00,00,5c,00,73,00,
    6f,00,75,00,72,00,63,00,65,00,73,00,5c,00,62,00,
    6f,00,6f,00,74,00,2e,00,77,00,69,00,6d,00,00,00";

/// The `31000003` (ramdisk SDI device) element `boot` that a public PXE script,
/// `create_bcd.pl`, writes with hivexsh.
const PXE_BOOT_DEVICE: &str = "00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,05,00,00,00,
    00,00,00,00,48,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,
    00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,
    00,00,00,00,00,00,00,00";

#[test]
fn real_mbr_partition_element_decodes_and_encodes_back() {
    let bytes = hex(MISTY_MBR_PARTITION);
    assert_eq!(bytes.len(), device::ELEMENT_LEN);
    let device = Device::from_bytes(&bytes).unwrap();
    assert_eq!(
        device,
        Device::MbrPartition {
            disk_signature: 0xb3eb_a8f1,
            offset: 0x15f0_0000,
        }
    );
    assert_eq!(device.to_bytes().unwrap(), bytes);
}

#[test]
fn real_gpt_partition_descriptor_decodes_and_encodes_back() {
    let ramdisk = hex(PY_GPT_RAMDISK);
    // As the top-level element of a partition device: a zero options GUID, then the
    // descriptor the ramdisk names as its parent.
    let mut element = vec![0u8; 16];
    element.extend_from_slice(&ramdisk[0x44..0x8c]);
    let device = Device::from_bytes(&element).unwrap();
    assert_eq!(
        device,
        Device::Partition {
            disk: guid("6e1f7c46-0639-4386-82e3-e20c98948025"),
            partition: guid("f89bda0b-8a9f-472a-aac8-8044fadfb240"),
        }
    );
    assert_eq!(device.to_bytes().unwrap(), element);
    // The ramdisk itself is a form this module keeps as bytes.
    let whole = Device::from_bytes(&ramdisk).unwrap();
    assert_eq!(
        whole,
        Device::Other {
            kind: 0,
            bytes: ramdisk.clone()
        }
    );
    assert_eq!(whole.to_bytes().unwrap(), ramdisk);
}

#[test]
fn real_boot_device_element_decodes_and_encodes_back() {
    let bytes = hex(PXE_BOOT_DEVICE);
    assert_eq!(Device::from_bytes(&bytes).unwrap(), Device::Boot);
    assert_eq!(Device::Boot.to_bytes().unwrap(), bytes);
}

#[test]
fn partition_fields_sit_at_the_documented_offsets() {
    let disk = guid("11223344-5566-7788-99aa-bbccddeeff00");
    let partition = guid("a1a2a3a4-b1b2-c1c2-d1d2-e1e2e3e4e5e6");
    let bytes = Device::Partition { disk, partition }.to_bytes().unwrap();
    assert_eq!(bytes.len(), 0x58);
    assert_eq!(&bytes[device::OPTIONS_OFFSET..0x10], &[0u8; 16]);
    assert_eq!(&bytes[device::TYPE_OFFSET..0x14], &6u32.to_le_bytes());
    assert_eq!(&bytes[device::FLAGS_OFFSET..0x18], &[0u8; 4]);
    assert_eq!(&bytes[device::SIZE_OFFSET..0x1c], &0x48u32.to_le_bytes());
    // Windows GUID byte order, as GPT stores it: 44 33 22 11 66 55 88 77 99 aa ...
    assert_eq!(
        &bytes[device::PARTITION_OFFSET..0x30],
        &hex("a4,a3,a2,a1,b2,b1,c2,c1,d1,d2,e1,e2,e3,e4,e5,e6")[..]
    );
    assert_eq!(&bytes[device::DISK_KIND_OFFSET..0x34], &[0u8; 4]);
    assert_eq!(&bytes[device::STYLE_OFFSET..0x38], &[0u8; 4]);
    assert_eq!(
        &bytes[device::DISK_OFFSET..0x48],
        &hex("44,33,22,11,66,55,88,77,99,aa,bb,cc,dd,ee,ff,00")[..]
    );
    assert_eq!(&bytes[device::TAIL_OFFSET..], &[0u8; 16]);
}

#[test]
fn unmodelled_device_forms_are_kept_as_bytes() {
    let base = Device::Partition {
        disk: Guid::derived("t", b"d"),
        partition: Guid::derived("t", b"p"),
    }
    .to_bytes()
    .unwrap();
    let changes: [(usize, u8); 5] = [
        (0x00, 1),                     // options GUID
        (device::FLAGS_OFFSET, 1),     // flags
        (device::DISK_KIND_OFFSET, 6), // a virtual disk
        (device::STYLE_OFFSET, 2),     // raw partition style
        (device::TAIL_OFFSET + 3, 9),  // reserved tail
    ];
    for (offset, byte) in changes {
        let mut bytes = base.clone();
        bytes[offset] = byte;
        let decoded = Device::from_bytes(&bytes).unwrap();
        assert_eq!(
            decoded,
            Device::Other {
                kind: 6,
                bytes: bytes.clone()
            },
            "{offset:#x}"
        );
        assert_eq!(decoded.to_bytes().unwrap(), bytes);
    }
    // MBR padding that is not zero, and a boot device with a body.
    let mut mbr = hex(MISTY_MBR_PARTITION);
    mbr[device::DISK_OFFSET + 5] = 1;
    assert!(matches!(
        Device::from_bytes(&mbr),
        Ok(Device::Other { kind: 6, .. })
    ));
    let mut boot = hex(PXE_BOOT_DEVICE);
    boot[0x30] = 1;
    assert!(matches!(
        Device::from_bytes(&boot),
        Ok(Device::Other { kind: 5, .. })
    ));
}

#[test]
fn device_shorter_than_its_header_is_refused() {
    assert_eq!(
        Device::from_bytes(&[0u8; 31]),
        Err(DeviceFault::ReadHeader { len: 31 })
    );
    let short = Device::Other {
        kind: 0,
        bytes: vec![0; 8],
    };
    assert_eq!(short.to_bytes(), Err(DeviceFault::ReadHeader { len: 8 }));
}

#[test]
fn device_with_a_wrong_size_field_is_refused() {
    let mut bytes = hex(MISTY_MBR_PARTITION);
    bytes[device::SIZE_OFFSET] = 0x40;
    assert_eq!(
        Device::from_bytes(&bytes),
        Err(DeviceFault::CheckSize {
            kind: 6,
            size: 0x40
        })
    );
}

#[test]
fn truncated_or_oversized_device_is_refused() {
    let bytes = hex(MISTY_MBR_PARTITION);
    assert_eq!(
        Device::from_bytes(&bytes[..0x57]),
        Err(DeviceFault::CheckLength { kind: 6, len: 0x57 })
    );
    let mut long = hex(PXE_BOOT_DEVICE);
    long.push(0);
    assert_eq!(
        Device::from_bytes(&long),
        Err(DeviceFault::CheckLength { kind: 5, len: 0x59 })
    );
}

#[test]
fn other_device_whose_kind_disagrees_with_its_bytes_is_refused() {
    let other = Device::Other {
        kind: 8,
        bytes: hex(PXE_BOOT_DEVICE),
    };
    assert_eq!(
        other.to_bytes(),
        Err(DeviceFault::MatchKind { kind: 8, found: 5 })
    );
}

/// Values as jpz4085/BCD-SYS `winload.sh` writes them with hivexsh for a new loader.
#[test]
fn encodings_match_what_an_offline_bcdboot_writes() {
    let inherit = hex(
        "7b,00,36,00,65,00,66,00,62,00,35,00,32,00,62,00,66,00,2d,00,31,00,37,00,36,00,36,00,
         2d,00,34,00,31,00,64,00,62,00,2d,00,61,00,36,00,62,00,33,00,2d,00,30,00,65,00,65,00,
         35,00,65,00,66,00,66,00,37,00,32,00,62,00,64,00,37,00,7d,00,00,00,00,00",
    );
    let cases = [
        (
            INHERITED_OBJECTS,
            ElementValue::ObjectList(vec![BOOTLOADERSETTINGS]),
            REG_MULTI_SZ,
            inherit,
        ),
        (
            ISOLATED_CONTEXT,
            ElementValue::Boolean(true),
            REG_BINARY,
            hex("01"),
        ),
        (
            ALLOWED_IN_MEMORY_SETTINGS,
            ElementValue::IntegerList(vec![ALLOWED_IN_MEMORY_DEFAULT]),
            REG_BINARY,
            hex("75,00,00,15,00,00,00,00"),
        ),
        (
            NX_POLICY,
            ElementValue::Integer(NX_OPT_IN),
            REG_BINARY,
            hex("00,00,00,00,00,00,00,00"),
        ),
        (
            BOOT_MENU_POLICY,
            ElementValue::Integer(BOOT_MENU_POLICY_STANDARD),
            REG_BINARY,
            hex("01,00,00,00,00,00,00,00"),
        ),
        (
            SYSTEM_ROOT,
            ElementValue::String(WINDOWS_ROOT.into()),
            REG_SZ,
            hex("5c,00,57,00,69,00,6e,00,64,00,6f,00,77,00,73,00,00,00"),
        ),
        (
            DEFAULT_OBJECT,
            ElementValue::Object(BOOTMGR),
            REG_SZ,
            "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
    ];
    for (element_type, value, kind, data) in cases {
        let encoded = encode(element_type, &value).unwrap();
        assert_eq!(
            encoded,
            RegValue {
                kind,
                data: data.clone()
            },
            "{element_type:08x}"
        );
        assert_eq!(decode(element_type, kind, &data).unwrap(), value);
    }
}

fn sample_values() -> Vec<(u32, ElementValue)> {
    vec![
        (
            APPLICATION_DEVICE,
            ElementValue::Device(Device::Partition {
                disk: Guid::derived("t", b"disk"),
                partition: Guid::derived("t", b"part"),
            }),
        ),
        (OS_DEVICE, ElementValue::Device(Device::Boot)),
        (
            DESCRIPTION,
            ElementValue::String("Windows Server — nœud".into()),
        ),
        (DESCRIPTION, ElementValue::String(String::new())),
        (
            DEFAULT_OBJECT,
            ElementValue::Object(Guid::derived("t", b"loader")),
        ),
        (
            DISPLAY_ORDER,
            ElementValue::ObjectList(vec![BOOTMGR, MEMDIAG]),
        ),
        (DISPLAY_ORDER, ElementValue::ObjectList(Vec::new())),
        (TIMEOUT, ElementValue::Integer(u64::MAX)),
        (ISOLATED_CONTEXT, ElementValue::Boolean(false)),
        (
            ALLOWED_IN_MEMORY_SETTINGS,
            ElementValue::IntegerList(vec![1, 2, u64::MAX]),
        ),
        (0x1800_0001, ElementValue::Binary(vec![1, 2, 3])),
    ]
}

#[test]
fn every_variant_round_trips() {
    for (element_type, value) in sample_values() {
        let encoded = encode(element_type, &value).unwrap();
        assert_eq!(encoded.kind, value.format().registry_kind());
        assert_eq!(
            decode(element_type, encoded.kind, &encoded.data).unwrap(),
            value
        );
    }
}

#[test]
fn value_of_another_format_is_refused() {
    for (element_type, value) in sample_values() {
        for other in [
            DESCRIPTION,
            TIMEOUT,
            APPLICATION_DEVICE,
            DISPLAY_ORDER,
            ISOLATED_CONTEXT,
        ] {
            if Format::of(other) == Some(value.format()) {
                continue;
            }
            let err = encode(other, &value).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::EncodeElement {
                        reason: EncodeFault::MatchFormat { .. },
                        ..
                    }
                ),
                "{element_type:08x} as {other:08x}: {err:?}"
            );
        }
    }
}

#[test]
fn encode_faults() {
    let err = encode(0x1900_0001, &ElementValue::Integer(1)).unwrap_err();
    assert!(matches!(
        err,
        Error::EncodeElement {
            reason: EncodeFault::CheckFormat { format: 9 },
            ..
        }
    ));
    let err = encode(DESCRIPTION, &ElementValue::String("a\0b".into())).unwrap_err();
    assert!(matches!(
        err,
        Error::EncodeElement {
            reason: EncodeFault::CheckString { .. },
            ..
        }
    ));
    let bad = ElementValue::Device(Device::Other {
        kind: 1,
        bytes: vec![],
    });
    let err = encode(APPLICATION_DEVICE, &bad).unwrap_err();
    assert!(matches!(
        err,
        Error::EncodeElement {
            reason: EncodeFault::EncodeDevice(DeviceFault::ReadHeader { len: 0 }),
            ..
        }
    ));
}

fn decode_fault(element_type: u32, kind: u32, data: &[u8]) -> ValueFault {
    match decode(element_type, kind, data) {
        Err(Error::DecodeElement { reason, .. }) => reason,
        other => panic!("expected a decode fault, got {other:?}"),
    }
}

#[test]
fn decode_faults() {
    let utf16 = |t: &str| -> Vec<u8> { t.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    assert_eq!(
        decode_fault(0x1000_0001, REG_BINARY, &[]),
        ValueFault::CheckFormat { format: 0 }
    );
    assert_eq!(
        decode_fault(DESCRIPTION, REG_BINARY, &[]),
        ValueFault::MatchKind {
            kind: REG_BINARY,
            format: Format::String,
            expected: REG_SZ
        }
    );
    assert_eq!(
        decode_fault(DESCRIPTION, REG_SZ, &[0x41]),
        ValueFault::ReadUtf16 { len: 1 }
    );
    assert_eq!(
        decode_fault(DESCRIPTION, REG_SZ, &[0x00, 0xd8]),
        ValueFault::DecodeUtf16
    );
    assert_eq!(
        decode_fault(DESCRIPTION, REG_SZ, &utf16("a\0b\0")),
        ValueFault::CheckString
    );
    assert_eq!(
        decode_fault(
            DISPLAY_ORDER,
            REG_MULTI_SZ,
            &utf16("{9dea862c-5cdd-4e70-acc1-f32b344d4795}\0\0x\0\0")
        ),
        ValueFault::CheckList { index: 1 }
    );
    assert!(matches!(
        decode_fault(DEFAULT_OBJECT, REG_SZ, &utf16("{bootmgr}\0")),
        ValueFault::ParseGuid(_)
    ));
    assert_eq!(
        decode_fault(TIMEOUT, REG_BINARY, &[0; 4]),
        ValueFault::ReadInteger { len: 4 }
    );
    assert_eq!(
        decode_fault(ALLOWED_IN_MEMORY_SETTINGS, REG_BINARY, &[0; 12]),
        ValueFault::ReadIntegerList { len: 12 }
    );
    assert_eq!(
        decode_fault(ISOLATED_CONTEXT, REG_BINARY, &[2]),
        ValueFault::ReadBoolean { data: vec![2] }
    );
    assert_eq!(
        decode_fault(ISOLATED_CONTEXT, REG_BINARY, &[]),
        ValueFault::ReadBoolean { data: vec![] }
    );
    // A device fault is reported as such, with the element type.
    assert!(matches!(
        decode(APPLICATION_DEVICE, REG_BINARY, &[0; 4]),
        Err(Error::DecodeDevice {
            element_type: APPLICATION_DEVICE,
            reason: DeviceFault::ReadHeader { len: 4 }
        })
    ));
}

#[test]
fn lenient_text_forms_decode() {
    let utf16 = |t: &str| -> Vec<u8> { t.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    // No terminator, or padding NULs, and a list without its final NUL.
    assert_eq!(
        decode(DESCRIPTION, REG_SZ, &utf16("x")).unwrap(),
        ElementValue::String("x".into())
    );
    assert_eq!(
        decode(DESCRIPTION, REG_SZ, &utf16("x\0\0\0")).unwrap(),
        ElementValue::String("x".into())
    );
    let upper = utf16("{9DEA862C-5CDD-4E70-ACC1-F32B344D4795}\0");
    assert_eq!(
        decode(DISPLAY_ORDER, REG_MULTI_SZ, &upper).unwrap(),
        ElementValue::ObjectList(vec![BOOTMGR])
    );
}

/// A small xorshift generator: the tests stay deterministic without a new crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
    fn word(&mut self) -> u32 {
        let b = self.next().to_le_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
    fn guid(&mut self) -> Guid {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&self.bytes(16));
        Guid::from_bytes(raw)
    }
    fn text(&mut self) -> String {
        const CHARS: [char; 8] = ['a', 'Z', '\\', ' ', '.', 'é', '—', '𝄞'];
        (0..self.below(12)).map(|_| CHARS[self.below(8)]).collect()
    }
}

const TYPES: [u32; 9] = [
    APPLICATION_DEVICE,
    DESCRIPTION,
    DEFAULT_OBJECT,
    DISPLAY_ORDER,
    TIMEOUT,
    ISOLATED_CONTEXT,
    ALLOWED_IN_MEMORY_SETTINGS,
    0x1800_0001,
    0x1f00_0001,
];

#[test]
fn random_bytes_never_panic_and_what_decodes_re_encodes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for round in 0..40_000 {
        let element_type = TYPES[rng.below(TYPES.len())];
        let kinds = [REG_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, rng.word()];
        let kind = kinds[rng.below(5)];
        // Half the inputs start from a valid encoding of a device, then get mutated.
        let mut data = if round % 2 == 0 {
            let device = match rng.below(3) {
                0 => Device::Boot,
                1 => Device::MbrPartition {
                    disk_signature: rng.word(),
                    offset: rng.next(),
                },
                _ => Device::Partition {
                    disk: rng.guid(),
                    partition: rng.guid(),
                },
            };
            device.to_bytes().unwrap()
        } else {
            let len = rng.below(130);
            rng.bytes(len)
        };
        for _ in 0..rng.below(4) {
            if data.is_empty() {
                break;
            }
            let at = rng.below(data.len());
            data[at] = rng.byte();
        }
        if rng.below(8) == 0 {
            data.truncate(rng.below(data.len() + 1));
        }
        if let Ok(value) = decode(element_type, kind, &data) {
            decoded += 1;
            let again = encode(element_type, &value).unwrap();
            assert_eq!(
                decode(element_type, again.kind, &again.data).unwrap(),
                value
            );
        }
    }
    assert!(
        decoded > 1000,
        "only {decoded} inputs decoded: the generator is too weak"
    );
}

#[test]
fn random_values_round_trip() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..5_000 {
        let (element_type, value) = match rng.below(8) {
            0 => {
                let device = match rng.below(4) {
                    0 => Device::Boot,
                    1 => Device::MbrPartition {
                        disk_signature: rng.word(),
                        offset: rng.next(),
                    },
                    2 => Device::Partition {
                        disk: rng.guid(),
                        partition: rng.guid(),
                    },
                    _ => {
                        let kind = [0, 2, 3, 4, 8][rng.below(5)];
                        let len = 32 + rng.below(100);
                        let mut bytes = rng.bytes(len);
                        bytes[0x10..0x14].copy_from_slice(&u32::to_le_bytes(kind));
                        Device::Other { kind, bytes }
                    }
                };
                (OS_DEVICE, ElementValue::Device(device))
            }
            1 => (DESCRIPTION, ElementValue::String(rng.text())),
            2 => (DEFAULT_OBJECT, ElementValue::Object(rng.guid())),
            3 => (
                DISPLAY_ORDER,
                ElementValue::ObjectList((0..rng.below(5)).map(|_| rng.guid()).collect()),
            ),
            4 => (TIMEOUT, ElementValue::Integer(rng.next())),
            5 => (ISOLATED_CONTEXT, ElementValue::Boolean(rng.below(2) == 1)),
            6 => (
                ALLOWED_IN_MEMORY_SETTINGS,
                ElementValue::IntegerList((0..rng.below(5)).map(|_| rng.next()).collect()),
            ),
            _ => {
                let len = rng.below(40);
                (0x1800_0002, ElementValue::Binary(rng.bytes(len)))
            }
        };
        let encoded = encode(element_type, &value).unwrap();
        assert_eq!(
            decode(element_type, encoded.kind, &encoded.data).unwrap(),
            value
        );
    }
}

/// The GUID bytes of a device element are the bytes GPT stores: a disk made by sgdisk (the
/// tool the image tests check GPT layouts with) holds at its disk-GUID and partition-entry
/// offsets exactly what the element holds at [`device::DISK_OFFSET`] and
/// [`device::PARTITION_OFFSET`], and `sgdisk -i` prints the GUIDs the element decodes to.
#[test]
fn device_guids_are_stored_as_gpt_stores_them() {
    use std::process::Command;
    let disk = Guid::derived("bcd-test", b"disk");
    let esp = Guid::derived("bcd-test", b"esp");
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(2 << 20).unwrap();
    let out = Command::new("sgdisk")
        .args(["-o", "-n", "1:2048:+512K", "-t", "1:EF00"])
        .arg(format!("-u1:{esp}"))
        .arg(format!("-U{disk}"))
        .arg(file.path())
        .output()
        .expect("run sgdisk (Debian package gdisk)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = std::fs::read(file.path()).unwrap();
    let element = Device::Partition {
        disk,
        partition: esp,
    }
    .to_bytes()
    .unwrap();
    // GPT header at LBA 1: disk GUID at 0x38; entry 1 at LBA 2: unique GUID at 0x10.
    assert_eq!(
        &raw[0x200 + 0x38..0x200 + 0x48],
        &element[device::DISK_OFFSET..0x48]
    );
    assert_eq!(
        &raw[0x400 + 0x10..0x400 + 0x20],
        &element[device::PARTITION_OFFSET..0x30]
    );

    let info = Command::new("sgdisk")
        .arg("-i1")
        .arg(file.path())
        .output()
        .unwrap();
    let info = String::from_utf8(info.stdout).unwrap();
    let printed = info
        .lines()
        .find_map(|l| l.strip_prefix("Partition unique GUID: "))
        .unwrap();
    let listing = Command::new("sgdisk")
        .arg("-p")
        .arg(file.path())
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let printed_disk = listing
        .lines()
        .find_map(|l| l.strip_prefix("Disk identifier (GUID): "))
        .unwrap();
    assert_eq!(
        Device::from_bytes(&element).unwrap(),
        Device::Partition {
            disk: guid(printed_disk.trim()),
            partition: guid(printed.trim()),
        }
    );
}
