//! Positioned reads from the VHDX file, through the in-memory result of a log replay.
//!
//! When a file with a dirty log is opened read-only, the log is replayed into an [`Overlay`]
//! instead of the file: reads see the replayed state, the file on disk stays as it was.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;

use crate::pio;

/// Where the bytes of an overlay range come from.
#[derive(Debug, Clone)]
enum Fill {
    Zero,
    /// Bytes of `Overlay::data[index]`, starting at `skip` within it.
    Data {
        index: usize,
        skip: usize,
    },
}

/// A sparse set of writes over a file, later writes winning. Ranges never overlap.
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    /// start → (end, fill)
    ranges: BTreeMap<u64, (u64, Fill)>,
    data: Vec<Vec<u8>>,
    /// Logical file size after the replay (the file may have grown).
    size: u64,
    /// One past the last byte any write touched.
    written_end: u64,
}

impl Overlay {
    /// An empty overlay over a file of `size` bytes.
    pub fn new(size: u64) -> Overlay {
        Overlay {
            ranges: BTreeMap::new(),
            data: Vec::new(),
            size,
            written_end: 0,
        }
    }

    /// Logical size of the file with the overlay applied.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Grows the logical size (never shrinks it).
    pub fn grow_to(&mut self, size: u64) {
        self.size = self.size.max(size);
    }

    /// Records `bytes` written at `offset`.
    pub fn write(&mut self, offset: u64, bytes: Vec<u8>) {
        let end = offset + bytes.len() as u64;
        self.data.push(bytes);
        let index = self.data.len() - 1;
        self.insert(offset, end, Fill::Data { index, skip: 0 });
    }

    /// Records zeros written over `[offset, offset + len)`.
    pub fn zero(&mut self, offset: u64, len: u64) {
        self.insert(offset, offset + len, Fill::Zero);
    }

    fn insert(&mut self, start: u64, end: u64, fill: Fill) {
        if start >= end {
            return;
        }
        self.grow_to(end);
        self.written_end = self.written_end.max(end);
        // Cut every existing range that overlaps [start, end), keeping its outside parts.
        let overlapping: Vec<u64> = self
            .ranges
            .range(..end)
            .rev()
            .take_while(|(_, (e, _))| *e > start)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let Some((e, f)) = self.ranges.remove(&s) else {
                continue;
            };
            if s < start {
                self.ranges.insert(s, (start, f.clone()));
            }
            if e > end {
                let tail = match f {
                    Fill::Zero => Fill::Zero,
                    Fill::Data { index, skip } => Fill::Data {
                        index,
                        skip: skip + to_usize(end - s),
                    },
                };
                self.ranges.insert(end, (e, tail));
            }
        }
        self.ranges.insert(start, (end, fill));
    }

    /// Patches `buf`, which holds the file's bytes at `offset`, with the overlay's writes.
    fn patch(&self, buf: &mut [u8], offset: u64) {
        let end = offset + buf.len() as u64;
        // The first candidate may start before `offset`.
        let first = self
            .ranges
            .range(..=offset)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(offset);
        for (&s, (e, fill)) in self.ranges.range(first..end) {
            let lo = s.max(offset);
            let hi = (*e).min(end);
            if lo >= hi {
                continue;
            }
            let dst = &mut buf[to_usize(lo - offset)..to_usize(hi - offset)];
            match fill {
                Fill::Zero => dst.fill(0),
                Fill::Data { index, skip } => {
                    let from = skip + to_usize(lo - s);
                    dst.copy_from_slice(&self.data[*index][from..from + dst.len()]);
                }
            }
        }
    }

    /// The writes in file order, as (offset, bytes or `None` for zeros, length).
    pub fn writes(&self) -> impl Iterator<Item = (u64, u64, Option<&[u8]>)> {
        self.ranges.iter().map(|(&s, (e, fill))| match fill {
            Fill::Zero => (s, e - s, None),
            Fill::Data { index, skip } => (
                s,
                e - s,
                Some(&self.data[*index][*skip..skip + to_usize(e - s)]),
            ),
        })
    }
}

/// Converts an in-buffer length that is known to fit (it came from a buffer's size).
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The file a [`super::reader::Vhdx`] reads from.
#[derive(Debug)]
pub struct Backing {
    file: File,
    file_size: u64,
    overlay: Option<Overlay>,
}

impl Backing {
    /// Wraps an open file.
    pub fn new(file: File) -> io::Result<Backing> {
        let file_size = file.metadata()?.len();
        Ok(Backing {
            file,
            file_size,
            overlay: None,
        })
    }

    /// The file's size, as replayed when an overlay is set.
    pub fn size(&self) -> u64 {
        self.overlay
            .as_ref()
            .map_or(self.file_size, Overlay::size)
            .max(self.file_size)
    }

    /// The size up to which bytes really exist: the file, or the end of the last replayed
    /// write. A log may claim a larger file (LastFileOffset), but structures that must be
    /// read into memory (metadata, BAT) are only accepted below this size, so a hostile
    /// log cannot make the reader allocate for bytes that are not there.
    pub fn materialized_size(&self) -> u64 {
        self.overlay
            .as_ref()
            .map_or(0, |o| o.written_end)
            .max(self.file_size)
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sets the replayed log.
    pub fn set_overlay(&mut self, overlay: Overlay) {
        self.overlay = Some(overlay);
    }

    /// The replayed log, when reads go through one.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// Reads exactly `buf.len()` bytes at `offset`; bytes past the end of the file are an
    /// error unless a replayed log grew the file, in which case they read as zeros.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read offset overflows"))?;
        if end > self.size() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset:#x} passes the end of the file ({:#x} bytes)",
                    buf.len(),
                    self.size()
                ),
            ));
        }
        let in_file = to_usize(self.file_size.saturating_sub(offset).min(buf.len() as u64));
        pio::read_exact_at(&self.file, &mut buf[..in_file], offset)?;
        buf[in_file..].fill(0);
        if let Some(overlay) = &self.overlay {
            overlay.patch(buf, offset);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(o: &Overlay, base: &[u8], offset: usize, len: usize) -> Vec<u8> {
        let mut buf = base[offset..offset + len].to_vec();
        o.patch(&mut buf, offset as u64);
        buf
    }

    #[test]
    fn later_writes_win_and_cut_earlier_ones() {
        let base = vec![1u8; 64];
        let mut o = Overlay::new(64);
        o.write(8, vec![2; 16]); // [8,24)
        o.zero(12, 4); // [12,16)
        o.write(20, vec![3; 8]); // [20,28)
        let got = read(&o, &base, 0, 32);
        let mut want = vec![1u8; 32];
        want[8..24].fill(2);
        want[12..16].fill(0);
        want[20..28].fill(3);
        assert_eq!(got, want);
        // A read starting inside a range.
        assert_eq!(read(&o, &base, 10, 4), vec![2, 2, 0, 0]);
        let writes: Vec<_> = o.writes().map(|(s, l, d)| (s, l, d.is_some())).collect();
        assert_eq!(
            writes,
            vec![(8, 4, true), (12, 4, false), (16, 4, true), (20, 8, true)]
        );
    }
}
