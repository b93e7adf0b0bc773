//! Differencing children over an immutable base, as Hyper-V's `New-VHD -Differencing` makes.
//!
//! The child records the parent's DataWriteGuid as `parent_linkage` and two ways to find it:
//! `relative_path` (from the child's directory, Windows separators, as Hyper-V writes it) and
//! `absolute_win32_path`. The linkage is written lower-case in braces, as MS-VHDX 2.6.2.6.3
//! specifies (libvhdi refuses upper case); readers compare case-insensitively. Readers try the relative path first, so a directory holding a base
//! and its children can be moved as a whole.

use std::path::{Component, Path, PathBuf};

use super::format::{ParentLocator, locator_key};
use super::reader::{self, Vhdx};
use super::writer::{self, Extent, Identity, Options, Summary};

/// Why a child could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The parent could not be opened.
    #[error("open the parent")]
    OpenParent(#[source] reader::Error),
    /// A path could not be made absolute.
    #[error("resolve {path}")]
    ResolvePath {
        /// The path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Writing the child failed.
    #[error("write the child")]
    WriteChild(#[source] writer::Error),
}

/// Options for a new child.
#[derive(Debug, Clone, Default)]
pub struct ChildOptions {
    /// The path to record as `absolute_win32_path` instead of the parent's absolute path
    /// (for a disk prepared on Linux for a Windows host).
    pub absolute_path: Option<String>,
    /// Block size; the parent's when `None`.
    pub block_size: Option<u32>,
}

/// Creates a differencing VHDX at `child` over `parent`, atomically.
pub fn create(parent: &Path, child: &Path, options: &ChildOptions) -> Result<Summary, Error> {
    let base = Vhdx::open(parent).map_err(Error::OpenParent)?;
    let resolve = |path: &Path| {
        std::path::absolute(path).map_err(|source| Error::ResolvePath {
            path: path.to_owned(),
            source,
        })
    };
    let parent_abs = std::fs::canonicalize(parent).map_err(|source| Error::ResolvePath {
        path: parent.to_owned(),
        source,
    })?;
    let child_abs = resolve(child)?;
    let child_dir = child_abs.parent().unwrap_or(Path::new("/"));
    let child_dir = std::fs::canonicalize(child_dir).map_err(|source| Error::ResolvePath {
        path: child_dir.to_owned(),
        source,
    })?;
    let locator = ParentLocator {
        entries: vec![
            (
                locator_key::PARENT_LINKAGE.into(),
                format!(
                    "{{{}}}",
                    base.header().data_write_guid.to_string().to_lowercase()
                ),
            ),
            (
                locator_key::RELATIVE_PATH.into(),
                windows_relative(&child_dir, &parent_abs),
            ),
            (
                locator_key::ABSOLUTE_WIN32_PATH.into(),
                options
                    .absolute_path
                    .clone()
                    .unwrap_or_else(|| parent_abs.display().to_string()),
            ),
        ],
    };
    let mut opts = Options::new(Identity::random().map_err(Error::WriteChild)?);
    opts.block_size = options.block_size.unwrap_or(base.geometry().block_size);
    opts.logical_sector_size = base.geometry().logical_sector_size;
    opts.physical_sector_size = base.physical_sector_size();
    opts.parent = Some(locator);
    let extents = [Extent::Zero(base.geometry().virtual_size)];
    writer::write_file(child, &extents, &opts, &mut |_| {}).map_err(Error::WriteChild)
}

/// The path from directory `from` to file `to`, with Windows separators and a leading `.\`
/// when it stays below `from` (both paths absolute and canonical).
fn windows_relative(from: &Path, to: &Path) -> String {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = Vec::new();
    if common == from.len() {
        parts.push(".".into());
    }
    parts.extend(std::iter::repeat_n("..".to_string(), from.len() - common));
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_use_windows_separators() {
        assert_eq!(
            windows_relative(Path::new("/a/b"), Path::new("/a/b/base.vhdx")),
            ".\\base.vhdx"
        );
        assert_eq!(
            windows_relative(Path::new("/a/b/vm"), Path::new("/a/images/base.vhdx")),
            "..\\..\\images\\base.vhdx"
        );
        assert_eq!(
            windows_relative(Path::new("/"), Path::new("/base.vhdx")),
            ".\\base.vhdx"
        );
    }
}
