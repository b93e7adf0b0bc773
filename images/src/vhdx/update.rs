//! Changing an existing VHDX: replaying its log into the file, and sparse writes into a
//! differencing child.
//!
//! Write ordering keeps the file consistent at every instant: new data and sector bitmaps
//! go to freshly allocated space first, and the BAT entries that make them visible are
//! written only after an fsync. A crash in between leaves unreferenced space, never a BAT
//! entry pointing at data that is not there.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::format::{
    BatEntry, BitmapState, Geometry, HEADER_OFFSETS, MIB, PayloadState, SECTOR_BITMAP_BLOCK_SIZE,
    region,
};
use super::reader::{self, Vhdx};
use crate::guid::{Guid, RandomGuidError};
use crate::pio;

/// Why a file could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened for writing.
    #[error("open {path} for writing")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The file is not valid.
    #[error(transparent)]
    ReadImage(#[from] reader::Error),
    /// Writing failed.
    #[error("write {what} at {offset:#x}")]
    WriteFile {
        /// What.
        what: &'static str,
        /// Where.
        offset: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Sparse writes are only for differencing disks.
    #[error(
        "{path} is not a differencing disk; sparse writes go into a child made with `slipway vhdx child`"
    )]
    NeedChild {
        /// The file.
        path: PathBuf,
    },
    /// A write is not aligned to the logical sector size or passes the end of the disk.
    #[error(
        "write of {len} bytes at {offset:#x} is not sector-aligned ({sector} bytes) or passes the end of the {size}-byte disk"
    )]
    AlignWrite {
        /// Offset.
        offset: u64,
        /// Length.
        len: usize,
        /// Logical sector size.
        sector: u32,
        /// Virtual size.
        size: u64,
    },
    /// No random identifier could be had.
    #[error("make a new DataWriteGuid")]
    MakeGuid(#[source] RandomGuidError),
}

fn open_rw(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| Error::OpenFile {
            path: path.to_owned(),
            source,
        })
}

fn write(file: &File, bytes: &[u8], offset: u64, what: &'static str) -> Result<(), Error> {
    pio::write_all_at(file, bytes, offset).map_err(|source| Error::WriteFile {
        what,
        offset,
        source,
    })
}

fn sync(file: &File) -> Result<(), Error> {
    file.sync_all().map_err(|source| Error::WriteFile {
        what: "fsync",
        offset: 0,
        source,
    })
}

/// Writes a new header into both slots (the stale one first), so one valid current header
/// exists at every instant.
fn rewrite_headers(
    file: &File,
    vhdx: &Vhdx,
    update: impl Fn(&mut super::format::Header),
) -> Result<(), Error> {
    let mut header = vhdx.header().clone();
    update(&mut header);
    let current = vhdx.header_slot();
    for slot in [1 - current, current] {
        header.sequence_number += 1;
        write(file, &header.encode(), HEADER_OFFSETS[slot], "header")?;
        sync(file)?;
    }
    Ok(())
}

/// Replays a dirty log into the file itself and clears the header's LogGuid. Returns false
/// when the log was already clean (nothing written).
pub fn replay_log(path: &Path) -> Result<bool, Error> {
    let vhdx = Vhdx::open(path)?;
    if !vhdx.log_replayed() {
        return Ok(false);
    }
    let file = open_rw(path)?;
    let overlay = vhdx.backing().overlay().cloned().unwrap_or_default();
    let zeros = vec![0u8; usize::try_from(MIB).unwrap_or(1 << 20)];
    for (offset, len, data) in overlay.writes() {
        match data {
            Some(bytes) => write(&file, bytes, offset, "replayed log data")?,
            None => {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(MIB);
                    write(
                        &file,
                        &zeros[..usize::try_from(n).unwrap_or(0)],
                        offset + done,
                        "replayed log zeros",
                    )?;
                    done += n;
                }
            }
        }
    }
    let size = file
        .metadata()
        .map_err(|source| Error::OpenFile {
            path: path.to_owned(),
            source,
        })?
        .len();
    if overlay.size() > size {
        file.set_len(overlay.size())
            .map_err(|source| Error::WriteFile {
                what: "file size",
                offset: overlay.size(),
                source,
            })?;
    }
    sync(&file)?;
    rewrite_headers(&file, &vhdx, |h| h.log_guid = Guid::ZERO)?;
    Ok(true)
}

/// A differencing disk open for sparse, sector-aligned writes. Call [`ChildWriter::flush`]
/// to make writes durable and visible; dropping without it loses the unflushed writes but
/// leaves the file consistent.
#[derive(Debug)]
pub struct ChildWriter {
    file: File,
    geometry: Geometry,
    bat_offset: u64,
    bat: Vec<BatEntry>,
    file_end: u64,
    /// BAT indices changed since the last flush.
    dirty_bat: BTreeMap<u64, BatEntry>,
    /// Sector bitmap bytes changed since the last flush: file offset → byte.
    dirty_bits: BTreeMap<u64, u8>,
}

impl ChildWriter {
    /// Opens a differencing disk for writing. Its headers get a new FileWriteGuid and
    /// DataWriteGuid first, as the specification asks before the first change.
    pub fn open(path: &Path) -> Result<ChildWriter, Error> {
        let vhdx = Vhdx::open(path)?;
        if vhdx.parent_locator().is_none() {
            return Err(Error::NeedChild {
                path: path.to_owned(),
            });
        }
        if vhdx.log_replayed() {
            replay_log(path)?;
            return ChildWriter::open(path);
        }
        let file = open_rw(path)?;
        let file_write = Guid::random().map_err(Error::MakeGuid)?;
        let data_write = Guid::random().map_err(Error::MakeGuid)?;
        rewrite_headers(&file, &vhdx, |h| {
            h.file_write_guid = file_write;
            h.data_write_guid = data_write;
        })?;
        let bat_offset = vhdx
            .regions()
            .find(region::BAT)
            .map(|r| r.file_offset)
            .unwrap_or_default();
        Ok(ChildWriter {
            file,
            geometry: *vhdx.geometry(),
            bat_offset,
            bat: vhdx.bat().to_vec(),
            file_end: vhdx.file_size().next_multiple_of(MIB),
            dirty_bat: BTreeMap::new(),
            dirty_bits: BTreeMap::new(),
        })
    }

    fn allocate(&mut self, len: u64) -> Result<u64, Error> {
        let at = self.file_end;
        self.file_end += len;
        self.file
            .set_len(self.file_end)
            .map_err(|source| Error::WriteFile {
                what: "new block",
                offset: at,
                source,
            })?;
        Ok(at)
    }

    fn set_entry(&mut self, index: u64, entry: BatEntry) {
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.bat.get_mut(i))
        {
            *slot = entry;
        }
        self.dirty_bat.insert(index, entry);
    }

    fn entry(&self, index: u64) -> BatEntry {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.bat.get(i))
            .copied()
            .unwrap_or_default()
    }

    /// Writes `data` at virtual `offset` (both multiples of the logical sector size).
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), Error> {
        let g = self.geometry;
        let sector = u64::from(g.logical_sector_size);
        let len = data.len() as u64;
        if !offset.is_multiple_of(sector)
            || !len.is_multiple_of(sector)
            || offset.checked_add(len).is_none_or(|e| e > g.virtual_size)
        {
            return Err(Error::AlignWrite {
                offset,
                len: data.len(),
                sector: g.logical_sector_size,
                size: g.virtual_size,
            });
        }
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let block = pos / g.block_bytes();
            let within = pos % g.block_bytes();
            let n = (g.block_bytes() - within).min(len - done);
            let index = g.payload_index(block);
            let entry = self.entry(index);
            let block_offset = match entry.payload_state() {
                Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent) => {
                    entry.file_offset()
                }
                _ => {
                    let at = self.allocate(g.block_bytes())?;
                    self.set_entry(index, BatEntry::payload(PayloadState::PartiallyPresent, at));
                    at
                }
            };
            let slice =
                &data[usize::try_from(done).unwrap_or(0)..usize::try_from(done + n).unwrap_or(0)];
            write(&self.file, slice, block_offset + within, "child data")?;
            if entry.payload_state() != Some(PayloadState::FullyPresent) {
                self.mark_present(block, within, n)?;
            }
            done += n;
        }
        Ok(())
    }

    /// Sets the sector-bitmap bits for `n` bytes at `within` in `block`.
    fn mark_present(&mut self, block: u64, within: u64, n: u64) -> Result<(), Error> {
        let g = self.geometry;
        let sector = u64::from(g.logical_sector_size);
        let chunk = block / g.chunk_ratio();
        let bitmap_index = g.bitmap_index(chunk);
        let bitmap = self.entry(bitmap_index);
        let bitmap_offset = if bitmap.bitmap_state() == Some(BitmapState::Present) {
            bitmap.file_offset()
        } else {
            let at = self.allocate(SECTOR_BITMAP_BLOCK_SIZE)?;
            self.set_entry(bitmap_index, BatEntry::new(6, at));
            at
        };
        let first = (block % g.chunk_ratio()) * (g.block_bytes() / sector) + within / sector;
        for s in first..first + n / sector {
            let byte_at = bitmap_offset + s / 8;
            let current = match self.dirty_bits.get(&byte_at) {
                Some(b) => *b,
                None => {
                    let mut b = [0u8];
                    pio::read_exact_at(&self.file, &mut b, byte_at).map_err(|source| {
                        Error::WriteFile {
                            what: "sector bitmap (read)",
                            offset: byte_at,
                            source,
                        }
                    })?;
                    b[0]
                }
            };
            self.dirty_bits.insert(byte_at, current | 1 << (s % 8));
        }
        Ok(())
    }

    /// Makes every write so far durable: data first, then sector bitmaps and BAT entries.
    pub fn flush(&mut self) -> Result<(), Error> {
        sync(&self.file)?;
        for (&at, &byte) in &self.dirty_bits {
            write(&self.file, &[byte], at, "sector bitmap")?;
        }
        sync(&self.file)?;
        for (&index, entry) in &self.dirty_bat {
            write(
                &self.file,
                &entry.0.to_le_bytes(),
                self.bat_offset + index * 8,
                "BAT entry",
            )?;
        }
        sync(&self.file)?;
        self.dirty_bits.clear();
        self.dirty_bat.clear();
        Ok(())
    }
}
