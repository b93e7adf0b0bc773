//! Fuzz target: the whole VHDX reader on a hostile file.
//!
//! Each input (raw file bytes, or the packed form described in `images_fuzz`) is written to a
//! per-process scratch file, which is then opened, read, summarised and checked the way
//! `slipway vhdx info|check|export` would. Errors are expected and ignored; a panic, an
//! overflow (the build has overflow checks on), a hang or an allocation past libFuzzer's RSS
//! limit is a finding.

#![no_main]

use std::ffi::OsString;
use std::hint::black_box;
use std::path::Path;
use std::sync::OnceLock;

use images::vhdx::{Vhdx, check, info::Info};
use images_fuzz::{Input, SAVE_ENV, Scratch};
use libfuzzer_sys::fuzz_target;

/// Largest single read: keeps a 256 MiB block size from costing 256 MiB per input.
const MAX_READ: u64 = 64 * 1024;
/// How many allocated blocks get a read of their first sector.
const BLOCKS_READ: usize = 16;

static SCRATCH: OnceLock<Scratch> = OnceLock::new();
static SAVE: OnceLock<Option<OsString>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| match Scratch::new() {
        Ok(scratch) => scratch,
        // The machine's problem, not a finding: stop loudly rather than report a crash.
        Err(error) => {
            eprintln!("vhdx_reader: cannot set up the scratch file: {error}");
            std::process::exit(2);
        }
    });
    // A write that fails (a full /dev/shm) is not the reader's doing either: skip the input.
    if scratch.write(&Input::parse(data)).is_err() {
        return;
    }
    if let Some(save) = SAVE.get_or_init(|| std::env::var_os(SAVE_ENV)) {
        // A debugging aid (see SAVE_ENV): a failed copy only means no copy.
        let _ = std::fs::copy(scratch.path(), save);
    }
    exercise(scratch.path());
});

/// Opens, reads and checks the file at `path`; every outcome but a panic is acceptable.
fn exercise(path: &Path) {
    if let Ok(vhdx) = Vhdx::open(path) {
        read_ranges(&vhdx);
        black_box(vhdx.allocated_blocks().count());
        for block in vhdx.allocated_blocks().take(BLOCKS_READ) {
            let mut buf = vec![0u8; usize::try_from(block.len.min(4096)).unwrap_or(0)];
            black_box(vhdx.read_at(&mut buf, block.virtual_offset).is_ok());
        }
        black_box(vhdx.block_may_hold_data(0));
        black_box(Info::of(&vhdx));
    }
    black_box(check::check(path));
}

/// Reads the start of the disk, its last bytes, a block in the middle, a range across the
/// first block boundary, and one byte past the end (which must fail, not panic).
fn read_ranges(vhdx: &Vhdx) {
    let g = vhdx.geometry();
    let size = g.virtual_size;
    let block = g.block_bytes();
    let middle = g.data_blocks() / 2 * block;
    let ranges = [
        (0, MAX_READ),
        (size.saturating_sub(4096), 4096),
        (middle, 4096),
        (block.saturating_sub(2048), 4096),
        (size, 1),
    ];
    for (offset, len) in ranges {
        let len = len.min(size.saturating_sub(offset)).max(1);
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(1)];
        black_box(vhdx.read_at(&mut buf, offset).is_ok());
    }
}
