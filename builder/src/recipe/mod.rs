//! Recipe format v1: what goes into a node image, as a reviewable TOML file.
//!
//! Parsing is strict: unknown keys are refused, and every error names `file:line:column` and says
//! what was expected. Everything a recipe names that later becomes a path (image name, source
//! paths, destination paths inside the image) is validated here, so later stages can trust it.
//! The complete format is documented in the README ("Recipe format").

mod paths;
mod validate;
pub mod windows;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use paths::{ImagePath, RecipePath, ResolveError};

/// The only recipe format this build understands.
pub const FORMAT: u32 = 1;

/// A recipe error: where in which file, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe file could not be read.
    #[error("cannot read recipe {path}")]
    ReadRecipe {
        /// The recipe file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The recipe is not valid.
    #[error("{location}: {message}")]
    Invalid {
        /// `file:line:column`.
        location: Location,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// A place in a recipe file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The recipe file.
    pub path: PathBuf,
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// A parsed and validated recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe file.
    pub path: PathBuf,
    /// Its text (for error locations found later, e.g. a disk too small for its content).
    pub text: String,
    /// The image's identity.
    pub image: Image,
    /// Named inputs.
    pub sources: BTreeMap<String, Source>,
    /// The read-only root filesystem.
    pub root: Root,
    /// Kernel, initrd and command line (the unified kernel image).
    pub kernel: Kernel,
    /// Disk layout.
    pub disk: Disk,
    /// The Windows image's parts (`os = "windows"`); `root` and `kernel` are then empty.
    pub windows: Option<windows::Windows>,
}

/// Identity of the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Image name: lowercase letters, digits, `-`, `.`, `_` (it becomes a file name).
    pub name: Spanned<String>,
    /// Image version, same characters as the name.
    pub version: Spanned<String>,
    /// Operating system.
    pub os: Os,
    /// CPU architecture.
    pub arch: Arch,
    /// Kubernetes version the image carries, or `"none"`.
    pub kubernetes: Spanned<String>,
}

/// Operating system of an image (the manifest's).
pub use images::manifest::Os;

/// CPU architecture of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Arch {
    /// 64-bit x86.
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    /// The name recipes and manifests use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
        }
    }
}

/// One named input.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it is declared.
    pub span: Range<usize>,
    /// What it is.
    pub kind: SourceKind,
}

/// The kinds of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A Debian binary package from the host's configured archive, resolved and pinned by the lock.
    Deb {
        /// Package name.
        package: String,
        /// When the package is a metapackage: follow its dependency whose name starts with this.
        follow: Option<String>,
    },
    /// A Debian root tree made by mmdebstrap.
    Debian {
        /// Suite, e.g. `bookworm`.
        suite: String,
        /// mmdebstrap variant.
        variant: String,
        /// Packages to include.
        packages: Vec<String>,
    },
    /// A file or directory beside the recipe.
    Path {
        /// Relative to the recipe's directory.
        path: RecipePath,
        /// Unpack it as a tar archive (optionally gzip-compressed) when used as a layer.
        unpack: bool,
        /// The sha256 the file must have (a base image is pinned like a download).
        sha256: Option<String>,
    },
    /// A download with a pinned digest.
    Url {
        /// The URL.
        url: String,
        /// Expected sha256, lowercase hex.
        sha256: String,
        /// Unpack it as a tar archive (optionally gzip-compressed) when used as a layer.
        unpack: bool,
        /// The largest download accepted, in bytes (`None`: the default cap).
        size: Option<u64>,
    },
}

/// The root filesystem.
#[derive(Debug, Clone)]
pub struct Root {
    /// Filesystem type.
    pub filesystem: Filesystem,
    /// Sources unpacked into the tree, in order.
    pub layers: Vec<Layer>,
    /// Files, directories and links placed after the layers.
    pub files: Vec<FileSpec>,
}

/// A source unpacked into the root tree.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The source's name.
    pub source: Spanned<String>,
    /// Where in the image its content goes (`/` when unset).
    pub into: Option<ImagePath>,
}

/// Filesystem of the root partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// EROFS (the default: read-only, compact, reproducible).
    Erofs,
    /// ext4, mounted read-only.
    Ext4,
}

/// One entry placed in the root tree.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Destination inside the image.
    pub path: ImagePath,
    /// What to place.
    pub content: Content,
    /// Permission bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// What a [`FileSpec`] places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The content of a `path` or `url` source (a file).
    Source(String),
    /// Inline text.
    Text(String),
    /// A symbolic link to this target.
    Symlink(String),
    /// An empty directory.
    Dir,
}

/// The unified kernel image.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `deb` source holding `/boot/vmlinuz-*` and its modules.
    pub source: Spanned<String>,
    /// `deb` source holding systemd's EFI stub.
    pub stub: Spanned<String>,
    /// Kernel command line (Slipway appends the verity parameters).
    pub cmdline: String,
    /// Modules the initrd loads, with their dependencies.
    pub modules: Vec<String>,
    /// Sources unpacked into the initrd (busybox, dmsetup and its libraries).
    pub initrd: Vec<Spanned<String>>,
}

impl Root {
    /// The root of a recipe that has none (Windows).
    pub(crate) fn empty() -> Root {
        Root {
            filesystem: Filesystem::Erofs,
            layers: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl Kernel {
    /// The kernel of a recipe that has none (Windows).
    pub(crate) fn empty() -> Kernel {
        Kernel {
            source: Spanned::new(0..0, String::new()),
            stub: Spanned::new(0..0, String::new()),
            cmdline: String::new(),
            modules: Vec::new(),
            initrd: Vec::new(),
        }
    }
}

/// Disk layout.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Virtual size of the disk.
    pub size: Spanned<u64>,
    /// Size of the EFI system partition.
    pub esp_size: Spanned<u64>,
    /// VHDX block size.
    pub block_size: u32,
}

impl Recipe {
    /// Reads and validates the recipe at `path`.
    pub fn load(path: &Path) -> Result<Recipe, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadRecipe {
            path: path.to_owned(),
            source,
        })?;
        Recipe::parse(path, &text)
    }

    /// Validates recipe `text` read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Recipe, Error> {
        let raw: raw::Recipe = toml::from_str(text).map_err(|e| Error::Invalid {
            location: locate(path, text, e.span().map_or(0, |s| s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        validate::Validator { path, text }.recipe(raw)
    }

    /// The directory relative `path` sources are found in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Where byte `span.start` of the recipe is.
    pub fn location(&self, span: &Range<usize>) -> Location {
        locate(&self.path, &self.text, span.start)
    }

    /// An error located at byte `span.start` of the recipe.
    pub fn error_at(&self, span: &Range<usize>, message: impl Into<String>) -> Error {
        Error::Invalid {
            location: self.location(span),
            message: message.into(),
        }
    }

    /// `NAME-VERSION`, the stem of every output file.
    pub fn stem(&self) -> String {
        format!(
            "{}-{}",
            self.image.name.get_ref(),
            self.image.version.get_ref()
        )
    }

    /// The lock file beside the recipe: `NAME.lock` for `NAME.toml`.
    pub fn lock_path(&self) -> PathBuf {
        self.path.with_extension("lock")
    }
}

/// Turns a byte offset into `file:line:column`.
fn locate(path: &Path, text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        path: path.to_owned(),
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

/// The shapes serde reads, before validation.
pub(crate) mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Recipe {
        pub format: Spanned<u32>,
        pub image: super::Image,
        #[serde(default)]
        pub sources: BTreeMap<Spanned<String>, Spanned<Source>>,
        pub root: Option<Root>,
        pub kernel: Option<Kernel>,
        pub windows: Option<super::windows::raw::Windows>,
        pub disk: Disk,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Source {
        pub deb: Option<String>,
        pub follow: Option<String>,
        pub debian: Option<String>,
        pub variant: Option<String>,
        pub packages: Option<Vec<String>>,
        pub path: Option<String>,
        pub url: Option<String>,
        pub sha256: Option<Spanned<String>>,
        pub unpack: Option<bool>,
        pub size: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Root {
        #[serde(default = "erofs")]
        pub filesystem: super::Filesystem,
        /// `"name"` or `{ source = "name", into = "/usr/bin" }`, checked in [`super::Validator`]
        /// (an untagged enum would lose the spans).
        #[serde(default)]
        pub layers: Vec<Spanned<toml::Value>>,
        #[serde(default)]
        pub files: Vec<Spanned<File>>,
    }

    fn erofs() -> super::Filesystem {
        super::Filesystem::Erofs
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub path: Spanned<String>,
        pub source: Option<String>,
        pub text: Option<String>,
        pub symlink: Option<String>,
        pub dir: Option<bool>,
        pub mode: Option<Spanned<String>>,
        pub owner: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Kernel {
        pub source: Spanned<String>,
        pub stub: Spanned<String>,
        pub cmdline: Spanned<String>,
        #[serde(default)]
        pub modules: Vec<String>,
        #[serde(default)]
        pub initrd: Vec<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Disk {
        pub size: Spanned<String>,
        pub esp_size: Option<Spanned<String>>,
        pub block_size: Option<Spanned<String>>,
    }
}

#[cfg(test)]
mod tests;
