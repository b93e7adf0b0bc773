//! Reads and writes at a file offset, on Unix and on Windows alike.
//!
//! Unix has `pread`/`pwrite`, which leave the file's cursor where it was. Windows has
//! `seek_read`/`seek_write`, which move the cursor to the end of what they transferred. Both
//! may transfer fewer bytes than asked, so the functions here loop until the whole buffer is
//! done. The moved cursor is harmless because no file in this crate that is used through
//! these functions is also read, written or seeked relative to its cursor: the only `Seek` on
//! such a file is `SeekFrom::End(0)` (the size of a writer's input), which does not depend on
//! where the cursor was. Keep it that way, or that code would behave differently on Windows.

use std::fs::File;
use std::io;

/// Reads exactly `buf.len()` bytes at `offset`. Reaching the end of the file first is an
/// [`io::ErrorKind::UnexpectedEof`] error, and what `buf` then holds is unspecified.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    read_exact_with(buf, offset, |part, at| read_some_at(file, part, at))
}

/// Writes all of `bytes` at `offset`, growing the file when they pass its end (the bytes
/// between the old end and `offset` then read as zeros).
pub(crate) fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    write_all_with(bytes, offset, |part, at| write_some_at(file, part, at))
}

#[cfg(unix)]
fn read_some_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(unix)]
fn write_some_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, bytes, offset)
}

#[cfg(windows)]
fn read_some_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

#[cfg(windows)]
fn write_some_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, bytes, offset)
}

/// The loop of [`read_exact_at`], apart from the system call so short reads can be tested.
fn read_exact_with(
    buf: &mut [u8],
    offset: u64,
    mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match read(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the file ends {done} bytes into a {}-byte read at {offset:#x}",
                        buf.len()
                    ),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The loop of [`write_all_at`], apart from the system call so short writes can be tested.
fn write_all_with(
    bytes: &[u8],
    offset: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<usize>,
) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match write(&bytes[done..], offset + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "the file took no more bytes {done} bytes into a {}-byte write at {offset:#x}",
                        bytes.len()
                    ),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_end_grow_the_file_and_reads_cross_into_the_gap() {
        let file = tempfile::tempfile().unwrap();
        write_all_at(&file, b"0123456789", 0).unwrap();
        // 10 bytes past the end: the file grows to 23 bytes, [10, 20) reading as zeros.
        write_all_at(&file, b"abc", 20).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 23);

        // From old data, across the gap, into the new data, up to the last byte.
        let mut got = [0xffu8; 15];
        read_exact_at(&file, &mut got, 8).unwrap();
        assert_eq!(&got, b"89\0\0\0\0\0\0\0\0\0\0abc");

        // One byte more passes the end.
        let mut over = [0u8; 16];
        let err = read_exact_at(&file, &mut over, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_exact_at(&file, &mut [0u8; 1], 23).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        // An overwrite across the old end keeps what is before it.
        write_all_at(&file, b"XYZW", 21).unwrap();
        let mut all = [0u8; 25];
        read_exact_at(&file, &mut all, 0).unwrap();
        assert_eq!(&all, b"0123456789\0\0\0\0\0\0\0\0\0\0aXYZW");
    }

    /// A file of `data` that hands out at most 3 bytes a call and is interrupted once.
    fn stingy(data: &[u8]) -> impl FnMut(&mut [u8], u64) -> io::Result<usize> + '_ {
        let mut interrupted = false;
        move |buf, at| {
            if !interrupted {
                interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let at = usize::try_from(at).unwrap();
            let n = buf.len().min(3).min(data.len().saturating_sub(at));
            buf[..n].copy_from_slice(&data[at..at + n]);
            Ok(n)
        }
    }

    #[test]
    fn short_transfers_are_continued_at_the_right_offset() {
        let data: Vec<u8> = (0..20).collect();
        let mut buf = [0u8; 11];
        read_exact_with(&mut buf, 4, stingy(&data)).unwrap();
        assert_eq!(buf, [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        let err = read_exact_with(&mut [0u8; 11], 10, stingy(&data)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let mut file = vec![0u8; 12];
        let mut calls = 0;
        write_all_with(b"abcdefg", 5, |bytes, at| {
            calls += 1;
            let at = usize::try_from(at).unwrap();
            let n = bytes.len().min(2);
            file[at..at + n].copy_from_slice(&bytes[..n]);
            Ok(n)
        })
        .unwrap();
        assert_eq!(&file, b"\0\0\0\0\0abcdefg");
        assert_eq!(calls, 4);
        let err = write_all_with(b"abc", 0, |_, _| Ok(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
