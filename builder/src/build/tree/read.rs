//! Reading what was unpacked: the kernel image, its modules, the UKI stub. An unpacked package
//! is hostile input and the build runs as root, so a symbolic link it holds must never make
//! the builder read a host file (`boot/vmlinuz -> /etc/shadow` would put it in a signed image).
//! A file is read only through the tree's descriptors: its directories resolved inside the
//! root as the image would see them, the file itself never followed and refused unless it is
//! a regular file. A directory a host tool is about to be pointed at (depmod) must be a real
//! directory on a path of real directories, and hold no link at all.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::FileType;

use super::at::{self, Entry, Root, WalkError};
use super::{Error, Tree};

/// Why a symbolic link is refused.
const IS_LINK: &str =
    "is a symbolic link, which could lead out of the package tree: refusing to follow it";

impl Tree {
    /// The contents of the regular file at `rel`, or `None` if nothing is there. Its
    /// directories are resolved inside the tree; the file itself must not be a symbolic link
    /// and must be a regular file.
    pub fn read_file(&self, rel: &Path) -> Result<Option<Vec<u8>>, Error> {
        let Some(entry) = self.lookup(rel)? else {
            return Ok(None);
        };
        match entry.kind().map_err(self.read_err(rel))? {
            None => return Ok(None),
            Some(FileType::RegularFile) => {}
            Some(FileType::Symlink) => return Err(self.refuse(rel, IS_LINK)),
            Some(_) => return Err(self.refuse(rel, "is not a regular file")),
        }
        let mut file = entry.open_read().map_err(self.read_err(rel))?;
        // What was opened, not what the name was a moment ago.
        let meta = file.metadata().map_err(self.read_err(rel))?;
        if !meta.file_type().is_file() {
            return Err(self.refuse(rel, "is not a regular file"));
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(self.read_err(rel))?;
        Ok(Some(data))
    }

    /// Whether a regular file is at `rel` (its directories resolved inside the tree): `false`
    /// for nothing or a directory; a symbolic link is refused.
    pub fn is_file(&self, rel: &Path) -> Result<bool, Error> {
        let Some(entry) = self.lookup(rel)? else {
            return Ok(false);
        };
        match entry.kind().map_err(self.read_err(rel))? {
            Some(FileType::RegularFile) => Ok(true),
            Some(FileType::Symlink) => Err(self.refuse(rel, IS_LINK)),
            _ => Ok(false),
        }
    }

    /// The names in the directory `rel`, sorted, or `None` if it is missing. `rel` and every
    /// directory on the way must be real directories, not symbolic links.
    pub fn list_real_dir(&self, rel: &Path) -> Result<Option<Vec<OsString>>, Error> {
        let Some(dir) = self.open_real_dir(rel)? else {
            return Ok(None);
        };
        at::list_dir(dir.as_fd())
            .map(Some)
            .map_err(self.read_err(rel))
    }

    /// Whether `rel` is a real directory on a path of real directories: `false` if a
    /// component is missing; a component that is a link or not a directory is refused.
    pub fn is_real_dir(&self, rel: &Path) -> Result<bool, Error> {
        Ok(self.open_real_dir(rel)?.is_some())
    }

    /// Checks that `rel` is a real directory on a path of real directories and that nothing
    /// in it or below is a symbolic link, except the names `skipped` directly in it (which the
    /// tool about to read it skips): so a host tool pointed at it reads and writes only there.
    pub fn refuse_links_below(&self, rel: &Path, skipped: &[&str]) -> Result<(), Error> {
        let mut pending = vec![rel.to_owned()];
        while let Some(dir_rel) = pending.pop() {
            let dir = self
                .open_real_dir(&dir_rel)?
                .ok_or_else(|| Error::ReadTree {
                    path: self.root.join(&dir_rel),
                    source: io::ErrorKind::NotFound.into(),
                })?;
            let names = at::list_dir(dir.as_fd()).map_err(self.read_err(&dir_rel))?;
            for name in names {
                let path = dir_rel.join(&name);
                match at::kind(dir.as_fd(), &name).map_err(self.read_err(&path))? {
                    Some(FileType::Directory) => pending.push(path),
                    Some(FileType::Symlink)
                        if !(dir_rel == rel && skipped.iter().any(|s| name == *s)) =>
                    {
                        return Err(self.refuse(&path, IS_LINK));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The directory `rel`, every component a real directory (never a link), or `None` if a
    /// component is missing.
    fn open_real_dir(&self, rel: &Path) -> Result<Option<OwnedFd>, Error> {
        let root = self.read_root()?;
        let mut here = root.open_dir().map_err(self.read_err(Path::new("")))?;
        let mut at = PathBuf::new();
        for component in rel.components() {
            let Component::Normal(part) = component else {
                if component == Component::CurDir {
                    continue;
                }
                return Err(self.refuse(rel, "is not a plain path inside the tree"));
            };
            at.push(part);
            let entry = Entry {
                dir: here,
                name: part.to_owned(),
            };
            here = match entry.kind().map_err(self.read_err(&at))? {
                None => return Ok(None),
                Some(FileType::Directory) => entry.open_dir().map_err(self.read_err(&at))?,
                Some(FileType::Symlink) => return Err(self.refuse(&at, IS_LINK)),
                Some(_) => return Err(self.refuse(&at, "is not a directory")),
            };
        }
        Ok(Some(here))
    }

    /// The name `rel` in its directory, resolved inside the tree; `None` if the directory is
    /// missing.
    fn lookup(&self, rel: &Path) -> Result<Option<Entry>, Error> {
        self.read_root()?.lookup(rel).map_err(|e| match e {
            WalkError::TooManyLinks => self.refuse(rel, "crosses too many symbolic links"),
            WalkError::Io { at, source } => Error::ReadTree {
                path: self.root.join(at),
                source,
            },
        })
    }

    fn read_root(&self) -> Result<Root, Error> {
        Root::open(&self.root).map_err(self.read_err(Path::new("")))
    }

    fn refuse(&self, rel: &Path, why: &'static str) -> Error {
        Error::ConfineRead {
            path: self.root.join(rel),
            why,
        }
    }

    fn read_err(&self, rel: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
        let path = self.root.join(rel);
        move |source| Error::ReadTree { path, source }
    }
}
