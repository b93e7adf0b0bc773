//! A local OCI image-layout directory (`oci-layout`, `index.json`, `blobs/sha256/`): the
//! embedded default store, no server needed. Blobs are written under a temporary name, checked
//! against their digest and renamed; `index.json` is replaced atomically. One writer at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::artifact::{Descriptor, IMAGE_INDEX, hex};
use super::{BlobSource, Error, Repository, check_digest};
use crate::atomic;

/// The annotation naming a tag in `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// An OCI layout directory.
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Opens the layout at `root`, creating it when `create` (and it does not exist).
    pub fn open(root: &Path, create: bool) -> Result<Layout, Error> {
        let marker = root.join("oci-layout");
        if !marker.exists() {
            if !create {
                return Err(Error::FindLayout(root.to_owned()));
            }
            let io = |source| Error::WriteLocal {
                path: root.to_owned(),
                source,
            };
            std::fs::create_dir_all(root.join("blobs/sha256")).map_err(io)?;
            atomic::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644).map_err(io)?;
            let index = Index {
                schema_version: 2,
                media_type: Some(IMAGE_INDEX.into()),
                manifests: Vec::new(),
            };
            atomic::write(
                &root.join("index.json"),
                &serde_json::to_vec(&index).unwrap_or_default(),
                0o644,
            )
            .map_err(io)?;
        }
        Ok(Layout {
            root: root.to_owned(),
        })
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        let hex = check_digest(digest)?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    fn read_index(&self) -> Result<Index, Error> {
        let path = self.root.join("index.json");
        let bytes = std::fs::read(&path).map_err(|source| Error::ReadLocal {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
            what: "index.json",
            why: e.to_string(),
        })
    }
}

impl Repository for Layout {
    fn has_blob(&mut self, digest: &str) -> Result<bool, Error> {
        Ok(self.blob_path(digest)?.exists())
    }

    fn put_blob(
        &mut self,
        digest: &str,
        size: u64,
        source: BlobSource<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            progress(size);
            return Ok(());
        }
        let tmp = atomic::temporary_path(&path);
        let io = |source| Error::WriteLocal {
            path: tmp.clone(),
            source,
        };
        let result = (|| {
            let mut out = File::create(&tmp).map_err(io)?;
            let mut hasher = Sha256::new();
            let mut copied = 0u64;
            let mut reader: Box<dyn Read> = match source {
                BlobSource::Bytes(bytes) => Box::new(bytes),
                BlobSource::File(p) => {
                    Box::new(File::open(p).map_err(|source| Error::ReadLocal {
                        path: p.to_owned(),
                        source,
                    })?)
                }
            };
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(io)?;
                copied += n as u64;
                progress(copied);
            }
            let actual = format!("sha256:{}", hex(&hasher.finalize()));
            if actual != digest || copied != size {
                return Err(Error::VerifyBlob {
                    digest: digest.to_owned(),
                    actual,
                    size: copied,
                });
            }
            atomic::publish(&tmp, &path).map_err(io)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn put_manifest(
        &mut self,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
        artifact_type: Option<&str>,
    ) -> Result<String, Error> {
        let digest = super::artifact::digest_of(bytes);
        self.put_blob(
            &digest,
            bytes.len() as u64,
            BlobSource::Bytes(bytes),
            &mut |_| {},
        )?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME.to_owned(), tag.to_owned());
        index.manifests.push(Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            artifact_type: artifact_type.map(str::to_owned),
            annotations,
        });
        let path = self.root.join("index.json");
        atomic::write(
            &path,
            &serde_json::to_vec(&index).unwrap_or_default(),
            0o644,
        )
        .map_err(|source| Error::WriteLocal { path, source })?;
        Ok(digest)
    }

    fn get_manifest(&mut self, tag: &str) -> Result<Option<Vec<u8>>, Error> {
        if tag.starts_with("sha256:") {
            let path = self.blob_path(tag)?;
            let Ok(meta) = std::fs::metadata(&path) else {
                return Ok(None);
            };
            if meta.len() > super::MAX_MANIFEST {
                return Err(Error::LimitSize {
                    what: "manifest",
                    size: meta.len(),
                    limit: super::MAX_MANIFEST,
                });
            }
            let mut bytes = Vec::new();
            self.read_blob(tag, meta.len(), &mut bytes)?;
            return Ok(Some(bytes));
        }
        let index = self.read_index()?;
        let Some(found) = index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        else {
            return Ok(None);
        };
        if found.size > super::MAX_MANIFEST {
            return Err(Error::LimitSize {
                what: "manifest",
                size: found.size,
                limit: super::MAX_MANIFEST,
            });
        }
        let mut bytes = Vec::new();
        self.read_blob(&found.digest, found.size, &mut bytes)?;
        Ok(Some(bytes))
    }

    fn get_blob(
        &mut self,
        digest: &str,
        size: u64,
        out: &mut dyn super::BlobSink,
    ) -> Result<(), Error> {
        let path = self.blob_path(digest)?;
        let mut file = File::open(&path).map_err(|source| Error::ReadLocal {
            path: path.clone(),
            source,
        })?;
        let already = out.resume_from();
        if already > 0 {
            io::Seek::seek(&mut file, io::SeekFrom::Start(already)).map_err(|source| {
                Error::ReadLocal {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        super::copy_bounded(&mut file, out, size.saturating_sub(already))
    }
}

impl Layout {
    fn read_blob(&mut self, digest: &str, size: u64, bytes: &mut Vec<u8>) -> Result<(), Error> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).map_err(|source| Error::ReadLocal {
            path: path.clone(),
            source,
        })?;
        // One byte more than declared, to notice a blob longer than its descriptor says.
        file.take(size + 1)
            .read_to_end(bytes)
            .map_err(|source| Error::ReadLocal { path, source })?;
        let actual = super::artifact::digest_of(bytes);
        if actual != digest || bytes.len() as u64 != size {
            return Err(Error::VerifyBlob {
                digest: digest.to_owned(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(())
    }
}
