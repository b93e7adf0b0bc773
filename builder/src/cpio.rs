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
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use super::*;

    fn file(mode: u32, data: &[u8]) -> Entry {
        Entry::File {
            mode,
            data: data.to_vec(),
        }
    }

    fn symlink(target: &str) -> Entry {
        Entry::Symlink {
            target: target.to_owned(),
        }
    }

    /// An initramfs-like tree: nested parents created on the way, data of every length modulo 4,
    /// an empty file, special permission bits, absolute and relative symlinks.
    fn sample(mut archive: Archive) -> Archive {
        let entries = [
            ("init", file(0o755, b"#!/bin/sh\nexec /bin/sh\n")),
            (
                "bin/busybox",
                file(0o755, &[0x7f, b'E', b'L', b'F', 1, 2, 3]),
            ),
            ("bin/sh", symlink("busybox")),
            ("sbin/init", symlink("/bin/busybox")),
            ("etc/hostname", file(0o644, b"node\n")),
            ("etc/shadow", file(0o600, b"root:*::0:::::\n")),
            ("etc/empty", file(0o644, b"")),
            ("usr/lib/modules/6.1/modules.dep", file(0o644, b"a")),
            ("usr/lib/modules/6.1/modules.alias", file(0o644, b"ab")),
            ("usr/lib/modules/6.1/modules.order", file(0o644, b"abc")),
            ("usr/bin/su", file(0o4755, b"su")),
            ("tmp", Entry::Dir { mode: 0o1777 }),
            ("root", Entry::Dir { mode: 0o700 }),
            ("dev", Entry::Dir { mode: 0o755 }),
        ];
        for (path, entry) in entries {
            archive.insert(path, entry).unwrap();
        }
        archive
    }

    fn bytes_of(archive: &Archive) -> Vec<u8> {
        let mut out = Vec::new();
        let written = archive.write(&mut out).unwrap();
        assert_eq!(written, out.len() as u64);
        out
    }

    /// Extracts with GNU cpio, as the kernel would unpack it, into `dir`.
    fn extract(archive: &[u8], dir: &Path) {
        let mut child = Command::new("cpio")
            .args(["-idmv", "--no-absolute-filenames"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("run cpio: {e}; run ./scripts/setup, which installs the Debian package cpio")
            });
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "cpio -i failed: {stderr}");
        assert!(!stderr.contains("cpio:"), "cpio complained: {stderr}");
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// The headers of an archive: (name, ino, mode, uid, gid, nlink, mtime, filesize).
    fn headers(archive: &[u8]) -> Vec<(String, [u32; 7])> {
        let mut at = 0;
        let mut found = Vec::new();
        loop {
            let header = std::str::from_utf8(&archive[at..at + HEADER_LEN]).unwrap();
            assert_eq!(&header[..6], MAGIC, "magic at byte {at}");
            assert_eq!(at % 4, 0, "header at byte {at} is not 4-aligned");
            let field = |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let name_size = field(11) as usize;
            let name = &archive[at + HEADER_LEN..at + HEADER_LEN + name_size];
            assert_eq!(name.last(), Some(&0), "names end with NUL");
            let name = String::from_utf8(name[..name_size - 1].to_vec()).unwrap();
            for (i, what) in [
                (7, "devmajor"),
                (8, "devminor"),
                (9, "rdevmajor"),
                (10, "rdevminor"),
                (12, "check"),
            ] {
                assert_eq!(field(i), 0, "{what} of {name}");
            }
            let data_start = (at + HEADER_LEN + name_size).next_multiple_of(4);
            at = (data_start + field(6) as usize).next_multiple_of(4);
            found.push((name.clone(), [0, 1, 2, 3, 4, 5, 6].map(field)));
            if name == TRAILER {
                assert_eq!(at, archive.len(), "nothing follows the trailer");
                return found;
            }
        }
    }

    #[test]
    fn gnu_cpio_extracts_contents_modes_and_symlinks() {
        let archive = sample(Archive::default());
        let dir = tempfile::tempdir().unwrap();
        extract(&bytes_of(&archive), dir.path());
        let root = dir.path();

        for (path, entry) in &archive.entries {
            let on_disk = root.join(path);
            match entry {
                Entry::Dir { mode } => {
                    assert!(on_disk.is_dir(), "{path} is not a directory");
                    assert_eq!(mode_of(&on_disk), *mode, "mode of {path}");
                }
                Entry::File { mode, data } => {
                    assert_eq!(
                        &std::fs::read(&on_disk).unwrap(),
                        data,
                        "contents of {path}"
                    );
                    assert_eq!(mode_of(&on_disk), *mode, "mode of {path}");
                    let mtime = std::fs::metadata(&on_disk).unwrap().modified().unwrap();
                    assert_eq!(mtime, std::time::UNIX_EPOCH, "mtime of {path}");
                }
                Entry::Symlink { target } => {
                    assert_eq!(
                        std::fs::read_link(&on_disk).unwrap(),
                        Path::new(target),
                        "{path}"
                    );
                }
            }
        }
        // Parents created on the way have mode 0o755.
        assert_eq!(mode_of(&root.join("usr/lib/modules")), 0o755);
        assert_eq!(mode_of(&root.join("etc")), 0o755);
    }

    #[test]
    fn headers_number_entries_in_path_order_with_fixed_owner_and_time() {
        let archive = sample(Archive::with_mtime(1_700_000_000));
        let dir = tempfile::tempdir().unwrap();
        let bytes = bytes_of(&archive);
        extract(&bytes, dir.path());
        let mtime = std::fs::metadata(dir.path().join("init"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime,
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
        );

        let found = headers(&bytes);
        let (trailer, entries) = found.split_last().unwrap();
        assert_eq!(trailer.0, TRAILER);
        let mut names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            archive
                .entries
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        names.sort_unstable();
        assert_eq!(
            names,
            archive
                .entries
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        for (index, (name, [ino, mode, uid, gid, nlink, mtime, _])) in entries.iter().enumerate() {
            assert_eq!(*ino as usize, index + 1, "ino of {name}");
            assert_eq!((*uid, *gid), (0, 0), "owner of {name}");
            assert_eq!(*mtime, 1_700_000_000, "mtime of {name}");
            let expected_nlink = if mode & 0o170_000 == S_IFDIR { 2 } else { 1 };
            assert_eq!(*nlink, expected_nlink, "nlink of {name}");
        }
        let sh = entries.iter().find(|(name, _)| name == "bin/sh").unwrap();
        assert_eq!(sh.1[1], S_IFLNK | 0o777);
        assert_eq!(
            sh.1[6], 7,
            "the size of a symlink is that of its target, \"busybox\""
        );
    }

    #[test]
    fn same_entries_give_the_same_bytes_in_any_insertion_order() {
        let first = bytes_of(&sample(Archive::default()));
        assert_eq!(first, bytes_of(&sample(Archive::default())));

        let mut reversed = Archive::default();
        let forward = sample(Archive::default());
        for (path, entry) in forward.entries.iter().rev() {
            reversed.insert(path, entry.clone()).unwrap();
        }
        assert_eq!(first, bytes_of(&reversed));
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let bytes = bytes_of(&Archive::default());
        assert_eq!(
            bytes.len(),
            (HEADER_LEN + TRAILER.len() + 1).next_multiple_of(4)
        );
        assert_eq!(
            headers(&bytes),
            vec![(TRAILER.to_owned(), [0, 0, 0, 0, 1, 0, 0])]
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        let long = "a/".repeat(PATH_MAX / 2) + "a";
        let cases = [
            ("", "it is empty"),
            ("/etc/passwd", "it is absolute"),
            ("etc/\0x", "it holds a NUL"),
            (long.as_str(), "it is longer than the kernel's PATH_MAX"),
            ("etc//passwd", "it has an empty component"),
            ("etc/", "it has an empty component"),
            ("./etc", "it has a \".\" component"),
            ("etc/../../root", "it has a \"..\" component"),
            ("..", "it has a \"..\" component"),
        ];
        for (path, expected) in cases {
            let mut archive = Archive::default();
            match archive.insert(path, file(0o644, b"x")) {
                Err(Error::ValidatePath { path: p, reason }) => {
                    assert_eq!((p.as_str(), reason), (path, expected));
                }
                other => panic!("{path:?}: expected ValidatePath, got {other:?}"),
            }
            assert_eq!(
                archive,
                Archive::default(),
                "a refused insert changes nothing"
            );
        }
    }

    #[test]
    fn type_bits_in_a_mode_are_refused() {
        let mut archive = Archive::default();
        let error = archive.insert("bin/sh", file(0o100_755, b"")).unwrap_err();
        assert!(
            matches!(
                error,
                Error::ValidateMode {
                    mode: 0o100_755,
                    ..
                }
            ),
            "{error:?}"
        );
        let error = archive
            .insert("etc", Entry::Dir { mode: 0o10_000 })
            .unwrap_err();
        assert!(
            matches!(error, Error::ValidateMode { mode: 0o10_000, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn bad_symlink_targets_are_refused() {
        let mut archive = Archive::default();
        for target in ["", "bus\0box"] {
            let error = archive.insert("bin/sh", symlink(target)).unwrap_err();
            assert!(
                matches!(&error, Error::ValidateTarget { target: t, .. } if t == target),
                "{error:?}"
            );
        }
    }

    #[test]
    fn repeats_other_than_directories_are_refused() {
        let mut archive = Archive::default();
        archive.insert("etc/hostname", file(0o644, b"a")).unwrap();
        let error = archive
            .insert("etc/hostname", file(0o644, b"b"))
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::ReplaceEntry {
                    existing: "file",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = archive.insert("etc", file(0o644, b"b")).unwrap_err();
        assert!(
            matches!(
                error,
                Error::ReplaceEntry {
                    existing: "directory",
                    ..
                }
            ),
            "{error:?}"
        );

        // A directory created as a parent takes the mode given later.
        archive.insert("etc", Entry::Dir { mode: 0o700 }).unwrap();
        assert_eq!(archive.entries["etc"], Entry::Dir { mode: 0o700 });
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let mut archive = Archive::default();
        archive.insert("bin/sh", symlink("busybox")).unwrap();
        let before = archive.clone();
        let error = archive.insert("bin/sh/x/y", file(0o644, b"")).unwrap_err();
        assert!(
            matches!(&error, Error::CreateParent { parent, existing: "symlink", .. } if parent == "bin/sh"),
            "{error:?}"
        );
        assert_eq!(
            archive, before,
            "no parent was created for the refused entry"
        );
        assert!(!archive.entries.contains_key("bin/sh/x"));
    }

    #[test]
    fn oversized_entries_are_refused() {
        let len = usize::try_from(u64::from(u32::MAX) + 1).unwrap();
        // A zeroed allocation is mapped lazily, so 4 GiB of it costs no memory until touched.
        let data = vec![0u8; len];
        let error = Archive::default()
            .insert("big", Entry::File { mode: 0o644, data })
            .unwrap_err();
        assert!(
            matches!(error, Error::ValidateSize { len: l, .. } if l == len),
            "{error:?}"
        );
    }

    #[test]
    fn inode_numbers_stop_before_u32_max() {
        assert_eq!(inode(0, "a").unwrap(), 1);
        assert_eq!(inode(0xffff_fffd, "a").unwrap(), 0xffff_fffe);
        let error = inode(0xffff_fffe, "a").unwrap_err();
        assert!(
            matches!(&error, Error::NumberEntry { path } if path == "a"),
            "{error:?}"
        );
    }

    #[test]
    fn write_errors_name_the_entry_and_offset() {
        /// Accepts `room` bytes, then fails.
        struct Full {
            room: usize,
        }
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.room == 0 {
                    return Err(std::io::Error::other("disk full"));
                }
                let n = buf.len().min(self.room);
                self.room -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let archive = sample(Archive::default());
        let error = archive.write(&mut Full { room: 200 }).unwrap_err();
        // "bin" (header 110 + name 4 = 114, padded to 116) fits; "bin/busybox" starts at 116.
        assert!(
            matches!(&error, Error::WriteArchive { path, offset: 116, .. } if path == "bin/busybox"),
            "{error:?}"
        );
        assert_eq!(
            std::error::Error::source(&error).unwrap().to_string(),
            "disk full"
        );
    }
}
