//! A filesystem tree being assembled in a staging directory. Every path written comes from an
//! archive or a recipe, so every one is resolved inside the tree's root: `..` is refused and
//! symbolic links are followed as the image would see them (an absolute target is re-rooted at
//! the tree, `..` stops at its root), so nothing is ever read or written outside the staging
//! directory. The kernel never follows a link of the tree: [`at`] walks paths one directory
//! descriptor at a time and acts on the last component by name in its parent, or through the
//! descriptor of what it just created. The tree depends only on what is placed in it: every file
//! and directory gets an explicit mode (never the host's umask) and directories are copied in
//! sorted order.

mod at;
mod read;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::FileType;

use crate::recipe::{Content, FileSpec};
use crate::sources::{Artifact, Fetched};
use at::{Entry, Missing, Root, WalkError};

/// The mode of files the build generates ([`Tree::write_file`]).
const GENERATED_FILE_MODE: u32 = 0o644;

/// Errors assembling a tree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path from an archive or recipe would leave the tree.
    #[error("{origin}: path {path:?} {why}")]
    ConfinePath {
        /// Where the path came from.
        origin: String,
        /// The path.
        path: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// Reading an archive failed.
    #[error("{origin}: cannot read the archive")]
    ReadArchive {
        /// The archive.
        origin: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a file or directory to place in the tree failed.
    #[error("{origin}: cannot read {path}")]
    ReadInput {
        /// What was being placed.
        origin: String,
        /// The file or directory read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing into the tree failed.
    #[error("{origin}: cannot write {path}")]
    WriteTree {
        /// What was being placed.
        origin: String,
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A hard link names a file that is not in the tree.
    #[error("{origin}: hard link {path:?} names {target:?}, which is not in the tree (yet)")]
    FindLinkTarget {
        /// The archive.
        origin: String,
        /// The link.
        path: String,
        /// What it names.
        target: String,
    },
    /// A source that is a single file was used as a layer.
    #[error(
        "source {0} is a single file: a layer must be a package, an archive (unpack = true) or a directory"
    )]
    UseFileAsLayer(String),
    /// A path read from an unpacked tree was refused (it could lead out of the tree).
    #[error("{}: {why}", path.display())]
    ConfineRead {
        /// The path.
        path: PathBuf,
        /// Why it was refused.
        why: &'static str,
    },
    /// Reading from an unpacked tree failed.
    #[error("cannot read {}", path.display())]
    ReadTree {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// dpkg-deb failed.
    #[error("dpkg-deb cannot unpack {path}: {stderr}")]
    UnpackDeb {
        /// The package file.
        path: PathBuf,
        /// What it said.
        stderr: String,
    },
}

/// A tree under construction.
pub struct Tree {
    root: PathBuf,
}

/// Owner and mode of one entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
}

impl Tree {
    /// A tree rooted at `root` (an existing, empty directory).
    pub fn new(root: &Path) -> Tree {
        Tree {
            root: root.to_owned(),
        }
    }

    /// Unpacks a fetched input as a layer under `into` (relative to the root; empty for `/`).
    #[tracing::instrument(skip_all, fields(source = %input.name, into = %into.display()), err)]
    pub fn unpack(&self, input: &Fetched, into: &Path) -> Result<(), Error> {
        let origin = format!("source {}", input.name);
        match &input.artifact {
            Artifact::Deb { path, .. } => {
                let mut child = Command::new("dpkg-deb")
                    .arg("--fsys-tarfile")
                    .arg(path)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|source| Error::ReadArchive {
                        origin: origin.clone(),
                        source,
                    })?;
                let result = match child.stdout.take() {
                    Some(stdout) => self.unpack_tar(stdout, into, &origin),
                    None => Ok(()),
                };
                let output = child
                    .wait_with_output()
                    .map_err(|source| Error::ReadArchive {
                        origin: origin.clone(),
                        source,
                    })?;
                if !output.status.success() {
                    return Err(Error::UnpackDeb {
                        path: path.clone(),
                        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    });
                }
                result
            }
            Artifact::Tar(path) | Artifact::DebianTree { path, .. } => {
                let file = fs::File::open(path).map_err(|source| Error::ReadArchive {
                    origin: origin.clone(),
                    source,
                })?;
                let mut reader = io::BufReader::new(file);
                let gzip = {
                    let buf = io::BufRead::fill_buf(&mut reader).map_err(|source| {
                        Error::ReadArchive {
                            origin: origin.clone(),
                            source,
                        }
                    })?;
                    buf.starts_with(&[0x1f, 0x8b])
                };
                if gzip {
                    self.unpack_tar(flate2::read::GzDecoder::new(reader), into, &origin)
                } else {
                    self.unpack_tar(reader, into, &origin)
                }
            }
            Artifact::Dir(dir) => self.copy_dir(dir, into, &origin),
            Artifact::File(_) => Err(Error::UseFileAsLayer(input.name.clone())),
        }
    }

    /// Unpacks a tar stream under `into`, confining every entry (and every hard link's target)
    /// to the tree.
    pub fn unpack_tar(&self, reader: impl Read, into: &Path, origin: &str) -> Result<(), Error> {
        let read_err = |source| Error::ReadArchive {
            origin: origin.to_owned(),
            source,
        };
        let root = self.open_root(origin)?;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw = entry.path().map_err(read_err)?.into_owned();
            let rel = confine(&raw, origin)?;
            if rel.as_os_str().is_empty() {
                // "./" itself: the root's own mode and owner are not the layer's to set.
                continue;
            }
            let rel = into.join(rel);
            let header = entry.header();
            let meta = Meta {
                mode: header.mode().map_err(read_err)? & 0o7777,
                uid: header.uid().map_err(read_err)?,
                gid: header.gid().map_err(read_err)?,
            };
            let kind = header.entry_type();
            let link_name = || -> Result<PathBuf, Error> {
                Ok(entry
                    .link_name()
                    .map_err(read_err)?
                    .unwrap_or_default()
                    .into_owned())
            };
            match kind {
                tar::EntryType::Directory => self.make_dir(&root, &rel, meta, origin)?,
                tar::EntryType::Symlink => {
                    let target = link_name()?;
                    self.make_symlink(&root, &rel, &target, meta, origin)?;
                }
                tar::EntryType::Link => {
                    // Names in an archive are relative to where it is unpacked.
                    let target = into.join(confine(&link_name()?, origin)?);
                    self.make_hard_link(&root, &rel, &target, origin)?;
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    self.make_file(&root, &rel, meta, origin, |out| {
                        io::copy(&mut entry, out).map(drop)
                    })?;
                }
                _ => {
                    // Device nodes, fifos: the running system's /dev is a devtmpfs.
                    tracing::debug!(path = %rel.display(), "skipping a special file");
                }
            }
        }
        Ok(())
    }

    fn copy_dir(&self, dir: &Path, into: &Path, origin: &str) -> Result<(), Error> {
        // A directory is packed into a tar stream (links as links, never followed, in sorted
        // order) and unpacked like any layer, so the same confinement applies. Each entry keeps
        // its mode (a private file stays private) but belongs to root: who owns the recipe's
        // directory on the build host says nothing about the image.
        let mut builder = tar::Builder::new(Vec::new());
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::ReadInput {
                origin: origin.to_owned(),
                path,
                source,
            }
        };
        // Pre-order: a directory before what it holds, siblings by name.
        let mut pending = sorted_children(dir, Path::new("")).map_err(read_err(dir))?;
        pending.reverse();
        while let Some(rel) = pending.pop() {
            let path = dir.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_uid(0);
            header.set_gid(0);
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).map_err(read_err(&path))?;
                builder.append_link(&mut header, &rel, &target)
            } else if meta.is_file() {
                let file = fs::File::open(&path).map_err(read_err(&path))?;
                builder.append_data(&mut header, &rel, file)
            } else {
                // Directories, and special files (which unpacking skips): no data.
                builder.append_data(&mut header, &rel, io::empty())
            }
            .map_err(read_err(&path))?;
            if meta.is_dir() {
                let mut children = sorted_children(dir, &rel).map_err(read_err(&path))?;
                children.reverse();
                pending.extend(children);
            }
        }
        let bytes = builder.into_inner().map_err(read_err(dir))?;
        self.unpack_tar(bytes.as_slice(), into, origin)
    }

    /// Places one recipe file; `source` is the fetched file for `Content::Source`.
    pub fn place(&self, spec: &FileSpec, source: Option<&Path>) -> Result<(), Error> {
        let origin = format!("file {}", spec.path);
        let root = self.open_root(&origin)?;
        let rel = Path::new(spec.path.relative());
        let meta = Meta {
            mode: spec.mode,
            uid: spec.uid.into(),
            gid: spec.gid.into(),
        };
        match &spec.content {
            Content::Dir => self.make_dir(&root, rel, meta, &origin),
            Content::Symlink(target) => {
                self.make_symlink(&root, rel, Path::new(target), meta, &origin)
            }
            Content::Text(text) => self.make_file(&root, rel, meta, &origin, |out| {
                out.write_all(text.as_bytes())
            }),
            Content::Source(_) => {
                let from = source.unwrap_or(Path::new(""));
                let mut input = fs::File::open(from).map_err(|source| Error::ReadInput {
                    origin: origin.clone(),
                    path: from.to_owned(),
                    source,
                })?;
                self.make_file(&root, rel, meta, &origin, |out| {
                    io::copy(&mut input, out).map(drop)
                })
            }
        }
    }

    /// Writes a generated file (mode 0644, root) at `rel`.
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let origin = format!("generated {rel}");
        let root = self.open_root(&origin)?;
        let meta = Meta {
            mode: GENERATED_FILE_MODE,
            uid: 0,
            gid: 0,
        };
        self.make_file(&root, Path::new(rel), meta, &origin, |out| {
            out.write_all(bytes)
        })
    }

    fn open_root(&self, origin: &str) -> Result<Root, Error> {
        Root::open(&self.root).map_err(|source| Error::WriteTree {
            origin: origin.to_owned(),
            path: self.root.clone(),
            source,
        })
    }

    /// A directory at `rel`. Over a symbolic link, the link stays and the directory it leads to
    /// inside the tree gets the mode and owner (created if missing), as `chmod` in the image
    /// would; a link that leads nowhere usable is replaced. A link that leads to the root is
    /// left alone, as `./` is: the root's mode and owner are not a layer's to set.
    fn make_dir(&self, root: &Root, rel: &Path, meta: Meta, origin: &str) -> Result<(), Error> {
        let entry = self.entry(root, rel, origin)?;
        let write_err = self.write_err(rel, origin);
        let fd = match entry.kind().map_err(write_err)? {
            Some(FileType::Directory) => entry.open_dir(),
            Some(FileType::Symlink) => match root.walk(rel, Missing::Create) {
                Ok(Some(dir)) => {
                    if root
                        .is_root(dir.as_fd())
                        .map_err(self.write_err(rel, origin))?
                    {
                        tracing::debug!(path = %rel.display(), "skipping a link to the root");
                        return Ok(());
                    }
                    at::reopen_dir(dir.as_fd())
                }
                Ok(None) | Err(WalkError::TooManyLinks) => entry
                    .remove()
                    .and_then(|()| entry.make_dir(at::PARENT_DIR_MODE)),
                Err(e) => return Err(self.walk_err(e, rel, origin)),
            },
            Some(_) => entry
                .remove()
                .and_then(|()| entry.make_dir(at::PARENT_DIR_MODE)),
            None => entry.make_dir(at::PARENT_DIR_MODE),
        }
        .map_err(self.write_err(rel, origin))?;
        at::finish(fd.as_fd(), meta.mode, meta.uid, meta.gid).map_err(self.write_err(rel, origin))
    }

    /// A regular file at `rel` (replacing whatever is there), filled by `fill`.
    fn make_file(
        &self,
        root: &Root,
        rel: &Path,
        meta: Meta,
        origin: &str,
        fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
    ) -> Result<(), Error> {
        let entry = self.entry(root, rel, origin)?;
        let mut file = entry
            .remove()
            .and_then(|()| entry.create_file())
            .map_err(self.write_err(rel, origin))?;
        fill(&mut file).map_err(self.write_err(rel, origin))?;
        at::finish(file.as_fd(), meta.mode, meta.uid, meta.gid).map_err(self.write_err(rel, origin))
    }

    /// A symbolic link at `rel` (replacing whatever is there); `meta`'s owner is the link's.
    fn make_symlink(
        &self,
        root: &Root,
        rel: &Path,
        target: &Path,
        meta: Meta,
        origin: &str,
    ) -> Result<(), Error> {
        let entry = self.entry(root, rel, origin)?;
        entry
            .remove()
            .and_then(|()| entry.symlink(target))
            .and_then(|()| entry.chown_link(meta.uid, meta.gid))
            .map_err(self.write_err(rel, origin))
    }

    /// A hard link at `rel` (replacing whatever is there) to `target`, resolved inside the tree
    /// (its last component not followed: a link to a symbolic link is a second name for it).
    fn make_hard_link(
        &self,
        root: &Root,
        rel: &Path,
        target: &Path,
        origin: &str,
    ) -> Result<(), Error> {
        let not_found = || Error::FindLinkTarget {
            origin: origin.to_owned(),
            path: rel.display().to_string(),
            target: target.display().to_string(),
        };
        let name = target.file_name().ok_or_else(not_found)?;
        let parent = target.parent().unwrap_or(Path::new(""));
        let dir = root
            .walk(parent, Missing::Stop)
            .map_err(|e| self.walk_err(e, target, origin))?
            .ok_or_else(not_found)?;
        let existing = Entry {
            dir,
            name: name.to_owned(),
        };
        if existing
            .kind()
            .map_err(self.write_err(target, origin))?
            .is_none()
        {
            return Err(not_found());
        }
        let entry = self.entry(root, rel, origin)?;
        entry
            .remove()
            .and_then(|()| entry.hard_link_to(&existing))
            .map_err(self.write_err(rel, origin))
    }

    /// The name `rel` in its parent directory, the parent resolved inside the tree (created as
    /// needed); the name itself not followed.
    fn entry(&self, root: &Root, rel: &Path, origin: &str) -> Result<Entry, Error> {
        let name = rel.file_name().ok_or_else(|| Error::ConfinePath {
            origin: origin.to_owned(),
            path: rel.display().to_string(),
            why: "has no file name",
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = root
            .walk(parent, Missing::Create)
            .map_err(|e| self.walk_err(e, rel, origin))?
            .ok_or_else(|| Error::ConfinePath {
                origin: origin.to_owned(),
                path: rel.display().to_string(),
                why: "goes through a file that is not a directory",
            })?;
        Ok(Entry {
            dir,
            name: name.to_owned(),
        })
    }

    fn walk_err(&self, error: WalkError, rel: &Path, origin: &str) -> Error {
        match error {
            WalkError::TooManyLinks => Error::ConfinePath {
                origin: origin.to_owned(),
                path: rel.display().to_string(),
                why: "crosses too many symbolic links",
            },
            WalkError::Io { at, source } => Error::WriteTree {
                origin: origin.to_owned(),
                path: self.root.join(at),
                source,
            },
        }
    }

    fn write_err(&self, rel: &Path, origin: &str) -> impl FnOnce(io::Error) -> Error + use<> {
        let (origin, path) = (origin.to_owned(), self.root.join(rel));
        move |source| Error::WriteTree {
            origin,
            path,
            source,
        }
    }
}

/// The entries of `dir/rel`, as paths relative to `dir`, sorted by name.
fn sorted_children(dir: &Path, rel: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names = fs::read_dir(dir.join(rel))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names.into_iter().map(|name| rel.join(name)).collect())
}

/// Checks a path from an archive: relative (a leading `/` or `./` is dropped), no `..`.
fn confine(raw: &Path, origin: &str) -> Result<PathBuf, Error> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::ConfinePath {
                    origin: origin.to_owned(),
                    path: raw.display().to_string(),
                    why: "leaves the tree (`..`): refusing the archive",
                });
            }
        }
    }
    Ok(out)
}
