//! Helpers shared by the VHDX fuzz targets: turning a fuzz input into a file, and fixing the
//! CRC-32C checksums a mutation broke.
//!
//! The reader is path-based, so [`vhdx_reader`](../vhdx_reader/index.html) writes every input
//! to a [`Scratch`] file. An input is either
//! - *raw*: the bytes of a VHDX file, as is (so a real file reproduces directly), or
//! - *packed* ([`PACKED_MAGIC`]): a file size and a list of (offset, bytes) records, the rest of
//!   the file being zeros.
//!
//! The packed form exists for speed. A VHDX keeps its structures at 1 MiB-aligned offsets
//! (headers at 64/128 KiB, region tables at 192/256 KiB, log, metadata and BAT from 1 MiB on)
//! with almost nothing but zeros in between, so a real file is megabytes of which a few KiB
//! matter. Packed, the same file is a few KiB, and every mutation lands on a byte that the
//! reader looks at. `scripts/fuzz-vhdx` packs real `qemu-img` and `slipway` output into seeds.
//!
//! Both forms can ask for their checksums to be recomputed ([`FLAG_RESEAL`] in the packed
//! form): without it almost every mutation of a header, region table or log entry stops at
//! the checksum, and the code behind it is never reached. Log entries are resealed only up to
//! [`RESEAL_BUDGET`] bytes per input: a log of long overlapping entries (every sector a header
//! claiming the whole log) would otherwise cost sectors × log bytes here, and the fuzzer
//! would report the harness's own slowness as timeouts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use images::vhdx::format::{
    self, HEADER_OFFSETS, HEADER_SIZE, Header, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE,
};
use images::vhdx::log::SECTOR;

/// First bytes of a packed input.
pub const PACKED_MAGIC: &[u8; 4] = b"VXPK";
/// Packed-input flag: recompute the checksums of headers, region tables and log entries.
pub const FLAG_RESEAL: u8 = 1;
/// Bytes before the first record of a packed input: magic, flags, file size.
pub const PACKED_HEADER_LEN: usize = 4 + 1 + 8;
/// Bytes before the data of a packed record: offset (u32) and length (u16).
pub const RECORD_HEADER_LEN: usize = 4 + 2;
/// Largest file a packed input may describe. Big enough for a BAT of eight million entries,
/// small enough that the reader's allocations (bounded by the file size) stay far below
/// libFuzzer's RSS limit: anything larger found there is a real finding.
pub const MAX_FILE_SIZE: u64 = 64 << 20;
/// Most bytes of log entries resealed for one input; entries past it keep their checksums.
pub const RESEAL_BUDGET: u64 = 16 << 20;
/// Where the checksum sits in headers, region tables and log entries.
const CHECKSUM_FIELD: usize = 4;
const HEADER_SIGNATURE: &[u8; 4] = b"head";
const REGION_TABLE_SIGNATURE: &[u8; 4] = b"regi";
const LOG_ENTRY_SIGNATURE: &[u8; 4] = b"loge";

/// One record of a packed input: `data` goes at `offset` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// File offset.
    pub offset: u64,
    /// The bytes (fewer than the stored length when the input ends early).
    pub data: &'a [u8],
}

/// A fuzz input, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// The bytes of the file.
    Raw(&'a [u8]),
    /// A sparse description of the file.
    Packed {
        /// Recompute checksums after writing.
        reseal: bool,
        /// File size, at most [`MAX_FILE_SIZE`]; records may extend it up to that.
        size: u64,
        /// Data to place, in order (later records overwrite earlier ones).
        records: Vec<Record<'a>>,
    },
}

impl<'a> Input<'a> {
    /// Decodes an input; anything not starting with [`PACKED_MAGIC`] and a complete packed
    /// header is raw.
    pub fn parse(bytes: &'a [u8]) -> Input<'a> {
        let Some(rest) = bytes.strip_prefix(PACKED_MAGIC) else {
            return Input::Raw(bytes);
        };
        let Some((&flags, rest)) = rest.split_first() else {
            return Input::Raw(bytes);
        };
        let Some((size, mut rest)) = rest.split_first_chunk::<8>() else {
            return Input::Raw(bytes);
        };
        let mut records = Vec::new();
        while let Some((head, tail)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() {
            let offset = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
            let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
            let (data, after) = tail.split_at(len.min(tail.len()));
            records.push(Record { offset, data });
            rest = after;
        }
        Input::Packed {
            reseal: flags & FLAG_RESEAL != 0,
            size: u64::from_le_bytes(*size).min(MAX_FILE_SIZE),
            records,
        }
    }
}

/// Environment variable naming a VHDX to link beside the scratch file as [`PARENT_NAME`], so
/// that differencing inputs made over it (`slipway vhdx child --parent base.vhdx`) find their
/// parent and the chain code runs. `scripts/fuzz-vhdx` sets it; reproducing a crash of such
/// an input needs it set the same way.
pub const PARENT_ENV: &str = "SLIPWAY_FUZZ_PARENT";
/// File name of the parent link in the scratch directory.
pub const PARENT_NAME: &str = "base.vhdx";
/// Environment variable naming a path where `vhdx_reader` copies each file it builds before
/// reading it: run the target on one input with it set to get the exact file the reader saw
/// (for a regression test outside the fuzzer).
pub const SAVE_ENV: &str = "SLIPWAY_FUZZ_SAVE";

/// A per-process file under `/dev/shm` (or the temporary directory), rewritten for every
/// input. Its directory holds nothing else but the optional parent ([`PARENT_ENV`]).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates the directory `slipway-vhdx-fuzz-<pid>` for this process's file, and links
    /// the parent named by [`PARENT_ENV`] into it (a symbolic link: the reader follows it,
    /// and no process holds a copy).
    pub fn new() -> io::Result<Scratch> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("slipway-vhdx-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if let Some(parent) = std::env::var_os(PARENT_ENV) {
            let link = dir.join(PARENT_NAME);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(std::path::absolute(parent)?, link)?;
        }
        Ok(Scratch {
            path: dir.join("disk.vhdx"),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's content with what `input` describes.
    pub fn write(&self, input: &Input<'_>) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        match input {
            Input::Raw(bytes) => file.write_all_at(bytes, 0),
            Input::Packed {
                reseal,
                size,
                records,
            } => {
                let mut len = *size;
                for record in records {
                    let room = MAX_FILE_SIZE.saturating_sub(record.offset);
                    let take = usize::try_from(room)
                        .unwrap_or(usize::MAX)
                        .min(record.data.len());
                    if take > 0 {
                        file.write_all_at(&record.data[..take], record.offset)?;
                        len = len.max(record.offset + take as u64);
                    }
                }
                file.set_len(len)?;
                if *reseal {
                    reseal_file(&file, len, records)?;
                }
                Ok(())
            }
        }
    }
}

/// Stores the CRC-32C of `buf` at the checksum field (offset 4), if `buf` is long enough.
pub fn reseal(buf: &mut [u8]) {
    if buf.len() >= CHECKSUM_FIELD + 4 {
        let sum = format::checksum(buf, CHECKSUM_FIELD);
        buf[CHECKSUM_FIELD..CHECKSUM_FIELD + 4].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Reseals every sector of `log` that starts a log entry ("loge") of a plausible length,
/// reading the entry circularly as the reader does, in log order while they fit in
/// [`RESEAL_BUDGET`] bytes (the others keep their checksums).
pub fn reseal_log(log: &mut [u8]) {
    let sector = usize::try_from(SECTOR).unwrap_or(4096);
    let log_len = log.len() - log.len() % sector;
    if log_len == 0 {
        return;
    }
    let mut budget = RESEAL_BUDGET;
    for start in (0..log_len).step_by(sector) {
        if &log[start..start + 4] != LOG_ENTRY_SIGNATURE {
            continue;
        }
        let length = u32::from_le_bytes([
            log[start + 8],
            log[start + 9],
            log[start + 10],
            log[start + 11],
        ]);
        let Ok(length) = usize::try_from(length) else {
            continue;
        };
        if length == 0 || length % sector != 0 || length > log_len {
            continue;
        }
        let Some(left) = budget.checked_sub(length as u64) else {
            continue;
        };
        budget = left;
        let mut entry: Vec<u8> = log[start..]
            .iter()
            .chain(log[..start].iter())
            .take(length)
            .copied()
            .collect();
        reseal(&mut entry);
        log[start + CHECKSUM_FIELD..start + CHECKSUM_FIELD + 4]
            .copy_from_slice(&entry[CHECKSUM_FIELD..CHECKSUM_FIELD + 4]);
    }
}

/// Reseals, in the file, both headers, both region tables, and the entries of each log a
/// valid header names. Structures without their signature, or cut short by the end of the
/// file, are left alone.
///
/// A log entry starts with a signature, so only log sectors that a record wrote to can start
/// one: those are the only ones read, which keeps a 1 MiB log from costing 1 MiB per input.
fn reseal_file(file: &File, len: u64, records: &[Record<'_>]) -> io::Result<()> {
    for offset in HEADER_OFFSETS {
        reseal_in_file(file, len, offset, HEADER_SIZE, HEADER_SIGNATURE)?;
    }
    for offset in REGION_TABLE_OFFSETS {
        reseal_in_file(file, len, offset, REGION_TABLE_SIZE, REGION_TABLE_SIGNATURE)?;
    }
    let mut logs = Vec::new();
    for offset in HEADER_OFFSETS {
        let Some(buf) = read_within(file, len, offset, HEADER_SIZE)? else {
            continue;
        };
        let Ok(header) = Header::decode(&buf) else {
            continue;
        };
        let log_len = u64::from(header.log_length);
        let fits = header
            .log_offset
            .checked_add(log_len)
            .is_some_and(|end| end <= len);
        if log_len > 0 && fits && !logs.contains(&(header.log_offset, log_len)) {
            logs.push((header.log_offset, log_len));
        }
    }
    let mut budget = RESEAL_BUDGET;
    for (log_offset, log_len) in logs {
        let log_end = log_offset + log_len;
        let mut starts: Vec<u64> = Vec::new();
        for record in records {
            let first = record.offset.max(log_offset);
            let last = (record.offset + record.data.len() as u64).min(log_end);
            // Sector starts the record wrote to.
            let mut sector = (first - log_offset).div_ceil(SECTOR) * SECTOR + log_offset;
            while sector < last {
                starts.push(sector);
                sector += SECTOR;
            }
        }
        starts.sort_unstable();
        starts.dedup();
        for start in starts {
            reseal_log_entry(file, log_offset, log_len, start, &mut budget)?;
        }
    }
    Ok(())
}

/// Reseals the log entry at file offset `start`, if one starts there with a plausible length
/// that fits in what is left of `budget` (which it then takes from).
fn reseal_log_entry(
    file: &File,
    log_offset: u64,
    log_len: u64,
    start: u64,
    budget: &mut u64,
) -> io::Result<()> {
    let mut head = [0u8; 12];
    file.read_exact_at(&mut head, start)?;
    if &head[..4] != LOG_ENTRY_SIGNATURE {
        return Ok(());
    }
    let length = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
    if length == 0 || length % SECTOR != 0 || length > log_len {
        return Ok(());
    }
    let Some(left) = budget.checked_sub(length) else {
        return Ok(());
    };
    *budget = left;
    let Ok(size) = usize::try_from(length) else {
        return Ok(());
    };
    // The entry wraps at the end of the log, as the reader reads it.
    let mut entry = vec![0u8; size];
    let before_end = usize::try_from(log_offset + log_len - start)
        .unwrap_or(size)
        .min(size);
    file.read_exact_at(&mut entry[..before_end], start)?;
    file.read_exact_at(&mut entry[before_end..], log_offset)?;
    reseal(&mut entry);
    file.write_all_at(&entry[CHECKSUM_FIELD..CHECKSUM_FIELD + 4], start + 4)
}

fn reseal_in_file(
    file: &File,
    len: u64,
    offset: u64,
    size: usize,
    signature: &[u8; 4],
) -> io::Result<()> {
    if let Some(mut buf) = read_within(file, len, offset, size)?
        && buf.starts_with(signature)
    {
        reseal(&mut buf);
        file.write_all_at(&buf[CHECKSUM_FIELD..CHECKSUM_FIELD + 4], offset + 4)?;
    }
    Ok(())
}

/// `size` bytes at `offset`, or `None` when they do not all lie within the first `len` bytes.
fn read_within(file: &File, len: u64, offset: u64, size: usize) -> io::Result<Option<Vec<u8>>> {
    if offset.checked_add(size as u64).is_none_or(|end| end > len) {
        return Ok(None);
    }
    let mut buf = vec![0u8; size];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Some(buf))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn packed_input_decodes_records_and_clamps_the_size() {
        let mut bytes = PACKED_MAGIC.to_vec();
        bytes.push(FLAG_RESEAL);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(b"ab");
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&5u16.to_le_bytes());
        bytes.extend_from_slice(b"cd");
        let input = Input::parse(&bytes);
        assert_eq!(
            input,
            Input::Packed {
                reseal: true,
                size: MAX_FILE_SIZE,
                records: vec![
                    Record {
                        offset: 7,
                        data: b"ab"
                    },
                    Record {
                        offset: 9,
                        data: b"cd"
                    },
                ],
            }
        );
        assert_eq!(Input::parse(b"VXPK\x01"), Input::Raw(b"VXPK\x01"));
        assert_eq!(Input::parse(b"vhdxfile"), Input::Raw(b"vhdxfile"));
    }

    #[test]
    fn packed_input_gets_its_header_and_log_entry_resealed() {
        use images::guid::Guid;
        use images::vhdx::log::{self, EntryBuilder, Write};

        let log_guid = Guid::from_bytes([7; 16]);
        let log_offset = 1 << 20;
        let header = Header {
            sequence_number: 1,
            file_write_guid: Guid::from_bytes([1; 16]),
            data_write_guid: Guid::from_bytes([2; 16]),
            log_guid,
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset,
        };
        let mut header = header.encode();
        header[4] ^= 0xff;
        let mut entry = EntryBuilder {
            sequence: 3,
            tail: 0,
            log_guid,
            flushed_file_offset: 2 << 20,
            last_file_offset: 2 << 20,
            writes: vec![Write::Zero {
                offset: 1 << 20,
                length: 4096,
            }],
        }
        .encode();
        entry[4] ^= 0xff;
        let mut bytes = PACKED_MAGIC.to_vec();
        bytes.push(FLAG_RESEAL);
        bytes.extend_from_slice(&(2u64 << 20).to_le_bytes());
        for (offset, data) in [(HEADER_OFFSETS[0], &header), (log_offset, &entry)] {
            bytes.extend_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
            bytes.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
            bytes.extend_from_slice(data);
        }
        let scratch = Scratch::new().unwrap();
        scratch.write(&Input::parse(&bytes)).unwrap();
        let file = std::fs::read(scratch.path()).unwrap();
        let at = usize::try_from(HEADER_OFFSETS[0]).unwrap();
        assert!(Header::decode(&file[at..at + HEADER_SIZE]).is_ok());
        let log_at = usize::try_from(log_offset).unwrap();
        let sequence = log::active_sequence(&file[log_at..log_at + (1 << 20)], log_guid);
        assert_eq!(sequence.len(), 1);
        std::fs::remove_dir_all(scratch.path().parent().unwrap()).unwrap();
    }

    #[test]
    fn resealing_a_log_of_long_entries_stops_at_the_budget() {
        // Every sector a header claiming the whole 4 MiB log: resealing them all would hash
        // 1024 × 4 MiB. Only as many as fit in the budget are resealed.
        let log_len = 4 << 20;
        let mut log = vec![0u8; log_len];
        for start in (0..log_len).step_by(4096) {
            log[start..start + 4].copy_from_slice(LOG_ENTRY_SIGNATURE);
            log[start + 8..start + 12].copy_from_slice(&(4u32 << 20).to_le_bytes());
        }
        reseal_log(&mut log);
        let resealed = (0..log_len)
            .step_by(4096)
            .filter(|&start| log[start + 4..start + 8] != [0; 4])
            .count();
        assert_eq!(resealed as u64, RESEAL_BUDGET / (4 << 20));
    }

    #[test]
    fn resealed_log_entry_wraps_around_the_log() {
        let mut log = vec![0u8; 3 * 4096];
        let start = 2 * 4096;
        log[start..start + 4].copy_from_slice(LOG_ENTRY_SIGNATURE);
        log[start + 8..start + 12].copy_from_slice(&8192u32.to_le_bytes());
        log[5] = 0xaa;
        reseal_log(&mut log);
        let entry: Vec<u8> = log[start..].iter().chain(&log[..4096]).copied().collect();
        let stored = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        assert_eq!(stored, format::checksum(&entry, CHECKSUM_FIELD));
    }
}
