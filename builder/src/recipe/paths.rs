//! Validated paths: every path a recipe names is confined before anything uses it.

use std::fmt;
use std::path::{Component, Path, PathBuf};

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

    /// The path under `dir`.
    pub fn under(&self, dir: &Path) -> PathBuf {
        dir.join(&self.0)
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
