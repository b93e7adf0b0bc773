//! Layouts checked with sgdisk and read back.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::pio;

const MIB: u64 = 1 << 20;

pub(super) fn part(
    name: &str,
    type_guid: Guid,
    content: Vec<Extent>,
    size: Option<u64>,
) -> Partition {
    Partition {
        type_guid,
        unique_guid: Guid::derived("slipway.test.partition", name.as_bytes()),
        name: name.into(),
        attributes: 0,
        content,
        size,
    }
}

pub(super) fn bytes(len: usize, seed: u8) -> Extent {
    let v: Vec<u8> = (0..=255u8)
        .cycle()
        .map(|b| b.wrapping_mul(31) ^ seed)
        .take(len)
        .collect();
    Extent::Bytes(v.into())
}

/// An anonymous file of 3 MiB of patterned, non-zero bytes.
pub(super) fn input_file() -> Arc<File> {
    let mut f = tempfile::tempfile().unwrap();
    let v: Vec<u8> = (1..=251u8).cycle().take(3 << 20).collect();
    f.write_all(&v).unwrap();
    Arc::new(f)
}

/// ESP with odd-sized in-memory content, a read-only root from a file range, and a verity
/// partition with an explicit size.
pub(super) fn three(input: &Arc<File>) -> Layout {
    let mut root = part(
        "root-x86-64",
        types::ROOT_X86_64,
        vec![Extent::File {
            file: input.clone(),
            offset: 4096,
            len: 2 * MIB + 1000,
        }],
        None,
    );
    root.attributes = ATTR_READ_ONLY;
    let mut layout = Layout::new(Guid::derived("slipway.test.disk", b"three"));
    layout.partitions = vec![
        part("esp", types::ESP, vec![bytes(3000, 7)], None),
        root,
        part(
            "root-x86-64-verity",
            types::ROOT_X86_64_VERITY,
            vec![bytes(5000, 9), Extent::Zero(100)],
            Some(64 * 1024),
        ),
    ];
    layout
}

/// Writes the extents out as a raw disk (sparse where they are zeros).
pub(super) fn materialise(disk: &Disk) -> tempfile::NamedTempFile {
    let mut out = tempfile::NamedTempFile::new().unwrap();
    for extent in &disk.extents {
        match extent {
            Extent::File { file, offset, len } => {
                let mut buf = vec![0u8; usize::try_from(*len).unwrap()];
                pio::read_exact_at(file, &mut buf, *offset).unwrap();
                out.write_all(&buf).unwrap();
            }
            Extent::Bytes(b) => out.write_all(b).unwrap(),
            Extent::Zero(n) => {
                out.seek(SeekFrom::Current(i64::try_from(*n).unwrap()))
                    .unwrap();
            }
        }
    }
    out.as_file().set_len(disk.size).unwrap();
    out
}

pub(super) fn read_raw(file: &File) -> impl FnMut(u64, &mut [u8]) -> io::Result<()> + '_ {
    |offset, buf| pio::read_exact_at(file, buf, offset)
}

pub(super) fn sgdisk(args: &[&str], path: &Path) -> String {
    let out = Command::new("/usr/sbin/sgdisk")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sgdisk {args:?}: {text}");
    text
}

#[test]
fn same_inputs_give_identical_disks() {
    let input = input_file();
    let a = materialise(&layout(three(&input)).unwrap());
    let b = materialise(&layout(three(&input)).unwrap());
    assert_eq!(
        std::fs::read(a.path()).unwrap(),
        std::fs::read(b.path()).unwrap()
    );
}

#[test]
fn extents_add_up_without_empty_or_adjacent_zeros() {
    let input = input_file();
    let disk = layout(three(&input)).unwrap();
    assert_eq!(disk.extents.iter().map(Extent::len).sum::<u64>(), disk.size);
    assert!(disk.extents.iter().all(|e| !e.is_empty()));
    assert!(
        disk.extents
            .windows(2)
            .all(|w| !matches!(w, [Extent::Zero(_), Extent::Zero(_)]))
    );
    // Just big enough: the verity partition ends at 5 MiB + 64 KiB, plus 33 sectors,
    // rounded up to 1 MiB.
    assert_eq!(disk.size, 6 * MIB);
}

#[test]
fn odd_sizes_are_rounded_up_and_padded_with_zeros() {
    let mut l = Layout::new(Guid::derived("slipway.test.disk", b"odd"));
    l.alignment = 512;
    l.partitions = vec![
        part("a", types::LINUX_GENERIC, vec![bytes(1000, 1)], None),
        part("b", types::LINUX_GENERIC, vec![bytes(1000, 2)], Some(4096)),
    ];
    let disk = layout(l).unwrap();
    let [a, b] = &disk.partitions[..] else {
        panic!("two partitions")
    };
    assert_eq!((a.first_lba, a.last_lba, a.size), (34, 35, 1024));
    assert_eq!((b.first_lba, b.last_lba, b.size), (36, 43, 4096));
    assert_eq!(disk.size, (44 + 33) * 512);
    let raw = std::fs::read(materialise(&disk).path()).unwrap();
    assert!(raw[34 * 512 + 1000..36 * 512].iter().all(|&x| x == 0));
    assert!(raw[36 * 512 + 1000..44 * 512].iter().all(|&x| x == 0));
    let Extent::Bytes(want) = bytes(1000, 2) else {
        unreachable!()
    };
    assert_eq!(raw[36 * 512..36 * 512 + 1000], want[..]);
    let verify = sgdisk(&["-v"], materialise(&disk).path());
    assert!(verify.contains("No problems found") && !verify.contains("corrupt"));
}

#[test]
fn an_explicit_disk_size_puts_the_backup_at_its_end() {
    let mut l = three(&input_file());
    l.disk_size = Some(3 << 40);
    let disk = layout(l).unwrap();
    assert_eq!(disk.size, 3 << 40);
    let Some(Extent::Bytes(tail)) = disk.extents.last() else {
        panic!("tail")
    };
    let backup = gpt::Header::decode(tail[tail.len() - 512..].try_into().unwrap()).unwrap();
    assert_eq!((backup.my_lba, backup.alternate_lba), ((3 << 31) - 1, 1));
    assert_eq!(backup.entries_lba, (3 << 31) - 33);
    assert_eq!(backup.last_usable_lba, (3 << 31) - 34);
    // Past 2 TiB the protective MBR's size saturates at 2^32 - 1 sectors.
    let Some(Extent::Bytes(head)) = disk.extents.first() else {
        panic!("head")
    };
    assert_eq!(head[446 + 4], 0xEE);
    assert_eq!(head[446 + 12..446 + 16], [0xFF; 4]);
    assert_eq!(head[510..512], [0x55, 0xAA]);
}

#[test]
fn a_disk_too_small_says_how_much_is_needed() {
    let mut l = three(&input_file());
    l.disk_size = Some(5 * MIB);
    let Err(err) = layout(l) else {
        panic!("laid out")
    };
    let needed = 5 * MIB + 64 * 1024 + 33 * 512;
    let fit = Error::FitPartitions {
        needed,
        disk_size: 5 * MIB,
    };
    assert_eq!(format!("{err:?}"), format!("{fit:?}"));
    assert!(err.to_string().contains(&needed.to_string()));
}

fn fails(edit: impl FnOnce(&mut Layout)) -> Error {
    let mut l = Layout::new(Guid::derived("slipway.test.disk", b"bad"));
    l.partitions = vec![
        part("a", types::LINUX_GENERIC, vec![bytes(10, 1)], None),
        part("b", types::LINUX_GENERIC, vec![bytes(10, 2)], None),
    ];
    edit(&mut l);
    match layout(l) {
        Ok(disk) => panic!("laid out: {:?}", disk.partitions),
        Err(e) => e,
    }
}

#[test]
fn every_layout_error_is_reported() {
    assert!(matches!(
        fails(|l| l.alignment = 0),
        Error::ValidateAlignment { alignment: 0 }
    ));
    assert!(matches!(
        fails(|l| l.alignment = 1000),
        Error::ValidateAlignment { .. }
    ));
    assert!(matches!(
        fails(|l| l.disk_size = Some(100 * MIB + 1)),
        Error::ValidateDiskSize { .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions = vec![l.partitions[0].clone(); 129]),
        Error::CountPartitions {
            count: 129,
            max: 128
        }
    ));
    assert!(matches!(
        fails(|l| l.partitions[1].name = "n".repeat(37)),
        Error::EncodeName {
            number: 2,
            units: 37,
            ..
        }
    ));
    // Outside the basic plane a character takes two code units.
    assert!(matches!(
        fails(|l| l.partitions[0].name = "\u{1F980}".repeat(19)),
        Error::EncodeName { units: 38, .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[0].type_guid = Guid::ZERO),
        Error::ValidateType { number: 1, .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[1].unique_guid = l.partitions[0].unique_guid),
        Error::ValidateUniqueGuid { number: 2, .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[0].unique_guid = Guid::ZERO),
        Error::ValidateUniqueGuid { number: 1, .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[0].content.clear()),
        Error::ValidateSize {
            number: 1,
            size: 0,
            ..
        }
    ));
    assert!(matches!(
        fails(|l| l.partitions[0].size = Some(1000)),
        Error::ValidateSize { size: 1000, .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[0].size = Some(0)),
        Error::ValidateSize { size: 0, .. }
    ));
    assert!(matches!(
        fails(|l| {
            l.partitions[1].content = vec![bytes(1000, 2)];
            l.partitions[1].size = Some(512);
        }),
        Error::FitContent { number: 2, .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[1].content = vec![Extent::Zero(u64::MAX), Extent::Zero(1)]),
        Error::ComputeLayout { .. }
    ));
    assert!(matches!(
        fails(|l| l.partitions[0].size = Some(u64::MAX - 511)),
        Error::ComputeLayout { .. }
    ));
}
