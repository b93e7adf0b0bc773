//! Deterministic initramfs archives in the cpio "newc" format (SVR4 without CRC, magic `070701`),
//! the format the Linux kernel unpacks into its root file system at boot.
//!
//! Nothing of the build machine leaks into the archive: entries are written sorted by path with
//! inode numbers counted from 1, owner root, one modification time for all (0 unless the caller
//! gives one, such as `SOURCE_DATE_EPOCH`), and no device numbers. The same entries give the same
//! bytes whatever order they were inserted in.

use std::collections::BTreeMap;
use std::io::Write;

/// The "newc" magic.
const MAGIC: &str = "070701";
/// Magic plus 13 fields of 8 hexadecimal digits.
const HEADER_LEN: usize = 110;
/// Headers (with their name) and data each start on a 4-byte boundary.
const ALIGNMENT: u64 = 4;
/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";
/// The kernel's PATH_MAX, which counts the terminating NUL; longer names are not unpacked.
const PATH_MAX: usize = 4096;
/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// The bits a caller may give: permissions plus setuid, setgid and sticky.
const PERMISSION_BITS: u32 = 0o7777;
/// Symlink permissions are not used by Linux; this is what `lstat` shows for them.
const SYMLINK_MODE: u32 = 0o777;
/// The mode of directories created because a deeper path was inserted.
const PARENT_MODE: u32 = 0o755;

/// Why an entry could not be added or the archive written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path is not a plain relative path.
    #[error(
        "validate archive path {path:?}: {reason}; give a relative path such as \"usr/bin/sh\" \
         without \".\", \"..\" or empty components"
    )]
    ValidatePath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A mode has bits beyond the permissions, setuid, setgid and sticky bits.
    #[error(
        "validate the mode {mode:#o} of {path:?}: only the bits 0o7777 may be given; the type comes from the entry"
    )]
    ValidateMode {
        /// The entry.
        path: String,
        /// The mode given.
        mode: u32,
    },
    /// A symlink target is empty or holds a NUL.
    #[error(
        "validate the symlink target {target:?} of {path:?}: it must be non-empty and hold no NUL"
    )]
    ValidateTarget {
        /// The entry.
        path: String,
        /// The target given.
        target: String,
    },
    /// File data or a symlink target is larger than the format's 32-bit size field.
    #[error("validate the size of {path:?}: {len} bytes exceed the 4 GiB limit of the newc format")]
    ValidateSize {
        /// The entry.
        path: String,
        /// Its length.
        len: usize,
    },
    /// A path is already in the archive and only directories may be inserted again.
    #[error("insert {path:?}: the archive already holds a {existing} there")]
    ReplaceEntry {
        /// The entry.
        path: String,
        /// What is there already.
        existing: &'static str,
    },
    /// A parent of the path is in the archive but is not a directory.
    #[error("create the parent {parent:?} of {path:?}: the archive holds a {existing} there")]
    CreateParent {
        /// The entry.
        path: String,
        /// The parent.
        parent: String,
        /// What is there already.
        existing: &'static str,
    },
    /// The archive has more entries than inode numbers fit in 32 bits.
    #[error("number the entry {path:?}: the archive holds more than 4294967294 entries")]
    NumberEntry {
        /// The first entry without a number.
        path: String,
    },
    /// The output failed.
    #[error("write the archive entry {path:?} at byte {offset}")]
    WriteArchive {
        /// The entry being written.
        path: String,
        /// Bytes written before it.
        offset: u64,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// One archive member. File data is held in memory: initramfs contents are small, and taking
/// bytes rather than a path means the archive cannot change between `insert` and `write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir {
        /// Permission bits (at most 0o7777).
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits (at most 0o7777).
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link; the target may be absolute (it is resolved in the booted system).
    Symlink {
        /// What the link points to.
        target: String,
    },
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Dir { .. } => "directory",
            Entry::File { .. } => "file",
            Entry::Symlink { .. } => "symlink",
        }
    }

    /// `st_mode`, `st_nlink` and the data of the entry as written.
    fn record(&self) -> (u32, u32, &[u8]) {
        match self {
            Entry::Dir { mode } => (S_IFDIR | mode, 2, &[]),
            Entry::File { mode, data } => (S_IFREG | mode, 1, data),
            Entry::Symlink { target } => (S_IFLNK | SYMLINK_MODE, 1, target.as_bytes()),
        }
    }
}

/// A set of entries keyed by path (relative, no leading `/`), written in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
    mtime: u32,
}

impl Archive {
    /// An empty archive whose entries all have modification time `mtime` (seconds since the
    /// epoch, typically `SOURCE_DATE_EPOCH`).
    pub fn with_mtime(mtime: u32) -> Self {
        Archive {
            entries: BTreeMap::new(),
            mtime,
        }
    }

    /// Adds `entry` at `path`, creating missing parent directories with mode 0o755.
    ///
    /// A directory may be inserted again (its mode is replaced, so an explicit mode wins over the
    /// default of a directory created as a parent); any other repeat is refused. On error the
    /// archive is unchanged.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), Error> {
        validate_path(path)?;
        validate_entry(path, &entry)?;
        let parents: Vec<&str> = path.match_indices('/').map(|(at, _)| &path[..at]).collect();
        for parent in &parents {
            match self.entries.get(*parent) {
                None | Some(Entry::Dir { .. }) => {}
                Some(other) => {
                    return Err(Error::CreateParent {
                        path: path.to_owned(),
                        parent: (*parent).to_owned(),
                        existing: other.kind(),
                    });
                }
            }
        }
        match (self.entries.get(path), &entry) {
            (None, _) | (Some(Entry::Dir { .. }), Entry::Dir { .. }) => {}
            (Some(other), _) => {
                return Err(Error::ReplaceEntry {
                    path: path.to_owned(),
                    existing: other.kind(),
                });
            }
        }
        for parent in parents {
            self.entries
                .entry(parent.to_owned())
                .or_insert(Entry::Dir { mode: PARENT_MODE });
        }
        self.entries.insert(path.to_owned(), entry);
        Ok(())
    }

    /// Writes the archive, trailer included, and returns the number of bytes written.
    ///
    /// Paths are sorted bytewise, so a directory always comes before what it contains, as the
    /// kernel's unpacker needs.
    pub fn write(&self, out: &mut impl Write) -> Result<u64, Error> {
        let mut sink = Sink { out, offset: 0 };
        for (index, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, nlink, data) = entry.record();
            let record = Record {
                ino: inode(index, path)?,
                mode,
                nlink,
                mtime: self.mtime,
                name: path,
                data,
            };
            sink.record(&record)?;
        }
        sink.record(&Record {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            name: TRAILER,
            data: &[],
        })?;
        Ok(sink.offset)
    }
}

/// One header with its name and data.
struct Record<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    name: &'a str,
    data: &'a [u8],
}

/// The output and how many bytes have gone to it.
struct Sink<'w, W: Write> {
    out: &'w mut W,
    offset: u64,
}

impl<W: Write> Sink<'_, W> {
    fn record(&mut self, record: &Record) -> Result<(), Error> {
        let name = record.name;
        let too_large = |len| Error::ValidateSize {
            path: name.to_owned(),
            len,
        };
        // `insert` has bounded both; checked again because `write` must not emit a wrong header.
        let name_size = u32::try_from(name.len())
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| too_large(name.len()))?;
        let file_size =
            u32::try_from(record.data.len()).map_err(|_| too_large(record.data.len()))?;
        // Fields in order: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check.
        let fields = [
            record.ino,
            record.mode,
            0,
            0,
            record.nlink,
            record.mtime,
            file_size,
            0,
            0,
            0,
            0,
            name_size,
            0,
        ];
        let mut header = String::with_capacity(HEADER_LEN);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        self.put(name, header.as_bytes())?;
        self.put(name, name.as_bytes())?;
        self.put(name, &[0])?;
        self.pad(name)?;
        self.put(name, record.data)?;
        self.pad(name)
    }

    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let fail = |offset, source| Error::WriteArchive {
            path: name.to_owned(),
            offset,
            source,
        };
        self.out
            .write_all(bytes)
            .map_err(|e| fail(self.offset, e))?;
        self.offset = u64::try_from(bytes.len())
            .ok()
            .and_then(|len| self.offset.checked_add(len))
            .ok_or_else(|| {
                fail(
                    self.offset,
                    std::io::Error::other("archive larger than 2^64 bytes"),
                )
            })?;
        Ok(())
    }

    fn pad(&mut self, name: &str) -> Result<(), Error> {
        let zeros: &[u8] = match self.offset % ALIGNMENT {
            1 => &[0; 3],
            2 => &[0; 2],
            3 => &[0; 1],
            _ => &[],
        };
        self.put(name, zeros)
    }
}

/// The inode number of the entry at `index`: counted from 1; 0 is left to the trailer and
/// `u32::MAX` unused, as some readers take it for "none".
fn inode(index: usize, path: &str) -> Result<u32, Error> {
    index
        .checked_add(1)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n != u32::MAX)
        .ok_or_else(|| Error::NumberEntry {
            path: path.to_owned(),
        })
}

fn validate_path(path: &str) -> Result<(), Error> {
    let fail = |reason| {
        Err(Error::ValidatePath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("it is empty");
    }
    if path.starts_with('/') {
        return fail("it is absolute");
    }
    if path.contains('\0') {
        return fail("it holds a NUL");
    }
    if path.len() >= PATH_MAX {
        return fail("it is longer than the kernel's PATH_MAX");
    }
    for component in path.split('/') {
        match component {
            "" => return fail("it has an empty component"),
            "." => return fail("it has a \".\" component"),
            ".." => return fail("it has a \"..\" component"),
            _ => {}
        }
    }
    Ok(())
}

fn validate_entry(path: &str, entry: &Entry) -> Result<(), Error> {
    let size = |len: usize| {
        if u32::try_from(len).is_err() {
            Err(Error::ValidateSize {
                path: path.to_owned(),
                len,
            })
        } else {
            Ok(())
        }
    };
    match entry {
        Entry::Dir { mode } | Entry::File { mode, .. } if mode & !PERMISSION_BITS != 0 => {
            Err(Error::ValidateMode {
                path: path.to_owned(),
                mode: *mode,
            })
        }
        Entry::Dir { .. } => Ok(()),
        Entry::File { data, .. } => size(data.len()),
        Entry::Symlink { target } if target.is_empty() || target.contains('\0') => {
            Err(Error::ValidateTarget {
                path: path.to_owned(),
                target: target.clone(),
            })
        }
        Entry::Symlink { target } => size(target.len()),
    }
}

#[cfg(test)]
mod tests;
