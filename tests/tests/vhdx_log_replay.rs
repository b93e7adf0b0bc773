//! A dirty log, built per MS-VHDX 2.3 in the test, replayed by us to the same content qemu
//! produces after `qemu-img check -r all` — in memory without touching the file, and into
//! the file when asked; and the same for a real sequence hidden in a 64 MiB log of fake entry
//! headers, whose search must cost work linear in the log's size.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use images::guid::Guid;
use images::vhdx::format::{BatEntry, HEADER_OFFSETS, HEADER_SIZE, Header, PayloadState};
use images::vhdx::log::{self, EntryBuilder, Search, Write};
use images::vhdx::{Identity, Options, Vhdx, export, update};
use tests::{make_raw, patch, qemu_img, read, run, same_content};

const MIB: u64 = 1 << 20;
const LOG_OFFSET: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;

fn set_log_guid(path: &Path, log_guid: Guid) {
    for offset in HEADER_OFFSETS {
        let mut header = Header::decode(&read(path, offset, HEADER_SIZE)).unwrap();
        header.log_guid = log_guid;
        header.sequence_number += 10;
        patch(path, offset, &header.encode());
    }
}

/// Makes `dirty.vhdx` and the raw content a correct replay must show.
fn make_dirty(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = dir.join("before.raw");
    make_raw(&raw, 8 * MIB, &[(0, MIB), (2 * MIB, MIB)], 7);
    let vhdx = dir.join("dirty.vhdx");
    tests::convert(&raw, &vhdx, &Options::new(Identity::derived("log")));
    // Our writer's layout: block 0 at 4 MiB, block 2 at 5 MiB, file ends at 6 MiB.
    assert_eq!(std::fs::metadata(&vhdx).unwrap().len(), 6 * MIB);

    let log_guid = Guid::derived("test", b"log");
    let mut bat_sector = read(&vhdx, BAT_OFFSET, 4096);
    bat_sector[5 * 8..6 * 8].copy_from_slice(
        &BatEntry::payload(PayloadState::FullyPresent, 6 * MIB)
            .0
            .to_le_bytes(),
    );
    let first = EntryBuilder {
        sequence: 10,
        tail: 0,
        log_guid,
        flushed_file_offset: 7 * MIB,
        last_file_offset: 7 * MIB,
        writes: vec![
            Write::Data {
                offset: BAT_OFFSET,
                sector: bat_sector,
            },
            Write::Data {
                offset: 6 * MIB,
                sector: vec![0x5A; 4096],
            },
            Write::Data {
                offset: 6 * MIB + 4096,
                sector: vec![0x5B; 4096],
            },
            Write::Zero {
                offset: 4 * MIB + 64 * 1024,
                length: 8192,
            },
        ],
    }
    .encode();
    let second = EntryBuilder {
        sequence: 11,
        tail: 0,
        log_guid,
        flushed_file_offset: 7 * MIB,
        last_file_offset: 7 * MIB,
        writes: vec![Write::Data {
            offset: 5 * MIB + 4096,
            sector: vec![0x77; 4096],
        }],
    }
    .encode();
    // A stale entry from an older sequence after them must be ignored.
    let stale = EntryBuilder {
        sequence: 3,
        tail: 0,
        log_guid,
        flushed_file_offset: 6 * MIB,
        last_file_offset: 6 * MIB,
        writes: vec![Write::Zero {
            offset: 5 * MIB,
            length: MIB,
        }],
    }
    .encode();
    patch(&vhdx, LOG_OFFSET, &first);
    patch(&vhdx, LOG_OFFSET + first.len() as u64, &second);
    patch(
        &vhdx,
        LOG_OFFSET + (first.len() + second.len()) as u64,
        &stale,
    );
    // As a real writer would have: the new block's space was allocated (file grown to
    // 7 MiB) before the BAT update that points at it was logged.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vhdx)
        .unwrap()
        .set_len(7 * MIB)
        .unwrap();
    set_log_guid(&vhdx, log_guid);

    let expected = dir.join("expected.raw");
    std::fs::copy(&raw, &expected).unwrap();
    patch(&expected, 64 * 1024, &[0u8; 8192]);
    patch(&expected, 5 * MIB, &[0x5A; 4096]);
    patch(&expected, 5 * MIB + 4096, &[0x5B; 4096]);
    patch(&expected, 2 * MIB + 4096, &[0x77; 4096]);
    (vhdx, expected)
}

#[test]
fn a_dirty_log_replays_like_qemu_in_memory_and_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (dirty, expected) = make_dirty(dir.path());
    let before = std::fs::read(&dirty).unwrap();

    // Read-only: replayed in memory, the file untouched.
    let ours = dir.path().join("ours.raw");
    export::export_file(&dirty, &ours, &mut |_| {}).unwrap();
    assert!(Vhdx::open(&dirty).unwrap().log_replayed());
    assert!(
        same_content(&expected, &ours),
        "in-memory replay differs from the expected content"
    );
    assert_eq!(
        std::fs::read(&dirty).unwrap(),
        before,
        "a read-only open must not modify the file"
    );

    // qemu's replay of the same file.
    let by_qemu = dir.path().join("qemu.vhdx");
    std::fs::copy(&dirty, &by_qemu).unwrap();
    let q = by_qemu.to_str().unwrap();
    // qemu counts the replay as a repaired corruption (and may exit 2 for it); a second
    // check must then find the image clean.
    let repair = tests::output(&mut qemu_img(&["check", "-r", "all", q]));
    let said = String::from_utf8_lossy(&repair.stdout).into_owned();
    assert!(
        repair.status.success() || said.contains("repaired"),
        "qemu-img check -r all: {said}"
    );
    run(&mut qemu_img(&["check", q]));
    let qemu_raw = dir.path().join("qemu.raw");
    run(&mut qemu_img(&[
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        q,
        qemu_raw.to_str().unwrap(),
    ]));
    assert!(
        same_content(&qemu_raw, &ours),
        "qemu and we replay the log differently"
    );

    // Our replay into the file: clean afterwards, for us and for qemu.
    let in_place = dir.path().join("in-place.vhdx");
    std::fs::copy(&dirty, &in_place).unwrap();
    assert!(update::replay_log(&in_place).unwrap());
    assert!(
        !update::replay_log(&in_place).unwrap(),
        "a second replay has nothing to do"
    );
    let reopened = Vhdx::open(&in_place).unwrap();
    assert!(!reopened.log_replayed());
    assert!(reopened.header().log_guid.is_zero());
    run(&mut qemu_img(&["check", in_place.to_str().unwrap()]));
    run(&mut qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "vhdx",
        expected.to_str().unwrap(),
        in_place.to_str().unwrap(),
    ]));
}

#[test]
fn a_header_naming_a_log_without_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("r.raw");
    make_raw(&raw, 4 * MIB, &[(0, 4096)], 1);
    let vhdx = dir.path().join("x.vhdx");
    tests::convert(&raw, &vhdx, &Options::new(Identity::derived("x")));
    set_log_guid(&vhdx, Guid::derived("test", b"missing"));
    let err = Vhdx::open(&vhdx).unwrap_err();
    assert!(
        tests::chain(&err).contains("holds no valid entry sequence"),
        "{}",
        tests::chain(&err)
    );
}

/// Replays `dirty` with `qemu-img check -r all` (on a copy) and returns the raw content qemu
/// then sees.
fn replayed_by_qemu(dir: &Path, dirty: &Path) -> std::path::PathBuf {
    let by_qemu = dir.join("qemu.vhdx");
    std::fs::copy(dirty, &by_qemu).unwrap();
    let q = by_qemu.to_str().unwrap();
    let repair = tests::output(&mut qemu_img(&["check", "-r", "all", q]));
    let said = String::from_utf8_lossy(&repair.stdout).into_owned();
    assert!(
        repair.status.success() || said.contains("repaired"),
        "qemu-img check -r all: {said}"
    );
    run(&mut qemu_img(&["check", q]));
    let qemu_raw = dir.join("qemu.raw");
    run(&mut qemu_img(&[
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        q,
        qemu_raw.to_str().unwrap(),
    ]));
    qemu_raw
}

/// A sector that passes the cheap checks of an entry header (signature, a length of the
/// whole log, tail 0, a sequence number, no descriptors, the LogGuid) with a wrong checksum.
fn fake_header(sector: &mut [u8], log_length: u64, sequence: u64, log_guid: Guid) {
    sector.fill(0);
    sector[..4].copy_from_slice(b"loge");
    sector[8..12].copy_from_slice(&u32::try_from(log_length).unwrap().to_le_bytes());
    sector[16..24].copy_from_slice(&sequence.to_le_bytes());
    sector[32..48].copy_from_slice(&log_guid.to_bytes());
}

#[test]
fn a_sequence_hidden_among_fake_headers_replays_like_qemu_in_linear_work() {
    const LOG_SIZE: u64 = 64 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("before.raw");
    make_raw(&raw, 8 * MIB, &[(0, MIB), (2 * MIB, MIB)], 9);
    let quiet = dir.path().join("quiet.vhdx");
    run(&mut qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M,log_size=64M",
        raw.to_str().unwrap(),
        quiet.to_str().unwrap(),
    ]));
    let (header, block_at) = {
        let clean = Vhdx::open(&quiet).unwrap();
        let block_at = |block: u64| {
            clean
                .allocated_blocks()
                .find(|b| b.block == block)
                .unwrap()
                .file_offset
        };
        (clean.header().clone(), [block_at(0), block_at(2)])
    };
    assert_eq!(u64::from(header.log_length), LOG_SIZE);
    let file_size = std::fs::metadata(&quiet).unwrap().len();

    // A real two-entry sequence in the middle of the log, both entries naming the first as
    // their tail.
    let log_guid = Guid::derived("test", b"flood");
    let hidden = 9000 * 4096;
    let entry = |sequence, writes| {
        EntryBuilder {
            sequence,
            tail: u32::try_from(hidden).unwrap(),
            log_guid,
            flushed_file_offset: file_size,
            last_file_offset: file_size,
            writes,
        }
        .encode()
    };
    let first = entry(
        50,
        vec![
            Write::Data {
                offset: block_at[0] + 4096,
                sector: vec![0x5A; 4096],
            },
            Write::Zero {
                offset: block_at[1],
                length: 8192,
            },
        ],
    );
    let second = entry(
        51,
        vec![Write::Data {
            offset: block_at[1] + 64 * 1024,
            sector: vec![0x77; 4096],
        }],
    );
    let mut log = vec![0u8; usize::try_from(LOG_SIZE).unwrap()];
    let end = hidden + first.len() + second.len();
    log[hidden..hidden + first.len()].copy_from_slice(&first);
    log[hidden + first.len()..end].copy_from_slice(&second);
    patch(&quiet, header.log_offset, &log);
    set_log_guid(&quiet, log_guid);
    // qemu replays it from the otherwise empty log (qemu's own search is slow on the flood
    // below: minutes for 16 MiB).
    let qemu_raw = replayed_by_qemu(dir.path(), &quiet);

    // The flood: every other sector a fake header. Summed from its bytes, each header's
    // checksum would cost 64 MiB, and the log 1 TiB.
    let flood = dir.path().join("flood.vhdx");
    std::fs::copy(&quiet, &flood).unwrap();
    for (s, sector) in log.chunks_exact_mut(4096).enumerate() {
        if !(hidden..end).contains(&(s * 4096)) {
            fake_header(sector, LOG_SIZE, 1_000_000 + s as u64, log_guid);
        }
    }
    patch(&flood, header.log_offset, &log);

    let Search { sequence, work } = log::search(&log, log_guid);
    assert_eq!(
        sequence.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![50, 51]
    );
    let n = LOG_SIZE;
    let sectors = n / 4096;
    assert!(
        work.bytes_hashed <= 2 * n,
        "{} bytes hashed for a {n}-byte log",
        work.bytes_hashed
    );
    assert!(work.crc_multiplications <= 4 * sectors + 1, "{work:?}");
    assert!(work.descriptors_checked <= 255 * sectors, "{work:?}");
    assert!(work.links_followed <= 2 * sectors + 1, "{work:?}");
    assert!(work.bytes_copied <= 2 * n, "{work:?}");

    // The reader replays it in memory, to what qemu made of the same sequence.
    let expected = dir.path().join("expected.raw");
    std::fs::copy(&raw, &expected).unwrap();
    patch(&expected, 4096, &[0x5A; 4096]);
    patch(&expected, 2 * MIB, &[0u8; 8192]);
    patch(&expected, 2 * MIB + 64 * 1024, &[0x77; 4096]);
    let ours = dir.path().join("ours.raw");
    export::export_file(&flood, &ours, &mut |_| {}).unwrap();
    assert!(Vhdx::open(&flood).unwrap().log_replayed());
    assert!(
        same_content(&expected, &ours),
        "our replay differs from the expected content"
    );
    assert!(
        same_content(&qemu_raw, &ours),
        "qemu and we replay the sequence differently"
    );
}
