//! Validated paths: every path a recipe names is confined before anything uses it.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a [`RecipePath`] could not be resolved inside the recipe's directory.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The path (or the directory) does not exist or cannot be read.
    #[error("cannot read {path}")]
    ReadPath {
        /// The path as spelled under the recipe's directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A symbolic link on the way takes the path out of the recipe's directory.
    #[error(
        "{path} resolves to {resolved}, outside the recipe's directory {dir}: a symbolic link \
         leads out of it (copy the file or directory beside the recipe instead of linking to it)"
    )]
    LeaveDirectory {
        /// The path as the recipe spells it.
        path: RecipePath,
        /// Where it leads.
        resolved: PathBuf,
        /// The recipe's directory, resolved.
        dir: PathBuf,
    },
}

/// A path relative to the recipe's directory that cannot leave it: no `..`, not absolute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecipePath(PathBuf);

impl RecipePath {
    /// Validates `text`; the error says why it was refused.
    pub fn new(text: &str) -> Result<RecipePath, String> {
        let path = Path::new(text);
        if text.is_empty() || text.contains('\0') {
            return Err("path must be a non-empty relative path".to_owned());
        }
        for component in path.components() {
            match component {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(format!(
                        "path {text:?} leaves the recipe's directory: `..` is not allowed"
                    ));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "path {text:?} is absolute: sources are relative to the recipe's directory"
                    ));
                }
            }
        }
        Ok(RecipePath(path.to_owned()))
    }

    /// The path under `dir`, as spelled (symbolic links not resolved).
    pub fn under(&self, dir: &Path) -> PathBuf {
        dir.join(&self.0)
    }

    /// The path under `dir` with every symbolic link resolved, refused unless what it resolves
    /// to is still inside `dir` (itself resolved): the spelling alone cannot leave `dir`, but a
    /// link on the way can.
    pub fn resolve_under(&self, dir: &Path) -> Result<PathBuf, ResolveError> {
        let canonical = |path: PathBuf| {
            path.canonicalize()
                .map_err(|source| ResolveError::ReadPath { path, source })
        };
        let dir = canonical(dir.to_owned())?;
        let resolved = canonical(self.under(&dir))?;
        if resolved.starts_with(&dir) {
            Ok(resolved)
        } else {
            Err(ResolveError::LeaveDirectory {
                path: self.clone(),
                resolved,
                dir,
            })
        }
    }
}

impl fmt::Display for RecipePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// An absolute path inside the image, normalised (`/usr/bin/x`), that stays inside the root:
/// no `..`, no empty or `.` components, and not the root itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImagePath(String);

impl ImagePath {
    /// Validates `text`; the error says why it was refused.
    pub fn new(text: &str) -> Result<ImagePath, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "path {text:?} inside the image must be absolute (start with /)"
            ));
        };
        if rest.is_empty() || text.contains('\0') || text.len() > 4096 {
            return Err(format!(
                "path {text:?} does not name a file inside the image"
            ));
        }
        for part in rest.split('/') {
            match part {
                ".." => {
                    return Err(format!(
                        "path {text:?} escapes the image's root: `..` is not allowed"
                    ));
                }
                "" | "." => {
                    return Err(format!(
                        "path {text:?} is not normalised: no empty or `.` components"
                    ));
                }
                _ => {}
            }
        }
        Ok(ImagePath(text.to_owned()))
    }

    /// The path without its leading `/`, to join under a tree's root.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The path as written (`/usr/bin/x`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_paths_stay_beside_the_recipe() {
        assert!(RecipePath::new("tiny-linux/init").is_ok());
        assert!(RecipePath::new("./x").is_ok());
        assert!(RecipePath::new("../x").unwrap_err().contains("`..`"));
        assert!(RecipePath::new("a/../../x").is_err());
        assert!(
            RecipePath::new("/etc/passwd")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(RecipePath::new("").is_err());
    }

    #[test]
    fn recipe_paths_are_confined_by_what_they_resolve_to() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("recipe");
        std::fs::create_dir_all(dir.join("inside")).unwrap();
        std::fs::write(dir.join("inside/file"), "x").unwrap();
        std::fs::write(top.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink("inside/file", dir.join("near")).unwrap();
        std::os::unix::fs::symlink("../secret", dir.join("evil")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("root")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("inside/up")).unwrap();
        let resolve = |text: &str| RecipePath::new(text).unwrap().resolve_under(&dir);
        let dir = dir.canonicalize().unwrap();
        assert_eq!(resolve("near").unwrap(), dir.join("inside/file"));
        assert_eq!(resolve("inside/up/inside").unwrap(), dir.join("inside"));
        assert_eq!(resolve(".").unwrap(), dir);
        for escaping in ["evil", "root", "root/etc", "inside/up/evil"] {
            let err = resolve(escaping).unwrap_err();
            assert!(
                matches!(err, ResolveError::LeaveDirectory { .. })
                    && err.to_string().contains("outside the recipe's directory"),
                "{escaping}: {err}"
            );
        }
        assert!(matches!(
            resolve("missing"),
            Err(ResolveError::ReadPath { .. })
        ));
    }

    #[test]
    fn image_paths_stay_inside_the_root() {
        assert_eq!(
            ImagePath::new("/sbin/init").unwrap().relative(),
            "sbin/init"
        );
        assert!(
            ImagePath::new("sbin/init")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(ImagePath::new("/../etc").unwrap_err().contains("escapes"));
        assert!(ImagePath::new("/a/./b").is_err());
        assert!(ImagePath::new("/a//b").is_err());
        assert!(ImagePath::new("/").is_err());
    }
}
