//! Node images as OCI artifacts, pushed to and pulled from a local OCI image layout (the
//! embedded default) or a registry. Every byte is checked against its digest before it is
//! visible at the destination, and every size a server or file declares bounds what is read.

pub mod artifact;
pub mod channel;
pub mod layout;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod transfer;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use reference::{Reference, RepositoryName, Tag};

/// Largest manifest (or signature payload, or config) read: 4 MiB, as registries cap them.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Errors of publishing and fetching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No layout at the path.
    #[error("{0} is not an OCI image layout (no oci-layout file)")]
    FindLayout(PathBuf),
    /// A local file could not be read.
    #[error("cannot read {path}")]
    ReadLocal {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A local file could not be written.
    #[error("cannot write {path}")]
    WriteLocal {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A digest string is malformed.
    #[error("{0:?} is not a sha256 digest")]
    ParseDigest(String),
    /// Content does not match its digest or size.
    #[error("blob {digest} does not match: got {size} bytes with digest {actual}; refusing it")]
    VerifyBlob {
        /// Expected digest.
        digest: String,
        /// Digest of what arrived.
        actual: String,
        /// Bytes that arrived.
        size: u64,
    },
    /// More data than declared.
    #[error("the {what} is larger than {limit} bytes (declared or allowed): refusing it")]
    LimitSize {
        /// What was being read.
        what: &'static str,
        /// Declared size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A JSON document is not what it should be.
    #[error("the {what} is not valid: {why}")]
    ParseDocument {
        /// Which document.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// Nothing under the tag.
    #[error("{0} does not exist")]
    FindTag(String),
    /// The artifact is not a node image.
    #[error("{reference} is not a Slipway node image (artifact type {found:?})")]
    MatchArtifact {
        /// The reference.
        reference: String,
        /// What it is.
        found: Option<String>,
    },
    /// No signature, or none by a trusted key.
    #[error("{reference} ({digest}) has no signature by a trusted key: {why}")]
    VerifySignature {
        /// The reference.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// Why each candidate failed.
        why: String,
    },
    /// The only signatures name another repository: copied from there.
    #[error(
        "{reference} ({digest}) is signed for repository {signed_for}, not {expected} where it \
         is pulled from: a signature copied from another repository is refused"
    )]
    RefuseRepository {
        /// The reference.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// The repository the signature names.
        signed_for: String,
        /// The repository expected.
        expected: String,
    },
    /// Well-formed signatures for this repository, none by a trusted key.
    #[error(
        "{reference} ({digest}) has no signature by a trusted key: it is signed by another key \
         (key id {}), or its signature was altered",
        key_list(.key_ids)
    )]
    RefuseKey {
        /// The reference.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// The key ids the signatures name (unverified: what they claim).
        key_ids: Vec<String>,
    },
    /// A signature made before the push cannot be published with the image.
    #[error("{path} cannot be published with this image: {why}")]
    MatchLocalSignature {
        /// The signature file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The node manifest disagrees with the artifact.
    #[error("the node-image manifest does not describe this artifact: {0}")]
    MatchManifest(String),
    /// A transfer failed.
    #[error("{what} failed")]
    Transfer {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Where blob bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum BlobSource<'a> {
    /// In memory.
    Bytes(&'a [u8]),
    /// A file.
    File(&'a Path),
}

/// Where blob bytes go; a sink may already hold a prefix (a resumed download).
pub trait BlobSink {
    /// How many bytes it already holds.
    fn resume_from(&self) -> u64;
    /// Appends bytes.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Drops all it holds, to be filled again from the first byte (a registry that ignores
    /// Range sends the whole blob again).
    fn restart(&mut self) -> io::Result<()>;
}

impl BlobSink for Vec<u8> {
    fn resume_from(&self) -> u64 {
        self.len() as u64
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
    fn restart(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

/// A file being downloaded, hashed as it grows; reopened, it hashes what it holds and goes on.
pub struct FileSink {
    file: std::fs::File,
    hasher: Sha256,
    len: u64,
}

impl FileSink {
    /// Opens (or creates) the partial file `path`.
    pub fn open(path: &Path) -> io::Result<FileSink> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(FileSink { file, hasher, len })
    }

    /// Syncs the file and returns `sha256:HEX` of all it holds and its length.
    pub fn finish(self) -> io::Result<(String, u64)> {
        self.file.sync_all()?;
        Ok((
            format!("sha256:{}", artifact::hex(&self.hasher.finalize())),
            self.len,
        ))
    }
}

impl BlobSink for FileSink {
    fn resume_from(&self) -> u64 {
        self.len
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }
    fn restart(&mut self) -> io::Result<()> {
        // Opened to append: after the truncation, writes go to the new end, which is 0.
        self.file.set_len(0)?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }
}

/// A place blobs and manifests are published to and fetched from.
pub trait Repository {
    /// Whether the blob is present.
    fn has_blob(&mut self, digest: &str) -> Result<bool, Error>;
    /// Stores a blob of `size` bytes with `digest`; refuses content that does not match.
    fn put_blob(
        &mut self,
        digest: &str,
        size: u64,
        source: BlobSource<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error>;
    /// Stores the small blob `bytes` that `descriptor` describes.
    fn put_bytes(&mut self, descriptor: &artifact::Descriptor, bytes: &[u8]) -> Result<(), Error> {
        self.put_blob(
            &descriptor.digest,
            descriptor.size,
            BlobSource::Bytes(bytes),
            &mut |_| {},
        )
    }
    /// Stores a manifest under `tag`; returns its digest.
    fn put_manifest(
        &mut self,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
        artifact_type: Option<&str>,
    ) -> Result<String, Error>;
    /// The manifest under `tag` (or with digest `sha256:...`), if any (at most
    /// [`MAX_MANIFEST`] bytes).
    fn get_manifest(&mut self, tag: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Appends the blob's bytes from `out.resume_from()` on; never more than `size` in all.
    fn get_blob(&mut self, digest: &str, size: u64, out: &mut dyn BlobSink) -> Result<(), Error>;
}

/// Key ids for a message: `a, b`, or `unknown` when the signatures name none.
pub fn key_list(key_ids: &[String]) -> String {
    if key_ids.is_empty() {
        "unknown".into()
    } else {
        key_ids.join(", ")
    }
}

/// Fetches the small blob (a config, a signature payload) `descriptor` describes: at most
/// [`MAX_MANIFEST`] bytes, refused unless it has the descriptor's digest and size.
pub fn get_small_blob(
    repo: &mut dyn Repository,
    descriptor: &artifact::Descriptor,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    if descriptor.size > MAX_MANIFEST {
        return Err(Error::LimitSize {
            what,
            size: descriptor.size,
            limit: MAX_MANIFEST,
        });
    }
    let mut bytes = Vec::new();
    repo.get_blob(&descriptor.digest, descriptor.size, &mut bytes)?;
    let actual = artifact::digest_of(&bytes);
    if actual != descriptor.digest || bytes.len() as u64 != descriptor.size {
        return Err(Error::VerifyBlob {
            digest: descriptor.digest.clone(),
            actual,
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The hex part of a `sha256:` digest, checked (64 lowercase hex digits: safe as a file name).
pub fn check_digest(digest: &str) -> Result<&str, Error> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::ParseDigest(digest.to_owned())),
    }
}

/// `sha256:HEX` and the length of a file. One thread reads while this one hashes (the hash
/// is the bottleneck; overlapping the reads gains their whole cost), through two 4 MiB buffers.
pub fn digest_file(path: &Path) -> Result<(String, u64), Error> {
    const BUF: usize = 4 << 20;
    let fail = |source| Error::ReadLocal {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        let _ = empty_tx.send(vec![0u8; BUF]);
    }
    let reader = std::thread::spawn(move || {
        while let Ok(mut buf) = empty_rx.recv() {
            buf.resize(BUF, 0);
            match read_full(&mut file, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if full_tx.send(Ok(buf)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    return;
                }
            }
        }
    });
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    for chunk in full_rx {
        let chunk = chunk.map_err(fail)?;
        hasher.update(&chunk);
        len += chunk.len() as u64;
        let _ = empty_tx.send(chunk);
    }
    drop(empty_tx);
    let _ = reader.join();
    Ok((format!("sha256:{}", artifact::hex(&hasher.finalize())), len))
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Copies at most `remaining` bytes from `reader` to `out`; more than that is an error (a
/// server or file that sends endless data is cut off at the declared size).
pub fn copy_bounded(
    reader: &mut dyn Read,
    out: &mut dyn BlobSink,
    remaining: u64,
) -> Result<(), Error> {
    let mut left = remaining;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let want =
            usize::try_from(left.saturating_add(1).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = reader
            .read(&mut buf[..want])
            .map_err(|source| Error::Transfer {
                what: "reading a blob".into(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        if n as u64 > left {
            return Err(Error::LimitSize {
                what: "blob",
                size: remaining,
                limit: remaining,
            });
        }
        out.append(&buf[..n]).map_err(|source| Error::Transfer {
            what: "writing a blob".into(),
            source,
        })?;
        left -= n as u64;
    }
}

/// Opens the repository a reference names (`plain_http` for registries without TLS).
pub fn open(
    reference: &Reference,
    create: bool,
    plain_http: bool,
) -> Result<Box<dyn Repository>, Error> {
    match reference {
        Reference::Layout { path, .. } => Ok(Box::new(layout::Layout::open(path, create)?)),
        Reference::Registry {
            host, repository, ..
        } => Ok(Box::new(registry::Registry::new(
            host, repository, plain_http,
        ))),
    }
}
