//! Sources: every input a recipe names, resolved (against the lock) and fetched into the cache,
//! each with the sha256 the manifest records.

mod deb;
mod debian;
mod url;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::events::Events;
use crate::lock::{Lock, Locked};
use crate::recipe::{Recipe, ResolveError, SourceKind};

/// Errors resolving or fetching sources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool could not be started.
    #[error("cannot run {tool} (run ./scripts/setup to install the tools Slipway needs)")]
    RunTool {
        /// The program.
        tool: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// apt does not know the package.
    #[error("cannot resolve Debian package {package}: {stderr}")]
    ResolvePackage {
        /// The package.
        package: String,
        /// What apt said.
        stderr: String,
    },
    /// A metapackage has no dependency with the prefix.
    #[error(
        "metapackage {package} has no dependency starting with {prefix:?} (Depends: {depends})"
    )]
    FollowPackage {
        /// The metapackage.
        package: String,
        /// The prefix looked for.
        prefix: String,
        /// Its dependencies.
        depends: String,
    },
    /// apt could not download a package version.
    #[error(
        "cannot download Debian package {package} {version}: {stderr} (if the archive dropped \
         that version, run `slipway lock` to resolve the current one)"
    )]
    DownloadPackage {
        /// The package.
        package: String,
        /// The version.
        version: String,
        /// What apt said.
        stderr: String,
    },
    /// Downloads failed; each line names the URL and where to place the file by hand.
    #[error("{} source(s) could not be downloaded:\n{}", .0.len(), .0.join("\n"))]
    DownloadUrls(Vec<String>),
    /// Content did not match its pinned digest.
    #[error("{what} has sha256 {actual}, but {expected} is pinned: refusing it")]
    VerifyDigest {
        /// What was checked.
        what: String,
        /// Pinned digest.
        expected: String,
        /// Digest found.
        actual: String,
    },
    /// A local source is missing or unreadable.
    #[error("{location}: source {name}: cannot read {path}")]
    ReadSource {
        /// Where the recipe declares it.
        location: crate::recipe::Location,
        /// Source name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `path` source resolves (through a symbolic link) outside the recipe's directory.
    #[error("{location}: source {name}: {why}")]
    ConfineSource {
        /// Where the recipe declares it.
        location: crate::recipe::Location,
        /// Source name.
        name: String,
        /// What it resolves to, and where the recipe's directory is (boxed: errors stay small).
        why: Box<ResolveError>,
    },
    /// Reading a file to digest it failed.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The cache could not be written.
    #[error("cannot write to the cache at {path}")]
    WriteCache {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// mmdebstrap failed.
    #[error("mmdebstrap {suite} failed: {stderr}")]
    Bootstrap {
        /// The suite.
        suite: String,
        /// The end of its output.
        stderr: String,
    },
    /// `--locked`, and the lock does not cover or match an input.
    #[error(
        "source {name}: {why}; the lock file {lock} no longer matches the inputs (run `slipway \
         lock` and review the change, or build without --locked)"
    )]
    MatchLock {
        /// Source name.
        name: String,
        /// What differs.
        why: String,
        /// The lock file.
        lock: PathBuf,
    },
}

/// How to treat the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Use the lock as it is; refuse anything it does not cover or that differs (`--locked`).
    Locked,
    /// Use what the lock covers; resolve the rest and what is no longer available.
    Update,
    /// Resolve every input again (`slipway lock`).
    Relock,
}

/// A fetched input.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Source name in the recipe.
    pub name: String,
    /// What it is and where it is.
    pub artifact: Artifact,
    /// sha256 of the artifact (for a directory: of its sorted listing and contents).
    pub sha256: String,
}

/// A fetched input's kind and location.
#[derive(Debug, Clone)]
pub enum Artifact {
    /// A `.deb`.
    Deb {
        /// The cached file.
        path: PathBuf,
        /// Package name.
        package: String,
        /// Version.
        version: String,
    },
    /// A file.
    File(PathBuf),
    /// A tar archive (optionally gzip-compressed) to unpack.
    Tar(PathBuf),
    /// A directory.
    Dir(PathBuf),
    /// A Debian root tree as a tar archive, with its package list.
    DebianTree {
        /// The cached tar.
        path: PathBuf,
        /// `name version` of every installed package.
        packages: Vec<String>,
    },
}

/// Resolves and fetches every source of `recipe`. Returns the inputs and the lock that
/// describes them (equal to `lock` when nothing was re-resolved).
pub fn fetch_all(
    recipe: &Recipe,
    lock: Option<&Lock>,
    policy: Policy,
    cache: &Path,
    events: &Events,
) -> Result<(BTreeMap<String, Fetched>, Lock), Error> {
    let mut fetched = BTreeMap::new();
    let mut new_lock = Lock::new();
    let mut missing_urls = Vec::new();
    let lock_path = recipe.lock_path();
    let mismatch = |name: &str, why: String| Error::MatchLock {
        name: name.to_owned(),
        why,
        lock: lock_path.clone(),
    };
    for (name, source) in &recipe.sources {
        let locked = match policy {
            Policy::Relock => None,
            _ => lock.and_then(|l| l.inputs.get(name)),
        };
        events.step(&format!("source {name}"));
        let (artifact, sha256, entry) = match &source.kind {
            SourceKind::Deb { package, follow } => {
                let usable = match locked {
                    Some(Locked::Deb {
                        package: p,
                        version,
                        sha256,
                    }) if p == package || follow.as_deref().is_some_and(|f| p.starts_with(f)) => {
                        Some((p.clone(), version.clone(), sha256.clone()))
                    }
                    Some(other) if policy == Policy::Locked => {
                        return Err(mismatch(
                            name,
                            format!(
                                "the lock has {other:?}, the recipe asks for package {package}"
                            ),
                        ));
                    }
                    _ if policy == Policy::Locked => {
                        return Err(mismatch(name, "the lock does not cover it".into()));
                    }
                    _ => None,
                };
                let (package, version, sha256, path) = match usable {
                    Some((p, v, s)) => match deb::fetch(cache, &p, &v, &s) {
                        Ok(path) => (p, v, s, path),
                        Err(e) if policy == Policy::Locked => return Err(e),
                        Err(e) => {
                            tracing::warn!(source = %name, error = %e, "locked package unavailable; resolving again");
                            resolve_deb(cache, package, follow.as_deref())?
                        }
                    },
                    None => resolve_deb(cache, package, follow.as_deref())?,
                };
                let entry = Locked::Deb {
                    package: package.clone(),
                    version: version.clone(),
                    sha256: sha256.clone(),
                };
                (
                    Artifact::Deb {
                        path,
                        package,
                        version,
                    },
                    sha256,
                    Some(entry),
                )
            }
            SourceKind::Url {
                url,
                sha256,
                unpack,
                size,
            } => {
                if policy == Policy::Locked {
                    match locked {
                        Some(Locked::Url { url: u, sha256: s }) if u == url && s == sha256 => {}
                        _ => {
                            return Err(mismatch(
                                name,
                                format!("the lock does not pin {url} at {sha256}"),
                            ));
                        }
                    }
                }
                match url::fetch(cache, url, sha256, *size) {
                    Ok(path) => {
                        let artifact = if *unpack {
                            Artifact::Tar(path)
                        } else {
                            Artifact::File(path)
                        };
                        (
                            artifact,
                            sha256.clone(),
                            Some(Locked::Url {
                                url: url.clone(),
                                sha256: sha256.clone(),
                            }),
                        )
                    }
                    Err(e) => {
                        missing_urls.push(format!(
                            "  source {name}: {url}: {}; place the file (sha256 {sha256}) at {}",
                            e.why(),
                            url::cached_path(cache, sha256).display()
                        ));
                        continue;
                    }
                }
            }
            SourceKind::Path {
                path,
                unpack,
                sha256: pinned,
            } => {
                // Confined by what it resolves to, not only by how it is spelled: from here on
                // the source is its resolved path, so no link is followed again.
                let location = || recipe.location(&source.span);
                let full = path.resolve_under(recipe.dir()).map_err(|e| match e {
                    ResolveError::ReadPath { path, source } => Error::ReadSource {
                        location: location(),
                        name: name.clone(),
                        path,
                        source,
                    },
                    leave @ ResolveError::LeaveDirectory { .. } => Error::ConfineSource {
                        location: location(),
                        name: name.clone(),
                        why: Box::new(leave),
                    },
                })?;
                let meta = std::fs::metadata(&full).map_err(|e| Error::ReadSource {
                    location: location(),
                    name: name.clone(),
                    path: full.clone(),
                    source: e,
                })?;
                let fetched = if meta.is_dir() {
                    (Artifact::Dir(full.clone()), digest_tree(&full)?, None)
                } else if *unpack {
                    (Artifact::Tar(full.clone()), digest_file(&full)?, None)
                } else {
                    (Artifact::File(full.clone()), digest_file(&full)?, None)
                };
                match pinned {
                    Some(expected) if *expected != fetched.1 => {
                        return Err(Error::VerifyDigest {
                            what: format!("{}: source {name} ({})", location(), full.display()),
                            expected: expected.clone(),
                            actual: fetched.1,
                        });
                    }
                    _ => fetched,
                }
            }
            SourceKind::Debian {
                suite,
                variant,
                packages,
            } => {
                let locked_list = match locked {
                    Some(Locked::Debian { packages }) => Some(packages.as_slice()),
                    _ if policy == Policy::Locked => {
                        return Err(mismatch(name, "the lock does not cover it".into()));
                    }
                    _ => None,
                };
                let tree =
                    debian::fetch(cache, suite, variant, packages, locked_list, policy, events)
                        .map_err(|e| match e {
                            debian::Outcome::Differs(why) => mismatch(name, why),
                            debian::Outcome::Failed(e) => e,
                        })?;
                let sha256 = digest_file(&tree.path)?;
                let entry = Locked::Debian {
                    packages: tree.packages.clone(),
                };
                (
                    Artifact::DebianTree {
                        path: tree.path,
                        packages: tree.packages,
                    },
                    sha256,
                    Some(entry),
                )
            }
        };
        if let Some(entry) = entry {
            new_lock.inputs.insert(name.clone(), entry);
        }
        fetched.insert(
            name.clone(),
            Fetched {
                name: name.clone(),
                artifact,
                sha256,
            },
        );
    }
    if !missing_urls.is_empty() {
        return Err(Error::DownloadUrls(missing_urls));
    }
    Ok((fetched, new_lock))
}

fn resolve_deb(
    cache: &Path,
    package: &str,
    follow: Option<&str>,
) -> Result<(String, String, String, PathBuf), Error> {
    let c = deb::resolve(package, follow)?;
    let path = deb::fetch(cache, &c.package, &c.version, &c.sha256)?;
    Ok((c.package, c.version, c.sha256, path))
}

/// sha256 of a file, lowercase hex (the image library's reader, which overlaps reading and
/// hashing).
pub fn digest_file(path: &Path) -> Result<String, Error> {
    match images::oci::digest_file(path) {
        Ok((digest, _)) => Ok(digest.trim_start_matches("sha256:").to_owned()),
        Err(images::oci::Error::ReadLocal { path, source }) => {
            Err(Error::ReadFile { path, source })
        }
        Err(other) => Err(Error::ReadFile {
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        }),
    }
}

/// sha256 over a directory: each entry's relative path, kind, mode and content, in sorted order.
pub fn digest_tree(root: &Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut hasher = Sha256::new();
    let mut stack = vec![root.to_owned()];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        let read = std::fs::read_dir(&dir).map_err(|source| Error::ReadFile {
            path: dir.clone(),
            source,
        })?;
        for entry in read {
            let entry = entry.map_err(|source| Error::ReadFile {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                stack.push(path.clone());
            }
            entries.push((path, meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, meta) in entries {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update(meta.permissions().mode().to_le_bytes());
        if meta.is_file() {
            hasher.update(digest_file(&path)?.as_bytes());
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            hasher.update(target.as_os_str().as_encoded_bytes());
        }
        hasher.update([0]);
    }
    Ok(hex(&hasher.finalize()))
}

pub use images::oci::artifact::hex;
