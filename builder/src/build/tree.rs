//! A filesystem tree being assembled in a staging directory. Every path written comes from an
//! archive or a recipe, so every one is resolved inside the tree's root: `..` is refused and
//! symbolic links are followed as the image would see them (an absolute target is re-rooted at
//! the tree), so nothing is ever written outside the staging directory.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::recipe::{Content, FileSpec};
use crate::sources::{Artifact, Fetched};

/// How many symbolic links one path may cross (as Linux's MAXSYMLINKS).
const MAX_LINK_HOPS: usize = 40;

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
    /// A source that is a single file was used as a layer.
    #[error(
        "source {0} is a single file: a layer must be a package, an archive (unpack = true) or a directory"
    )]
    UseFileAsLayer(String),
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

impl Tree {
    /// A tree rooted at `root` (an existing, empty directory).
    pub fn new(root: &Path) -> Tree {
        Tree {
            root: root.to_owned(),
        }
    }

    /// Unpacks a fetched input as a layer under `into` (relative to the root; empty for `/`).
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

    /// Unpacks a tar stream under `into`, confining every entry to the tree.
    pub fn unpack_tar(&self, reader: impl Read, into: &Path, origin: &str) -> Result<(), Error> {
        let read_err = |source| Error::ReadArchive {
            origin: origin.to_owned(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let raw = entry.path().map_err(read_err)?.into_owned();
            let rel = confine(&raw, origin)?;
            if rel.as_os_str().is_empty() {
                continue; // "./" itself
            }
            let rel = into.join(rel);
            let header = entry.header();
            let mode = header.mode().map_err(read_err)? & 0o7777;
            let (uid, gid) = (
                header.uid().map_err(read_err)?,
                header.gid().map_err(read_err)?,
            );
            let kind = header.entry_type();
            let dest = self.resolve_parent(&rel, origin)?;
            let write_err = |source| Error::WriteTree {
                origin: origin.to_owned(),
                path: dest.clone(),
                source,
            };
            if kind.is_dir() {
                if !dest.is_dir() {
                    remove_existing(&dest).map_err(write_err)?;
                    fs::create_dir(&dest).map_err(write_err)?;
                }
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .unwrap_or_default()
                    .into_owned();
                remove_existing(&dest).map_err(write_err)?;
                symlink(&target, &dest).map_err(write_err)?;
                set_owner(&dest, uid, gid).map_err(write_err)?;
                continue;
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .unwrap_or_default()
                    .into_owned();
                let target = self.resolve_parent(&confine(&target, origin)?, origin)?;
                remove_existing(&dest).map_err(write_err)?;
                fs::hard_link(&target, &dest).map_err(write_err)?;
                continue;
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                remove_existing(&dest).map_err(write_err)?;
                let mut out = fs::File::create(&dest).map_err(write_err)?;
                io::copy(&mut entry, &mut out).map_err(write_err)?;
            } else {
                // Device nodes, fifos: the running system's /dev is a devtmpfs.
                tracing::debug!(path = %rel.display(), "skipping a special file");
                continue;
            }
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(write_err)?;
            set_owner(&dest, uid, gid).map_err(write_err)?;
        }
        Ok(())
    }

    fn copy_dir(&self, dir: &Path, into: &Path, origin: &str) -> Result<(), Error> {
        // A directory is packed into a tar stream in memory order and unpacked like any layer,
        // so the same confinement applies.
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", dir)
            .map_err(|source| Error::ReadArchive {
                origin: origin.to_owned(),
                source,
            })?;
        let bytes = builder.into_inner().map_err(|source| Error::ReadArchive {
            origin: origin.to_owned(),
            source,
        })?;
        self.unpack_tar(bytes.as_slice(), into, origin)
    }

    /// Places one recipe file; `source` is the fetched file for `Content::Source`.
    pub fn place(&self, spec: &FileSpec, source: Option<&Path>) -> Result<(), Error> {
        let origin = format!("file {}", spec.path);
        let rel = PathBuf::from(spec.path.relative());
        let dest = self.resolve_parent(&rel, &origin)?;
        let write_err = |source| Error::WriteTree {
            origin: origin.clone(),
            path: dest.clone(),
            source,
        };
        match &spec.content {
            Content::Dir => {
                if !dest.is_dir() {
                    remove_existing(&dest).map_err(write_err)?;
                    fs::create_dir(&dest).map_err(write_err)?;
                }
            }
            Content::Symlink(target) => {
                remove_existing(&dest).map_err(write_err)?;
                symlink(target, &dest).map_err(write_err)?;
                return set_owner(&dest, spec.uid.into(), spec.gid.into()).map_err(write_err);
            }
            Content::Text(text) => {
                remove_existing(&dest).map_err(write_err)?;
                fs::write(&dest, text).map_err(write_err)?;
            }
            Content::Source(_) => {
                remove_existing(&dest).map_err(write_err)?;
                let from = source.unwrap_or(Path::new(""));
                fs::copy(from, &dest).map_err(write_err)?;
            }
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(spec.mode)).map_err(write_err)?;
        set_owner(&dest, spec.uid.into(), spec.gid.into()).map_err(write_err)
    }

    /// Writes a generated file (mode 0644, root) at `rel`.
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), Error> {
        let origin = format!("generated {rel}");
        let dest = self.resolve_parent(Path::new(rel), &origin)?;
        remove_existing(&dest)
            .and_then(|()| fs::write(&dest, bytes))
            .map_err(|source| Error::WriteTree {
                origin,
                path: dest,
                source,
            })
    }

    /// The host path for `rel`: its parent resolved inside the tree (created as needed), the
    /// last component itself not followed.
    fn resolve_parent(&self, rel: &Path, origin: &str) -> Result<PathBuf, Error> {
        let name = rel.file_name().ok_or_else(|| Error::ConfinePath {
            origin: origin.to_owned(),
            path: rel.display().to_string(),
            why: "has no file name",
        })?;
        let parent = self.resolve(rel.parent().unwrap_or(Path::new("")), origin)?;
        Ok(parent.join(name))
    }

    /// Resolves `rel` inside the tree as the image would, creating missing directories.
    fn resolve(&self, rel: &Path, origin: &str) -> Result<PathBuf, Error> {
        let mut resolved: Vec<std::ffi::OsString> = Vec::new();
        let mut pending: Vec<std::ffi::OsString> = rel
            .components()
            .rev()
            .map(|c| c.as_os_str().to_owned())
            .collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match Path::new(&part).components().next() {
                None | Some(Component::CurDir) | Some(Component::RootDir) => continue,
                Some(Component::ParentDir) => {
                    // Only link targets can bring `..` here; at the root it stays at the root,
                    // as the kernel resolves it.
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            let mut here = self.root.clone();
            here.extend(&resolved);
            here.push(&part);
            match fs::symlink_metadata(&here) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(Error::ConfinePath {
                            origin: origin.to_owned(),
                            path: rel.display().to_string(),
                            why: "crosses too many symbolic links",
                        });
                    }
                    let target = fs::read_link(&here).map_err(|source| Error::WriteTree {
                        origin: origin.to_owned(),
                        path: here.clone(),
                        source,
                    })?;
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    pending.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
                }
                Ok(meta) if meta.is_dir() => resolved.push(part),
                Ok(_) => {
                    return Err(Error::ConfinePath {
                        origin: origin.to_owned(),
                        path: rel.display().to_string(),
                        why: "goes through a file that is not a directory",
                    });
                }
                Err(_) => {
                    fs::create_dir(&here).map_err(|source| Error::WriteTree {
                        origin: origin.to_owned(),
                        path: here.clone(),
                        source,
                    })?;
                    resolved.push(part);
                }
            }
        }
        let mut path = self.root.clone();
        path.extend(&resolved);
        Ok(path)
    }
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

fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets ownership when running as root; otherwise ownership other than the caller's is lost,
/// which [`crate::build`] refuses up front for recipes that ask for it.
fn set_owner(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_size(0);
                header.set_link_name(data).unwrap();
                // set_path refuses `..`: write the name bytes directly, as a hostile archive would.
                header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, io::empty()).unwrap();
            } else {
                header.set_size(data.len() as u64);
                header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, data.as_bytes()).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn parent_directory_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let tar = tar_with(&[("../escape", tar::EntryType::Regular, "x")]);
        let err = Tree::new(&root)
            .unpack_tar(tar.as_slice(), Path::new(""), "layer")
            .unwrap_err();
        assert!(err.to_string().contains("leaves the tree"), "{err}");
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn absolute_symlinks_are_rerooted_not_followed_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let escape = outside.to_str().unwrap().to_owned();
        let tar = tar_with(&[
            ("evil", tar::EntryType::Symlink, &escape),
            ("evil/file", tar::EntryType::Regular, "payload"),
            ("up", tar::EntryType::Symlink, "../../.."),
            ("up/second", tar::EntryType::Regular, "payload"),
        ]);
        Tree::new(&root)
            .unpack_tar(tar.as_slice(), Path::new(""), "layer")
            .unwrap();
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
        // The link target was re-rooted: the file landed inside the tree.
        assert_eq!(
            fs::read_to_string(root.join(escape.trim_start_matches('/')).join("file")).unwrap(),
            "payload"
        );
        assert_eq!(fs::read_to_string(root.join("second")).unwrap(), "payload");
    }

    #[test]
    fn recipe_files_follow_links_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        let tree = Tree::new(&root);
        let spec = FileSpec {
            path: crate::recipe::ImagePath::new("/bin/hello").unwrap(),
            content: Content::Text("hi\n".into()),
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        tree.place(&spec, None).unwrap();
        let placed = root.join("usr/bin/hello");
        assert_eq!(fs::read_to_string(&placed).unwrap(), "hi\n");
        assert_eq!(
            fs::metadata(&placed).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }
}
