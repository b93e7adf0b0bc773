//! Debian packages from the host's configured archive, through apt's own tools: `apt-cache show`
//! resolves a name to a version and digest, `apt-get download` fetches the `.deb`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Error, digest_file};

/// A package as the archive describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
    /// sha256 of the `.deb`.
    pub sha256: String,
    /// The `Depends:` field.
    pub depends: String,
}

/// Asks apt which version of `package` it would install now; with `follow`, resolves the
/// metapackage's dependency whose name starts with `follow` instead.
pub fn resolve(package: &str, follow: Option<&str>) -> Result<Candidate, Error> {
    let candidate = show(package)?;
    let Some(prefix) = follow else {
        return Ok(candidate);
    };
    let target = candidate
        .depends
        .split(',')
        .flat_map(|alternatives| alternatives.split('|'))
        .map(|dep| dep.split_whitespace().next().unwrap_or(""))
        .find(|name| name.starts_with(prefix) && *name != package)
        .ok_or_else(|| Error::FollowPackage {
            package: package.to_owned(),
            prefix: prefix.to_owned(),
            depends: candidate.depends.clone(),
        })?;
    show(target)
}

fn show(package: &str) -> Result<Candidate, Error> {
    let output = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .map_err(|source| Error::RunTool {
            tool: "apt-cache",
            source,
        })?;
    if !output.status.success() {
        return Err(Error::ResolvePackage {
            package: package.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse_stanza(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| Error::ResolvePackage {
        package: package.to_owned(),
        stderr: "apt-cache printed no Package/Version/SHA256 stanza (run `apt-get update`)"
            .to_owned(),
    })
}

/// Reads the first stanza of `apt-cache show` output.
fn parse_stanza(text: &str) -> Option<Candidate> {
    let stanza = text.split("\n\n").next()?;
    let field = |name: &str| {
        stanza.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
    };
    Some(Candidate {
        package: field("Package")?,
        version: field("Version")?,
        sha256: field("SHA256")?,
        depends: field("Depends").unwrap_or_default(),
    })
}

/// Where the `.deb` with `sha256` lives in the cache.
pub fn cached_path(cache: &Path, sha256: &str) -> PathBuf {
    cache.join("debs").join(format!("{sha256}.deb"))
}

/// Fetches `package` `version` into the cache unless a file with `sha256` is already there, and
/// checks its digest before it becomes visible.
pub fn fetch(cache: &Path, package: &str, version: &str, sha256: &str) -> Result<PathBuf, Error> {
    let path = cached_path(cache, sha256);
    if path.exists() {
        return Ok(path);
    }
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir).map_err(|source| Error::WriteCache {
        path: dir.clone(),
        source,
    })?;
    let tmp = tempfile::tempdir_in(&dir).map_err(|source| Error::WriteCache {
        path: dir.clone(),
        source,
    })?;
    let output = Command::new("apt-get")
        .args(["download", "-qq", &format!("{package}={version}")])
        .current_dir(tmp.path())
        .output()
        .map_err(|source| Error::RunTool {
            tool: "apt-get",
            source,
        })?;
    if !output.status.success() {
        return Err(Error::DownloadPackage {
            package: package.to_owned(),
            version: version.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let downloaded = std::fs::read_dir(tmp.path())
        .ok()
        .and_then(|mut entries| entries.find_map(|e| e.ok().map(|e| e.path())))
        .ok_or_else(|| Error::DownloadPackage {
            package: package.to_owned(),
            version: version.to_owned(),
            stderr: "apt-get download wrote no file".to_owned(),
        })?;
    let actual = digest_file(&downloaded)?;
    if actual != sha256 {
        return Err(Error::VerifyDigest {
            what: format!("{package} {version}"),
            expected: sha256.to_owned(),
            actual,
        });
    }
    images::atomic::publish(&downloaded, &path).map_err(|source| Error::WriteCache {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stanza_is_read() {
        let text = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\n\
                    Version: 6.1.192-2\nDepends: linux-image-6.1.0-44-cloud-amd64 (= 6.1.192-2)\n\
                    SHA256: 00ff\nDescription: x\n more\n\nPackage: other\nVersion: 1\nSHA256: 11\n";
        let c = parse_stanza(text).unwrap();
        assert_eq!(c.package, "linux-image-cloud-amd64");
        assert_eq!(c.version, "6.1.192-2");
        assert_eq!(c.sha256, "00ff");
        assert!(c.depends.starts_with("linux-image-6.1.0-44-cloud-amd64"));
        assert_eq!(parse_stanza("Package: x\n"), None);
    }
}
