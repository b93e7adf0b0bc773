//! Archives checked by extracting them with the real cpio.

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
