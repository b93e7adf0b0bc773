//! Validation of the BAT against the file: states, bounds, alignment and overlaps.
//!
//! Shared by [`super::reader::Vhdx::open`] (the first finding is fatal) and
//! [`super::check`] (every finding is reported).

use super::format::{BatEntry, BitmapState, Geometry, HEADER_AREA_SIZE, SECTOR_BITMAP_BLOCK_SIZE};

/// Reports at most this many findings, so a hostile BAT cannot make the report unbounded.
pub const MAX_FINDINGS: usize = 1000;

/// Checks every BAT entry; returns one human-readable line per problem.
///
/// `reserved` lists file ranges no block may overlap (headers, log, metadata, BAT), with names.
pub fn bat_findings(
    g: &Geometry,
    bat: &[BatEntry],
    reserved: &[(u64, u64, String)],
    file_size: u64,
) -> Vec<String> {
    let mut findings = Vec::new();
    let push = |findings: &mut Vec<String>, text: String| {
        if findings.len() < MAX_FINDINGS {
            findings.push(text);
        }
    };
    // (start, end, description) of every block the BAT points at.
    let mut placed: Vec<(u64, u64, u64)> = Vec::new();
    for (index, entry) in bat.iter().enumerate() {
        let index = index as u64;
        let (what, len, has_offset) = if g.is_bitmap_index(index) {
            let chunk = index / (g.chunk_ratio() + 1);
            match entry.bitmap_state() {
                None => {
                    push(
                        &mut findings,
                        format!(
                            "BAT entry {index} (sector bitmap of chunk {chunk}) has invalid state {}",
                            entry.state_bits()
                        ),
                    );
                    continue;
                }
                Some(BitmapState::Present) if !g.has_parent => {
                    push(
                        &mut findings,
                        format!(
                            "BAT entry {index} (sector bitmap of chunk {chunk}) is present in a disk without a parent"
                        ),
                    );
                    continue;
                }
                Some(state) => (
                    format!("sector bitmap of chunk {chunk}"),
                    SECTOR_BITMAP_BLOCK_SIZE,
                    state == BitmapState::Present,
                ),
            }
        } else {
            let block = g.block_of_index(index);
            match entry.payload_state() {
                None => {
                    push(
                        &mut findings,
                        format!(
                            "BAT entry {index} (block {block}) has invalid state {}",
                            entry.state_bits()
                        ),
                    );
                    continue;
                }
                Some(super::format::PayloadState::PartiallyPresent) if !g.has_parent => {
                    push(
                        &mut findings,
                        format!(
                            "BAT entry {index} (block {block}) is partially present in a disk without a parent"
                        ),
                    );
                    continue;
                }
                Some(state) => (
                    format!("block {block}"),
                    g.block_len(block)
                        .next_multiple_of(u64::from(g.logical_sector_size)),
                    state.has_offset(),
                ),
            }
        };
        if entry.reserved_bits() != 0 {
            push(
                &mut findings,
                format!(
                    "BAT entry {index} ({what}) has reserved bits set ({:#x})",
                    entry.0
                ),
            );
        }
        if !has_offset {
            continue;
        }
        let start = entry.file_offset();
        let end = start.saturating_add(len);
        if start < HEADER_AREA_SIZE {
            push(
                &mut findings,
                format!("BAT entry {index} ({what}) points at {start:#x}, inside the header area"),
            );
            continue;
        }
        if end > file_size {
            push(
                &mut findings,
                format!(
                    "BAT entry {index} ({what}) spans {start:#x}..{end:#x}, past the end of the {file_size}-byte file"
                ),
            );
            continue;
        }
        if let Some((_, _, name)) = reserved.iter().find(|(s, e, _)| start < *e && end > *s) {
            push(
                &mut findings,
                format!("BAT entry {index} ({what}) at {start:#x} overlaps {name}"),
            );
            continue;
        }
        placed.push((start, end, index));
    }
    placed.sort_unstable();
    for pair in placed.windows(2) {
        let ((_, a_end, a), (b_start, _, b)) = (pair[0], pair[1]);
        if a_end > b_start {
            push(
                &mut findings,
                format!(
                    "BAT entries {a} and {b} point at overlapping file ranges (at {b_start:#x})"
                ),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::super::format::{MIB, PayloadState};
    use super::*;

    #[test]
    fn each_kind_of_bad_entry_is_found() {
        let g = Geometry::new(8 * MIB, 1 << 20, 512, false).unwrap();
        let reserved = vec![(3 * MIB, 4 * MIB, "the BAT region".to_string())];
        let ok = |i: u64| BatEntry::payload(PayloadState::FullyPresent, (10 + i) * MIB);
        let mut bat: Vec<BatEntry> = (0..8).map(ok).collect();
        assert!(bat_findings(&g, &bat, &reserved, 20 * MIB).is_empty());
        bat[1] = BatEntry(4); // reserved state
        bat[2] = BatEntry::payload(PayloadState::FullyPresent, 10 * MIB); // overlaps block 0
        bat[3] = BatEntry::payload(PayloadState::FullyPresent, 3 * MIB); // overlaps the BAT
        bat[4] = BatEntry::payload(PayloadState::FullyPresent, 100 * MIB); // past the end
        bat[5] = BatEntry::payload(PayloadState::PartiallyPresent, 15 * MIB); // no parent
        bat[6] = BatEntry::payload(PayloadState::FullyPresent, 0); // header area
        let found = bat_findings(&g, &bat, &reserved, 20 * MIB);
        assert_eq!(found.len(), 6, "{found:#?}");
        for needle in [
            "invalid state 4",
            "overlapping",
            "overlaps the BAT region",
            "past the end",
            "without a parent",
            "header area",
        ] {
            assert!(
                found.iter().any(|f| f.contains(needle)),
                "{needle} not in {found:#?}"
            );
        }
    }
}
