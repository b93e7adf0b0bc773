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
