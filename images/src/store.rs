//! The host's content store: pulled node images, each in a directory named by its artifact
//! digest (`images/sha256-HEX/NAME-VERSION.vhdx` and its manifest), the channel state, and the
//! references that keep an image alive (the VMs booted from it). A pull lands in a staging
//! directory and is renamed into place complete; an image nothing references is removed by
//! [`Store::collect_garbage`]. Everything the supervisor boots comes from here.
//!
//! Layout rule (version 1): `store.json` holds `{"format":1}`; readers refuse other formats.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::oci::channel::{self, ChannelError, Consumer};
use crate::oci::signature::Trust;
use crate::oci::{self, Reference, Repository, transfer};

/// The store format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's files.
    #[error("cannot {action} {path}")]
    Access {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another format.
    #[error("{path} is a store of format {found}; this build reads format {FORMAT}")]
    MatchFormat {
        /// The store.
        path: PathBuf,
        /// Found.
        found: u32,
    },
    /// Pulling failed.
    #[error(transparent)]
    Pull(#[from] oci::Error),
    /// Following a channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Artifact manifest digest.
    pub digest: String,
    /// The VHDX (never written to: VMs get an overlay or a child).
    pub vhdx: PathBuf,
    /// The node-image manifest.
    pub manifest: Manifest,
}

/// A content store on the host.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, Error> {
        let access = |action, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Access {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(root.join("images")).map_err(access("create", root))?;
        std::fs::create_dir_all(root.join("staging")).map_err(access("create", root))?;
        let marker = root.join("store.json");
        match std::fs::read(&marker) {
            Ok(bytes) => {
                let found: Marker = serde_json::from_slice(&bytes).map_err(|e| {
                    access("read", &marker)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                })?;
                if found.format != FORMAT {
                    return Err(Error::MatchFormat {
                        path: root.to_owned(),
                        found: found.format,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::atomic::write(&marker, br#"{"format":1}"#, 0o644)
                    .map_err(access("write", &marker))?;
            }
            Err(e) => return Err(access("read", &marker)(e)),
        }
        Ok(Store {
            root: root.to_owned(),
        })
    }

    fn image_dir(&self, digest: &str) -> Result<PathBuf, Error> {
        let hex = oci::check_digest(digest)?;
        Ok(self.root.join("images").join(format!("sha256-{hex}")))
    }

    /// The image with artifact `digest`, if the store holds it.
    pub fn get(&self, digest: &str) -> Result<Option<StoredImage>, Error> {
        let dir = self.image_dir(digest)?;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().ends_with(".manifest.json") {
                let manifest = Manifest::read(&path).map_err(|e| Error::Access {
                    action: "read",
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
                let vhdx = dir.join(&manifest.disk.file);
                return Ok(Some(StoredImage {
                    digest: digest.to_owned(),
                    vhdx,
                    manifest,
                }));
            }
        }
        Ok(None)
    }

    /// Pulls the image `channel` names in `reference`'s repository, unless the store has it
    /// (an image held is checked against the index all the same). The channel state lives in
    /// the store (`channels.json`).
    pub fn pull_channel(
        &self,
        repo: &mut dyn Repository,
        reference: &Reference,
        channel_name: &str,
        consumer: &Consumer<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StoredImage, Error> {
        let state = self.root.join("channels.json");
        let mut seen = channel::Seen::read(&state)?;
        let index = channel::resolve(repo, reference, channel_name, consumer, &mut seen)?;
        if let Some(image) = self.get(&index.image.digest)? {
            channel::check_manifest(&index, &image.manifest)?;
            seen.write(&state)?;
            return Ok(image);
        }
        let staging = self.staging(&index.image.digest)?;
        let (_, pulled) = channel::pull(
            repo,
            reference,
            channel_name,
            consumer,
            &state,
            &staging,
            progress,
        )?;
        self.admit(&staging, &pulled)
    }

    /// Pulls the image under `reference`'s tag, unless the store has it.
    pub fn pull(
        &self,
        repo: &mut dyn Repository,
        reference: &Reference,
        trust: Trust<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StoredImage, Error> {
        let staging = self.staging(&reference.to_string())?;
        let pulled = transfer::pull(repo, reference, &staging, trust, progress)?;
        if let Some(image) = self.get(&pulled.digest)? {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(image);
        }
        self.admit(&staging, &pulled)
    }

    /// The staging directory for a pull of `what`: the same for the same image, so a pull that
    /// was interrupted (even by a restart) resumes its partial file.
    fn staging(&self, what: &str) -> Result<PathBuf, Error> {
        let key = crate::oci::artifact::digest_of(what.as_bytes());
        let dir = self.root.join("staging").join(key.replace(':', "-"));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Access {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Moves a complete pull from staging into place (one rename of the whole directory).
    fn admit(&self, staging: &Path, pulled: &transfer::Pulled) -> Result<StoredImage, Error> {
        let dir = self.image_dir(&pulled.digest)?;
        std::fs::rename(staging, &dir).map_err(|source| Error::Access {
            action: "publish",
            path: dir.clone(),
            source,
        })?;
        crate::atomic::sync_parent(&dir).map_err(|source| Error::Access {
            action: "sync",
            path: dir.clone(),
            source,
        })?;
        Ok(StoredImage {
            digest: pulled.digest.clone(),
            vhdx: dir.join(&pulled.manifest.disk.file),
            manifest: pulled.manifest.clone(),
        })
    }

    /// Digests of every image held.
    pub fn images(&self) -> Result<BTreeSet<String>, Error> {
        let dir = self.root.join("images");
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Access {
            action: "list",
            path: dir,
            source,
        })?;
        Ok(entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("sha256-"))
                    .map(|h| format!("sha256:{h}"))
            })
            .collect())
    }

    /// Removes every image not in `keep` (the images VMs use, and the ones channels name), and
    /// staging left by interrupted pulls. Returns the digests removed.
    pub fn collect_garbage(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for digest in self.images()? {
            if !keep.contains(&digest) {
                let dir = self.image_dir(&digest)?;
                std::fs::remove_dir_all(&dir).map_err(|source| Error::Access {
                    action: "remove",
                    path: dir,
                    source,
                })?;
                removed.push(digest);
            }
        }
        let staging = self.root.join("staging");
        for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
        Ok(removed)
    }
}
