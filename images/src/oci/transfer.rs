//! Pushing a built node image (manifest + VHDX) as an OCI artifact with its cosign signature,
//! and pulling one back: signature, digests and manifest checked before the VHDX is fetched
//! ([`fetch`]), the VHDX checked before it appears in the destination ([`download`]).

use std::path::{Path, PathBuf};

use super::artifact::{
    ARTIFACT_TYPE, CONFIG_TYPE, IMAGE_MANIFEST, ImageManifest, VHDX_TYPE, digest_of,
};
use super::signature::{self, LocalSignature, Trust};
use super::{
    BlobSink, BlobSource, Error, FileSink, Reference, Repository, RepositoryName, get_small_blob,
};
use crate::manifest::Manifest;
use crate::sign::PrivateKey;

/// A built image on disk: `NAME-VERSION.manifest.json` and the VHDX it names, beside it.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// Its exact bytes (the artifact's config blob).
    pub manifest_bytes: Vec<u8>,
    /// Parsed.
    pub manifest: Manifest,
    /// The VHDX.
    pub vhdx: PathBuf,
    /// The VHDX's size.
    pub vhdx_size: u64,
}

impl LocalImage {
    /// Opens the image whose manifest or VHDX is `path`.
    pub fn open(path: &Path) -> Result<LocalImage, Error> {
        let name = path.to_string_lossy();
        let manifest_path = match name.strip_suffix(".vhdx") {
            Some(stem) => PathBuf::from(format!("{stem}.manifest.json")),
            None => path.to_owned(),
        };
        let manifest_bytes = std::fs::read(&manifest_path).map_err(|source| Error::ReadLocal {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest =
            Manifest::from_bytes(&manifest_bytes).map_err(|why| Error::ParseDocument {
                what: "node-image manifest",
                why,
            })?;
        check_file_name(&manifest)?;
        let vhdx = manifest_path.with_file_name(&manifest.disk.file);
        let vhdx_size = std::fs::metadata(&vhdx)
            .map_err(|source| Error::ReadLocal {
                path: vhdx.clone(),
                source,
            })?
            .len();
        Ok(LocalImage {
            manifest_path,
            manifest_bytes,
            manifest,
            vhdx,
            vhdx_size,
        })
    }

    /// The OCI manifest of this image.
    pub fn artifact(&self) -> ImageManifest {
        ImageManifest::node_image(&self.manifest, &self.manifest_bytes, self.vhdx_size)
    }

    /// Checks the VHDX against the manifest's size and sha256 (reads it all).
    pub fn verify_vhdx(&self) -> Result<(), Error> {
        let (digest, size) = crate::oci::digest_file(&self.vhdx)?;
        let expected = format!("sha256:{}", self.manifest.disk.sha256);
        if digest != expected || size != self.manifest.disk.file_size {
            return Err(Error::VerifyBlob {
                digest: expected,
                actual: digest,
                size,
            });
        }
        Ok(())
    }
}

/// The manifest's image name, version and file name must be safe as file names and agree.
fn check_file_name(manifest: &Manifest) -> Result<(), Error> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            })
    };
    let expected = format!("{}-{}.vhdx", manifest.name, manifest.version);
    if !safe(&manifest.name) || !safe(&manifest.version) || manifest.disk.file != expected {
        return Err(Error::MatchManifest(format!(
            "name {:?}, version {:?} and file {:?} are not a safe NAME-VERSION.vhdx",
            manifest.name, manifest.version, manifest.disk.file
        )));
    }
    Ok(())
}

/// How a pushed image is signed.
#[derive(Clone, Copy)]
pub enum Signing<'a> {
    /// Signed now with this key, for the repository pushed to.
    Key(&'a PrivateKey),
    /// The signature made before the push (`NAME-VERSION.sig.json`), published as it is once
    /// it is checked to name this image and the repository pushed to.
    Local(&'a LocalSignature),
    /// Not signed: every consumer refuses the image until a signature is added.
    Unsigned,
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The artifact manifest's digest.
    pub digest: String,
    /// Whether a signature was pushed with it.
    pub signed: bool,
}

/// Pushes `image` to `repo` under `reference`'s tag, signed as `signing` says. A local
/// signature that does not fit (another image, another repository) is refused before any byte
/// is sent.
pub fn push(
    image: &LocalImage,
    repo: &mut dyn Repository,
    reference: &Reference,
    signing: Signing<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Pushed, Error> {
    if let Signing::Local(signature) = signing {
        signature.check_for(image, &RepositoryName::of(reference)?)?;
    }
    // No separate check of the VHDX against the manifest first: its layer is stored under the
    // manifest's sha256, and both destinations refuse content that does not hash to it.
    let art = image.artifact();
    let bytes = art.to_bytes();
    repo.put_bytes(&art.config, &image.manifest_bytes)?;
    let layer = &art.layers[0];
    repo.put_blob(
        &layer.digest,
        layer.size,
        BlobSource::File(&image.vhdx),
        progress,
    )?;
    let digest = repo.put_manifest(
        reference.tag().as_str(),
        &bytes,
        IMAGE_MANIFEST,
        Some(ARTIFACT_TYPE),
    )?;
    match signing {
        Signing::Key(key) => signature::sign(repo, reference, &digest, key)?,
        Signing::Local(local) => signature::publish(
            repo,
            &digest,
            local.payload.as_bytes(),
            &local.signature,
            &local.key_id,
        )?,
        Signing::Unsigned => {}
    }
    Ok(Pushed {
        digest,
        signed: !matches!(signing, Signing::Unsigned),
    })
}

/// What was pulled.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The artifact manifest's digest.
    pub digest: String,
    /// The VHDX in the destination.
    pub vhdx: PathBuf,
    /// The node-image manifest in the destination.
    pub manifest_path: PathBuf,
    /// Parsed.
    pub manifest: Manifest,
    /// The key that signed it.
    pub key_id: String,
}

/// Reads the node-image artifact manifest named `name` (a tag, or a digest `sha256:...`) in
/// `reference`'s repository: its digest and the manifest, checked to be a node image. Nothing
/// about its signature.
pub fn read_artifact(
    repo: &mut dyn Repository,
    reference: &Reference,
    name: &str,
) -> Result<(String, ImageManifest), Error> {
    let bytes = repo
        .get_manifest(name)?
        .ok_or_else(|| Error::FindTag(format!("{}:{name}", reference.repository_name())))?;
    let digest = digest_of(&bytes);
    // A manifest asked for by digest must have that digest (a mix-and-match server may answer
    // with another, validly signed, image).
    if name.starts_with("sha256:") && digest != name {
        return Err(Error::VerifyBlob {
            digest: name.to_owned(),
            actual: digest,
            size: bytes.len() as u64,
        });
    }
    let art: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| Error::ParseDocument {
        what: "artifact manifest",
        why: e.to_string(),
    })?;
    if art.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
        || art.config.media_type != CONFIG_TYPE
        || art.layers.len() != 1
        || art.layers[0].media_type != VHDX_TYPE
    {
        return Err(Error::MatchArtifact {
            reference: reference.to_string(),
            found: art.artifact_type,
        });
    }
    Ok((digest, art))
}

/// Reads the node-image manifest (the config blob) of `art`: its exact bytes and parsed, checked
/// to be safe as file names and to describe the artifact's VHDX layer.
pub fn read_config(
    repo: &mut dyn Repository,
    art: &ImageManifest,
) -> Result<(Vec<u8>, Manifest), Error> {
    let config = get_small_blob(repo, &art.config, "node-image manifest")?;
    let manifest = Manifest::from_bytes(&config).map_err(|why| Error::ParseDocument {
        what: "node-image manifest",
        why,
    })?;
    check_file_name(&manifest)?;
    let layer = &art.layers[0];
    if layer.digest != format!("sha256:{}", manifest.disk.sha256)
        || layer.size != manifest.disk.file_size
    {
        return Err(Error::MatchManifest(format!(
            "the VHDX layer is {} ({} bytes), the manifest says sha256:{} ({} bytes)",
            layer.digest, layer.size, manifest.disk.sha256, manifest.disk.file_size
        )));
    }
    Ok((config, manifest))
}

/// A node image whose signature and manifests check out; its VHDX is not fetched yet.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The artifact manifest's digest.
    pub digest: String,
    /// The node-image manifest, parsed.
    pub manifest: Manifest,
    /// The key that signed it.
    pub key_id: String,
    art: ImageManifest,
    config: Vec<u8>,
}

/// Fetches and checks what describes the image named `name` (a tag, or a digest `sha256:...`)
/// in `reference`'s repository: the artifact manifest, its signature (by a key `trust` holds,
/// for the repository `trust` expects), then the node-image manifest.
pub fn fetch(
    repo: &mut dyn Repository,
    reference: &Reference,
    name: &str,
    trust: Trust<'_>,
) -> Result<Fetched, Error> {
    let (digest, art) = read_artifact(repo, reference, name)?;
    let key_id = signature::verify(repo, reference, &digest, trust)?;
    let (config, manifest) = read_config(repo, &art)?;
    Ok(Fetched {
        digest,
        manifest,
        key_id,
        art,
        config,
    })
}

/// Pulls the image `reference` names from `repo` into `dir`, trusting `trust`. Nothing appears
/// in `dir` unless the signature, the manifests and the VHDX all check out.
pub fn pull(
    repo: &mut dyn Repository,
    reference: &Reference,
    dir: &Path,
    trust: Trust<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Pulled, Error> {
    let fetched = fetch(repo, reference, reference.tag().as_str(), trust)?;
    download(repo, fetched, dir, progress)
}

/// Fetches the VHDX of a [`fetch`]ed image into `dir` (resuming a partial file left by an
/// interrupted download) and places the VHDX and its manifest there once the VHDX checks out.
pub fn download(
    repo: &mut dyn Repository,
    fetched: Fetched,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Pulled, Error> {
    let Fetched {
        digest,
        manifest,
        key_id,
        art,
        config,
    } = fetched;
    let layer = &art.layers[0];
    std::fs::create_dir_all(dir).map_err(|source| Error::WriteLocal {
        path: dir.to_owned(),
        source,
    })?;
    check_free_space(dir, layer.size)?;
    let vhdx = dir.join(&manifest.disk.file);
    let partial = dir.join(format!(".{}.partial", manifest.disk.file));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::WriteLocal { path, source }
    };
    let mut sink = FileSink::open(&partial).map_err(io(&partial))?;
    if sink.resume_from() > layer.size {
        drop(sink);
        std::fs::remove_file(&partial).map_err(io(&partial))?;
        sink = FileSink::open(&partial).map_err(io(&partial))?;
    }
    progress(sink.resume_from());
    // A network failure keeps the hidden partial file, so the next pull resumes it; anything
    // else (too much data, a refused blob) discards it.
    match repo.get_blob(&layer.digest, layer.size, &mut sink) {
        Ok(()) => {}
        Err(e @ Error::Transfer { .. }) => return Err(e),
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    }
    let (actual, size) = sink.finish().map_err(io(&partial))?;
    if actual != layer.digest || size != layer.size {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::VerifyBlob {
            digest: layer.digest.clone(),
            actual,
            size,
        });
    }
    progress(size);
    crate::atomic::publish(&partial, &vhdx).map_err(io(&vhdx))?;
    let manifest_path = dir.join(format!(
        "{}-{}.manifest.json",
        manifest.name, manifest.version
    ));
    crate::atomic::write(&manifest_path, &config, 0o644).map_err(io(&manifest_path))?;
    Ok(Pulled {
        digest,
        vhdx,
        manifest_path,
        manifest,
        key_id,
    })
}

/// Refuses a pull that cannot fit (with 64 MiB to spare) before any byte is fetched.
#[cfg(unix)]
fn check_free_space(dir: &Path, needed: u64) -> Result<(), Error> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| Error::ReadLocal {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let margin = 64 << 20;
    if free < needed.saturating_add(margin) {
        return Err(Error::LimitSize {
            what: "pull (free space in the destination)",
            size: needed,
            limit: free,
        });
    }
    Ok(())
}

/// Windows: no statvfs here; a pull that does not fit fails when the disk is full, and its
/// partial files are removed as for any failed pull.
#[cfg(not(unix))]
fn check_free_space(_dir: &Path, _needed: u64) -> Result<(), Error> {
    Ok(())
}
