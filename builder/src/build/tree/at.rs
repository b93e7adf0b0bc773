//! The tree's filesystem operations, each relative to a directory held open. Symbolic links of
//! the tree are read and interpreted here, never handed to the kernel to follow: every directory
//! is opened with `O_NOFOLLOW` from its parent's descriptor, and the last component of a path is
//! acted on by name in its parent (`mkdirat`, `openat(O_EXCL | O_NOFOLLOW)`, `unlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`, `fchownat(AT_SYMLINK_NOFOLLOW)`), or through the
//! descriptor of what was just created or opened (`fchown`, `fchmod`). So nothing outside the
//! tree's root can be reached, whatever links the tree holds. Everything created gets an
//! explicit mode (the host's umask reaches nothing) and directory listings are never relied on
//! for order.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// How many symbolic links one path may cross (as Linux's MAXSYMLINKS).
const MAX_LINK_HOPS: usize = 40;

/// The mode of the directories made on the way to an entry (`a/b/c` creates `a` and `a/b`).
pub(super) const PARENT_DIR_MODE: u32 = 0o755;

/// The mode a file or directory is created with, before its own is set on its descriptor:
/// private until then.
const CREATE_MODE: u32 = 0o700;

/// Why a path could not be walked inside the tree.
pub(super) enum WalkError {
    /// It crosses more than [`MAX_LINK_HOPS`] symbolic links.
    TooManyLinks,
    /// A system call failed on `at` (the tree-relative path resolved so far).
    Io {
        /// Where, relative to the root, with links resolved.
        at: std::path::PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// What to do when a component of a walked path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    /// Create it as a directory ([`PARENT_DIR_MODE`], owned by the builder).
    Create,
    /// Stop: the walk finds nothing.
    Stop,
}

/// The tree's root, held open.
pub(super) struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens the root directory (trusted: it is the build's own staging directory).
    pub(super) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// The directory `rel` names, resolved as the image would see it: `..` stops at the root,
    /// a symbolic link is followed inside the tree (an absolute target starts again at the
    /// root). `None` when a component is missing (with [`Missing::Stop`]) or is not a
    /// directory.
    pub(super) fn walk(&self, rel: &Path, missing: Missing) -> Result<Option<OwnedFd>, WalkError> {
        let mut here = self.reopen().map_err(|source| WalkError::Io {
            at: Path::new("/").to_owned(),
            source,
        })?;
        // The real directories under the root that `here` is, for `..` and for errors.
        let mut names: Vec<OsString> = Vec::new();
        let mut pending: Vec<OsString> = components_reversed(rel.as_os_str());
        let mut hops = 0usize;
        while let Some(part) = pending.pop() {
            let io_err = |names: &[OsString], source: io::Error| WalkError::Io {
                at: names.iter().chain([&part]).collect(),
                source,
            };
            if part == ".." {
                // `here` is a real directory below the root (never a link): its `..` is the
                // directory it was reached from. At the root, `..` is the root.
                if names.pop().is_some() {
                    here = open_path_dir(here.as_fd(), OsStr::new(".."))
                        .map_err(|e| io_err(&names, e.into()))?;
                }
                continue;
            }
            match kind(here.as_fd(), &part).map_err(|e| io_err(&names, e))? {
                Some(FileType::Symlink) => {
                    hops = hops.saturating_add(1);
                    if hops > MAX_LINK_HOPS {
                        return Err(WalkError::TooManyLinks);
                    }
                    let target = rustix::fs::readlinkat(here.as_fd(), part.as_os_str(), Vec::new())
                        .map_err(|e| io_err(&names, e.into()))?;
                    let target = OsStr::from_bytes(target.as_bytes());
                    if target.as_bytes().starts_with(b"/") {
                        here = self.reopen().map_err(|e| io_err(&names, e))?;
                        names.clear();
                    }
                    pending.extend(components_reversed(target));
                }
                Some(FileType::Directory) => {
                    here =
                        open_path_dir(here.as_fd(), &part).map_err(|e| io_err(&names, e.into()))?;
                    names.push(part);
                }
                Some(_) => return Ok(None),
                None if missing == Missing::Stop => return Ok(None),
                None => {
                    let entry = Entry {
                        dir: here,
                        name: part.clone(),
                    };
                    here = entry
                        .make_dir(PARENT_DIR_MODE)
                        .map_err(|e| io_err(&names, e))?;
                    names.push(part);
                }
            }
        }
        Ok(Some(here))
    }

    /// The name `rel` in its parent, the parent resolved inside the tree as [`Root::walk`]
    /// does, the name itself not followed. `None` when the parent is missing or not a
    /// directory, or `rel` has no name.
    pub(super) fn lookup(&self, rel: &Path) -> Result<Option<Entry>, WalkError> {
        let Some(name) = rel.file_name() else {
            return Ok(None);
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok(self.walk(parent, Missing::Stop)?.map(|dir| Entry {
            dir,
            name: name.to_owned(),
        }))
    }

    /// Whether the directory `dir` is the root itself (a link can lead back to it).
    pub(super) fn is_root(&self, dir: BorrowedFd<'_>) -> io::Result<bool> {
        let (here, root) = (rustix::fs::fstat(dir)?, rustix::fs::fstat(&self.fd)?);
        Ok(here.st_dev == root.st_dev && here.st_ino == root.st_ino)
    }

    /// The root itself, opened to list it.
    pub(super) fn open_dir(&self) -> io::Result<OwnedFd> {
        reopen_dir(self.fd.as_fd())
    }

    fn reopen(&self) -> io::Result<OwnedFd> {
        Ok(open_path_dir(self.fd.as_fd(), OsStr::new("."))?)
    }
}

/// A name in a directory of the tree, not followed: what it names (if anything) is acted on
/// through its parent's descriptor.
pub(super) struct Entry {
    /// The parent directory.
    pub(super) dir: OwnedFd,
    /// The name in it (one component, never `.` or `..`).
    pub(super) name: OsString,
}

impl Entry {
    /// What the name is (not following a link), or `None` if nothing.
    pub(super) fn kind(&self) -> io::Result<Option<FileType>> {
        kind(self.dir.as_fd(), &self.name)
    }

    /// Removes whatever is there (a whole directory tree included); nothing there is fine.
    pub(super) fn remove(&self) -> io::Result<()> {
        match rustix::fs::unlinkat(self.dir.as_fd(), self.name.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => remove_tree(self.dir.as_fd(), &self.name),
            Err(e) => Err(e.into()),
        }
    }

    /// The directory that is there (not a link), opened to set its metadata.
    pub(super) fn open_dir(&self) -> io::Result<OwnedFd> {
        Ok(open_dir(self.dir.as_fd(), &self.name)?)
    }

    /// Makes a directory with exactly `mode` and returns it opened.
    pub(super) fn make_dir(&self, mode: u32) -> io::Result<OwnedFd> {
        rustix::fs::mkdirat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            Mode::from_raw_mode(CREATE_MODE),
        )?;
        let fd = self.open_dir()?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        Ok(fd)
    }

    /// Creates a new regular file (nothing may be there), private until [`finish`] sets its
    /// mode.
    pub(super) fn create_file(&self) -> io::Result<fs::File> {
        let fd = rustix::fs::openat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(CREATE_MODE),
        )?;
        Ok(fs::File::from(fd))
    }

    /// Opens what is there for reading, refusing a symbolic link (`ELOOP`) and never
    /// blocking on a fifo; the caller checks what it opened.
    pub(super) fn open_read(&self) -> io::Result<fs::File> {
        let fd = rustix::fs::openat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(fs::File::from(fd))
    }

    /// Creates a symbolic link to `target` (stored as given, resolved by whoever reads it).
    pub(super) fn symlink(&self, target: &Path) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(
            target,
            self.dir.as_fd(),
            self.name.as_os_str(),
        )?)
    }

    /// Sets the owner of the link itself (see [`set_owner`] for when).
    pub(super) fn chown_link(&self, uid: u64, gid: u64) -> io::Result<()> {
        let Some((uid, gid)) = owner(uid, gid) else {
            return Ok(());
        };
        Ok(rustix::fs::chownat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Makes this name a hard link to what `target` names (a link itself if it is one: never
    /// followed).
    pub(super) fn hard_link_to(&self, target: &Entry) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            target.dir.as_fd(),
            target.name.as_os_str(),
            self.dir.as_fd(),
            self.name.as_os_str(),
            AtFlags::empty(),
        )?)
    }
}

/// Gives what `fd` is its owner, then its mode: in that order because changing the owner clears
/// the set-user-ID and set-group-ID bits.
pub(super) fn finish(fd: BorrowedFd<'_>, mode: u32, uid: u64, gid: u64) -> io::Result<()> {
    if let Some((uid, gid)) = owner(uid, gid) {
        rustix::fs::fchown(fd, Some(uid), Some(gid))?;
    }
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

/// The names in the directory `dir` (opened to list it; not `.` and `..`), sorted.
pub(super) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = OsStr::from_bytes(entry?.file_name().to_bytes()).to_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Re-opens a directory reached by [`Root::walk`] so its metadata can be set.
pub(super) fn reopen_dir(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(open_dir(fd, OsStr::new("."))?)
}

/// The owner to set: only when running as root (otherwise ownership other than the caller's is
/// lost, which [`crate::build`] refuses up front for recipes that ask for it), and only ids
/// that fit.
fn owner(uid: u64, gid: u64) -> Option<(rustix::fs::Uid, rustix::fs::Gid)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let (uid, gid) = (u32::try_from(uid).ok()?, u32::try_from(gid).ok()?);
    Some((
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    ))
}

/// The normal components of `path`, last first (`.`, `/` dropped; `..` kept).
fn components_reversed(path: &OsStr) -> Vec<OsString> {
    Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// What `name` in `dir` is (not following a link), or `None` if nothing.
pub(super) fn kind(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A directory opened only to walk through it (no read permission needed).
fn open_path_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A directory opened to list it or set its metadata.
fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes the directory `name` in `parent` and everything below it, holding two descriptors
/// at most however deep it goes: it descends into the first subdirectory it finds, and climbs
/// back (through `..` of a real directory) once one is empty.
fn remove_tree(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let mut here = open_dir(parent, name)?;
    let mut below: Vec<OsString> = Vec::new();
    loop {
        if let Some(sub) = unlink_all_but_one_dir(here.as_fd())? {
            here = open_dir(here.as_fd(), &sub)?;
            below.push(sub);
            continue;
        }
        let Some(done) = below.pop() else {
            drop(here);
            return Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?);
        };
        let up = open_dir(here.as_fd(), OsStr::new(".."))?;
        rustix::fs::unlinkat(up.as_fd(), done.as_os_str(), AtFlags::REMOVEDIR)?;
        here = up;
    }
}

/// Unlinks every non-directory in `dir` until it meets a directory, which it returns.
fn unlink_all_but_one_dir(dir: BorrowedFd<'_>) -> io::Result<Option<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = OsStr::from_bytes(entry?.file_name().to_bytes()).to_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    for name in names {
        match rustix::fs::unlinkat(dir, name.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => return Ok(Some(name)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
