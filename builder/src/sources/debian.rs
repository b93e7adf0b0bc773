//! Debian root trees made by mmdebstrap from the host's configured archive, cached as tar
//! archives by what was asked and what was installed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{Error, Policy, hex};
use crate::events::Events;

/// A cached tree.
pub struct Tree {
    /// The tar archive.
    pub path: PathBuf,
    /// `name version` of every installed package, sorted.
    pub packages: Vec<String>,
}

/// Why no tree is returned.
pub enum Outcome {
    /// `--locked`, and the archive now gives other package versions (the difference).
    Differs(String),
    /// Making the tree failed.
    Failed(Error),
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Outcome {
        Outcome::Failed(e)
    }
}

/// The tree for `suite` with `packages`: from the cache when it holds one with the locked
/// package list, otherwise made by mmdebstrap (and, with `Policy::Locked`, checked against it).
pub fn fetch(
    cache: &Path,
    suite: &str,
    variant: &str,
    packages: &[String],
    locked: Option<&[String]>,
    policy: Policy,
    events: &Events,
) -> Result<Tree, Outcome> {
    let dir = cache.join("debian");
    let write_err = |source| Error::WriteCache {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let mut request = Sha256::new();
    for part in [suite, variant]
        .into_iter()
        .chain(packages.iter().map(String::as_str))
    {
        request.update(part.as_bytes());
        request.update([0]);
    }
    let request = hex(&request.finalize());
    let list_key = |list: &[String]| hex(&Sha256::digest(list.join("\n").as_bytes()));
    if policy != Policy::Relock {
        // Any cached tree for this request, preferring the locked list.
        let wanted = locked.map(list_key);
        for entry in std::fs::read_dir(&dir).map_err(write_err)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&format!("{request}-")) else {
                continue;
            };
            let Some(key) = rest.strip_suffix(".tar") else {
                continue;
            };
            if wanted.as_deref().is_none_or(|w| w == key) {
                let packages = read_list(&entry.path())?;
                return Ok(Tree {
                    path: entry.path(),
                    packages,
                });
            }
        }
    }
    let stage = events.stage(&format!("mmdebstrap {suite}"), None);
    let tmp = tempfile::Builder::new()
        .suffix(".tar")
        .tempfile_in(&dir)
        .map_err(write_err)?;
    let output = Command::new("mmdebstrap")
        .arg(format!("--variant={variant}"))
        .arg(format!("--include={}", packages.join(",")))
        .args(["--format=tar", "--quiet", suite])
        .arg(tmp.path())
        .env("SOURCE_DATE_EPOCH", crate::build::epoch().to_string())
        .output()
        .map_err(|source| Error::RunTool {
            tool: "mmdebstrap",
            source,
        })?;
    stage.done();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(Outcome::Failed(Error::Bootstrap {
            suite: suite.to_owned(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
        }));
    }
    let list = read_list(tmp.path())?;
    if let (Policy::Locked, Some(locked)) = (policy, locked)
        && list != locked
    {
        let added: Vec<&String> = list.iter().filter(|p| !locked.contains(p)).collect();
        let gone: Vec<&String> = locked.iter().filter(|p| !list.contains(p)).collect();
        return Err(Outcome::Differs(format!(
            "the archive now installs {added:?} instead of {gone:?}"
        )));
    }
    let path = dir.join(format!("{request}-{}.tar", list_key(&list)));
    tmp.persist(&path).map_err(|e| Error::WriteCache {
        path: path.clone(),
        source: e.error,
    })?;
    Ok(Tree {
        path,
        packages: list,
    })
}

/// `name version` of every installed package in the tree's dpkg status file, sorted.
fn read_list(tar_path: &Path) -> Result<Vec<String>, Error> {
    let read_err = |source| Error::ReadFile {
        path: tar_path.to_owned(),
        source,
    };
    let file = std::fs::File::open(tar_path).map_err(read_err)?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = entry.path().map_err(read_err)?.into_owned();
        if path == Path::new("./var/lib/dpkg/status") || path == Path::new("var/lib/dpkg/status") {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(read_err)?;
            return Ok(parse_status(&text));
        }
    }
    Ok(Vec::new())
}

/// Installed packages from a dpkg status file.
pub fn parse_status(text: &str) -> Vec<String> {
    let mut list: Vec<String> = text
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let installed = field("Status:")
                .is_some_and(|s| s.ends_with("installed") && !s.ends_with("not-installed"));
            if !installed {
                return None;
            }
            Some(format!("{} {}", field("Package:")?, field("Version:")?))
        })
        .collect();
    list.sort();
    list
}
