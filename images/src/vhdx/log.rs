//! The VHDX log (MS-VHDX 2.3): finding the active sequence and replaying it.
//!
//! A writer that updates metadata or the BAT first appends a log entry (a set of 4 KiB sector
//! writes and zero ranges) and only then touches the file, so a crash in between is repaired
//! by replaying the log on the next open. The log is a circular buffer of 4 KiB sectors; the
//! entries that still matter form the *active sequence*: consecutive valid entries with
//! consecutive sequence numbers, starting at the `Tail` recorded in the newest one.
//!
//! [`plan_replay`] reads the log and returns the writes as an [`Overlay`], which the reader
//! applies in memory (read-only open) or to the file (explicit replay).

use super::backing::{Backing, Overlay};
use super::format::{self, HEADER_AREA_SIZE, Header, MIB, guid_at, put, u32_at, u64_at};
use crate::guid::Guid;

/// Size of a log sector.
pub const SECTOR: u64 = 4096;
const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
const ZERO_SIGNATURE: &[u8; 4] = b"zero";
const DATA_DESC_SIGNATURE: &[u8; 4] = b"desc";
const DATA_SECTOR_SIGNATURE: &[u8; 4] = b"data";
const ENTRY_HEADER_LEN: u64 = 64;
const DESCRIPTOR_LEN: u64 = 32;
const ENTRY_CHECKSUM: usize = 4;
/// A log larger than this is refused rather than read into memory.
pub const MAX_LOG_LENGTH: u64 = 256 * MIB;

/// Why the log could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log region could not be read.
    #[error("read the log region ({length} bytes at {offset:#x})")]
    ReadLog {
        /// Log offset.
        offset: u64,
        /// Log length.
        length: u64,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The header names a log that does not fit in the file or is too large.
    #[error(
        "the log region ({length} bytes at {offset:#x}) does not fit in the {file_size}-byte file or exceeds 256 MiB"
    )]
    PlaceLog {
        /// Log offset.
        offset: u64,
        /// Log length.
        length: u64,
        /// File size.
        file_size: u64,
    },
    /// The header says the log must be replayed but no valid sequence exists.
    #[error(
        "the header names log {log_guid} but the log holds no valid entry sequence for it; the file cannot be trusted"
    )]
    FindSequence {
        /// The header's LogGuid.
        log_guid: Guid,
    },
    /// The file is shorter than the log says it was when the entry was written.
    #[error(
        "the file is {file_size} bytes but the log says it was at least {flushed} bytes: it was truncated"
    )]
    CheckFlushedSize {
        /// Current size.
        file_size: u64,
        /// FlushedFileOffset of the newest entry.
        flushed: u64,
    },
    /// A descriptor writes where the log must never write.
    #[error(
        "log entry {sequence} writes {length} bytes at {offset:#x}, inside the headers or the log itself"
    )]
    ConfineWrite {
        /// Entry sequence number.
        sequence: u64,
        /// Target offset.
        offset: u64,
        /// Length.
        length: u64,
    },
}

/// One decoded, validated log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number (non-zero).
    pub sequence: u64,
    /// Offset of the entry in the log.
    pub offset: u64,
    /// Entry length in bytes.
    pub length: u64,
    /// Offset in the log of the oldest entry still needed.
    pub tail: u64,
    /// File size when the entry was written.
    pub flushed_file_offset: u64,
    /// File size every structure fits into after the entry.
    pub last_file_offset: u64,
    /// What the entry writes, in order.
    pub writes: Vec<Write>,
}

/// One write an entry describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Zeros over `length` bytes at `offset`.
    Zero {
        /// File offset (4 KiB aligned).
        offset: u64,
        /// Length (multiple of 4 KiB).
        length: u64,
    },
    /// One 4 KiB sector at `offset`.
    Data {
        /// File offset (4 KiB aligned).
        offset: u64,
        /// The 4096 bytes.
        sector: Vec<u8>,
    },
}

/// The log's bytes, read once, addressed circularly in 4 KiB sectors.
struct LogBuffer<'a> {
    bytes: &'a [u8],
}

impl LogBuffer<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// `len` bytes starting at log offset `at`, wrapping at the end of the log.
    fn read(&self, at: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let mut pos = at % self.len();
        let mut left = len;
        while left > 0 {
            let n = left.min(self.len() - pos);
            let p = usize::try_from(pos).unwrap_or(0);
            let q = usize::try_from(pos + n).unwrap_or(0);
            out.extend_from_slice(&self.bytes[p..q]);
            left -= n;
            pos = (pos + n) % self.len();
        }
        out
    }

    /// Decodes and fully validates the entry at `at`, or `None` if it is not a valid entry.
    fn entry_at(&self, at: u64, log_guid: Guid) -> Option<Entry> {
        let head = self.read(at, ENTRY_HEADER_LEN);
        if &head[..4] != ENTRY_SIGNATURE {
            return None;
        }
        let length = u64::from(u32_at(&head, 8));
        let tail = u64::from(u32_at(&head, 12));
        let sequence = u64_at(&head, 16);
        let descriptors = u64::from(u32_at(&head, 24));
        if length == 0
            || length % SECTOR != 0
            || length > self.len()
            || tail % SECTOR != 0
            || tail >= self.len()
        {
            return None;
        }
        if sequence == 0 || guid_at(&head, 32) != log_guid {
            return None;
        }
        let descriptor_area =
            (ENTRY_HEADER_LEN + descriptors * DESCRIPTOR_LEN).div_ceil(SECTOR) * SECTOR;
        if descriptor_area > length {
            return None;
        }
        let bytes = self.read(at, length);
        if format::checksum(&bytes, ENTRY_CHECKSUM) != u32_at(&bytes, ENTRY_CHECKSUM) {
            return None;
        }
        let mut writes = Vec::new();
        let mut data_sector = descriptor_area;
        for i in 0..descriptors {
            let d = usize::try_from(ENTRY_HEADER_LEN + i * DESCRIPTOR_LEN).ok()?;
            let file_offset = u64_at(&bytes, d + 16);
            if u64_at(&bytes, d + 24) != sequence || !file_offset.is_multiple_of(SECTOR) {
                return None;
            }
            match &bytes[d..d + 4] {
                s if s == ZERO_SIGNATURE => {
                    let zero_len = u64_at(&bytes, d + 8);
                    if !zero_len.is_multiple_of(SECTOR) {
                        return None;
                    }
                    writes.push(Write::Zero {
                        offset: file_offset,
                        length: zero_len,
                    });
                }
                s if s == DATA_DESC_SIGNATURE => {
                    if data_sector + SECTOR > length {
                        return None;
                    }
                    let ds = usize::try_from(data_sector).ok()?;
                    let sector_bytes = &bytes[ds..ds + 4096];
                    let seq_high = u64::from(u32_at(sector_bytes, 4));
                    let seq_low = u64::from(u32_at(sector_bytes, 4092));
                    if &sector_bytes[..4] != DATA_SECTOR_SIGNATURE
                        || (seq_high << 32 | seq_low) != sequence
                    {
                        return None;
                    }
                    // The sector's first 8 and last 4 bytes live in the descriptor (their
                    // place in the data sector holds the signature and sequence halves).
                    let mut sector = vec![0u8; 4096];
                    sector[..8].copy_from_slice(&bytes[d + 8..d + 16]);
                    sector[8..4092].copy_from_slice(&sector_bytes[8..4092]);
                    sector[4092..].copy_from_slice(&bytes[d + 4..d + 8]);
                    writes.push(Write::Data {
                        offset: file_offset,
                        sector,
                    });
                    data_sector += SECTOR;
                }
                _ => return None,
            }
        }
        Some(Entry {
            sequence,
            offset: at,
            length,
            tail,
            flushed_file_offset: u64_at(&bytes, 48),
            last_file_offset: u64_at(&bytes, 56),
            writes,
        })
    }
}

/// Finds the active sequence in `log` (the bytes of the whole log region), oldest entry first.
/// Returns an empty list when no valid sequence exists.
pub fn active_sequence(log: &[u8], log_guid: Guid) -> Vec<Entry> {
    let buffer = LogBuffer { bytes: log };
    if buffer.len() == 0 || !buffer.len().is_multiple_of(SECTOR) {
        return Vec::new();
    }
    let sectors = buffer.len() / SECTOR;
    let entries: Vec<Option<Entry>> = (0..sectors)
        .map(|s| buffer.entry_at(s * SECTOR, log_guid))
        .collect();
    let at = |offset: u64| entries[usize::try_from(offset / SECTOR).unwrap_or(0)].as_ref();
    let mut best: Vec<Entry> = Vec::new();
    for head in entries.iter().flatten() {
        if best.last().is_some_and(|b| b.sequence >= head.sequence) {
            continue;
        }
        // Walk from the head's tail forward; the chain must reach the head with consecutive
        // sequence numbers and without passing through more sectors than the log holds.
        let mut chain: Vec<Entry> = Vec::new();
        let mut pos = head.tail;
        let mut walked = 0u64;
        while let Some(entry) = at(pos) {
            if chain
                .last()
                .is_some_and(|prev| prev.sequence.checked_add(1) != Some(entry.sequence))
            {
                break;
            }
            chain.push(entry.clone());
            walked += entry.length;
            if entry.sequence == head.sequence || walked > buffer.len() {
                break;
            }
            pos = (pos + entry.length) % buffer.len();
        }
        if chain
            .last()
            .is_some_and(|e| e.sequence == head.sequence && e.offset == head.offset)
        {
            best = chain;
        }
    }
    best
}

/// Reads the log named by `header` and returns the replayed writes as an overlay over a file
/// of `backing.size()` bytes, or `None` when the header says the log is empty.
pub fn plan_replay(backing: &Backing, header: &Header) -> Result<Option<Overlay>, Error> {
    if header.log_guid.is_zero() {
        return Ok(None);
    }
    let offset = header.log_offset;
    let length = u64::from(header.log_length);
    let file_size = backing.size();
    if length == 0
        || length > MAX_LOG_LENGTH
        || offset.checked_add(length).is_none_or(|end| end > file_size)
    {
        return Err(Error::PlaceLog {
            offset,
            length,
            file_size,
        });
    }
    let mut log = vec![0u8; usize::try_from(length).unwrap_or(0)];
    backing
        .read_exact_at(&mut log, offset)
        .map_err(|source| Error::ReadLog {
            offset,
            length,
            source,
        })?;
    let sequence = active_sequence(&log, header.log_guid);
    let Some(newest) = sequence.last() else {
        return Err(Error::FindSequence {
            log_guid: header.log_guid,
        });
    };
    if file_size < newest.flushed_file_offset {
        return Err(Error::CheckFlushedSize {
            file_size,
            flushed: newest.flushed_file_offset,
        });
    }
    let mut overlay = Overlay::new(file_size);
    let log_range = offset..offset + length;
    for entry in &sequence {
        for write in &entry.writes {
            let (at, len) = match write {
                Write::Zero { offset, length } => (*offset, *length),
                Write::Data { offset, .. } => (*offset, SECTOR),
            };
            let end = at.saturating_add(len);
            let hits_headers = at < HEADER_AREA_SIZE;
            let hits_log = at < log_range.end && end > log_range.start;
            // Bound zero ranges by what the file can become, so a hostile length cannot
            // describe an absurd file.
            let too_far = end
                > file_size
                    .max(newest.last_file_offset)
                    .max(entry.last_file_offset);
            if hits_headers || hits_log || too_far {
                return Err(Error::ConfineWrite {
                    sequence: entry.sequence,
                    offset: at,
                    length: len,
                });
            }
            match write {
                Write::Zero { offset, length } => overlay.zero(*offset, *length),
                Write::Data { offset, sector } => overlay.write(*offset, sector.clone()),
            }
        }
    }
    overlay.grow_to(newest.last_file_offset);
    Ok(Some(overlay))
}

/// Builds log entries, for writers and for tests that need a dirty log.
#[derive(Debug, Clone)]
pub struct EntryBuilder {
    /// Sequence number of the entry.
    pub sequence: u64,
    /// Tail to record.
    pub tail: u32,
    /// The header's LogGuid.
    pub log_guid: Guid,
    /// FlushedFileOffset to record.
    pub flushed_file_offset: u64,
    /// LastFileOffset to record.
    pub last_file_offset: u64,
    /// Writes, in order.
    pub writes: Vec<Write>,
}

impl EntryBuilder {
    /// Encodes the entry (descriptor sectors, then data sectors) with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let count = self.writes.len() as u64;
        let descriptor_area = (ENTRY_HEADER_LEN + count * DESCRIPTOR_LEN).div_ceil(SECTOR) * SECTOR;
        let data_count = self
            .writes
            .iter()
            .filter(|w| matches!(w, Write::Data { .. }))
            .count() as u64;
        let length = descriptor_area + data_count * SECTOR;
        let mut buf = vec![0u8; usize::try_from(length).unwrap_or(0)];
        put(&mut buf, 0, ENTRY_SIGNATURE);
        put(
            &mut buf,
            8,
            &u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes(),
        );
        put(&mut buf, 12, &self.tail.to_le_bytes());
        put(&mut buf, 16, &self.sequence.to_le_bytes());
        put(
            &mut buf,
            24,
            &u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes(),
        );
        put(&mut buf, 32, &self.log_guid.to_bytes());
        put(&mut buf, 48, &self.flushed_file_offset.to_le_bytes());
        put(&mut buf, 56, &self.last_file_offset.to_le_bytes());
        let mut data_at = usize::try_from(descriptor_area).unwrap_or(0);
        for (i, write) in self.writes.iter().enumerate() {
            let d = 64 + i * 32;
            match write {
                Write::Zero { offset, length } => {
                    put(&mut buf, d, ZERO_SIGNATURE);
                    put(&mut buf, d + 8, &length.to_le_bytes());
                    put(&mut buf, d + 16, &offset.to_le_bytes());
                }
                Write::Data { offset, sector } => {
                    put(&mut buf, d, DATA_DESC_SIGNATURE);
                    put(&mut buf, d + 4, &sector[4092..4096]);
                    put(&mut buf, d + 8, &sector[..8]);
                    put(&mut buf, d + 16, &offset.to_le_bytes());
                    put(&mut buf, data_at, DATA_SECTOR_SIGNATURE);
                    put(
                        &mut buf,
                        data_at + 4,
                        &u32::try_from(self.sequence >> 32)
                            .unwrap_or(0)
                            .to_le_bytes(),
                    );
                    put(&mut buf, data_at + 8, &sector[8..4092]);
                    put(
                        &mut buf,
                        data_at + 4092,
                        &u32::try_from(self.sequence & 0xFFFF_FFFF)
                            .unwrap_or(0)
                            .to_le_bytes(),
                    );
                    data_at += 4096;
                }
            }
            put(&mut buf, d + 24, &self.sequence.to_le_bytes());
        }
        format::seal(&mut buf, ENTRY_CHECKSUM);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guid() -> Guid {
        Guid::derived("log", b"test")
    }

    fn entry(sequence: u64, tail: u32, fill: u8) -> Vec<u8> {
        EntryBuilder {
            sequence,
            tail,
            log_guid: guid(),
            flushed_file_offset: 4 * MIB,
            last_file_offset: 4 * MIB,
            writes: vec![
                Write::Data {
                    offset: 3 * MIB,
                    sector: vec![fill; 4096],
                },
                Write::Zero {
                    offset: 3 * MIB + 4096,
                    length: 8192,
                },
            ],
        }
        .encode()
    }

    #[test]
    fn finds_the_newest_sequence_from_its_tail() {
        let mut log = vec![0u8; 1 << 20];
        let a = entry(10, 0, 1); // at 0
        let b = entry(11, 0, 2); // at 12 KiB, tail → 0
        log[..a.len()].copy_from_slice(&a);
        log[a.len()..a.len() + b.len()].copy_from_slice(&b);
        let seq = active_sequence(&log, guid());
        assert_eq!(
            seq.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![10, 11]
        );
        match &seq[1].writes[0] {
            Write::Data { sector, .. } => assert_eq!(sector, &vec![2u8; 4096]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_broken_link_or_foreign_guid_is_not_replayed() {
        let mut log = vec![0u8; 1 << 20];
        let a = entry(10, 0, 1);
        let c = entry(12, 0, 3); // gap: 11 is missing, so 12's chain from tail 0 breaks
        log[..a.len()].copy_from_slice(&a);
        log[a.len()..a.len() + c.len()].copy_from_slice(&c);
        let seq = active_sequence(&log, guid());
        assert_eq!(seq.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![10]);
        assert!(active_sequence(&log, Guid::derived("log", b"other")).is_empty());
        // A flipped byte anywhere in the entry invalidates it.
        log[100] ^= 0xff;
        assert!(active_sequence(&log, guid()).is_empty());
    }

    #[test]
    fn entries_may_wrap_around_the_end_of_the_log() {
        let size = 64 * 1024;
        let mut log = vec![0u8; size];
        let e = entry(5, u32::try_from(size - 8192).unwrap(), 9);
        // 12 KiB entry starting 8 KiB before the end.
        let start = size - 8192;
        log[start..].copy_from_slice(&e[..8192]);
        log[..e.len() - 8192].copy_from_slice(&e[8192..]);
        let seq = active_sequence(&log, guid());
        assert_eq!(seq.len(), 1);
        assert_eq!(seq[0].offset, start as u64);
    }
}
