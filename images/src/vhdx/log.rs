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
//!
//! # Cost
//!
//! The log comes from the file, so a hostile one must not cost more than its size. With `n`
//! the log's bytes and `N = n / 4096` its sectors, [`search`] does O(n) work and holds O(n)
//! memory (each count below is a field of [`Work`], and tests hold it to these bounds):
//!
//! 1. **Checksums: at most 2n bytes hashed, 4N + 1 multiplications.** Every sector that starts
//!    with `loge` and passes the header's field checks is a candidate entry, and its checksum
//!    may cover up to the whole log — a log of such headers with wrong checksums would cost
//!    N · n bytes hashed if each were summed from its bytes. Instead one pass sums every prefix
//!    of whole sectors (n bytes, and a table of N + 1 powers of x), and a candidate's checksum
//!    is its first sector (the one holding its checksum field, hashed with the field zeroed:
//!    4096 bytes) combined with the run of its other sectors, taken from the prefixes with at
//!    most 3 multiplications whatever its length (`log/crc.rs`). Each sector is a candidate once.
//! 2. **Descriptors: at most 255N examined in the search, and at most as many data sectors.**
//!    They are read only from candidates whose checksum matched, in order, stopping at the
//!    first that fails. The first sector holds descriptors 0 to 125; a candidate moves on to
//!    its k-th descriptor sector only by examining the descriptor at that sector's very start,
//!    and if that one passes, the sector starts with `zero` or `desc`, not `loge`: call it
//!    *claimed*. No two candidates claim the same sector: a candidate's claimed sectors follow
//!    its first one without a gap (and never wrap onto it), so if X and Y both claimed sector
//!    q, the one nearer to q would be one of the other's claimed sectors — but it starts with
//!    `loge`. So the candidates examine at most 126 + 1 descriptors each (the 1 failing at the
//!    start of a sector it could not claim) plus 128 per claimed sector: 127N + 128N. Each
//!    `desc` descriptor examined costs at most one data-sector check of 12 bytes; nothing is
//!    copied (a data sector may be checked for many candidates: the count is what is bound).
//! 3. **Links: at most 2N + 1 followed.** A valid entry links to at most one next entry (the
//!    one starting where it ends, one sequence number higher), so the links form a forest,
//!    and one depth-first pass over it answers "does the walk from this head's tail reach the
//!    head, and over how many bytes?" for every head in constant time (`log/reach.rs`): N links.
//!    The walk of the chosen head is then followed once more to decode it: at most N + 1.
//! 4. **Decoding: at most 2n bytes copied, 2n / 32 descriptors examined again.** Only the
//!    chosen sequence's writes are decoded. Its entries lie one after the other; those before
//!    the newest span at most n bytes (the walk's bound) and the newest at most n, and each
//!    entry's descriptors (32 bytes each) and data sectors lie within it.

mod crc;
mod reach;
#[cfg(test)]
mod tests;

use super::backing::{Backing, Overlay};
use super::format::{self, HEADER_AREA_SIZE, Header, MIB, guid_at, put, u32_at, u64_at};
use crate::guid::Guid;
use crc::SectorCrcs;
use reach::Reach;

/// Size of a log sector.
pub const SECTOR: u64 = 4096;
/// [`SECTOR`] as an index into the log's bytes.
const SECTOR_BYTES: usize = 4096;
const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
const ZERO_SIGNATURE: &[u8; 4] = b"zero";
const DATA_DESC_SIGNATURE: &[u8; 4] = b"desc";
const DATA_SECTOR_SIGNATURE: &[u8; 4] = b"data";
const ENTRY_HEADER_LEN: u64 = 64;
const DESCRIPTOR_LEN: u64 = 32;
/// [`DESCRIPTOR_LEN`] as a slice length.
const DESCRIPTOR_BYTES: usize = 32;
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

/// What a search of the log cost, counted as it goes so that tests can hold it to the bounds
/// in the module documentation (all linear in the log's size).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Bytes fed to CRC-32C.
    pub bytes_hashed: u64,
    /// Multiplications of checksums by powers of `x` (each a fixed 32 steps).
    pub crc_multiplications: u64,
    /// Descriptors examined, in the search and in decoding the chosen sequence.
    pub descriptors_checked: u64,
    /// Data sectors examined (signature and sequence number, 12 bytes each).
    pub data_sectors_checked: u64,
    /// Links between entries followed.
    pub links_followed: u64,
    /// Bytes of data sectors copied into the returned entries' writes.
    pub bytes_copied: u64,
}

/// The result of [`search`]: the active sequence and what finding it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// The active sequence, oldest entry first; empty when the log holds none.
    pub sequence: Vec<Entry>,
    /// The work done.
    pub work: Work,
}

/// The header fields of an entry that passed every check, kept for each sector during the
/// search (writes are decoded only for the entries of the sequence finally chosen).
#[derive(Debug, Clone, Copy)]
struct Head {
    sequence: u64,
    /// Length in sectors (at least 1, at most the log's).
    sectors: usize,
    /// The tail, as a sector of the log.
    tail: usize,
    descriptors: u64,
    /// Sectors taken by the header and the descriptors (at most `sectors`).
    descriptor_sectors: usize,
    flushed_file_offset: u64,
    last_file_offset: u64,
}

/// One write as a descriptor states it, borrowing the log.
enum Described<'a> {
    Zero {
        offset: u64,
        length: u64,
    },
    Data {
        offset: u64,
        /// The 32-byte descriptor (it holds the sector's first 8 and last 4 bytes).
        descriptor: &'a [u8],
        /// The data sector (its other 4084 bytes).
        sector: &'a [u8],
    },
}

/// The log's bytes, addressed circularly in 4 KiB sectors.
struct LogBuffer<'a> {
    bytes: &'a [u8],
    /// Number of sectors; `bytes` is exactly this many sectors long.
    sectors: usize,
}

impl<'a> LogBuffer<'a> {
    /// `None` unless `bytes` is a non-empty whole number of sectors.
    fn new(bytes: &'a [u8]) -> Option<LogBuffer<'a>> {
        let sectors = bytes.len() / SECTOR_BYTES;
        (sectors > 0 && bytes.len().is_multiple_of(SECTOR_BYTES))
            .then_some(LogBuffer { bytes, sectors })
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Sector `index` of the log, counted circularly.
    fn sector(&self, index: usize) -> &'a [u8] {
        let start = index % self.sectors * SECTOR_BYTES;
        &self.bytes[start..start + SECTOR_BYTES]
    }

    /// `len` bytes at byte `at` of the entry starting at sector `entry`, when they lie in one
    /// sector (descriptors are 32-byte aligned, so they always do).
    fn entry_bytes(&self, entry: usize, at: u64, len: usize) -> Option<&'a [u8]> {
        let sector = usize::try_from(at / SECTOR).ok()?;
        let within = usize::try_from(at % SECTOR).ok()?;
        self.sector(entry.checked_add(sector)?)
            .get(within..within.checked_add(len)?)
    }

    /// Checks the entry header at sector `at`: fields first, then the checksum, then every
    /// descriptor and data sector. `None` if it is not a valid entry for `log_guid`.
    fn check(&self, at: usize, log_guid: Guid, crcs: &SectorCrcs, work: &mut Work) -> Option<Head> {
        let head = self.sector(at);
        if &head[..4] != ENTRY_SIGNATURE {
            return None;
        }
        let length = u64::from(u32_at(head, 8));
        let tail = u64::from(u32_at(head, 12));
        let sequence = u64_at(head, 16);
        let descriptors = u64::from(u32_at(head, 24));
        if length == 0
            || !length.is_multiple_of(SECTOR)
            || length > self.len()
            || !tail.is_multiple_of(SECTOR)
            || tail >= self.len()
        {
            return None;
        }
        if sequence == 0 || guid_at(head, 32) != log_guid {
            return None;
        }
        let descriptor_area = (ENTRY_HEADER_LEN + descriptors * DESCRIPTOR_LEN).div_ceil(SECTOR);
        let sectors = length / SECTOR;
        if descriptor_area > sectors {
            return None;
        }
        let sectors = usize::try_from(sectors).ok()?;
        let entry = Head {
            sequence,
            sectors,
            tail: usize::try_from(tail / SECTOR).ok()?,
            descriptors,
            descriptor_sectors: usize::try_from(descriptor_area).ok()?,
            flushed_file_offset: u64_at(head, 48),
            last_file_offset: u64_at(head, 56),
        };
        if crcs.entry(self.bytes, at, sectors, work)? != u32_at(head, ENTRY_CHECKSUM) {
            return None;
        }
        self.each_write(at, &entry, work, |_| {})?;
        Some(entry)
    }

    /// Checks the descriptors of the entry at sector `at`, whose header is `head`, and the
    /// data sectors they name, handing each write to `visit` in order; `None` at the first
    /// that fails. Nothing is copied here.
    fn each_write(
        &self,
        at: usize,
        head: &Head,
        work: &mut Work,
        mut visit: impl FnMut(Described<'a>),
    ) -> Option<()> {
        let mut data_sector = head.descriptor_sectors;
        for i in 0..head.descriptors {
            work.descriptors_checked += 1;
            let d =
                self.entry_bytes(at, ENTRY_HEADER_LEN + i * DESCRIPTOR_LEN, DESCRIPTOR_BYTES)?;
            let file_offset = u64_at(d, 16);
            if u64_at(d, 24) != head.sequence || !file_offset.is_multiple_of(SECTOR) {
                return None;
            }
            match &d[..4] {
                s if s == ZERO_SIGNATURE => {
                    let length = u64_at(d, 8);
                    if !length.is_multiple_of(SECTOR) {
                        return None;
                    }
                    visit(Described::Zero {
                        offset: file_offset,
                        length,
                    });
                }
                s if s == DATA_DESC_SIGNATURE => {
                    if data_sector >= head.sectors {
                        return None;
                    }
                    work.data_sectors_checked += 1;
                    let sector = self.sector(at.checked_add(data_sector)?);
                    let seq_high = u64::from(u32_at(sector, 4));
                    let seq_low = u64::from(u32_at(sector, 4092));
                    if &sector[..4] != DATA_SECTOR_SIGNATURE
                        || (seq_high << 32 | seq_low) != head.sequence
                    {
                        return None;
                    }
                    visit(Described::Data {
                        offset: file_offset,
                        descriptor: d,
                        sector,
                    });
                    data_sector += 1;
                }
                _ => return None,
            }
        }
        Some(())
    }

    /// Decodes the entry at sector `at`, which [`LogBuffer::check`] accepted as `head`.
    fn decode(&self, at: usize, head: &Head, work: &mut Work) -> Option<Entry> {
        let mut writes = Vec::new();
        let mut copied = 0u64;
        self.each_write(at, head, work, |write| {
            writes.push(match write {
                Described::Zero { offset, length } => Write::Zero { offset, length },
                Described::Data {
                    offset,
                    descriptor,
                    sector: stored,
                } => {
                    // The sector's first 8 and last 4 bytes live in the descriptor (their
                    // place in the data sector holds the signature and sequence halves).
                    let mut sector = vec![0u8; SECTOR_BYTES];
                    sector[..8].copy_from_slice(&descriptor[8..16]);
                    sector[8..4092].copy_from_slice(&stored[8..4092]);
                    sector[4092..].copy_from_slice(&descriptor[4..8]);
                    copied += SECTOR;
                    Write::Data { offset, sector }
                }
            });
        })?;
        work.bytes_copied += copied;
        Some(Entry {
            sequence: head.sequence,
            offset: (at as u64).checked_mul(SECTOR)?,
            length: (head.sectors as u64).checked_mul(SECTOR)?,
            tail: (head.tail as u64).checked_mul(SECTOR)?,
            flushed_file_offset: head.flushed_file_offset,
            last_file_offset: head.last_file_offset,
            writes,
        })
    }
}

/// Finds the active sequence in `log` (the bytes of the whole log region), oldest entry first.
/// Returns an empty list when no valid sequence exists.
pub fn active_sequence(log: &[u8], log_guid: Guid) -> Vec<Entry> {
    search(log, log_guid).sequence
}

/// Finds the active sequence in `log`, as [`active_sequence`] does, and counts the work.
///
/// Every sector that holds a valid entry is a candidate newest entry (head). A head's
/// sequence is the walk from the sector its Tail names through consecutive valid entries,
/// each starting where the previous one ends with a sequence number one higher; the walk must
/// reach the head itself before passing through more bytes than the log holds. Of the heads
/// whose walk succeeds, the one with the highest sequence number wins (the first in the log
/// among equals), and its walk is the active sequence.
pub fn search(log: &[u8], log_guid: Guid) -> Search {
    let mut work = Work::default();
    let Some(buffer) = LogBuffer::new(log) else {
        return Search::default();
    };
    let crcs = SectorCrcs::new(log, &mut work);
    let heads: Vec<Option<Head>> = (0..buffer.sectors)
        .map(|s| buffer.check(s, log_guid, &crcs, &mut work))
        .collect();
    let next: Vec<Option<usize>> = heads
        .iter()
        .enumerate()
        .map(|(s, head)| {
            let head = head.as_ref()?;
            let to = (s + head.sectors) % buffer.sectors;
            let following = heads[to].as_ref()?;
            (head.sequence.checked_add(1) == Some(following.sequence)).then_some(to)
        })
        .collect();
    let length: Vec<u64> = heads
        .iter()
        .map(|head| head.map_or(0, |h| h.sectors as u64 * SECTOR))
        .collect();
    let reach = Reach::new(&next, &length, &mut work);

    let mut best: Option<(usize, u64)> = None;
    for (s, head) in heads.iter().enumerate() {
        let Some(head) = head else { continue };
        if best.is_some_and(|(_, sequence)| sequence >= head.sequence) {
            continue;
        }
        if heads.get(head.tail).is_some_and(Option::is_some)
            && reach.leads_to(head.tail, s)
            && reach.bytes_before(head.tail, s) <= buffer.len()
        {
            best = Some((s, head.sequence));
        }
    }

    let mut sequence = Vec::new();
    if let Some((newest, _)) = best {
        let mut at = heads[newest].map_or(newest, |h| h.tail);
        // The walk is known to reach `newest`; the bound only guards against a bug.
        for _ in 0..=buffer.sectors {
            let Some(entry) = heads[at].and_then(|h| buffer.decode(at, &h, &mut work)) else {
                break;
            };
            sequence.push(entry);
            if at == newest {
                return Search { sequence, work };
            }
            work.links_followed += 1;
            let Some(to) = next[at] else { break };
            at = to;
        }
        // Unreachable when `reach` is right: report no sequence rather than a wrong one.
        sequence.clear();
    }
    Search { sequence, work }
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
    let Search { sequence, work } = search(&log, header.log_guid);
    tracing::debug!(
        log_length = length,
        entries = sequence.len(),
        bytes_hashed = work.bytes_hashed,
        descriptors_checked = work.descriptors_checked,
        links_followed = work.links_followed,
        "searched the log for its active sequence"
    );
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
