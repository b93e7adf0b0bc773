//! CRC-32C of any run of whole log sectors, each in constant time after one pass over the log.
//!
//! MS-VHDX checksums are CRC-32C with an initial value and a final XOR of all ones. For that
//! CRC, `crc(A ‖ B) = crc(A) · x^(8·|B|) ⊕ crc(B)`, the product taken modulo the CRC
//! polynomial: the ones XORed out at the end of A and the ones fed in at the start of B cancel.
//! So from the checksums `P(k)` of the log's first `k` sectors, a run of sectors `a..b` sums to
//! `P(b) ⊕ P(a) · x^(8·4096·(b − a))`, and with a table of the powers `x^(8·4096·m)` that is one
//! 32-step multiplication, whatever the length of the run. (The crc32c crate's
//! `crc32c_combine` computes the same product, but by squaring 32×32 bit matrices
//! log₂(length) times: too slow to call for every sector of a 256 MiB log.)
//!
//! A run that wraps at the end of the log is a run of the log written twice in a row, whose
//! prefixes past the first copy are `P(n) · x^(8·4096·(k − n)) ⊕ P(k − n)`.

use super::Work;
use crate::vhdx::format;

/// Bytes in a log sector.
const SECTOR_BYTES: usize = 4096;
/// Bits of one sector: a shift over a sector multiplies by `x^SECTOR_BITS`.
const SECTOR_BITS: usize = 8 * SECTOR_BYTES;
/// The CRC-32C (Castagnoli) polynomial without its `x^32` term, bit-reflected as the CRC
/// register holds it: bit 31 is the coefficient of `x^0`, bit 0 that of `x^31`.
const POLYNOMIAL: u32 = 0x82F6_3B78;
/// The polynomial `1` in that bit order.
const ONE: u32 = 0x8000_0000;
/// Where an entry stores its checksum.
const CHECKSUM_FIELD: usize = 4;

/// `p · x` modulo the polynomial: feeding one zero bit into a CRC register holding `p`.
fn times_x(p: u32) -> u32 {
    if p & 1 == 1 {
        (p >> 1) ^ POLYNOMIAL
    } else {
        p >> 1
    }
}

/// `a · b` modulo the polynomial (both bit-reflected): 32 shift-and-add steps.
fn multiply(a: u32, b: u32) -> u32 {
    let mut product = 0;
    // `term` is b · x^i while the loop looks at the coefficient of x^i in `a` (bit 31 − i).
    let mut term = b;
    for bit in (0..32).rev() {
        if (a >> bit) & 1 == 1 {
            product ^= term;
        }
        term = times_x(term);
    }
    product
}

/// The checksums of every prefix of the log in whole sectors, and the shift table.
pub(super) struct SectorCrcs {
    /// `prefix[k]`: CRC-32C of the log's first `k` sectors (`prefix[0]` is 0, the CRC of
    /// nothing). One more element than the log has sectors.
    prefix: Vec<u32>,
    /// `shift[m]`: `x^(8·4096·m)` modulo the polynomial, for `m` in `0..=sectors`.
    shift: Vec<u32>,
}

impl SectorCrcs {
    /// Hashes `log` (whole sectors; a partial last sector is ignored) once.
    pub(super) fn new(log: &[u8], work: &mut Work) -> SectorCrcs {
        let sectors = log.len() / SECTOR_BYTES;
        let mut prefix = Vec::with_capacity(sectors + 1);
        let mut crc = 0;
        prefix.push(crc);
        for sector in log.chunks_exact(SECTOR_BYTES) {
            crc = crc32c::crc32c_append(crc, sector);
            prefix.push(crc);
        }
        work.bytes_hashed += (sectors * SECTOR_BYTES) as u64;
        let per_sector = (0..SECTOR_BITS).fold(ONE, |p, _| times_x(p));
        let mut shift = Vec::with_capacity(sectors + 1);
        let mut power = ONE;
        for _ in 0..=sectors {
            shift.push(power);
            power = multiply(power, per_sector);
        }
        work.crc_multiplications += sectors as u64 + 1;
        SectorCrcs { prefix, shift }
    }

    /// Number of sectors in the log.
    fn sectors(&self) -> usize {
        self.prefix.len() - 1
    }

    /// `crc(A ‖ B)` from `crc(A)`, `crc(B)` and B's length in sectors (at most the log's).
    fn concat(&self, a: u32, b: u32, b_sectors: usize, work: &mut Work) -> Option<u32> {
        work.crc_multiplications += 1;
        Some(multiply(a, *self.shift.get(b_sectors)?) ^ b)
    }

    /// CRC-32C of the first `k` sectors of the log written twice in a row (`k` ≤ 2 × sectors).
    fn prefix_twice(&self, k: usize, work: &mut Work) -> Option<u32> {
        let n = self.sectors();
        match k.checked_sub(n) {
            None | Some(0) => self.prefix.get(k).copied(),
            Some(past) => self.concat(self.prefix[n], *self.prefix.get(past)?, past, work),
        }
    }

    /// CRC-32C of `count` sectors starting at sector `first`, wrapping at the end of the log;
    /// `None` unless `first` is a sector of the log and `count` at most the log's sectors.
    pub(super) fn run(&self, first: usize, count: usize, work: &mut Work) -> Option<u32> {
        if first >= self.sectors() || count > self.sectors() {
            return None;
        }
        let end = first + count;
        let before = *self.prefix.get(first)?;
        let through = self.prefix_twice(end, work)?;
        Some(through ^ self.concat(before, 0, count, work)?)
    }

    /// The checksum an entry of `count` sectors at sector `first` of `log` must store: the
    /// CRC-32C of its bytes with the checksum field taken as zero. The first sector, which
    /// holds the field, is hashed here (4 KiB); the rest comes from the prefix table.
    pub(super) fn entry(
        &self,
        log: &[u8],
        first: usize,
        count: usize,
        work: &mut Work,
    ) -> Option<u32> {
        let start = first.checked_mul(SECTOR_BYTES)?;
        let head = log.get(start..start.checked_add(SECTOR_BYTES)?)?;
        work.bytes_hashed += SECTOR_BYTES as u64;
        let head_crc = format::checksum(head, CHECKSUM_FIELD);
        let rest = count.checked_sub(1)?;
        if rest == 0 {
            return Some(head_crc);
        }
        let rest_crc = self.run((first + 1) % self.sectors(), rest, work)?;
        self.concat(head_crc, rest_crc, rest, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(sectors: usize) -> Vec<u8> {
        // Deterministic, non-repeating bytes.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..sectors * SECTOR_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn multiplying_by_a_power_of_x_matches_the_crates_combine() {
        let table = SectorCrcs::new(&log(8), &mut Work::default());
        for (m, c) in [(0, 0x1234_5678), (1, 0xDEAD_BEEF), (3, 1), (8, 0xFFFF_FFFF)] {
            let expected = crc32c::crc32c_combine(c, 0, m * SECTOR_BYTES);
            assert_eq!(
                multiply(c, table.shift[m]),
                expected,
                "shift by {m} sectors"
            );
        }
        assert_eq!(multiply(0x0F0F_0F0F, ONE), 0x0F0F_0F0F);
    }

    /// `count` sectors of `bytes` from sector `first`, wrapping round its end as the log does.
    fn circular_run(bytes: &[u8], first: usize, count: usize) -> Vec<u8> {
        bytes
            .iter()
            .cycle()
            .skip(first * SECTOR_BYTES)
            .take(count * SECTOR_BYTES)
            .copied()
            .collect()
    }

    #[test]
    fn a_run_sums_like_its_bytes_wrapping_or_not() {
        let sectors = 7;
        let bytes = log(sectors);
        let table = SectorCrcs::new(&bytes, &mut Work::default());
        for first in 0..sectors {
            for count in 0..=sectors {
                let run = circular_run(&bytes, first, count);
                assert_eq!(
                    table.run(first, count, &mut Work::default()),
                    Some(crc32c::crc32c(&run)),
                    "{count} sectors from {first}"
                );
            }
        }
        assert_eq!(table.run(sectors, 1, &mut Work::default()), None);
        assert_eq!(table.run(0, sectors + 1, &mut Work::default()), None);
    }

    #[test]
    fn an_entry_sums_with_its_checksum_field_as_zero() {
        let sectors = 5;
        let bytes = log(sectors);
        let mut work = Work::default();
        let table = SectorCrcs::new(&bytes, &mut work);
        for first in 0..sectors {
            for count in 1..=sectors {
                let entry = circular_run(&bytes, first, count);
                assert_eq!(
                    table.entry(&bytes, first, count, &mut work),
                    Some(format::checksum(&entry, CHECKSUM_FIELD))
                );
            }
        }
        // One pass over the log, then one sector per entry checked, whatever its length.
        let checked = sectors * sectors;
        assert_eq!(
            work.bytes_hashed,
            ((sectors + checked) * SECTOR_BYTES) as u64
        );
        assert!(work.crc_multiplications <= (sectors + 1 + 3 * checked) as u64);
    }
}
