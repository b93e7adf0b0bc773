//! Where an image is published: `oci:PATH[:TAG]` (a local OCI image-layout directory, the
//! embedded default) or `HOST[:PORT]/REPO[:TAG]` (any OCI registry). Tags and repository names
//! are validated as the distribution specification defines them, so neither can carry a path.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A local OCI image layout.
    Layout {
        /// The directory.
        path: PathBuf,
        /// The tag.
        tag: Tag,
    },
    /// A repository in a registry.
    Registry {
        /// `host[:port]`.
        host: String,
        /// `path/to/repo`.
        repository: String,
        /// The tag.
        tag: Tag,
    },
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (never `.`/`..`, never a path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    /// Validates a tag.
    pub fn new(text: &str) -> Result<Tag, String> {
        let ok = !text.is_empty()
            && text.len() <= 128
            && text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(Tag(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a tag: up to 128 letters, digits, '_', '.', '-', not starting with '.' or '-'"
            ))
        }
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a repository path: lowercase components `[a-z0-9]+([._-][a-z0-9]+)*` joined by `/`.
fn check_repository(text: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
            && !c.contains("..")
    };
    if text.len() <= 255 && text.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a repository: lowercase letters and digits, separated by '.', '_', '-' or '/'"
        ))
    }
}

impl FromStr for Reference {
    type Err = String;

    fn from_str(text: &str) -> Result<Reference, String> {
        if let Some(rest) = text.strip_prefix("oci:") {
            // The tag follows the last ':' after the last '/', if any.
            let slash = rest.rfind('/').map_or(0, |i| i + 1);
            let (path, tag) = match rest[slash..].rfind(':') {
                Some(i) => (&rest[..slash + i], &rest[slash + i + 1..]),
                None => (rest, DEFAULT_TAG),
            };
            if path.is_empty() {
                return Err(format!(
                    "{text:?}: oci: needs a directory, e.g. oci:./images:stable"
                ));
            }
            return Ok(Reference::Layout {
                path: PathBuf::from(path),
                tag: Tag::new(tag)?,
            });
        }
        let Some((host, rest)) = text.split_once('/') else {
            return Err(format!(
                "{text:?} is not a reference: use oci:PATH[:TAG] or HOST[:PORT]/REPOSITORY[:TAG]"
            ));
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !host_ok {
            return Err(format!("{host:?} is not a registry host[:port]"));
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((r, t)) => (r, t),
            None => (rest, DEFAULT_TAG),
        };
        check_repository(repository)?;
        Ok(Reference::Registry {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag: Tag::new(tag)?,
        })
    }
}

impl Reference {
    /// The tag.
    pub fn tag(&self) -> &Tag {
        match self {
            Reference::Layout { tag, .. } | Reference::Registry { tag, .. } => tag,
        }
    }

    /// The same place with another tag.
    pub fn with_tag(&self, tag: Tag) -> Reference {
        let mut r = self.clone();
        match &mut r {
            Reference::Layout { tag: t, .. } | Reference::Registry { tag: t, .. } => *t = tag,
        }
        r
    }

    /// What a signature names as `docker-reference`: the repository without its tag.
    pub fn repository_name(&self) -> String {
        match self {
            Reference::Layout { path, .. } => format!("oci:{}", path.display()),
            Reference::Registry {
                host, repository, ..
            } => format!("{host}/{repository}"),
        }
    }
}

/// The name of a repository as a signature's `critical.identity.docker-reference` and a channel
/// index's `repository` carry it, so that a signature or an index copied into another repository
/// names the wrong one: `HOST[:PORT]/REPOSITORY` for a registry (the host in lowercase), and
/// `oci:/REAL/PATH` for an OCI layout: the layout directory's canonical path (what `realpath`
/// prints). A consumer derives the name it expects from where it pulls, never from the
/// repository's own files, so whoever can write to a repository cannot rename it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// The name of the repository `reference` points into. A layout must exist (its path is
    /// made canonical).
    pub fn of(reference: &Reference) -> Result<RepositoryName, super::Error> {
        match reference {
            Reference::Layout { path, .. } => {
                let real =
                    std::fs::canonicalize(path).map_err(|source| super::Error::ReadLocal {
                        path: path.clone(),
                        source,
                    })?;
                Ok(RepositoryName(format!("oci:{}", real.display())))
            }
            Reference::Registry {
                host, repository, ..
            } => Ok(RepositoryName(format!(
                "{}/{repository}",
                host.to_ascii_lowercase()
            ))),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepositoryName {
    type Err = String;

    /// `HOST[:PORT]/REPOSITORY` or `oci:PATH`, without a tag. A layout's path is made absolute
    /// (against the working directory) and canonical when it exists, so a signer may name a
    /// layout it has not created yet by the real path it will have.
    fn from_str(text: &str) -> Result<RepositoryName, String> {
        let reference: Reference = text.parse()?;
        let untagged = match &reference {
            Reference::Layout { path, .. } => format!("oci:{}", path.display()) == text,
            Reference::Registry {
                host, repository, ..
            } => format!("{host}/{repository}") == text,
        };
        if !untagged {
            return Err(format!(
                "{text:?} names a tag: a repository is HOST[:PORT]/REPOSITORY or oci:PATH"
            ));
        }
        if let Reference::Layout { path, .. } = &reference {
            // Collecting the components drops `.` and a trailing `/`.
            let absolute: PathBuf = std::path::absolute(path)
                .map_err(|e| format!("{text:?}: {e}"))?
                .components()
                .collect();
            if let Ok(real) = std::fs::canonicalize(&absolute) {
                return Ok(RepositoryName(format!("oci:{}", real.display())));
            }
            if absolute
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "{text:?} does not exist and has '..' in it: name the layout by its real path"
                ));
            }
            // Not there yet: its nearest existing ancestor made canonical, the rest as written
            // (the path it will have once created).
            let mut missing = Vec::new();
            let mut ancestor = absolute.as_path();
            while let (Some(parent), Some(name)) = (ancestor.parent(), ancestor.file_name()) {
                missing.push(name);
                ancestor = parent;
                if let Ok(mut real) = std::fs::canonicalize(ancestor) {
                    real.extend(missing.iter().rev());
                    return Ok(RepositoryName(format!("oci:{}", real.display())));
                }
            }
            return Ok(RepositoryName(format!("oci:{}", absolute.display())));
        }
        RepositoryName::of(&reference).map_err(|e| e.to_string())
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository_name(), self.tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r: Reference = "oci:/srv/images:stable".parse().unwrap();
        assert_eq!(
            r,
            Reference::Layout {
                path: "/srv/images".into(),
                tag: Tag::new("stable").unwrap()
            }
        );
        let r: Reference = "oci:./out/store".parse().unwrap();
        assert_eq!(r.tag().as_str(), "latest");
        let r: Reference = "localhost:5000/nodes/tiny-linux:2026.11.0".parse().unwrap();
        assert_eq!(r.repository_name(), "localhost:5000/nodes/tiny-linux");
        assert_eq!(r.tag().as_str(), "2026.11.0");
        assert_eq!(r.to_string(), "localhost:5000/nodes/tiny-linux:2026.11.0");
    }

    #[test]
    fn repository_names_are_where_consumers_pull_from() {
        let name: RepositoryName = "LocalHost:5000/nodes/tiny".parse().unwrap();
        assert_eq!(name.as_str(), "localhost:5000/nodes/tiny");
        let r: Reference = "localhost:5000/nodes/tiny:1.0".parse().unwrap();
        assert_eq!(RepositoryName::of(&r).unwrap(), name);
        assert!(
            "localhost:5000/nodes/tiny:1.0"
                .parse::<RepositoryName>()
                .is_err()
        );
    }

    // A symbolic link needs privileges on Windows, and the paths below are Unix paths.
    #[cfg(unix)]
    #[test]
    fn layout_repository_names_are_real_paths() {
        // A layout is named by its real path, however it is reached.
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("store")).unwrap();
        std::os::unix::fs::symlink(real.join("store"), real.join("link")).unwrap();
        let by_link: Reference = format!("oci:{}/link:x", real.display()).parse().unwrap();
        let expected = format!("oci:{}/store", real.display());
        assert_eq!(RepositoryName::of(&by_link).unwrap().as_str(), expected);
        let signed: RepositoryName = format!("oci:{}/./store", real.display()).parse().unwrap();
        assert_eq!(signed.as_str(), expected);
        // Not there yet: its existing ancestor made real, the rest as written.
        let later: RepositoryName = format!("oci:{}/link/later/x", real.display())
            .parse()
            .unwrap();
        assert_eq!(later.as_str(), format!("{expected}/later/x"));
        assert!(
            format!("oci:{}/later/../x", real.display())
                .parse::<RepositoryName>()
                .is_err()
        );
        assert!(
            format!("oci:{}/store:tag", real.display())
                .parse::<RepositoryName>()
                .is_err()
        );
    }

    #[test]
    fn path_like_tags_and_repositories_are_refused() {
        for bad in [
            "oci:/srv/images:..",
            "oci:/srv/images:.hidden",
            "registry.example/nodes/../x:1",
            "registry.example/Nodes:1",
            "registry.example/nodes:a/b",
            "no-host-or-repository",
            "oci::tag",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} was accepted");
        }
    }
}
