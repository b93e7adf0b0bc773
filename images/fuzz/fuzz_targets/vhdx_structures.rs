//! Fuzz target: the VHDX structure decoders, fed from bytes without a file.
//!
//! Cheaper per input than `vhdx_reader`, so it explores each decoder's field checks faster.
//! Input: `[decoder][flags][payload...]`. `decoder` (modulo [`DECODERS`]) picks:
//! 0 file identifier, 1 header, 2 region table, 3 metadata table (payload: region length as
//! u64 LE, then the table), 4 file parameters, 5 parent locator, 6 log (payload: LogGuid, then
//! the log), 7 geometry (payload: virtual size u64, block size u32, logical sector size u32,
//! has-parent u8). With [`FLAG_RESEAL`] set, a header, region table or metadata table payload
//! is zero-padded to its full size, and checksums are recomputed (header, region table, every
//! log entry), so mutations get past the CRC check.

#![no_main]

use std::hint::black_box;

use images::guid::Guid;
use images::vhdx::format::{
    FileIdentifier, FileParameters, Geometry, HEADER_SIZE, Header, METADATA_TABLE_SIZE,
    MetadataTable, ParentLocator, REGION_TABLE_SIZE, RegionTable, locator_key,
};
use images::vhdx::log::{self, SECTOR};
use images_fuzz::{FLAG_RESEAL, reseal, reseal_log};
use libfuzzer_sys::fuzz_target;

/// Number of decoders the first byte chooses among.
const DECODERS: u8 = 8;
/// Largest log decoded (the reader accepts 256 MiB; the decoder's work is per sector).
const MAX_LOG: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [decoder, flags, payload @ ..] = data else {
        return;
    };
    let reseal_it = flags & FLAG_RESEAL != 0;
    match decoder % DECODERS {
        0 => {
            black_box(FileIdentifier::decode(payload).is_ok());
        }
        1 => {
            let buf = prepare(payload, HEADER_SIZE, reseal_it, true);
            black_box(Header::decode(&buf).is_ok());
        }
        2 => {
            let buf = prepare(payload, REGION_TABLE_SIZE, reseal_it, true);
            if let Ok(table) = RegionTable::decode(&buf) {
                black_box(table.entries.iter().map(|e| e.end()).max());
            }
        }
        3 => {
            let Some((region_len, table)) = payload.split_first_chunk::<8>() else {
                return;
            };
            let buf = prepare(table, METADATA_TABLE_SIZE, reseal_it, false);
            black_box(MetadataTable::decode(&buf, u64::from_le_bytes(*region_len)).is_ok());
        }
        4 => {
            black_box(FileParameters::decode(payload).is_ok());
        }
        5 => {
            if let Ok(locator) = ParentLocator::decode(payload) {
                for key in [
                    locator_key::PARENT_LINKAGE,
                    locator_key::PARENT_LINKAGE2,
                    locator_key::RELATIVE_PATH,
                    locator_key::VOLUME_PATH,
                    locator_key::ABSOLUTE_WIN32_PATH,
                ] {
                    black_box(locator.get(key));
                }
            }
        }
        6 => {
            let Some((guid, log)) = payload.split_first_chunk::<16>() else {
                return;
            };
            let mut log = log[..log.len().min(MAX_LOG)].to_vec();
            if reseal_it {
                let sector = usize::try_from(SECTOR).unwrap_or(4096);
                log.resize(log.len().div_ceil(sector) * sector, 0);
                reseal_log(&mut log);
            }
            black_box(log::active_sequence(&log, Guid::from_bytes(*guid)));
        }
        _ => geometry(payload),
    }
});

/// `payload` as a structure of `size` bytes: as is, or zero-padded (and resealed when it has
/// a checksum) when `reseal_it` is set.
fn prepare(payload: &[u8], size: usize, reseal_it: bool, has_checksum: bool) -> Vec<u8> {
    let mut buf = payload.to_vec();
    if reseal_it {
        buf.resize(size.max(buf.len()), 0);
        if has_checksum {
            reseal(&mut buf[..size]);
        }
    }
    buf
}

/// Validates a geometry and, when it is accepted, evaluates every derived number over the
/// block and chunk indices the reader uses (all within the disk).
fn geometry(payload: &[u8]) {
    let mut bytes = [0u8; 17];
    let n = payload.len().min(bytes.len());
    bytes[..n].copy_from_slice(&payload[..n]);
    let virtual_size = u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    let block_size = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let sector = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let Ok(g) = Geometry::new(virtual_size, block_size, sector, bytes[16] & 1 != 0) else {
        return;
    };
    let blocks = g.data_blocks();
    black_box((g.chunk_ratio(), g.bitmap_blocks(), g.bat_entries()));
    for block in [0, blocks / 2, blocks - 1] {
        let index = g.payload_index(block);
        black_box((
            g.block_len(block),
            g.block_of_index(index),
            g.is_bitmap_index(index),
        ));
    }
    for chunk in [0, g.bitmap_blocks() - 1] {
        let index = g.bitmap_index(chunk);
        black_box((g.is_bitmap_index(index), g.block_of_index(index)));
    }
}
