//! Tests of the log search: small logs by hand, the search against a plain model of its
//! rules on random logs, and large hostile logs whose work must stay linear in their size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

/// Writes `bytes` into `log` at byte `at`, wrapping at its end.
fn place(log: &mut [u8], at: usize, bytes: &[u8]) {
    let len = log.len();
    for (i, b) in bytes.iter().enumerate() {
        log[(at + i) % len] = *b;
    }
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

#[test]
fn a_walk_may_not_go_around_the_log_more_than_once() {
    // 8 sectors: A (sequence 1) at 0 spanning 7 sectors, B (2) at 7 spanning 2 (so it wraps
    // onto sector 0), C (3) at 1, inside A. All name sector 0 as tail. C's walk, A → B → C,
    // passes 9 sectors before reaching C: more than the log holds, so C heads no sequence,
    // and B's (A, B) is the active one. Each checksum covers only entries sealed before it.
    let n = 8 * 4096;
    let mut log = vec![0u8; n];
    let header = |sequence: u64, sectors: u32| {
        let mut sector = plausible_header(sequence, sectors * 4096);
        format::seal(&mut sector, ENTRY_CHECKSUM);
        sector
    };
    log[4096..8192].copy_from_slice(&header(3, 1));
    log[..4096].copy_from_slice(&plausible_header(1, 7 * 4096));
    format::seal(&mut log[..7 * 4096], ENTRY_CHECKSUM);
    log[7 * 4096..].copy_from_slice(&plausible_header(2, 2 * 4096));
    let mut b: Vec<u8> = log[7 * 4096..]
        .iter()
        .chain(&log[..4096])
        .copied()
        .collect();
    format::seal(&mut b, ENTRY_CHECKSUM);
    log[7 * 4096..].copy_from_slice(&b[..4096]);

    let found = active_sequence(&log, guid());
    assert_eq!(
        found
            .iter()
            .map(|e| (e.sequence, e.offset))
            .collect::<Vec<_>>(),
        vec![(1, 0), (2, 7 * 4096)]
    );
    assert_eq!(found, model::active_sequence(&log, guid()));
}

#[test]
fn a_data_sector_past_the_end_of_its_entry_is_refused() {
    // One data write: a descriptor sector and a data sector. Shortened to one sector (and
    // resealed), the entry names a data sector that lies outside it, though the bytes there
    // are the right ones.
    let mut log = vec![0u8; 4 * 4096];
    let one = EntryBuilder {
        sequence: 4,
        tail: 0,
        log_guid: guid(),
        flushed_file_offset: 4 * MIB,
        last_file_offset: 4 * MIB,
        writes: vec![Write::Data {
            offset: 3 * MIB,
            sector: vec![7; 4096],
        }],
    }
    .encode();
    assert_eq!(one.len(), 2 * 4096);
    place(&mut log, 0, &one);
    assert_eq!(active_sequence(&log, guid()).len(), 1);
    log[8..12].copy_from_slice(&4096u32.to_le_bytes());
    format::seal(&mut log[..4096], ENTRY_CHECKSUM);
    assert!(active_sequence(&log, guid()).is_empty());
    assert!(model::active_sequence(&log, guid()).is_empty());
}

/// The search as the rules state it, without regard to cost: every sector decoded from a copy
/// of its entry's bytes, and each head's chain walked from its tail. (This is how the search
/// was written before it had to be linear; it is the model the fast one must agree with.)
mod model {
    use super::super::{
        DATA_DESC_SIGNATURE, DATA_SECTOR_SIGNATURE, DESCRIPTOR_LEN, ENTRY_CHECKSUM,
        ENTRY_HEADER_LEN, ENTRY_SIGNATURE, Entry, SECTOR, Write, ZERO_SIGNATURE,
    };
    use crate::guid::Guid;
    use crate::vhdx::format::{self, guid_at, u32_at, u64_at};

    fn read(log: &[u8], at: u64, len: u64) -> Vec<u8> {
        let n = log.len();
        let at = usize::try_from(at).unwrap();
        (0..usize::try_from(len).unwrap())
            .map(|i| log[(at + i) % n])
            .collect()
    }

    fn entry_at(log: &[u8], at: u64, log_guid: Guid) -> Option<Entry> {
        let n = log.len() as u64;
        let head = read(log, at, ENTRY_HEADER_LEN);
        let length = u64::from(u32_at(&head, 8));
        let tail = u64::from(u32_at(&head, 12));
        let sequence = u64_at(&head, 16);
        let descriptors = u64::from(u32_at(&head, 24));
        if &head[..4] != ENTRY_SIGNATURE
            || length == 0
            || !length.is_multiple_of(SECTOR)
            || length > n
            || !tail.is_multiple_of(SECTOR)
            || tail >= n
            || sequence == 0
            || guid_at(&head, 32) != log_guid
        {
            return None;
        }
        let area = (ENTRY_HEADER_LEN + descriptors * DESCRIPTOR_LEN).div_ceil(SECTOR) * SECTOR;
        if area > length {
            return None;
        }
        let bytes = read(log, at, length);
        if format::checksum(&bytes, ENTRY_CHECKSUM) != u32_at(&bytes, ENTRY_CHECKSUM) {
            return None;
        }
        let mut writes = Vec::new();
        let mut data = usize::try_from(area).unwrap();
        for i in 0..descriptors {
            let d = usize::try_from(ENTRY_HEADER_LEN + i * DESCRIPTOR_LEN).unwrap();
            let offset = u64_at(&bytes, d + 16);
            if u64_at(&bytes, d + 24) != sequence || !offset.is_multiple_of(SECTOR) {
                return None;
            }
            if &bytes[d..d + 4] == ZERO_SIGNATURE {
                let length = u64_at(&bytes, d + 8);
                if !length.is_multiple_of(SECTOR) {
                    return None;
                }
                writes.push(Write::Zero { offset, length });
            } else if &bytes[d..d + 4] == DATA_DESC_SIGNATURE {
                if data + 4096 > bytes.len() {
                    return None;
                }
                let s = &bytes[data..data + 4096];
                let stored = u64::from(u32_at(s, 4)) << 32 | u64::from(u32_at(s, 4092));
                if &s[..4] != DATA_SECTOR_SIGNATURE || stored != sequence {
                    return None;
                }
                let mut sector = Vec::with_capacity(4096);
                sector.extend_from_slice(&bytes[d + 8..d + 16]);
                sector.extend_from_slice(&s[8..4092]);
                sector.extend_from_slice(&bytes[d + 4..d + 8]);
                writes.push(Write::Data { offset, sector });
                data += 4096;
            } else {
                return None;
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

    pub(super) fn active_sequence(log: &[u8], log_guid: Guid) -> Vec<Entry> {
        let n = log.len() as u64;
        if n == 0 || !n.is_multiple_of(SECTOR) {
            return Vec::new();
        }
        let entries: Vec<Option<Entry>> = (0..n / SECTOR)
            .map(|s| entry_at(log, s * SECTOR, log_guid))
            .collect();
        let at = |offset: u64| entries[usize::try_from(offset / SECTOR).unwrap()].as_ref();
        let mut best: Vec<Entry> = Vec::new();
        for head in entries.iter().flatten() {
            if best.last().is_some_and(|b| b.sequence >= head.sequence) {
                continue;
            }
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
                if entry.sequence == head.sequence || walked > n {
                    break;
                }
                pos = (pos + entry.length) % n;
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
}

/// xorshift64: reproducible random logs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index in `0..n`.
    fn index(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An entry with random writes, possibly padded past its descriptors and data sectors.
fn random_entry(rng: &mut Rng, sequence: u64, tail: u32, log_guid: Guid) -> Vec<u8> {
    let writes = (0..rng.below(4))
        .map(|i| {
            let offset = (8 + rng.below(8)) * MIB + i * SECTOR;
            if rng.chance(50) {
                Write::Zero {
                    offset,
                    length: SECTOR * rng.below(3),
                }
            } else {
                let mut sector = vec![0u8; 4096];
                sector.iter_mut().for_each(|b| *b = rng.byte());
                Write::Data { offset, sector }
            }
        })
        .collect();
    let mut bytes = EntryBuilder {
        sequence,
        tail,
        log_guid,
        flushed_file_offset: 16 * MIB,
        last_file_offset: 16 * MIB + rng.below(4) * MIB,
        writes,
    }
    .encode();
    if rng.chance(20) {
        // Padding: allowed, and covered by the checksum.
        let padded = bytes.len() + 4096 * (1 + rng.index(2));
        bytes.resize(padded, 0xA5);
        put(&mut bytes, 8, &u32::try_from(padded).unwrap().to_le_bytes());
        format::seal(&mut bytes, ENTRY_CHECKSUM);
    }
    bytes
}

/// A log of 1 to 24 sectors holding a few chains of entries (tails pointing at their start,
/// or elsewhere), stray headers, foreign entries and flipped bytes.
fn random_log(rng: &mut Rng) -> Vec<u8> {
    let sectors = 1 + rng.index(24);
    let n = sectors * 4096;
    let mut log = vec![0u8; n];
    for _ in 0..rng.below(5) {
        let start = rng.index(sectors) * 4096;
        let mut sequence = if rng.chance(10) {
            u64::MAX - rng.below(3)
        } else {
            1 + rng.below(6)
        };
        let tail = match rng.below(4) {
            0 => rng.below(sectors as u64) * 4096,
            1 => rng.below(2 * sectors as u64) * 4096, // sometimes past the end
            _ => start as u64,
        };
        let mut at = start;
        for _ in 0..1 + rng.below(5) {
            let log_guid = if rng.chance(5) {
                Guid::derived("log", b"other")
            } else {
                guid()
            };
            let mut bytes = random_entry(rng, sequence, u32::try_from(tail).unwrap(), log_guid);
            if bytes.len() > n {
                break;
            }
            if rng.chance(8) {
                let i = rng.index(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            place(&mut log, at, &bytes);
            at += bytes.len();
            sequence = if rng.chance(10) {
                sequence.wrapping_add(2)
            } else {
                sequence.wrapping_add(1)
            };
        }
    }
    if rng.chance(30) {
        // A stray header: a plausible start, the rest whatever the log holds.
        let s = rng.index(sectors) * 4096;
        log[s..s + 4].copy_from_slice(ENTRY_SIGNATURE);
        let length = 4096 * (1 + rng.below(sectors as u64));
        log[s + 8..s + 12].copy_from_slice(&u32::try_from(length).unwrap().to_le_bytes());
    }
    log
}

#[test]
fn agrees_with_the_model_on_random_logs() {
    let mut rng = Rng(0x5EED_1065_0000_0001);
    let (mut found, mut longer) = (0, 0);
    for round in 0..4000 {
        let log = random_log(&mut rng);
        let expected = model::active_sequence(&log, guid());
        let got = active_sequence(&log, guid());
        assert_eq!(got, expected, "round {round}: {} sectors", log.len() / 4096);
        found += usize::from(!expected.is_empty());
        longer += usize::from(expected.len() > 1);
    }
    // The logs must exercise the search, not only its refusals.
    assert!(
        found > 1000 && longer > 300,
        "{found} found, {longer} longer"
    );
}

/// A sector that passes every cheap check of an entry header: signature, length (`length`
/// bytes), tail 0, a non-zero sequence, no descriptors and the log's GUID. Its checksum is
/// left zero, which is wrong.
fn plausible_header(sequence: u64, length: u32) -> [u8; 4096] {
    let mut sector = [0u8; 4096];
    sector[..4].copy_from_slice(ENTRY_SIGNATURE);
    sector[8..12].copy_from_slice(&length.to_le_bytes());
    sector[16..24].copy_from_slice(&sequence.to_le_bytes());
    sector[32..48].copy_from_slice(&guid().to_bytes());
    sector
}

#[test]
fn a_log_of_long_headers_with_bad_checksums_costs_two_passes() {
    // 64 MiB: 16384 headers each claiming the whole log. Summed from their bytes they
    // would cost 16384 × 64 MiB = 1 TiB hashed.
    let n = 64 << 20;
    let sectors = n / 4096;
    let mut log = vec![0u8; n];
    for (s, sector) in log.chunks_exact_mut(4096).enumerate() {
        sector.copy_from_slice(&plausible_header(s as u64 + 1, u32::try_from(n).unwrap()));
    }
    let Search { sequence, work } = search(&log, guid());
    assert!(sequence.is_empty());
    let n = n as u64;
    assert!(
        work.bytes_hashed <= 2 * n,
        "{} bytes hashed for a {n}-byte log",
        work.bytes_hashed
    );
    assert!(
        work.crc_multiplications <= 4 * sectors as u64 + 1,
        "{work:?}"
    );
    assert_eq!(work.descriptors_checked, 0, "no checksum matched: {work:?}");
}

#[test]
fn a_log_full_of_one_chain_is_walked_once() {
    // 64 MiB of one-sector entries with consecutive sequence numbers, every one naming the
    // first as its tail: each is a head whose walk covers all entries before it, so walking
    // each head's chain would follow 16384²/2 links.
    let n = 64usize << 20;
    let sectors = n / 4096;
    let mut log = vec![0u8; n];
    for s in 0..sectors {
        let bytes = EntryBuilder {
            sequence: 1000 + s as u64,
            tail: 0,
            log_guid: guid(),
            flushed_file_offset: 16 * MIB,
            last_file_offset: 16 * MIB,
            writes: Vec::new(),
        }
        .encode();
        log[s * 4096..(s + 1) * 4096].copy_from_slice(&bytes);
    }
    let Search { sequence, work } = search(&log, guid());
    assert_eq!(
        sequence.len(),
        sectors,
        "the whole log is the active sequence"
    );
    assert_eq!(
        sequence.last().map(|e| e.sequence),
        Some(999 + sectors as u64)
    );
    assert!(
        work.links_followed <= 2 * sectors as u64 + 1,
        "{} links followed for {sectors} sectors",
        work.links_followed
    );
    assert!(work.bytes_hashed <= 2 * n as u64, "{work:?}");
}

#[test]
fn headers_sharing_their_data_sectors_are_checked_without_copying() {
    // Every sector but the last 126 is an entry whose first descriptor sector names 126 data
    // sectors, and whose descriptor count is chosen so that its data sectors are the log's
    // last 126 — the same ones for all. Each entry fails at descriptor 126 (the next sector
    // starts with `loge`, not a descriptor), except the last, which is valid. Checksums are
    // all correct (sealed from the last entry back, since each covers only later sectors).
    let sectors = 512usize;
    let n = sectors * 4096;
    let sequence = 77u64;
    let data_at = sectors - 126;
    let mut log = vec![0u8; n];
    for s in data_at..sectors {
        let sector = &mut log[s * 4096..(s + 1) * 4096];
        sector[..4].copy_from_slice(DATA_SECTOR_SIGNATURE);
        sector[4..8].copy_from_slice(&u32::try_from(sequence >> 32).unwrap().to_le_bytes());
        sector[4092..]
            .copy_from_slice(&u32::try_from(sequence & 0xFFFF_FFFF).unwrap().to_le_bytes());
    }
    for s in (0..data_at).rev() {
        let area = data_at - s; // descriptor sectors, so that data starts at `data_at`
        let length = u32::try_from((area + 126) * 4096).unwrap();
        let start = s * 4096;
        let sector = &mut log[start..start + 4096];
        sector.copy_from_slice(&plausible_header(sequence, length));
        sector[12..16].copy_from_slice(&u32::try_from(start).unwrap().to_le_bytes());
        let count = u32::try_from(128 * area - 2).unwrap();
        sector[24..28].copy_from_slice(&count.to_le_bytes());
        for i in 0..126 {
            let d = &mut sector[64 + 32 * i..96 + 32 * i];
            d[..4].copy_from_slice(DATA_DESC_SIGNATURE);
            d[16..24].copy_from_slice(&(8 * MIB + 4096 * i as u64).to_le_bytes());
            d[24..32].copy_from_slice(&sequence.to_le_bytes());
        }
        let end = start + usize::try_from(length).unwrap();
        format::seal(&mut log[start..end], ENTRY_CHECKSUM);
    }
    let Search {
        sequence: found,
        work,
    } = search(&log, guid());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].offset, (data_at as u64 - 1) * 4096);
    assert_eq!(found[0].writes.len(), 126);
    assert_eq!(found, model::active_sequence(&log, guid()));
    let n = n as u64;
    assert!(work.descriptors_checked <= 255 * sectors as u64, "{work:?}");
    assert!(
        work.data_sectors_checked <= work.descriptors_checked,
        "{work:?}"
    );
    // Only the entry found was copied, though every entry checked its 126 data sectors.
    assert_eq!(work.bytes_copied, 126 * 4096, "{work:?}");
    assert!(work.bytes_hashed <= 2 * n, "{work:?}");
}
