//! The host's content store: pulled node images, each in a directory named by its artifact
//! digest (`images/sha256-HEX/NAME-VERSION.vhdx` and its manifest), the channel state, and the
//! references that keep an image alive (the VMs booted from it). A pull lands in a staging
//! directory and is renamed into place complete; an image nothing references is removed by
//! [`Store::collect_garbage`]. Everything the supervisor boots comes from here.
//!
//! Crash rules: an entry appears in `images/` whole (one rename from staging) and leaves it
//! whole (one rename into `trash/`, made durable, before anything is deleted); whatever a crash
//! leaves in `trash/` is deleted by the next [`Store::open`] or collection. An entry missing its
//! manifest or its VHDX (debris of an older build, or of a disk fault) is not an image:
//! [`Store::get`] discards it and a pull admits the image again. The channel state moves on
//! only once the image it names is in the store.
//!
//! Layout rule (version 1): `store.json` holds `{"format":1}`; readers refuse other formats.
//! `trash/` was added within version 1: a store made before it gets one at its next open.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::oci::channel::{self, ChannelError, Consumer};
use crate::oci::signature::Trust;
use crate::oci::{self, Reference, Repository, transfer};

/// The store format this build reads and writes.
pub const FORMAT: u32 = 1;

/// The directory entries are renamed into before they are deleted.
const TRASH: &str = "trash";

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
        std::fs::create_dir_all(root.join(TRASH)).map_err(access("create", root))?;
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
        let store = Store {
            root: root.to_owned(),
        };
        store.empty_trash()?;
        Ok(store)
    }

    fn image_dir(&self, digest: &str) -> Result<PathBuf, Error> {
        let hex = oci::check_digest(digest)?;
        Ok(self.root.join("images").join(format!("sha256-{hex}")))
    }

    /// The image with artifact `digest`, if the store holds it whole (its manifest and its
    /// VHDX). An entry missing either is discarded and reads as absent, so a pull admits the
    /// image again.
    pub fn get(&self, digest: &str) -> Result<Option<StoredImage>, Error> {
        let dir = self.image_dir(digest)?;
        let list = |source| Error::Access {
            action: "list",
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Not a directory: nothing this store made; admitting over it fails and says so.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Ok(None);
            }
            Err(source) => return Err(list(source)),
        };
        let mut manifest_path = None;
        for entry in entries {
            let path = entry.map_err(list)?.path();
            if path.to_string_lossy().ends_with(".manifest.json") {
                manifest_path = Some(path);
                break;
            }
        }
        if let Some(path) = manifest_path {
            let manifest = Manifest::read(&path).map_err(|e| Error::Access {
                action: "read",
                path: path.clone(),
                source: std::io::Error::new(ErrorKind::InvalidData, e.to_string()),
            })?;
            let vhdx = dir.join(&manifest.disk.file);
            match std::fs::symlink_metadata(&vhdx) {
                Ok(meta) if meta.is_file() => {
                    return Ok(Some(StoredImage {
                        digest: digest.to_owned(),
                        vhdx,
                        manifest,
                    }));
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Access {
                        action: "inspect",
                        path: vhdx,
                        source,
                    });
                }
            }
        }
        tracing::warn!(%digest, dir = %dir.display(), "discarding an incomplete store entry");
        self.discard(digest)?;
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
        let image = match self.get(&index.image.digest)? {
            Some(image) => {
                channel::check_manifest(&index, &image.manifest)?;
                image
            }
            None => {
                let staging = self.staging(&index.image.digest)?;
                let pulled = channel::pull_named(
                    repo,
                    reference,
                    &index,
                    consumer.trust,
                    &staging,
                    progress,
                )?;
                self.admit(&staging, &pulled)?
            }
        };
        // Only now that the image is kept: a pull that failed before leaves the state as it was.
        seen.write(&state)?;
        Ok(image)
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

    /// Moves a complete pull from staging into place (one rename of the whole directory). An
    /// entry already whole there is kept (and the staging dropped); debris is discarded first.
    fn admit(&self, staging: &Path, pulled: &transfer::Pulled) -> Result<StoredImage, Error> {
        if let Some(image) = self.get(&pulled.digest)? {
            let _ = std::fs::remove_dir_all(staging);
            return Ok(image);
        }
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
            // A name that is no digest is nothing this store made (and no digest to collect).
            .filter(|d| oci::check_digest(d).is_ok())
            .collect())
    }

    /// Removes every image not in `keep` (the images VMs use, and the ones channels name), and
    /// staging left by interrupted pulls. Returns the digests removed.
    pub fn collect_garbage(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for digest in self.images()? {
            if !keep.contains(&digest) {
                self.discard(&digest)?;
                removed.push(digest);
            }
        }
        let staging = self.root.join("staging");
        for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
        self.empty_trash()?;
        Ok(removed)
    }

    /// Removes the entry of `digest` from `images/`: renamed into `trash/` (one step, made
    /// durable before anything is deleted), then deleted there. A crash leaves the whole entry
    /// or trash, never an entry with some of its files.
    fn discard(&self, digest: &str) -> Result<(), Error> {
        let dir = self.image_dir(digest)?;
        let hex = oci::check_digest(digest)?;
        let trash = self.root.join(TRASH).join(format!("sha256-{hex}"));
        // An earlier discard of the same entry that a crash interrupted.
        remove_any(&trash)?;
        std::fs::rename(&dir, &trash).map_err(|source| Error::Access {
            action: "discard",
            path: dir.clone(),
            source,
        })?;
        crate::atomic::sync_parent(&dir).map_err(|source| Error::Access {
            action: "sync",
            path: dir,
            source,
        })?;
        remove_any(&trash)
    }

    /// Deletes whatever interrupted discards left in `trash/`.
    fn empty_trash(&self) -> Result<(), Error> {
        let trash = self.root.join(TRASH);
        let entries = std::fs::read_dir(&trash).map_err(|source| Error::Access {
            action: "list",
            path: trash.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Access {
                action: "list",
                path: trash.clone(),
                source,
            })?;
            remove_any(&entry.path())?;
        }
        Ok(())
    }
}

/// Deletes `path`, a directory tree or a file; nothing there is no error. Never follows a link.
fn remove_any(path: &Path) -> Result<(), Error> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::Access {
            action: "remove",
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// A pull of image `digest` (`node`, `version`) finished in the store's staging.
    fn staged(store: &Store, digest: &str, version: &str) -> (PathBuf, transfer::Pulled) {
        let staging = store.staging(digest).unwrap();
        let file = format!("node-{version}.vhdx");
        let manifest = serde_json::json!({
            "schema": crate::manifest::SCHEMA, "name": "node", "version": version,
            "os": "linux", "arch": "x86_64", "kubernetes": null, "components": {},
            "inputs": [], "packages": {}, "files": {},
            "disk": {
                "file": file, "sha256": "00", "file_size": 4, "virtual_size": 4,
                "block_size": 1_048_576, "logical_sector_size": 512, "disk_guid": "",
                "partitions": [],
                "verity": {
                    "root_hash": "", "salt": "", "algorithm": "sha256",
                    "data_block_size": 4096, "hash_block_size": 4096, "data_blocks": 0
                }
            },
            "boot": {
                "firmware": "uefi", "secure_boot": "none", "kernel": "", "cmdline": "",
                "uki_sha256": ""
            },
            "build": { "slipway": "0.1.0", "source_date_epoch": 315_532_800 }
        });
        let manifest_path = staging.join(format!("node-{version}.manifest.json"));
        std::fs::write(&manifest_path, manifest.to_string()).unwrap();
        let vhdx = staging.join(&file);
        std::fs::write(&vhdx, "vhdx").unwrap();
        let pulled = transfer::Pulled {
            digest: digest.to_owned(),
            vhdx,
            manifest: Manifest::read(&manifest_path).unwrap(),
            manifest_path,
            key_id: String::new(),
        };
        (staging, pulled)
    }

    fn admitted(store: &Store, digest: &str, version: &str) -> StoredImage {
        let (staging, pulled) = staged(store, digest, version);
        store.admit(&staging, &pulled).unwrap()
    }

    fn trash(root: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(root.join(TRASH))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn an_entry_missing_its_vhdx_is_absent_and_admitted_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = digest('a');
        let image = admitted(&store, &a, "1.0.0");
        assert!(store.get(&a).unwrap().is_some());

        std::fs::remove_file(&image.vhdx).unwrap();
        assert!(
            store.get(&a).unwrap().is_none(),
            "an image without its VHDX"
        );
        assert!(!store.image_dir(&a).unwrap().exists(), "the debris stayed");
        assert!(trash(dir.path()).is_empty());

        let again = admitted(&store, &a, "1.0.0");
        assert_eq!(again.vhdx, image.vhdx);
        assert!(store.get(&a).unwrap().unwrap().vhdx.is_file());
    }

    #[test]
    fn admit_replaces_the_debris_of_an_interrupted_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = digest('a');
        let image = admitted(&store, &a, "1.0.0");
        // What a removal that deleted the manifest and not the VHDX left.
        let entry = store.image_dir(&a).unwrap();
        std::fs::remove_file(entry.join("node-1.0.0.manifest.json")).unwrap();

        let (staging, pulled) = staged(&store, &a, "1.0.0");
        let again = store.admit(&staging, &pulled).unwrap();
        assert_eq!(again.vhdx, image.vhdx);
        assert!(store.get(&a).unwrap().is_some() && !staging.exists());
    }

    #[test]
    fn discards_a_crash_interrupted_are_finished_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (digest('a'), digest('b'));
        admitted(&store, &a, "1.0.0");
        let kept = admitted(&store, &b, "2.0.0");
        // A collection that renamed a's entry into the trash and stopped.
        std::fs::create_dir_all(dir.path().join(TRASH)).unwrap();
        let hex = oci::check_digest(&a).unwrap();
        std::fs::rename(
            store.image_dir(&a).unwrap(),
            dir.path().join(TRASH).join(format!("sha256-{hex}")),
        )
        .unwrap();
        assert!(store.get(&a).unwrap().is_none());
        let store = Store::open(dir.path()).unwrap();
        assert!(trash(dir.path()).is_empty(), "open left the trash");
        assert_eq!(store.images().unwrap(), BTreeSet::from([b.clone()]));

        // A stale trash entry under the name the next discard of b takes.
        let hex = oci::check_digest(&b).unwrap();
        let stale = dir.path().join(TRASH).join(format!("sha256-{hex}"));
        std::fs::create_dir_all(stale.join("sub")).unwrap();
        std::fs::write(stale.join("sub/file"), "stale").unwrap();
        assert_eq!(store.collect_garbage(&BTreeSet::new()).unwrap(), vec![b]);
        assert!(!kept.vhdx.exists());
        assert!(trash(dir.path()).is_empty(), "collection left the trash");
        assert!(store.images().unwrap().is_empty());
    }
}
