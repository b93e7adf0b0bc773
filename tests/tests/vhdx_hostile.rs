//! Hostile and damaged VHDX files: each is refused with a clear error (or, for one bad copy of
//! a doubled structure, read with a note), never a panic, an overflow or a huge allocation.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use images::vhdx::format::{
    BatEntry, HEADER_OFFSETS, PayloadState, REGION_TABLE_OFFSETS, RegionEntry, RegionTable, item,
};
use images::vhdx::{Identity, Options, Vhdx, check};
use tests::{chain, make_raw, patch, read};

const MIB: u64 = 1 << 20;
const METADATA: u64 = 2 * MIB;
const BAT: u64 = 3 * MIB;

/// A clean 8 MiB dynamic disk with data in blocks 0 and 2 (at 4 MiB and 5 MiB in the file).
fn good(dir: &Path, name: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    make_raw(&raw, 8 * MIB, &[(0, MIB), (2 * MIB, MIB)], 11);
    let vhdx = dir.join(format!("{name}.vhdx"));
    tests::convert(&raw, &vhdx, &Options::new(Identity::derived(name)));
    vhdx
}

fn set_bat(path: &Path, index: u64, entry: BatEntry) {
    patch(path, BAT + index * 8, &entry.0.to_le_bytes());
}

/// Rewrites both region tables with `edit` applied.
fn edit_regions(path: &Path, edit: impl Fn(&mut RegionTable)) {
    let mut table = RegionTable::decode(&read(path, REGION_TABLE_OFFSETS[0], 65536)).unwrap();
    edit(&mut table);
    for offset in REGION_TABLE_OFFSETS {
        patch(path, offset, &table.encode());
    }
}

/// Overwrites the value of metadata item number `n` (in our writer's order).
fn set_item(path: &Path, n: u64, bytes: &[u8]) {
    let offset = u32::from_le_bytes(
        read(path, METADATA + 32 + n * 32 + 16, 4)
            .try_into()
            .unwrap(),
    );
    patch(path, METADATA + u64::from(offset), bytes);
}

/// Opens the file, expecting a refusal whose text contains `needle`; `check` must agree.
fn refused(path: &Path, needle: &str) {
    let err = Vhdx::open(path).expect_err("a damaged file must be refused");
    let text = chain(&err);
    assert!(text.contains(needle), "expected {needle:?} in: {text}");
    assert!(
        !check::check(path).is_clean(),
        "check must report {}",
        path.display()
    );
}

#[test]
fn truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (len, needle) in [
        (0, "file identifier"),
        (100, "file identifier"),
        (64 * 1024 + 10, "neither header copy is valid"),
        (200 * 1024, "neither region table copy is valid"),
        (2 * MIB + 100, "metadata table"),
        (3 * MIB + 4, "the BAT needs"),
        (4 * MIB + 1000, "past the end"),
    ] {
        let path = good(dir.path(), &format!("t{len}"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        refused(&path, needle);
    }
}

#[test]
fn one_bad_header_copy_is_noted_two_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = good(dir.path(), "h");
    patch(&path, HEADER_OFFSETS[1] + 200, &[0xFF]);
    let vhdx = Vhdx::open(&path).unwrap();
    assert!(
        vhdx.notes()
            .iter()
            .any(|n| n.contains("header 2 is not valid")),
        "{:?}",
        vhdx.notes()
    );
    assert_eq!(vhdx.header_slot(), 0);
    let report = check::check(&path);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    patch(&path, HEADER_OFFSETS[0] + 200, &[0xFF]);
    refused(&path, "checksum");

    let path = good(dir.path(), "r");
    patch(&path, REGION_TABLE_OFFSETS[0] + 100, &[0xFF]);
    assert!(Vhdx::open(&path).unwrap().notes()[0].contains("region table 1"));
    patch(&path, REGION_TABLE_OFFSETS[1] + 100, &[0xFF]);
    refused(&path, "neither region table copy is valid");
}

#[test]
fn bad_bat_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(u64, BatEntry, &str); 6] = [
        (
            2,
            BatEntry::payload(PayloadState::FullyPresent, 4 * MIB),
            "overlapping",
        ),
        (
            3,
            BatEntry::payload(PayloadState::FullyPresent, 1 << 40),
            "past the end",
        ),
        (
            3,
            BatEntry::payload(PayloadState::FullyPresent, METADATA),
            "overlaps the metadata region",
        ),
        (3, BatEntry(0xFFFF_FFFF_FFF0_0006), "past the end"),
        (3, BatEntry(0xFFFF_FFFF_FFFF_FF06), "reserved bits"),
        (1, BatEntry(5), "invalid state 5"),
    ];
    for (i, (index, entry, needle)) in cases.into_iter().enumerate() {
        let path = good(dir.path(), &format!("b{i}"));
        set_bat(&path, index, entry);
        refused(&path, needle);
    }
    let path = good(dir.path(), "partial");
    set_bat(
        &path,
        1,
        BatEntry::payload(PayloadState::PartiallyPresent, 6 * MIB),
    );
    refused(&path, "without a parent");
}

#[test]
fn absurd_sizes_and_unknown_required_parts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = good(dir.path(), "huge");
    set_item(&path, 1, &(1u64 << 62).to_le_bytes());
    refused(&path, "VirtualDiskSize");

    // 64 TiB with 1 MiB blocks needs a 512 MiB BAT: refused before anything is allocated.
    let path = good(dir.path(), "bat-too-small");
    set_item(&path, 1, &(64u64 << 40).to_le_bytes());
    refused(&path, "the BAT needs");

    let path = good(dir.path(), "block");
    set_item(&path, 0, &(3u32 << 20).to_le_bytes());
    refused(&path, "BlockSize");

    let path = good(dir.path(), "sector");
    set_item(&path, 3, &1024u32.to_le_bytes());
    refused(&path, "LogicalSectorSize");

    let path = good(dir.path(), "region");
    edit_regions(&path, |t| {
        t.entries.push(RegionEntry {
            guid: images::guid::Guid::derived("x", b"y"),
            file_offset: 7 * MIB,
            length: 1 << 20,
            required: true,
        })
    });
    refused(&path, "marked required but is unknown");

    let path = good(dir.path(), "meta");
    // Re-label the physical sector size item as an unknown required item.
    patch(
        &path,
        METADATA + 32 + 4 * 32,
        &images::guid::Guid::derived("x", b"z").to_bytes(),
    );
    refused(&path, "marked required but is unknown");

    let path = good(dir.path(), "noparent");
    // Claim to be differencing without a parent locator.
    set_item(&path, 0, &[0, 0, 0x10, 0, 2, 0, 0, 0]);
    refused(&path, "parent locator");
    let _ = item::PARENT_LOCATOR;
}
